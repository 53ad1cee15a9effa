//! The embedded backend: one process's memory, bounded, a TTL per entry.

use std::time::Duration;

use moka::Expiry;
use moka::future::Cache;

/// An in-process store: bounded, with a TTL per entry. Values live only as long as
/// the process and are invisible to other replicas; `redis` is the shared backend.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    cache: Cache<String, Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    value: Vec<u8>,
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
        Self { cache: Cache::builder().max_capacity(capacity).expire_after(PerEntryTtl).build() }
    }

    pub(super) async fn put(&self, key: &str, value: Vec<u8>, ttl: Duration) {
        let entry = Entry { value, ttl, deadline: tokio::time::Instant::now() + ttl };
        self.cache.insert(key.to_owned(), entry).await;
    }

    pub(super) async fn take(&self, key: &str) -> Option<Vec<u8>> {
        // `remove` is atomic: of two concurrent takes, one gets the value.
        let entry = self.cache.remove(key).await?;
        entry.is_live().then_some(entry.value)
    }

    pub(super) async fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.cache.get(key).await.filter(Entry::is_live).map(|entry| entry.value)
    }
}
