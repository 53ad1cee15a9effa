//! The confirmation gate's store side: a round with held calls becomes a checkpoint
//! in the store and a question to the human; the human's reply takes it out (once),
//! and a reply that finds nothing is told what happened.

use serde_json::Map;

use super::confirm::{self, Checkpoint, RequestParams, Structured, Trace, TraceState, Verdict};
use super::engine::{Engine, Offer, Step, Voice};
use super::events::{Confirmation, Ending, Event, Finished};
use super::{Agent, Error};
use crate::auth::Caller;
use crate::openai::{Content, Message, ToolCall};

/// A checkpoint taken out of the store with the human's answer to it.
pub struct Resume {
    pub checkpoint: Checkpoint,
    pub verdict: Verdict,
    /// Appended after the round's results when the user said something else: the
    /// question as the client showed it, and the user's message.
    pub followup: Vec<Message>,
}

/// How a request that answers a question begins.
pub enum Opening {
    /// Where the loop starts.
    Step(Step),
    /// An ordinary request, but the model must first learn what became of the action
    /// the user replies to (this note joins the system message).
    Note(String),
}

/// The human's reply a request carries, typed or structured.
struct HumanReply {
    id: String,
    verdict: Verdict,
    followup: Vec<Message>,
}

impl Engine {
    /// Stores the round as a checkpoint; the held calls wait for the human.
    pub(super) async fn pause(
        &self,
        assistant: Message,
        results: Vec<Message>,
        held: Vec<ToolCall>,
    ) -> Result<Checkpoint, Error> {
        let agent = &self.agent;
        let ttl = agent.settings.gate.ttl;
        // Shown to people; whether it expired is the store's TTL (tokio's clock) alone.
        let now = crate::clock::unix_now();
        let checkpoint = Checkpoint {
            version: confirm::VERSION,
            id: confirm::new_id(),
            key_id: self.caller.key_id.clone(),
            user: self.caller.user.clone(),
            model: self.model.name.clone(),
            created_at: now,
            expires_at: now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
            messages: self.messages.clone(),
            assistant,
            results,
            held,
            rounds: self.progress.rounds,
            route: self.progress.route,
            request: RequestParams {
                client_tools: self.request.client_defs.clone(),
                tool_choice: self.request.tool_choice.clone(),
                rest: self.request.rest.clone(),
            },
        };
        let bytes =
            serde_json::to_vec(&checkpoint).map_err(|e| Error::Internal(format!("encoding a checkpoint: {e}")))?;
        let tools = tool_names(&checkpoint.held);
        let trace = Trace { key_id: checkpoint.key_id.clone(), tools: tools.clone(), state: TraceState::Open };
        agent.put_trace(&checkpoint.id, &trace).await?;
        agent.store.put_owned(&checkpoint.key_id, &confirm::store_key(&checkpoint.id), bytes, ttl).await?;
        self.supersede(&checkpoint).await?;
        for (call, tool) in checkpoint.held.iter().zip(&tools) {
            agent.metrics.record_confirmation(tool, "created");
            let arguments = if self.off_record { "[off the record]" } else { call.function.arguments.as_str() };
            tracing::info!(
                target: "lariat::audit", event = "confirmation", outcome = "created", id = %checkpoint.id,
                user = %self.caller.user, model = %self.model.name, tool, arguments, expires_at = checkpoint.expires_at,
                "tool call held for confirmation"
            );
        }
        Ok(checkpoint)
    }

