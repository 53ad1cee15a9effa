//! Stored responses: the `response` object and the conversation it ends, kept in the
//! configured store (memory or Redis) for `previous_response_id`, `GET` and `DELETE`.
//! A stored response belongs to the key that made it: to any other it does not exist.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::Caller;
use crate::openai::Message;
use crate::store::{Store, StoreError};

/// The format of a stored response; another version reads as missing.
const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
pub struct Stored {
    pub version: u32,
    /// The key (and forwarded person) that made it.
    pub key_id: String,
    /// The conversation up to and including this response's answer, without the
    /// request's instructions (each request brings its own).
    pub messages: Vec<Message>,
    pub response: Value,
}

impl Stored {
    pub fn new(caller: &Caller, messages: Vec<Message>, response: Value) -> Self {
        Self { version: VERSION, key_id: caller.key_id.clone(), messages, response }
    }
}

fn key(id: &str) -> String {
    format!("response:{id}")
}

/// The response `id` if it exists and belongs to `caller`.
pub async fn load(store: &Store, caller: &Caller, id: &str) -> Result<Option<Stored>, StoreError> {
    let Some(bytes) = store.get(&key(id)).await? else { return Ok(None) };
    match serde_json::from_slice::<Stored>(&bytes) {
        Ok(stored) if stored.version == VERSION && stored.key_id == caller.key_id => Ok(Some(stored)),
        Ok(_) => Ok(None),
        Err(error) => {
            tracing::warn!(%error, id, "a stored response could not be read; treating it as missing");
            Ok(None)
        }
    }
}

pub async fn save(store: &Store, stored: &Stored, ttl: Duration) -> Result<(), StoreError> {
    let id = stored.response.get("id").and_then(Value::as_str).unwrap_or_default();
    let bytes = serde_json::to_vec(stored).map_err(|e| StoreError::Unavailable(format!("encoding a response: {e}")))?;
    store.put(&key(id), bytes, ttl).await
}

/// Deletes the response `id` if it belongs to `caller`; whether it did.
pub async fn delete(store: &Store, caller: &Caller, id: &str) -> Result<bool, StoreError> {
    if load(store, caller, id).await?.is_none() {
        return Ok(false);
    }
    Ok(store.take(&key(id)).await?.is_some())
}
