//! A round suspended on client tools: what the store keeps, storing it when the
//! client's calls go out, and putting it back when the client returns with their
//! results.
//!
//! The stored value is versioned JSON: it crosses the store boundary (Redis, other
//! replicas, rolling upgrades), so its format is pinned by a test.

use serde::{Deserialize, Serialize};

use super::engine::{Engine, Handout, Shown, Step};
use super::events::{Event, Finished};
use super::{Agent, Error};
use crate::openai::{FinishReason, Message, Role, ToolCall};
use crate::upstream::Route;

/// Bump when the format changes incompatibly; older values are then ignored (the loop
/// continues with what the client sent, as when a round has expired).
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SuspendedRound {
    pub version: u32,
    /// The key that made it: another key's continuation never restores it.
    pub key_id: String,
    pub model: String,
    /// The round's assistant message with every tool call (server and client).
    pub assistant: Message,
    /// Results of the server calls that already ran.
    pub results: Vec<Message>,
    /// The client's calls, as the client saw them.
    pub client_call_ids: Vec<String>,
    /// Rounds used so far and where the chain walk stood.
    pub rounds: u32,
    pub route: Route,
}

/// The store key of a round, found again from the first client call id.
fn key(key_id: &str, first_client_call: &str) -> String {
    format!("round:{key_id}:{first_client_call}")
}

/// If `messages` end with an assistant tool-call message followed only by tool
/// results, the index of that assistant message and its call ids.
fn pending_results(messages: &[Message]) -> Option<(usize, Vec<String>)> {
    let last_assistant = messages.iter().rposition(|m| m.role == Role::Assistant)?;
    let calls = messages[last_assistant].tool_calls.as_ref().filter(|c| !c.is_empty())?;
    let trailing = &messages[last_assistant + 1..];
    if trailing.is_empty() || !trailing.iter().all(|m| m.role == Role::Tool) {
        return None;
    }
    Some((last_assistant, calls.iter().map(|c| c.id.clone()).collect()))
}

impl Agent {
    /// Puts a suspended round back into `messages`; returns its rounds and route.
    pub(super) async fn restore(
        &self,
        key_id: &str,
        messages: &mut Vec<Message>,
    ) -> Result<Option<(u32, Route)>, Error> {
        let Some((at, ids)) = pending_results(messages) else { return Ok(None) };
        let Some(first) = ids.first() else { return Ok(None) };
        let Some(bytes) = self.store.take(&key(key_id, first)).await? else {
            return Ok(None);
        };
        let round: SuspendedRound = match serde_json::from_slice(&bytes) {
            Ok(round) => round,
            Err(e) => {
                tracing::warn!(error = %e, "a suspended round could not be read; continuing with the client's messages");
                return Ok(None);
            }
        };
        if round.version != VERSION || round.key_id != key_id || round.client_call_ids != ids {
            return Ok(None);
        }
        let resumed = (round.rounds, round.route);
        tracing::info!(rounds = round.rounds, "resuming a round suspended on client tools");
        round.restore_into(messages, at);
        Ok(Some(resumed))
    }
}

impl Engine {
    /// Hands the client its calls; the rest of the round waits in the store.
    pub(super) async fn suspend(&mut self, handout: Handout) -> Step {
        let Handout { shown, mut message, results, client_calls, completion_rest, choice_rest } = handout;
        if let Err(error) = self.store_round(&message, &client_calls, results).await {
            return Step::Fail(error);
        }
        if self.request.stream && shown == Shown::Pending {
            let calls = client_calls
                .iter()
                .zip(0..)
                .map(|(call, index)| super::events::CallDelta {
                    index,
                    id: Some(call.id.clone()),
                    name: Some(call.function.name.clone()),
                    arguments: Some(call.function.arguments.clone()),
                })
                .collect();
            self.emit(Event::Delta(super::events::Delta { role: true, calls, ..super::events::Delta::default() }))
                .await;
        }
        self.emit(Event::Suspended { calls: client_calls.clone() }).await;
        message.tool_calls = Some(client_calls);
        Step::Answer(Box::new(Finished {
            message,
            finish_reason: FinishReason::ToolCalls,
            usage: self.progress.usage.take(),
            rounds: self.progress.rounds,
            ended_by: super::events::Ending::ClientTools,
            confirmation: None,
            answered_by: None,
            completion_rest,
            choice_rest,
            kept: None,
        }))
    }

