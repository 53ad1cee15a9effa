//! The tool loop (SPEC §2): for one client request, round after round — call the
//! upstream through the chain, run the server tool calls, feed the results back —
//! until the model answers, the round limit is reached, or the round must wait for
//! the client's own tools (suspension).
//!
//! The loop is one stream of `Event`s owned by the response: a client that goes away
//! drops it, and with it the upstream call and the tools in flight.

mod execute;
mod prepare;
mod round;
mod suspend;

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use serde_json::{Map, Value, json};

use crate::auth::Caller;
use crate::config::VirtualModel;
use crate::error::ApiError;
use crate::openai::{ChatChunk, ChatCompletion, ChatRequest, Choice, Message, StreamOptions, ToolDef, Usage};
use crate::store::Store;
use crate::telemetry::Metrics;
use crate::tools::{Registry, ToolSet};
use crate::upstream::{Attempt, Failure, Prompt, Reply, Route, Upstream};
use execute::{Audit, Executor};
use round::{RoundResult, StreamRound};
use suspend::SuspendedRound;

/// The chunks a streaming client receives, in order; an `Err` item ends the stream.
pub type AgentStream = Pin<Box<dyn Stream<Item = Result<ChatChunk, ApiError>> + Send>>;

/// Handles the loop works with; built once at start-up.
#[derive(Debug)]
pub struct Agent {
    pub upstream: Upstream,
    pub tools: Registry,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// Cap on one tool result handed to the model.
    pub max_output_bytes: usize,
    /// How long a round suspended on client tools waits for them.
    pub suspend_ttl: Duration,
    /// `confirm.tools`: tools that need a human "yes".
    pub confirm: crate::globs::Globs,
}

/// One client request, authenticated and resolved.
pub struct Turn {
    pub caller: Arc<Caller>,
    pub model: Arc<VirtualModel>,
    pub request: ChatRequest,
    /// The response id every chunk and the completion carry.
    pub response_id: String,
    /// Keep message and tool contents out of logs.
    pub off_record: bool,
}

pub enum Answer {
    Complete(Box<ChatCompletion>),
    Stream(AgentStream),
}

pub struct Outcome {
    pub answer: Answer,
    /// `provider/model` of the target that answered (the first round's).
    pub upstream: String,
    pub attempts: u32,
}

/// What the loop emits.
enum Event {
    /// The first upstream round answered: the response can start.
    Started { upstream: String, attempts: u32 },
    /// A chunk for a streaming client (already rewritten).
    Chunk(ChatChunk),
    /// The end: the answer as a non-streaming client gets it.
    Finished(Box<Final>),
}

struct Final {
    message: Message,
    finish_reason: String,
    usage: Option<Usage>,
    rounds: u32,
    round_limit: bool,
    completion_rest: Map<String, Value>,
    choice_rest: Map<String, Value>,
}

/// Everything one request's loop carries from round to round.
struct LoopState {
    messages: Vec<Message>,
    tools: Arc<ToolSet>,
    server_tools_on: bool,
    /// No server tools: lariat relays rounds as they are and runs nothing itself.
    passthrough: bool,
    client_defs: Vec<ToolDef>,
    client_names: HashSet<String>,
    tool_choice: Option<Value>,
    rest: Map<String, Value>,
    /// The client's `stream_options`, relayed as is in passthrough.
    stream_options: Option<StreamOptions>,
    client_streams: bool,
    include_usage: bool,
    rounds: u32,
    limit: u32,
    route: Route,
    usage: Option<Usage>,
    /// Whether the response already carried `role` / any content (streams).
    role_sent: bool,
    content_sent: bool,
    /// The last round's finish reason was relayed as is (passthrough).
    finish_sent: bool,
}

/// `stream_options` for upstream streams: usage is always asked for, to be summed.
static UPSTREAM_STREAM_OPTIONS: std::sync::LazyLock<StreamOptions> =
    std::sync::LazyLock::new(|| StreamOptions { include_usage: true, rest: Map::new() });

