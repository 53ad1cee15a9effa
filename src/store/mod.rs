//! Where suspended loops wait (client-tool rounds, confirmation checkpoints), and
//! where replicas share summaries of dropped turns.
//!
//! Values are opaque bytes (the callers serialise versioned types), so every backend
//! stores the same thing and a value written by one replica reads on another.
//! `take` is atomic: a value is handed out at most once.

mod memory;
mod redis;
#[cfg(test)]
mod tests_limits;

use std::time::Duration;

pub use self::memory::MemoryStore;
pub use self::redis::RedisStore;
use crate::config;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached or refused the command. The one error a request
    /// can meet (callers answer 503). The message is a whole sentence naming the server
    /// by host:port only ("the Redis store at 10.0.0.5:6379 is unreachable: ...").
    #[error("{0}")]
    Unavailable(String),
    /// The configuration cannot make a store (an unusable URL). Only `from_config`
    /// returns it, at start-up or in `lariat check`.
    #[error("the suspension store cannot be built: {0}")]
    Config(String),
    /// The value would break the store's byte bounds (too large on its own, or no
    /// room left). Nothing was stored and nothing was evicted to make room: the
    /// message is a whole sentence a client may be shown.
    #[error("{0}")]
    Full(String),
}

/// Refuses a value larger than one entry may be.
fn check_entry(size: usize, limits: config::StoreLimits) -> Result<(), StoreError> {
    if size > limits.max_entry_bytes {
        return Err(StoreError::Full(format!(
            "this conversation is too large to pause ({} bytes; the store takes at most {} bytes per entry, \
             `store.max_entry_bytes`), so nothing was run",
            size, limits.max_entry_bytes
        )));
    }
    Ok(())
}

/// Refuses a value that would take `owner` past its per-key bound; `used` is what
/// its live entries hold.
fn key_full(used: usize, limits: config::StoreLimits) -> StoreError {
    tracing::warn!(
        used_bytes = used,
        max_bytes_per_key = limits.max_bytes_per_key,
        "a client key's share of the store is full; refusing a new entry (raise store.max_bytes_per_key)"
    );
    StoreError::Full(format!(
        "too many of your conversations are waiting for an answer (they hold {used} bytes; one client key may \
         hold at most {} bytes, `store.max_bytes_per_key`), so this request cannot wait for one; nothing was run. \
         Answer or abandon a waiting question, or try again later.",
        limits.max_bytes_per_key
    ))
}

/// The configured backend. A closed enum rather than a trait object: the set of
/// backends is ours, and async trait objects would cost a box per call.
#[derive(Debug, Clone)]
pub enum Store {
    Memory(MemoryStore),
    Redis(RedisStore),
}

/// What `lariat check` and logs call it: `memory`, or `redis at host:port`.
impl std::fmt::Display for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Memory(_) => f.write_str("memory"),
            Self::Redis(r) => write!(f, "redis at {}", r.address()),
        }
    }
}

impl Store {
    /// Builds the backend without connecting: lariat starts while Redis is down, and
    /// requests that need the store fail with `Unavailable` until it is back.
    pub fn from_config(config: &config::Store) -> Result<Self, StoreError> {
        match config {
            config::Store::Memory { capacity } => Ok(Self::Memory(MemoryStore::new(*capacity))),
            config::Store::Redis { url, prefix } => Ok(Self::Redis(RedisStore::new(url, prefix)?)),
        }
    }

    /// The same backend, bounded by `limits` (the defaults apply until this is called).
    pub fn with_limits(self, limits: config::StoreLimits) -> Self {
        match self {
            Self::Memory(m) => Self::Memory(m.limited(limits)),
            Self::Redis(r) => Self::Redis(r.with_limits(limits)),
        }
    }

    /// The backend's name as configured (`kind = "..."`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Memory(_) => "memory",
            Self::Redis(_) => "redis",
        }
    }

    /// Checks that the backend answers (`lariat check`, diagnostics).
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Self::Memory(_) => Ok(()),
            Self::Redis(r) => r.ping().await,
        }
    }

    /// Stores `value` under `key` for `ttl`, replacing any previous value. A value
    /// over the store's bounds is refused (`Full`); nothing else is evicted for it.
    pub async fn put(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), StoreError> {
        match self {
            Self::Memory(m) => m.put(None, key, value, ttl).await,
            Self::Redis(r) => r.put(key, value, ttl).await,
        }
    }

    /// [`Store::put`] of a value that counts toward `owner`'s share
    /// (`store.max_bytes_per_key`): a client key's paused conversations, so one key
    /// cannot fill the store for everyone. Over its share, `Full`; nothing of anyone's
    /// is evicted.
    pub async fn put_owned(&self, owner: &str, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), StoreError> {
        match self {
            Self::Memory(m) => m.put(Some(owner), key, value, ttl).await,
            Self::Redis(r) => r.put_owned(owner, key, value, ttl).await,
        }
    }

    /// Removes and returns the value under `key`, if it exists and has not expired.
    /// Of concurrent takes of one key, at most one gets the value.
    pub async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.take(key).await),
            Self::Redis(r) => r.take(key).await,
        }
    }

    /// Returns the value under `key` without consuming it (for small markers such as
    /// "already answered", which every later request may read).
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.get(key).await),
            Self::Redis(r) => r.get(key).await,
        }
    }

    /// [`Store::get`] of many keys in one round trip, in order.
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        match self {
            Self::Memory(m) => Ok(futures::future::join_all(keys.iter().map(|key| m.get(key))).await),
            Self::Redis(r) => r.get_many(keys).await,
        }
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
        assert_eq!(store.get("j").await.unwrap(), Some(b"w".to_vec()));
        assert_eq!(store.take("j").await.unwrap(), Some(b"w".to_vec()));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(store.get("k").await.unwrap(), None);
        assert_eq!(store.take("k").await.unwrap(), None);
    }

    #[tokio::test]
    async fn get_does_not_consume() {
        let store = Store::Memory(MemoryStore::new(100));
        store.put("k", b"v".to_vec(), Duration::from_secs(60)).await.unwrap();
        assert_eq!(store.get("k").await.unwrap(), Some(b"v".to_vec()));
        assert_eq!(store.get("k").await.unwrap(), Some(b"v".to_vec()));
        assert_eq!(store.take("k").await.unwrap(), Some(b"v".to_vec()));
        assert_eq!(store.get("k").await.unwrap(), None);
    }

    #[tokio::test]
    async fn redis_is_built_without_connecting() {
        // Nothing listens on port 1: building succeeds; using it fails clearly, fast.
        let url = secrecy::SecretString::from("redis://:hunter2@127.0.0.1:1");
        let store = Store::from_config(&config::Store::Redis { url, prefix: "lariat:".into() }).unwrap();
        assert_eq!(store.kind(), "redis");
        let err = store.get("k").await.unwrap_err().to_string();
        assert!(err.contains("127.0.0.1:1 is unreachable: connection refused"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
