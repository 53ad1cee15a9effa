//! Where suspended loops wait: client-tool rounds now, confirmation checkpoints next.
//!
//! Values are opaque bytes (the callers serialise versioned types), so every backend
//! stores the same thing and a value written by one replica reads on another.
//! `take` is atomic: a value is handed out at most once.

use std::time::Duration;

use moka::Expiry;
use moka::future::Cache;

use crate::config;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the suspension store is unavailable: {0}")]
    Unavailable(String),
}

/// The configured backend. A closed enum rather than a trait object: the set of
/// backends is ours, and async trait objects would cost a box per call.
#[derive(Debug, Clone)]
pub enum Store {
    Memory(MemoryStore),
}

impl Store {
    pub fn from_config(config: &config::Store) -> Result<Self, StoreError> {
        match config {
            config::Store::Memory { capacity } => Ok(Self::Memory(MemoryStore::new(*capacity))),
            config::Store::Redis { .. } => {
                Err(StoreError::Unavailable("the Redis store is not built yet; use kind = \"memory\"".into()))
            }
        }
    }

    /// Stores `value` under `key` for `ttl`, replacing any previous value.
    pub async fn put(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), StoreError> {
        match self {
            Self::Memory(m) => {
                m.put(key, value, ttl).await;
                Ok(())
            }
        }
    }

    /// Removes and returns the value under `key`, if it exists and has not expired.
    pub async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.take(key).await),
        }
    }
}

/// An in-process store: bounded, with a TTL per entry.
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

struct PerEntryTtl;

impl Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _key: &String, entry: &Entry, _created_at: std::time::Instant) -> Option<Duration> {
        Some(entry.ttl)
    }
}

impl MemoryStore {
    pub fn new(capacity: u64) -> Self {
        Self { cache: Cache::builder().max_capacity(capacity).expire_after(PerEntryTtl).build() }
    }

    async fn put(&self, key: &str, value: Vec<u8>, ttl: Duration) {
        let entry = Entry { value, ttl, deadline: tokio::time::Instant::now() + ttl };
        self.cache.insert(key.to_owned(), entry).await;
    }

    async fn take(&self, key: &str) -> Option<Vec<u8>> {
        // `remove` is atomic: of two concurrent takes, one gets the value.
        let entry = self.cache.remove(key).await?;
        (tokio::time::Instant::now() < entry.deadline).then_some(entry.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn take_hands_a_value_out_once() {
        let store = Store::Memory(MemoryStore::new(100));
        store.put("k", b"v".to_vec(), Duration::from_secs(60)).await.unwrap();
        let (a, b) = tokio::join!(store.take("k"), store.take("k"));
        let got: Vec<_> = [a.unwrap(), b.unwrap()].into_iter().flatten().collect();
        assert_eq!(got, [b"v".to_vec()]);
        assert_eq!(store.take("missing").await.unwrap(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire() {
        let store = Store::Memory(MemoryStore::new(100));
        store.put("k", b"v".to_vec(), Duration::from_secs(60)).await.unwrap();
        store.put("j", b"w".to_vec(), Duration::from_secs(60)).await.unwrap();
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(store.take("j").await.unwrap(), Some(b"w".to_vec()));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(store.take("k").await.unwrap(), None);
    }
}