impl Agent {
    #[tracing::instrument(skip_all, fields(model = %turn.model.name, user = %turn.caller.user))]
    pub async fn run(self: &Arc<Self>, mut turn: Turn) -> Result<Outcome, ApiError> {
        let state = self.prepare(&mut turn).await?;
        let client_streams = state.client_streams;
        let (response_id, model_name) = (turn.response_id.clone(), turn.model.name.clone());
        let mut events = Box::pin(self.clone().drive(turn, state));
        let (upstream, attempts) = match events.next().await {
            Some(Ok(Event::Started { upstream, attempts })) => (upstream, attempts),
            Some(Err(error)) => return Err(error),
            _ => return Err(ApiError::Internal("the loop ended before its first round".into())),
        };
        if client_streams {
            let chunks = events.filter_map(|event| async move {
                match event {
                    Ok(Event::Chunk(chunk)) => Some(Ok(chunk)),
                    Ok(Event::Started { .. } | Event::Finished(_)) => None,
                    Err(error) => Some(Err(error)),
                }
            });
            return Ok(Outcome { answer: Answer::Stream(Box::pin(chunks)), upstream, attempts });
        }
        while let Some(event) = events.next().await {
            if let Event::Finished(done) = event? {
                let mut completion = completion(*done);
                completion.id = response_id;
                completion.model = model_name;
                return Ok(Outcome { answer: Answer::Complete(Box::new(completion)), upstream, attempts });
            }
        }
        Err(ApiError::Internal("the loop ended without an answer".into()))
    }

    /// Tool set, overlay, and — when the client brings results for a suspended
    /// round — the round restored from the store. The request's parts move into the
    /// loop's state (nothing is copied); `turn.request` is left empty.
    async fn prepare(&self, turn: &mut Turn) -> Result<LoopState, ApiError> {
        let request = &mut turn.request;
        let disabled = prepare::server_tools_disabled(request.tool_choice.as_ref());
        let tools = if disabled {
            Arc::new(ToolSet::default())
        } else {
            self.tools.for_request(&turn.model.name, turn.model.tools.as_ref(), turn.caller.access)
        };
        let client_names = prepare::client_tools(request.tools.as_deref(), &tools)?;
        let mut messages = std::mem::take(&mut request.messages);
        let mut rounds = 0;
        let mut route = Route::default();
        if let Some(round) = self.restore(&turn.caller.key_id, &mut messages).await? {
            rounds = round.0;
            route = round.1;
        }
        prepare::overlay(&mut messages, &turn.model, !tools.is_empty());
        Ok(LoopState {
            messages,
            server_tools_on: !tools.is_empty(),
            passthrough: tools.is_empty(),
            tools,
            client_defs: request.tools.take().unwrap_or_default(),
            client_names,
            tool_choice: request.tool_choice.take(),
            rest: std::mem::take(&mut request.rest),
            include_usage: request.stream_options.as_ref().is_some_and(|o| o.include_usage),
            stream_options: request.stream_options.take(),
            client_streams: request.stream,
            rounds,
            limit: turn.model.max_rounds,
            route,
            usage: None,
            role_sent: false,
            content_sent: false,
            finish_sent: false,
        })
    }

    /// Puts a suspended round back into `messages`; returns its rounds and route.
    async fn restore(&self, key_id: &str, messages: &mut Vec<Message>) -> Result<Option<(u32, Route)>, ApiError> {
        let Some((at, ids)) = suspend::pending_results(messages) else { return Ok(None) };
        let Some(first) = ids.first() else { return Ok(None) };
        let key = suspend::key(key_id, first);
        let Some(bytes) = self.store.take(&key).await.map_err(|e| ApiError::Unavailable(e.to_string()))? else {
            return Ok(None);
        };
        let round: SuspendedRound = match serde_json::from_slice(&bytes) {
            Ok(round) => round,
            Err(e) => {
                tracing::warn!(error = %e, "a suspended round could not be read; continuing with the client's messages");
                return Ok(None);
            }
        };
        if round.version != suspend::VERSION || round.key_id != key_id || round.client_call_ids != ids {
            return Ok(None);
        }
        let resumed = (round.rounds, round.route);
        tracing::info!(rounds = round.rounds, "resuming a round suspended on client tools");
        round.restore_into(messages, at);
        Ok(Some(resumed))
    }