    /// Stores the full round so the client's results can be joined to it later.
    pub(super) async fn store_round(
        &self,
        message: &Message,
        client_calls: &[ToolCall],
        results: Vec<Message>,
    ) -> Result<(), Error> {
        if results.is_empty() {
            // Nothing ran on our side: what the client holds is the whole round.
            return Ok(());
        }
        let client_call_ids: Vec<String> = client_calls.iter().map(|c| c.id.clone()).collect();
        let Some(first) = client_call_ids.first() else { return Ok(()) };
        let key_id = &self.caller.key_id;
        let store_key = key(key_id, first);
        let round = SuspendedRound {
            version: VERSION,
            key_id: key_id.clone(),
            model: self.model.name.clone(),
            assistant: message.clone(),
            results,
            client_call_ids,
            rounds: self.progress.rounds,
            route: self.progress.route,
        };
        let bytes = serde_json::to_vec(&round).map_err(|e| Error::Internal(format!("encoding a round: {e}")))?;
        Ok(self.agent.store.put_owned(key_id, &store_key, bytes, self.agent.settings.suspend_ttl).await?)
    }
}

impl SuspendedRound {
    /// Puts the full round back in place of the client's view of it: the assistant
    /// message with every call, then the server results, then the client's results.
    pub fn restore_into(self, messages: &mut Vec<Message>, at: usize) {
        messages[at] = self.assistant;
        let tail = messages.split_off(at + 1);
        messages.extend(self.results);
        messages.extend(tail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> SuspendedRound {
        SuspendedRound {
            version: VERSION,
            key_id: "0a1b2c3d4e5f6071".into(),
            model: "assistant".into(),
            assistant: serde_json::from_value(json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "up_1", "type": "function", "function": {"name": "current_time", "arguments": "{}"}},
                {"id": "call_c1", "type": "function", "function": {"name": "web_search", "arguments": "{\"q\":\"x\"}"}}
            ]}))
            .unwrap(),
            results: vec![
                serde_json::from_value(json!({"role": "tool", "tool_call_id": "up_1", "content": "noon"})).unwrap(),
            ],
            client_call_ids: vec!["call_c1".into()],
            rounds: 2,
            route: Route::default(),
        }
    }

    /// The serialised format is a contract with values already in stores: this test
    /// changing means a `VERSION` bump and a migration note.
    #[test]
    fn serialised_format_is_pinned() {
        let json = serde_json::to_value(sample()).unwrap();
        assert_eq!(
            json,
            json!({
                "version": 1, "key_id": "0a1b2c3d4e5f6071", "model": "assistant",
                "assistant": {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "up_1", "type": "function", "function": {"name": "current_time", "arguments": "{}"}},
                    {"id": "call_c1", "type": "function", "function": {"name": "web_search", "arguments": "{\"q\":\"x\"}"}}
                ]},
                "results": [{"role": "tool", "content": "noon", "tool_call_id": "up_1"}],
                "client_call_ids": ["call_c1"], "rounds": 2, "route": {"sticky": null}
            })
        );
        assert_eq!(serde_json::from_value::<SuspendedRound>(json).unwrap(), sample());
    }

    #[test]
    fn restores_the_full_round() {
        let mut messages: Vec<Message> = serde_json::from_value(json!([
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_c1", "type": "function", "function": {"name": "web_search", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_c1", "content": "results"}
        ]))
        .unwrap();
        let (at, ids) = pending_results(&messages).unwrap();
        assert_eq!((at, ids), (1, vec!["call_c1".to_owned()]));
        sample().restore_into(&mut messages, at);
        let ids: Vec<_> = messages.iter().map(|m| m.tool_call_id.clone().unwrap_or_default()).collect();
        assert_eq!(ids, ["", "", "up_1", "call_c1"]);
        assert_eq!(messages[1].tool_calls.as_ref().unwrap().len(), 2);
    }

    #[test]
    fn only_trailing_tool_results_count() {
        let plain: Vec<Message> = serde_json::from_value(json!([{"role": "user", "content": "hi"}])).unwrap();
        assert!(pending_results(&plain).is_none());
        let answered: Vec<Message> = serde_json::from_value(json!([
            {"role": "assistant", "content": null, "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "a", "content": "x"},
            {"role": "user", "content": "and now?"}
        ]))
        .unwrap();
        assert!(pending_results(&answered).is_none());
    }
}
