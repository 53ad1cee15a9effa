//! The store's byte bounds: refused, never evicted.

use std::time::Duration;

use super::*;
use crate::config::StoreLimits;

const MB: usize = 1024 * 1024;

/// The case: 60 held confirmations of 8 MB each. Under a 64 MB cap the store
/// takes what fits, refuses the rest with a clear error, and never holds more.
#[tokio::test]
async fn sixty_8mb_checkpoints_stay_under_the_cap() {
    let limits = StoreLimits { max_entry_bytes: 9 * MB, max_bytes: 64 * MB, ..StoreLimits::default() };
    let memory = MemoryStore::with_limits(100_000, limits);
    let store = Store::Memory(memory.clone());
    let (mut stored, mut refused) = (Vec::new(), 0);
    for i in 0..60 {
        let key = format!("confirm:{i}");
        match store.put(&key, vec![b'x'; 8 * MB], Duration::from_secs(900)).await {
            Ok(()) => stored.push(key),
            Err(StoreError::Full(message)) => {
                assert!(message.contains("full") && message.contains("nothing was run"), "{message}");
                refused += 1;
            }
            Err(other) => panic!("unexpected error: {other}"),
        }
        assert!(memory.bytes_used() <= 64 * MB, "over the cap after {i}: {}", memory.bytes_used());
    }
    assert_eq!(stored.len(), 7, "64 MB holds seven 8 MB entries");
    assert_eq!(refused, 53);
    // Nothing held was evicted to make room: every stored checkpoint is still there.
    for key in &stored {
        assert!(store.get(key).await.unwrap().is_some(), "{key} was evicted");
    }
    // Taking one frees its room for the next.
    assert!(store.take(&stored[0]).await.unwrap().is_some());
    store.put("confirm:new", vec![b'y'; 8 * MB], Duration::from_secs(900)).await.unwrap();
}

#[tokio::test]
async fn an_entry_over_the_per_entry_cap_is_refused() {
    let limits = StoreLimits { max_entry_bytes: 1024 * 1024, max_bytes: 64 * MB, ..StoreLimits::default() };
    let store = Store::Memory(MemoryStore::with_limits(100, limits));
    let err = store.put("k", vec![0; 2 * MB], Duration::from_secs(60)).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Full(m) if m.contains("too large") && m.contains("store.max_entry_bytes")),
        "{err}"
    );
    assert_eq!(store.get("k").await.unwrap(), None);
}

#[tokio::test]
async fn the_entry_count_is_a_bound_too_and_replacing_a_key_is_not_growth() {
    let store = MemoryStore::with_limits(2, StoreLimits::default());
    let wrapped = Store::Memory(store.clone());
    wrapped.put("a", vec![1; 100], Duration::from_secs(60)).await.unwrap();
    wrapped.put("b", vec![1; 100], Duration::from_secs(60)).await.unwrap();
    assert!(matches!(wrapped.put("c", vec![1; 100], Duration::from_secs(60)).await, Err(StoreError::Full(_))));
    // Replacing an entry releases the old value's bytes.
    for _ in 0..10 {
        wrapped.put("a", vec![2; 100], Duration::from_secs(60)).await.unwrap();
        store.collect().await;
    }
    assert_eq!(wrapped.get("a").await.unwrap(), Some(vec![2; 100]));
    assert_eq!(store.bytes_used(), 2 * 101);
}

/// Real time: moka frees expired entries by its own clock, not tokio's.
#[tokio::test]
async fn expired_entries_make_room() {
    let limits = StoreLimits { max_entry_bytes: 2 * MB, max_bytes: 2 * MB, max_bytes_per_key: 2 * MB };
    let store = Store::Memory(MemoryStore::with_limits(100, limits));
    store.put("old", vec![0; 3 * MB / 2], Duration::from_millis(50)).await.unwrap();
    assert!(matches!(store.put("new", vec![0; MB], Duration::from_secs(10)).await, Err(StoreError::Full(_))));
    // moka's timer wheel frees an expired entry within about a second.
    let mut made_room = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if store.put("new", vec![0; MB], Duration::from_secs(10)).await.is_ok() {
            made_room = true;
            break;
        }
    }
    assert!(made_room, "the expired entry never made room");
}

/// One key fills its share: it is refused with a message naming the per-key bound,
/// every entry it holds stays, another key still stores, and taking one of the
/// first key's entries gives it room again.
#[tokio::test]
async fn one_key_cannot_fill_the_store_for_everyone() {
    let limits = StoreLimits { max_entry_bytes: 4 * MB, max_bytes: 64 * MB, max_bytes_per_key: 10 * MB };
    let memory = MemoryStore::with_limits(100_000, limits);
    let store = Store::Memory(memory.clone());
    let ttl = Duration::from_secs(900);
    let (mut stored, mut refused) = (Vec::new(), Vec::new());
    for i in 0..6 {
        let key = format!("confirm:a{i}");
        match store.put_owned("key-a", &key, vec![b'a'; 3 * MB], ttl).await {
            Ok(()) => stored.push(key),
            Err(StoreError::Full(message)) => refused.push(message),
            Err(other) => panic!("unexpected error: {other}"),
        }
        assert!(memory.bytes_of("key-a") <= 10 * MB, "over the share after {i}");
    }
    assert_eq!(stored.len(), 3, "10 MB holds three 3 MB entries");
    assert_eq!(refused.len(), 3);
    assert!(refused[0].contains("store.max_bytes_per_key") && refused[0].contains("nothing was run"), "{}", refused[0]);
    store.put_owned("key-b", "confirm:b", vec![b'b'; 3 * MB], ttl).await.unwrap();
    for key in &stored {
        assert!(store.get(key).await.unwrap().is_some(), "{key} was evicted");
    }
    assert!(store.take(&stored[0]).await.unwrap().is_some());
    memory.collect().await;
    store.put_owned("key-a", "confirm:a-next", vec![b'a'; 3 * MB], ttl).await.unwrap();
    // Unowned entries (summaries, small markers) count toward the total only.
    store.put("summary:x", vec![0; 3 * MB], ttl).await.unwrap();
    assert_eq!(memory.bytes_of("key-a"), 9 * MB + "confirm:a1confirm:a2confirm:a-next".len());
}