    fn drive(self: Arc<Self>, turn: Turn, mut st: LoopState) -> impl Stream<Item = Result<Event, ApiError>> + Send {
        async_stream::stream! {
            let model = turn.model.clone();
            let rewrite = |mut chunk: ChatChunk| {
                chunk.id.clone_from(&turn.response_id);
                chunk.model.clone_from(&model.name);
                chunk
            };
            let mut started = false;
            loop {
                let final_call = st.rounds >= st.limit;
                let none = json!("none");
                let prompt = Prompt {
                    messages: &st.messages,
                    tools: if st.server_tools_on { st.tools.defs() } else { &[] },
                    client_tools: &st.client_defs,
                    tool_choice: if final_call { Some(&none) } else { st.tool_choice.as_ref() },
                    // The loop sums usage over rounds, so it asks for it; a transparent
                    // relay sends what the client sent (some servers refuse the field).
                    stream_options: match (st.client_streams, st.passthrough) {
                        (false, _) => None,
                        (true, true) => st.stream_options.as_ref(),
                        (true, false) => Some(&*UPSTREAM_STREAM_OPTIONS),
                    },
                    rest: &st.rest,
                };
                let answered = match self.upstream.call(&model.chain, &mut st.route, &prompt, st.client_streams).await {
                    Ok(answered) => answered,
                    Err(error) => {
                        yield Err(error);
                        return;
                    }
                };
                let label = answered.target.label().to_owned();
                st.limit = model.max_rounds.min(answered.target.max_rounds.unwrap_or(u32::MAX));
                if !started {
                    started = true;
                    yield Ok(Event::Started { upstream: label.clone(), attempts: answered.attempts });
                }
                let round = match answered.reply {
                    Reply::Complete(completion) if !st.client_streams => RoundResult::from_completion(completion, &st.client_names, st.passthrough),
                    reply => {
                        let chunks: crate::upstream::ChunkStream = match reply {
                            Reply::Stream(chunks) => chunks,
                            Reply::Complete(completion) => Box::pin(futures::stream::iter(completion.into_chunks(true).into_iter().map(Ok))),
                        };
                        let mut acc = StreamRound::new(&st.client_names, st.passthrough, st.role_sent, st.content_sent);
                        let mut chunks = chunks;
                        while let Some(item) = chunks.next().await {
                            match item {
                                Ok(chunk) => {
                                    if let Some(out) = acc.push(chunk) {
                                        yield Ok(Event::Chunk(rewrite(out)));
                                    }
                                }
                                Err(failure) => {
                                    yield Err(midstream(&label, failure));
                                    return;
                                }
                            }
                        }
                        st.role_sent = acc.role_sent();
                        st.content_sent |= acc.has_content();
                        st.finish_sent = acc.finish_sent();
                        acc.finish()
                    }
                };
                if let Some(u) = &round.usage {
                    self.metrics.record_tokens(&turn.caller.user, &model.name, &label, u.prompt_tokens, u.completion_tokens);
                }
                st.usage = add_usage(st.usage.take(), round.usage.clone());
                let RoundResult { mut message, finish_reason, completion_rest, choice_rest, .. } = round;
                let calls = message.tool_calls.take().unwrap_or_default();
                if calls.is_empty() || final_call {
                    if final_call {
                        tracing::warn!(rounds = st.rounds, "round limit reached; the model answered without tools");
                    }
                    let reason = if final_call && !calls.is_empty() { "stop".to_owned() } else { finish_reason.unwrap_or_else(|| "stop".into()) };
                    for chunk in self.ending(&st, &reason) {
                        yield Ok(Event::Chunk(rewrite(chunk)));
                    }
                    self.metrics.record_rounds(&model.name, st.rounds);
                    yield Ok(Event::Finished(Box::new(Final {
                        message,
                        finish_reason: reason,
                        usage: st.usage.take(),
                        rounds: st.rounds,
                        round_limit: final_call,
                        completion_rest,
                        choice_rest,
                    })));
                    return;
                }
                let (client_calls, server_calls): (Vec<_>, Vec<_>) =
                    calls.iter().partition(|c| st.passthrough || st.client_names.contains(&c.function.name));
                let client_names: Vec<String> = st.client_names.iter().cloned().collect();
                let needs_confirmation = |name: &str| {
                    (self.settings.confirm.matches(name) && !turn.caller.confirm_allow.matches(name))
                        || turn.caller.confirm_deny.matches(name)
                };
                let executor = Executor {
                    tools: &st.tools,
                    needs_confirmation: &needs_confirmation,
                    client_tools: &client_names,
                    max_output_bytes: self.settings.max_output_bytes,
                    metrics: &self.metrics,
                    audit: Audit { user: &turn.caller.user, model: &model.name, off_record: turn.off_record },
                };
                let results = executor.run(&server_calls).await;
                // A round counts when lariat ran something; a passthrough round did not.
                if !server_calls.is_empty() {
                    st.rounds += 1;
                }
                if !client_calls.is_empty() {
                    if let Err(error) = self.suspend(&turn, &st, &message, &calls, &client_calls, results).await {
                        yield Err(error);
                        return;
                    }
                    for chunk in self.ending(&st, "tool_calls") {
                        yield Ok(Event::Chunk(rewrite(chunk)));
                    }
                    message.tool_calls = Some(client_calls.into_iter().cloned().collect());
                    self.metrics.record_rounds(&model.name, st.rounds);
                    yield Ok(Event::Finished(Box::new(Final {
                        message,
                        finish_reason: "tool_calls".into(),
                        usage: st.usage.take(),
                        rounds: st.rounds,
                        round_limit: false,
                        completion_rest,
                        choice_rest,
                    })));
                    return;
                }
                message.tool_calls = Some(calls);
                st.messages.push(message);
                st.messages.extend(results);
                if prepare::forces_a_call(st.tool_choice.as_ref()) {
                    st.tool_choice = Some(json!("auto"));
                }
            }
        }
    }