    /// Makes `checkpoint` the only live question for its held calls in this
    /// conversation: a chat UI that regenerates (or edits an earlier message) asks
    /// again, and the older question must not run the same action a second time.
    async fn supersede(&self, checkpoint: &Checkpoint) -> Result<(), Error> {
        let store = &self.agent.store;
        let conversation = self.caller.conversation.as_deref();
        let latest = confirm::latest_key(&checkpoint.key_id, &fingerprint(checkpoint, conversation));
        let older = store.take(&latest).await?;
        store.put(&latest, checkpoint.id.clone().into_bytes(), self.agent.settings.gate.ttl).await?;
        let Some(older) = older.and_then(|b| String::from_utf8(b).ok()).filter(|o| *o != checkpoint.id) else {
            return Ok(());
        };
        if store.take(&confirm::store_key(&older)).await?.is_some() {
            let trace = Trace {
                key_id: checkpoint.key_id.clone(),
                tools: tool_names(&checkpoint.held),
                state: TraceState::Superseded,
            };
            self.agent.put_trace(&older, &trace).await?;
            tracing::info!(
                target: "lariat::audit", event = "confirmation", outcome = "superseded", id = %older, by = %checkpoint.id,
                user = %self.caller.user, "a newer question for the same action replaced this one"
            );
        }
        Ok(())
    }

    /// Asks the human: the model phrases the question (seeing placeholders for the
    /// held calls, and told to call nothing), then the footer with the marker. If
    /// the model cannot be reached a template stands in: the question is asked either
    /// way, since the checkpoint is already stored.
    pub(super) async fn ask(&mut self, checkpoint: Checkpoint) -> Step {
        let depth = self.messages.len();
        let placeholders = checkpoint.held.iter().map(|c| Message::tool_result(&c.id, confirm::PLACEHOLDER.into()));
        let results = checkpoint.results.iter().cloned().chain(placeholders).collect();
        self.append_round(checkpoint.assistant.clone(), results);
        let mut words = String::new();
        let (mut completion_rest, mut choice_rest) = (Map::new(), Map::new());
        match self.upstream(Offer::WordsOnly).await {
            Ok((reply, target, _)) => {
                let (round, cut) = self.relay(reply, &target, Voice::Question).await;
                if let Some(error) = cut {
                    tracing::warn!(%error, "the confirmation question was cut short; adding the footer to what arrived");
                }
                if let Content::Text(text) = round.message.content {
                    words = text;
                }
                (completion_rest, choice_rest) = (round.completion_rest, round.choice_rest);
            }
            Err(error) => {
                tracing::warn!(%error, "the upstream could not phrase the confirmation question; using the template");
            }
        }
        self.messages.truncate(depth);
        let mut visible = String::new();
        if words.trim().is_empty() {
            words = confirm::template(&checkpoint.held);
            visible = if self.progress.text_shown { format!("\n\n{words}") } else { words.clone() };
        }
        let footer = confirm::footer(&checkpoint.held, &checkpoint.id, self.agent.settings.gate.ttl);
        visible.push_str(&footer);
        let confirmation = Confirmation {
            id: checkpoint.id.clone(),
            held: checkpoint.held.iter().map(|c| c.function.clone()).collect(),
            expires_at: checkpoint.expires_at,
        };
        self.emit(Event::ConfirmationAsked { text: visible, confirmation: confirmation.clone() }).await;
        Step::Answer(Box::new(Finished {
            message: Message::assistant((words + &footer).into(), Vec::new()),
            finish_reason: crate::openai::FinishReason::Stop,
            usage: self.progress.usage.take(),
            rounds: self.progress.rounds,
            ended_by: Ending::Confirmation,
            confirmation: Some(confirmation),
            answered_by: None,
            completion_rest,
            choice_rest,
            kept: None,
        }))
    }
}

