//! The embedded backend: one process's memory, bounded in entries and in bytes, a
//! TTL per entry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use moka::Expiry;
use moka::future::Cache;

use super::StoreError;
use crate::config::StoreLimits;

/// An in-process store: bounded, with a TTL per entry. Values live only as long as
/// the process and are invisible to other replicas; `redis` is the shared backend.
///
/// Entries are weighed by their size. A value that would break a bound is refused
/// rather than making room: every entry is a conversation someone may still resume,
/// and dropping one silently would turn their "yes" into "expired".
#[derive(Debug, Clone)]
pub struct MemoryStore {
    cache: Cache<String, Entry>,
    usage: Arc<Usage>,
    capacity: u64,
    limits: StoreLimits,
}

/// What the live entries hold. Reserved before an insert, released by moka's
/// eviction listener whenever an entry goes (taken, replaced or expired), so the
/// two never disagree for long.
#[derive(Debug, Default)]
struct Usage {
    bytes: AtomicUsize,
    entries: AtomicU64,
    /// Bytes per owner (a client key) of the entries stored for one.
    owners: Mutex<HashMap<Arc<str>, usize>>,
}

impl Usage {
    fn owners(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, usize>> {
        // Every update is a single insert or removal, so a poisoned map is still consistent.
        self.owners.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn release(&self, owner: &str, size: usize) {
        let mut owners = self.owners();
        if let Some(used) = owners.get_mut(owner) {
            *used = used.saturating_sub(size);
            if *used == 0 {
                owners.remove(owner);
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    value: Arc<Vec<u8>>,
    /// Whose bytes these are, when they count toward a per-key bound.
    owner: Option<Arc<str>>,
    ttl: Duration,
    /// Validity is judged on tokio's clock (testable with paused time); moka's own
    /// expiry only frees the memory.
    deadline: tokio::time::Instant,
}

impl Entry {
    fn is_live(&self) -> bool {
        tokio::time::Instant::now() < self.deadline
    }
}

/// The bytes an entry is charged: its value and its key.
fn weight(key: &str, value: &[u8]) -> usize {
    key.len().saturating_add(value.len())
}

struct PerEntryTtl;

impl Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _key: &String, entry: &Entry, _created_at: std::time::Instant) -> Option<Duration> {
        Some(entry.ttl)
    }

    /// A `put` over an existing key starts the new value's TTL; moka's default would
    /// keep the old entry's remaining time.
    fn expire_after_update(
        &self,
        _key: &String,
        entry: &Entry,
        _updated_at: std::time::Instant,
        _remaining: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }
}

impl MemoryStore {
    pub fn new(capacity: u64) -> Self {
        Self::with_limits(capacity, StoreLimits::default())
    }

    /// The same store with other bounds (before any entry is stored).
    pub(super) fn limited(mut self, limits: StoreLimits) -> Self {
        self.limits = limits;
        self
    }

    pub fn with_limits(capacity: u64, limits: StoreLimits) -> Self {
        let usage = Arc::new(Usage::default());
        let released = usage.clone();
        let cache = Cache::builder()
            .expire_after(PerEntryTtl)
            .eviction_listener(move |key: Arc<String>, entry: Entry, _cause| {
                let size = weight(&key, &entry.value);
                released.bytes.fetch_sub(size, Ordering::AcqRel);
                released.entries.fetch_sub(1, Ordering::AcqRel);
                if let Some(owner) = &entry.owner {
                    released.release(owner, size);
                }
            })
            .build();
        Self { cache, usage, capacity, limits }
    }

    /// Collects expired entries now (moka does it lazily).
    #[cfg(test)]
    pub(super) async fn collect(&self) {
        self.cache.run_pending_tasks().await;
    }

    /// Bytes the live (and not yet collected) entries take.
    pub fn bytes_used(&self) -> usize {
        self.usage.bytes.load(Ordering::Acquire)
    }

    /// Bytes the live entries of `owner` take.
    pub fn bytes_of(&self, owner: &str) -> usize {
        self.usage.owners().get(owner).copied().unwrap_or(0)
    }

    pub(super) async fn put(
        &self,
        owner: Option<&str>,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let size = weight(key, &value);
        super::check_entry(size, self.limits)?;
        let owner: Option<Arc<str>> = owner.map(Arc::from);
        if let Some(owner) = &owner {
            self.charge(owner, size).await?;
        }
        let stored = self.put_charged(key, value, ttl, owner.clone(), size).await;
        if let (Err(_), Some(owner)) = (&stored, &owner) {
            self.usage.release(owner, size);
        }
        stored
    }

    /// Charges `size` bytes to `owner` if they fit its bound.
    async fn charge(&self, owner: &Arc<str>, size: usize) -> Result<(), StoreError> {
        for attempt in 0..2 {
            {
                let mut owners = self.usage.owners();
                let used = owners.get(owner).copied().unwrap_or(0);
                if used.saturating_add(size) <= self.limits.max_bytes_per_key {
                    owners.insert(owner.clone(), used + size);
                    return Ok(());
                }
                if attempt == 1 {
                    return Err(super::key_full(used, self.limits));
                }
            }
            // Expired entries are released lazily; collect them and look again.
            self.cache.run_pending_tasks().await;
        }
        Err(super::key_full(self.bytes_of(owner), self.limits))
    }

    async fn put_charged(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
        owner: Option<Arc<str>>,
        size: usize,
    ) -> Result<(), StoreError> {
        // A replaced value is released when it goes, so it only counts as an entry once.
        let replacing = self.cache.contains_key(key);
        if !self.reserve(size, replacing) {
            // Expired entries are collected lazily; collect them and look again.
            self.cache.run_pending_tasks().await;
            if !self.reserve(size, replacing) {
                return Err(self.full(size));
            }
        }
        let entry = Entry { value: Arc::new(value), owner, ttl, deadline: tokio::time::Instant::now() + ttl };
        self.cache.insert(key.to_owned(), entry).await;
        Ok(())
    }

    /// Charges one entry of `size` bytes if it fits both bounds.
    fn reserve(&self, size: usize, replacing: bool) -> bool {
        let bytes = self.usage.bytes.fetch_add(size, Ordering::AcqRel);
        let entries = self.usage.entries.fetch_add(1, Ordering::AcqRel);
        if bytes.saturating_add(size) > self.limits.max_bytes || (entries >= self.capacity && !replacing) {
            self.usage.bytes.fetch_sub(size, Ordering::AcqRel);
            self.usage.entries.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    fn full(&self, size: usize) -> StoreError {
        tracing::warn!(
            bytes = size,
            used_bytes = self.bytes_used(),
            max_bytes = self.limits.max_bytes,
            entries = self.usage.entries.load(Ordering::Acquire),
            capacity = self.capacity,
            "the memory store is full; refusing a new entry (raise store.max_bytes or store.capacity)"
        );
        StoreError::Full(
            "lariat's store of paused conversations is full right now, so this request cannot wait for an answer; \
             nothing was run. Try again later."
                .into(),
        )
    }

    pub(super) async fn take(&self, key: &str) -> Option<Vec<u8>> {
        // `remove` is atomic: of two concurrent takes, one gets the value.
        let entry = self.cache.remove(key).await?;
        entry.is_live().then(|| Arc::unwrap_or_clone(entry.value))
    }

    pub(super) async fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.cache.get(key).await.filter(Entry::is_live).map(|entry| entry.value.as_ref().clone())
    }
}
