//! Pausing a loop at the confirmation gate and reopening it: the checkpoint goes
//! into the store, the human's reply takes it out (once), and a reply that finds
//! nothing is told what happened.

use futures::{Stream, StreamExt};
use jiff::Timestamp;
use serde_json::{Map, Value, json};

use super::confirm::{self, Checkpoint, RequestParams, Structured, Trace, TraceState, Verdict};
use super::{Agent, Event, Final, LoopState, Relayed, Start, Turn, execute, order_like, round, unavailable};
use crate::auth::Caller;
use crate::config::VirtualModel;
use crate::error::ApiError;
use crate::openai::{Message, ToolCall};

/// A checkpoint taken out of the store with the human's answer to it.
pub struct Resume {
    pub checkpoint: Checkpoint,
    pub verdict: Verdict,
    /// Appended after the round's results when the user said something else: the
    /// question as the client showed it, and the user's message.
    pub followup: Vec<Message>,
}

/// The reply a request carries, typed or structured.
struct Answer {
    id: String,
    verdict: Verdict,
    followup: Vec<Message>,
}

impl Agent {
    /// Stores the round as a checkpoint; the held calls wait for the human.
    pub(super) async fn pause(
        &self,
        turn: &Turn,
        st: &LoopState,
        assistant: Message,
        results: Vec<Message>,
        held: Vec<ToolCall>,
    ) -> Result<Checkpoint, ApiError> {
        let ttl = self.settings.gate.ttl;
        let now = Timestamp::now().as_second();
        let checkpoint = Checkpoint {
            version: confirm::VERSION,
            id: confirm::new_id(),
            key_id: turn.caller.key_id.clone(),
            user: turn.caller.user.clone(),
            model: turn.model.name.clone(),
            created_at: now,
            expires_at: now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
            messages: st.messages.clone(),
            assistant,
            results,
            held,
            rounds: st.rounds,
            route: st.route,
            request: RequestParams {
                client_tools: st.client_defs.clone(),
                tool_choice: st.tool_choice.clone(),
                rest: st.rest.clone(),
            },
        };
        let bytes =
            serde_json::to_vec(&checkpoint).map_err(|e| ApiError::Internal(format!("encoding a checkpoint: {e}")))?;
        let tools = tool_names(&checkpoint.held);
        let trace = Trace { key_id: checkpoint.key_id.clone(), tools: tools.clone(), state: TraceState::Open };
        self.put_trace(&checkpoint.id, &trace).await?;
        self.store.put(&confirm::store_key(&checkpoint.id), bytes, ttl).await.map_err(unavailable)?;
        for (call, tool) in checkpoint.held.iter().zip(&tools) {
            self.metrics.record_confirmation(tool, "created");
            let arguments = if turn.off_record { "[off the record]" } else { call.function.arguments.as_str() };
            tracing::info!(
                target: "lariat::audit", event = "confirmation", outcome = "created", id = %checkpoint.id,
                user = %turn.caller.user, model = %turn.model.name, tool, arguments, expires_at = checkpoint.expires_at,
                "tool call held for confirmation"
            );
        }
        Ok(checkpoint)
    }

