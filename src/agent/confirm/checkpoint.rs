//! A loop paused at the confirmation gate, as the store keeps it, and what remains
//! known of it once it is gone.
//!
//! The checkpoint is versioned JSON: it crosses the store boundary (Redis, other
//! replicas, rolling upgrades), so its format is pinned by a test.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::openai::{Message, ToolCall, ToolDef};
use crate::upstream::Route;

/// Bump when the format changes incompatibly; a checkpoint of another version is
/// treated like an expired one (nothing runs, the user is told).
pub const VERSION: u32 = 1;

/// A loop paused at the confirmation gate: everything needed to continue exactly
/// where it stopped, on any replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    pub id: String,
    /// The key that made it: another key's reply never resumes it.
    pub key_id: String,
    pub user: String,
    pub model: String,
    /// Unix seconds.
    pub created_at: i64,
    pub expires_at: i64,
    /// The conversation before the paused round, as sent upstream (overlay included).
    pub messages: Vec<Message>,
    /// The round's assistant message with every tool call.
    pub assistant: Message,
    /// Results of the round's calls that ran before the pause.
    pub results: Vec<Message>,
    /// The calls waiting for the human.
    pub held: Vec<ToolCall>,
    /// Rounds used so far and where the chain walk stood.
    pub rounds: u32,
    pub route: Route,
    pub request: RequestParams,
}

/// The parts of the client's request the resumed loop keeps using.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestParams {
    pub client_tools: Vec<ToolDef>,
    pub tool_choice: Option<Value>,
    /// Every pass-through field (temperature, max_tokens, …).
    pub rest: Map<String, Value>,
}

/// The store key of a checkpoint. Not bound to the key id: another key's reply must
/// find it, to be told apart from an expired one, and leave it in place.
pub fn store_key(id: &str) -> String {
    format!("confirm:{id}")
}

/// Where a checkpoint's `Trace` lives (outliving the checkpoint itself).
pub fn trace_key(id: &str) -> String {
    format!("confirm-trace:{id}")
}

/// What remains known of a checkpoint after it is gone, so a late or replayed reply
/// is told what happened instead of a guess. Holds no arguments or messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    pub key_id: String,
    pub tools: Vec<String>,
    pub state: TraceState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceState {
    /// Waiting for the human (or silently expired).
    Open,
    /// Answered by an older release, which did not record how.
    Answered,
    /// The human said yes: the held calls ran.
    Approved,
    /// The human said no (or something else): the held calls never ran.
    Denied,
    /// A newer question for the same calls of the same conversation took its place.
    Superseded,
    /// A reply found it expired; counted once.
    Expired,
}

impl TraceState {
    /// Whether the held calls ran (as far as is known).
    pub fn ran(self) -> bool {
        matches!(self, Self::Approved | Self::Answered)
    }
}

/// How long a trace outlives its checkpoint.
pub const TRACE_GRACE: Duration = Duration::from_secs(24 * 3600);

/// What the user is told when a "yes" finds no checkpoint to resume.
pub fn gone_text(state: Option<TraceState>) -> &'static str {
    match state {
        Some(TraceState::Answered | TraceState::Approved | TraceState::Denied) => {
            "This confirmation was already answered, so nothing was run again. \
             If you want the action performed once more, ask me again."
        }
        Some(TraceState::Superseded) => {
            "A newer question replaced this one, so nothing was run for it. \
             Answer the latest question, or ask me again."
        }
        _ => {
            "This approval has expired (or is no longer valid), so nothing was run. \
             If you still want the action performed, ask me again and confirm when I ask."
        }
    }
}

/// What the model is told when a reply (not a yes) answers a question that is gone:
/// what became of the action, so its answer is true.
pub fn fate_note(state: Option<TraceState>, tools: &[String]) -> String {
    let names = tools.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", ");
    if state.is_some_and(TraceState::ran) {
        format!(
            "[Note from lariat: the action the user's last message replies to ({names}) was already approved \
             and run earlier; this reply does not undo it. Do not say it was cancelled.]"
        )
    } else {
        format!(
            "[Note from lariat: the action the user's last message replies to ({names}) was never run (its \
             confirmation was declined, replaced by a newer question, or expired). Do not say it was done.]"
        )
    }
}

/// Where the newest question for one set of held calls in one conversation is
/// recorded: a newer one supersedes the older (chat UIs regenerate and branch).
pub fn latest_key(key_id: &str, fingerprint: &str) -> String {
    format!("confirm-latest:{key_id}:{fingerprint}")
}

/// 128 random bits from the thread's CSPRNG, as 32 hex digits.
pub fn new_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Checkpoint {
        Checkpoint {
            version: VERSION,
            id: "0123456789abcdef0123456789abcdef".into(),
            key_id: "0a1b2c3d4e5f6071".into(),
            user: "alice".into(),
            model: "assistant".into(),
            created_at: 1_800_000_000,
            expires_at: 1_800_000_900,
            messages: serde_json::from_value(json!([{"role": "user", "content": "fetch x.test"}])).unwrap(),
            assistant: serde_json::from_value(json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "up_1", "type": "function", "function": {"name": "current_time", "arguments": "{}"}},
                {"id": "up_2", "type": "function", "function": {"name": "fetch_url", "arguments": "{\"url\":\"https://x.test\"}"}}
            ]}))
            .unwrap(),
            results: serde_json::from_value(json!([{"role": "tool", "tool_call_id": "up_1", "content": "noon"}]))
                .unwrap(),
            held: serde_json::from_value(json!([
                {"id": "up_2", "type": "function", "function": {"name": "fetch_url", "arguments": "{\"url\":\"https://x.test\"}"}}
            ]))
            .unwrap(),
            rounds: 1,
            route: Route::default(),
            request: RequestParams {
                client_tools: Vec::new(),
                tool_choice: Some(json!("auto")),
                rest: serde_json::from_value(json!({"temperature": 0.2})).unwrap(),
            },
        }
    }

    /// The serialised format is a contract with checkpoints already in stores (a
    /// rolling upgrade must not strand approvals): this test changing means a
    /// `VERSION` bump and a migration note.
    #[test]
    fn serialised_format_is_pinned() {
        let pinned = json!({
            "version": 1, "id": "0123456789abcdef0123456789abcdef", "key_id": "0a1b2c3d4e5f6071",
            "user": "alice", "model": "assistant", "created_at": 1_800_000_000, "expires_at": 1_800_000_900,
            "messages": [{"role": "user", "content": "fetch x.test"}],
            "assistant": {"role": "assistant", "content": null, "tool_calls": [
                {"id": "up_1", "type": "function", "function": {"name": "current_time", "arguments": "{}"}},
                {"id": "up_2", "type": "function", "function": {"name": "fetch_url", "arguments": "{\"url\":\"https://x.test\"}"}}
            ]},
            "results": [{"role": "tool", "content": "noon", "tool_call_id": "up_1"}],
            "held": [{"id": "up_2", "type": "function", "function": {"name": "fetch_url", "arguments": "{\"url\":\"https://x.test\"}"}}],
            "rounds": 1, "route": {"sticky": null},
            "request": {"client_tools": [], "tool_choice": "auto", "rest": {"temperature": 0.2}}
        });
        assert_eq!(serde_json::to_value(sample()).unwrap(), pinned);
        // What an older replica wrote must still read.
        assert_eq!(serde_json::from_value::<Checkpoint>(pinned).unwrap(), sample());
    }
}