    /// The last chunks of a streamed response: the finish reason, then (if the client
    /// asked) the usage of every round.
    fn ending(&self, st: &LoopState, reason: &str) -> Vec<ChatChunk> {
        if !st.client_streams {
            return Vec::new();
        }
        let mut chunks = Vec::new();
        if !st.finish_sent {
            chunks.push(round::finish_chunk(reason));
        }
        if st.include_usage {
            chunks.push(round::usage_chunk(st.usage.clone().unwrap_or_default()));
        }
        chunks
    }

    /// Stores the full round so the client's results can be joined to it later.
    async fn suspend(
        &self,
        turn: &Turn,
        st: &LoopState,
        message: &Message,
        calls: &[crate::openai::ToolCall],
        client_calls: &[&crate::openai::ToolCall],
        results: Vec<Message>,
    ) -> Result<(), ApiError> {
        if results.is_empty() {
            // Nothing ran on our side: what the client holds is the whole round.
            return Ok(());
        }
        let client_call_ids: Vec<String> = client_calls.iter().map(|c| c.id.clone()).collect();
        let Some(first) = client_call_ids.first() else { return Ok(()) };
        let mut assistant = message.clone();
        assistant.tool_calls = Some(calls.to_vec());
        let round = SuspendedRound {
            version: suspend::VERSION,
            key_id: turn.caller.key_id.clone(),
            model: turn.model.name.clone(),
            assistant,
            results,
            client_call_ids: client_call_ids.clone(),
            rounds: st.rounds,
            route: st.route,
        };
        let bytes = serde_json::to_vec(&round).map_err(|e| ApiError::Internal(format!("encoding a round: {e}")))?;
        self.store
            .put(&suspend::key(&turn.caller.key_id, first), bytes, self.settings.suspend_ttl)
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))
    }
}

/// A failure after the stream started: the client sees it as an error event.
fn midstream(label: &str, failure: Failure) -> ApiError {
    ApiError::UpstreamFailed(vec![Attempt { target: label.to_owned(), failure }])
}

fn add_usage(total: Option<Usage>, more: Option<Usage>) -> Option<Usage> {
    match (total, more) {
        (Some(mut t), Some(m)) => {
            t.prompt_tokens += m.prompt_tokens;
            t.completion_tokens += m.completion_tokens;
            t.total_tokens += m.total_tokens;
            Some(t)
        }
        (t, m) => t.or(m),
    }
}

/// The non-streaming response: the last round's answer, every round's usage.
fn completion(done: Final) -> ChatCompletion {
    let mut rest = done.completion_rest;
    rest.entry("object").or_insert_with(|| json!("chat.completion"));
    rest.entry("created").or_insert_with(|| json!(jiff::Timestamp::now().as_second()));
    if done.rounds > 0 {
        rest.insert("lariat".into(), json!({"rounds": done.rounds, "round_limit": done.round_limit}));
    }
    ChatCompletion {
        id: String::new(),
        model: String::new(),
        choices: vec![Choice {
            index: 0,
            message: done.message,
            finish_reason: Some(done.finish_reason),
            rest: done.choice_rest,
        }],
        usage: done.usage,
        rest,
    }
}