    /// Asks the human: the model phrases the question (seeing placeholders for the
    /// held calls, and told to call nothing), then the footer with the marker. If
    /// the model cannot be reached a template stands in: the question is asked either
    /// way, since the checkpoint is already stored. Chunks come out unrewritten.
    pub(super) fn ask<'a>(
        &'a self,
        model: &'a VirtualModel,
        turn: &'a Turn,
        st: &'a mut LoopState,
        checkpoint: Checkpoint,
    ) -> impl Stream<Item = Event> + Send + 'a {
        async_stream::stream! {
            let depth = st.messages.len();
            let placeholders = checkpoint.held.iter().map(|c| execute::tool_result(&c.id, confirm::PLACEHOLDER.into()));
            let results = order_like(Some(&checkpoint.assistant), checkpoint.results.iter().cloned().chain(placeholders).collect());
            st.messages.push(checkpoint.assistant.clone());
            st.messages.extend(results);
            let mut words = String::new();
            let (mut completion_rest, mut choice_rest) = (Map::new(), Map::new());
            match self.call(model, &turn.caller.user, st, true).await {
                Ok((reply, label, _)) => {
                    let mut consumed = None;
                    {
                        let mut relayed = std::pin::pin!(Self::consume(reply, st));
                        while let Some(item) = relayed.next().await {
                            match item {
                                Relayed::Chunk(chunk) => yield Event::Chunk(chunk),
                                Relayed::Done(done) => consumed = Some(done),
                            }
                        }
                    }
                    if let Some(done) = consumed {
                        let (round, cut) = self.account(turn, st, &label, *done);
                        if let Some(error) = cut {
                            tracing::warn!(%error, "the confirmation question was cut short; adding the footer to what arrived");
                        }
                        if let Value::String(text) = round.message.content {
                            words = text;
                        }
                        (completion_rest, choice_rest) = (round.completion_rest, round.choice_rest);
                    }
                }
                Err(error) => tracing::warn!(%error, "the upstream could not phrase the confirmation question; using the template"),
            }
            st.messages.truncate(depth);
            let mut visible = String::new();
            if words.trim().is_empty() {
                words = confirm::template(&checkpoint.held);
                visible = if st.content_sent { format!("\n\n{words}") } else { words.clone() };
            }
            let footer = confirm::footer(&checkpoint.held, &checkpoint.id, self.settings.gate.ttl);
            visible.push_str(&footer);
            let summary = json!({"confirmation": confirm::summary(&checkpoint)});
            if st.client_streams {
                let extra = Map::from_iter([("lariat".to_owned(), summary.clone())]);
                yield Event::Chunk(round::text_chunk(visible, !st.role_sent, extra));
                st.role_sent = true;
            }
            for chunk in self.ending(st, "stop") {
                yield Event::Chunk(chunk);
            }
            self.metrics.record_rounds(&model.name, st.rounds);
            let mut message = round::assistant(Value::String(words + &footer), None);
            message.rest.insert("lariat".into(), summary);
            yield Event::Finished(Box::new(Final {
                message,
                finish_reason: "stop".into(),
                usage: st.usage.take(),
                rounds: st.rounds,
                round_limit: false,
                completion_rest,
                choice_rest,
                confirmation: Some(checkpoint.id),
            }));
        }
    }

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
    ) -> Result<Option<Start>, ApiError> {
        let Some(Answer { id, verdict, followup }) = self.answer(structured, messages) else { return Ok(None) };
        let key = confirm::store_key(&id);
        let Some(bytes) = self.store.get(&key).await.map_err(unavailable)? else {
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
        let Some(bytes) = self.store.take(&key).await.map_err(unavailable)? else {
            return self.gone(caller, &id, verdict).await;
        };
        let checkpoint: Checkpoint = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::Internal(format!("a checkpoint changed while it was read: {e}")))?;
        if Timestamp::now().as_second() > checkpoint.expires_at {
            // The store's TTL and the wall clock disagree by a moment: the wall clock wins.
            return self.gone(caller, &id, verdict).await;
        }
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
        Ok(Some(Start::Resume(Box::new(Resume { checkpoint, verdict, followup }))))
    }

    /// The reply in this request, if it answers a question: the structured field wins
    /// over a typed reply.
    fn answer(&self, structured: Option<Structured>, messages: &[Message]) -> Option<Answer> {
        if let Some(s) = structured {
            let verdict = if s.approve { Verdict::Approve } else { Verdict::Deny };
            return Some(Answer { id: s.id, verdict, followup: Vec::new() });
        }
        let reply = confirm::find_reply(messages)?;
        let verdict = self.settings.gate.verdict(&reply.text);
        let followup = if verdict == Verdict::Other {
            let question = super::round::assistant(reply.question.content.clone(), None);
            let user = messages.last().cloned().into_iter();
            std::iter::once(question).chain(user).collect()
        } else {
            Vec::new()
        };
        Some(Answer { id: reply.id.to_owned(), verdict, followup })
    }

    /// A reply whose checkpoint is gone (answered, expired, unknown). A "yes" is told
    /// so in a plain assistant message; anything else is an ordinary message.
    async fn gone(&self, caller: &Caller, id: &str, verdict: Verdict) -> Result<Option<Start>, ApiError> {
        if verdict != Verdict::Approve {
            return Ok(None);
        }
        let key = confirm::trace_key(id);
        let trace =
            self.store.get(&key).await.map_err(unavailable)?.and_then(|b| serde_json::from_slice::<Trace>(&b).ok());
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
        Ok(Some(Start::Say(confirm::gone_text(state).to_owned())))
    }

    async fn put_trace(&self, id: &str, trace: &Trace) -> Result<(), ApiError> {
        let bytes = serde_json::to_vec(trace).map_err(|e| ApiError::Internal(format!("encoding a trace: {e}")))?;
        let ttl = self.settings.gate.ttl + confirm::TRACE_GRACE;
        self.store.put(&confirm::trace_key(id), bytes, ttl).await.map_err(unavailable)
    }
}

fn tool_names(calls: &[ToolCall]) -> Vec<String> {
    calls.iter().map(|c| c.function.name.clone()).collect()
}