impl Agent {
    /// If the request answers a confirmation question: how the loop starts — resumed
    /// from the checkpoint, or with a message saying why nothing runs. `None` means
    /// an ordinary request (no marker, another key's checkpoint, another model's, or
    /// a "no" to a question that is gone).
    pub(super) async fn reopen(
        &self,
        caller: &Caller,
        model: &str,
        structured: Option<Structured>,
        messages: &[Message],
    ) -> Result<Option<Opening>, Error> {
        // A structured answer is an answer even when the history ends with the question.
        if structured.is_none()
            && let Some(question) = self.continued_question(caller, messages).await?
        {
            return Ok(Some(Opening::Step(Step::Say(question))));
        }
        let Some(HumanReply { id, verdict, followup }) = self.human_reply(structured, messages) else {
            return Ok(None);
        };
        let key = confirm::store_key(&id);
        let Some(bytes) = self.store.get(&key).await? else {
            return self.gone(caller, &id, verdict).await;
        };
        let checkpoint = match serde_json::from_slice::<Checkpoint>(&bytes) {
            Ok(c) if c.version == confirm::VERSION => c,
            Ok(c) => {
                tracing::warn!(version = c.version, "a checkpoint of another format version; treating it as expired");
                return self.gone(caller, &id, verdict).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "a checkpoint could not be read; treating it as expired");
                return self.gone(caller, &id, verdict).await;
            }
        };
        if checkpoint.key_id != caller.key_id {
            // Never resumable by another key; it stays for its owner.
            tracing::warn!(
                target: "lariat::audit", event = "confirmation", outcome = "foreign_key", id = %id, user = %caller.user,
                owner = %checkpoint.user, "a reply to another key's confirmation was treated as an ordinary message"
            );
            return Ok(None);
        }
        if checkpoint.model != model {
            tracing::info!(id = %id, asked = model, paused = %checkpoint.model, "a reply through another model");
            if verdict == Verdict::Other {
                return Ok(None);
            }
            let note = format!(
                "This action is waiting for your answer in the model `{}`; switch back to it to answer. Nothing was run.",
                checkpoint.model
            );
            return Ok(Some(Opening::Step(Step::Say(note))));
        }
        // Consume: of two concurrent replies exactly one gets it.
        let Some(bytes) = self.store.take(&key).await? else {
            return self.gone(caller, &id, verdict).await;
        };
        let checkpoint: Checkpoint = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Internal(format!("a checkpoint changed while it was read: {e}")))?;
        let tools = tool_names(&checkpoint.held);
        let state = if verdict == Verdict::Approve { TraceState::Approved } else { TraceState::Denied };
        let trace = Trace { key_id: checkpoint.key_id.clone(), tools: tools.clone(), state };
        // The checkpoint is ours now: losing the trace only makes a later replay read
        // "expired" instead of "already answered", so it must not fail the resume.
        if let Err(error) = self.put_trace(&id, &trace).await {
            tracing::warn!(%error, id = %id, "could not mark the confirmation answered");
        }
        for tool in &tools {
            self.metrics.record_confirmation(tool, verdict.event());
            tracing::info!(
                target: "lariat::audit", event = "confirmation", outcome = verdict.event(), id = %id,
                user = %caller.user, model, tool, reply = ?verdict, "confirmation answered"
            );
        }
        Ok(Some(Opening::Step(Step::Resume(Box::new(Resume { checkpoint, verdict, followup })))))
    }

    /// "Continue" on a question (the history ends with it, still open): the question
    /// again, with no new checkpoint.
    async fn continued_question(&self, caller: &Caller, messages: &[Message]) -> Result<Option<String>, Error> {
        let Some(last) = messages.last().filter(|m| m.role == crate::openai::Role::Assistant) else { return Ok(None) };
        let text = last.content.text();
        let Some(id) = confirm::find_marker(&text) else { return Ok(None) };
        let Some(bytes) = self.store.get(&confirm::store_key(id)).await? else { return Ok(None) };
        let owned = serde_json::from_slice::<Checkpoint>(&bytes).is_ok_and(|c| c.key_id == caller.key_id);
        Ok(owned.then(|| text.into_owned()))
    }

    /// The reply in this request, if it answers a question: the structured field wins
    /// over a typed reply.
    fn human_reply(&self, structured: Option<Structured>, messages: &[Message]) -> Option<HumanReply> {
        if let Some(s) = structured {
            let verdict = if s.approve { Verdict::Approve } else { Verdict::Deny };
            return Some(HumanReply { id: s.id, verdict, followup: Vec::new() });
        }
        let typed = confirm::find_reply(messages)?;
        let verdict = self.settings.gate.verdict(&typed.text);
        let followup = if verdict == Verdict::Other {
            let question = Message::assistant(typed.question.content.clone(), Vec::new());
            let user = messages.last().cloned().into_iter();
            std::iter::once(question).chain(user).collect()
        } else {
            Vec::new()
        };
        Some(HumanReply { id: typed.id, verdict, followup })
    }

    /// A reply whose checkpoint is gone (answered, expired, unknown). A "yes" is told
    /// so in a plain assistant message; anything else is an ordinary message.
    async fn gone(&self, caller: &Caller, id: &str, verdict: Verdict) -> Result<Option<Opening>, Error> {
        let key = confirm::trace_key(id);
        let trace = self.store.get(&key).await?.and_then(|b| serde_json::from_slice::<Trace>(&b).ok());
        let trace = trace.filter(|t| t.key_id == caller.key_id);
        let state = trace.as_ref().map(|t| t.state);
        if verdict != Verdict::Approve {
            // A "no" (or an edit) to a question already settled: the model learns what
            // really happened, so it does not tell the user a ran action was cancelled.
            let Some(trace) = trace else { return Ok(None) };
            tracing::info!(id, user = %caller.user, ?state, "a reply to a settled question; the model is told its fate");
            return Ok(Some(Opening::Note(confirm::fate_note(state, &trace.tools))));
        }
        if let Some(mut trace) = trace.filter(|t| t.state == TraceState::Open) {
            // First late reply to a checkpoint that timed out: count it expired, once.
            for tool in &trace.tools {
                self.metrics.record_confirmation(tool, "expired");
                tracing::info!(target: "lariat::audit", event = "confirmation", outcome = "expired", id, user = %caller.user, tool, "confirmation expired");
            }
            trace.state = TraceState::Expired;
            self.put_trace(id, &trace).await?;
        } else {
            tracing::info!(id, user = %caller.user, ?state, "a yes found no checkpoint to resume");
        }
        Ok(Some(Opening::Step(Step::Say(confirm::gone_text(state).to_owned()))))
    }

    async fn put_trace(&self, id: &str, trace: &Trace) -> Result<(), Error> {
        let bytes = serde_json::to_vec(trace).map_err(|e| Error::Internal(format!("encoding a trace: {e}")))?;
        let ttl = self.settings.gate.ttl + confirm::TRACE_GRACE;
        Ok(self.store.put(&confirm::trace_key(id), bytes, ttl).await?)
    }
}

