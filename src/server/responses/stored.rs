//! Stored responses: the `response` object and the conversation it ends, kept in the
//! configured store (memory or Redis) for `previous_response_id`, `GET` and `DELETE`.
//! A stored response belongs to the key that made it: to any other it does not exist.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::input::APPROVAL_PREFIX;
use super::output;
use crate::auth::Caller;
use crate::error::ApiError;
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

pub async fn save(store: &Store, id: &str, stored: &Stored, ttl: Duration) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(stored).map_err(|e| StoreError::Unavailable(format!("encoding a response: {e}")))?;
    // A share of their own per key: one key's stored responses can fill neither the
    // store for everyone nor its own share for the confirmations it must still answer.
    store.put_owned(&format!("responses:{}", stored.key_id), &key(id), bytes, ttl).await
}

/// Replaces each `item_reference` to an output item of one of `caller`'s stored
/// responses by that item (clients that keep responses send references instead of
/// repeating them). References to lariat's progress and approval items stay: they
/// carry nothing the conversation needs.
pub async fn resolve_references(store: &Store, caller: &Caller, items: &mut [Value]) -> Result<(), ApiError> {
    let mut loaded: Vec<(String, Option<Value>)> = Vec::new();
    for (i, item) in items.iter_mut().enumerate() {
        if item.get("type").and_then(Value::as_str) != Some("item_reference") {
            continue;
        }
        let id = item.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
        if id.starts_with("rs_") || id.starts_with(APPROVAL_PREFIX) {
            continue;
        }
        let param = format!("input[{i}].id");
        let missing =
            || ApiError::bad_request(format!("`{id}` is no output item of a stored response of yours"), Some(&param));
        let response_id = output::response_of(&id).ok_or_else(missing)?;
        if !loaded.iter().any(|(r, _)| *r == response_id) {
            let response = load(store, caller, &response_id).await?.map(|s| s.response);
            loaded.push((response_id.clone(), response));
        }
        let found = loaded
            .iter()
            .find(|(r, _)| *r == response_id)
            .and_then(|(_, response)| response.as_ref())
            .and_then(|response| response["output"].as_array()?.iter().find(|o| o["id"] == id.as_str()).cloned());
        *item = found.ok_or_else(missing)?;
    }
    Ok(())
}

/// Deletes the response `id` if it belongs to `caller`; whether it did.
pub async fn delete(store: &Store, caller: &Caller, id: &str) -> Result<bool, StoreError> {
    if load(store, caller, id).await?.is_none() {
        return Ok(false);
    }
    Ok(store.take(&key(id)).await?.is_some())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The stored form is read by other replicas and the next release: its shape is pinned.
    #[test]
    fn the_stored_form_is_pinned() {
        let stored = Stored {
            version: VERSION,
            key_id: "k".into(),
            messages: vec![Message::new(crate::openai::Role::User, "hi")],
            response: json!({"id": "resp_1"}),
        };
        let form = json!({"version": 1, "key_id": "k", "messages": [{"role": "user", "content": "hi"}],
                          "response": {"id": "resp_1"}});
        assert_eq!(serde_json::to_value(&stored).unwrap(), form);
        let back: Stored = serde_json::from_value(form).unwrap();
        assert_eq!((back.key_id.as_str(), back.messages.len()), ("k", 1));
    }
}
