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
        agent.store.put(&confirm::store_key(&checkpoint.id), bytes, ttl).await?;
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
            tools: tool_names(&checkpoint.held),
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
    ) -> Result<Option<Step>, Error> {
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
            tracing::info!(id = %id, asked = model, paused = %checkpoint.model, "a reply through another model is an ordinary message");
            return Ok(None);
        }
        // Consume: of two concurrent replies exactly one gets it.
        let Some(bytes) = self.store.take(&key).await? else {
            return self.gone(caller, &id, verdict).await;
        };
        let checkpoint: Checkpoint = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Internal(format!("a checkpoint changed while it was read: {e}")))?;
        let tools = tool_names(&checkpoint.held);
        let trace = Trace { key_id: checkpoint.key_id.clone(), tools: tools.clone(), state: TraceState::Answered };
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
        Ok(Some(Step::Resume(Box::new(Resume { checkpoint, verdict, followup }))))
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
    async fn gone(&self, caller: &Caller, id: &str, verdict: Verdict) -> Result<Option<Step>, Error> {
        if verdict != Verdict::Approve {
            return Ok(None);
        }
        let key = confirm::trace_key(id);
        let trace = self.store.get(&key).await?.and_then(|b| serde_json::from_slice::<Trace>(&b).ok());
        let trace = trace.filter(|t| t.key_id == caller.key_id);
        let state = trace.as_ref().map(|t| t.state);
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
        Ok(Some(Step::Say(confirm::gone_text(state).to_owned())))
    }

    async fn put_trace(&self, id: &str, trace: &Trace) -> Result<(), Error> {
        let bytes = serde_json::to_vec(trace).map_err(|e| Error::Internal(format!("encoding a trace: {e}")))?;
        let ttl = self.settings.gate.ttl + confirm::TRACE_GRACE;
        Ok(self.store.put(&confirm::trace_key(id), bytes, ttl).await?)
    }
}

fn tool_names(calls: &[ToolCall]) -> Vec<String> {
    calls.iter().map(|c| c.function.name.clone()).collect()
}