/// Which conversation's question this is, for the same held calls: the frontend's
/// chat id where it names one (every branch of a chat — regenerated, edited — is
/// that chat; two chats with the same words are two), else the conversation before
/// the round (without the leading instructions, which carry the time of day), the
/// same for a regenerated question.
fn fingerprint(checkpoint: &Checkpoint, conversation: Option<&str>) -> String {
    use sha2::{Digest, Sha256};
    let messages = &checkpoint.messages;
    let skip = match conversation {
        Some(_) => messages.len(),
        None => usize::from(
            messages
                .first()
                .is_some_and(|m| matches!(m.role, crate::openai::Role::System | crate::openai::Role::Developer)),
        ),
    };
    let mut hash = Sha256::new();
    hash.update(checkpoint.model.as_bytes());
    if let Some(chat) = conversation {
        // Length-prefixed, so no chat id can read as the start of a message list.
        hash.update(b"\0chat\0");
        hash.update(chat.len().to_le_bytes());
        hash.update(chat.as_bytes());
    }
    for message in &messages[skip..] {
        hash.update(serde_json::to_vec(&(message.role, &message.content)).unwrap_or_default());
        for call in message.calls() {
            hash.update(call.function.name.as_bytes());
            hash.update(call.function.arguments.as_bytes());
        }
    }
    for call in &checkpoint.held {
        hash.update(call.function.name.as_bytes());
        hash.update(crate::text::arguments(&call.function.arguments, usize::MAX).as_bytes());
    }
    hex::encode(&hash.finalize()[..16])
}

fn tool_names(calls: &[ToolCall]) -> Vec<String> {
    calls.iter().map(|c| c.function.name.clone()).collect()
}
