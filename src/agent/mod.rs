//! The tool loop (SPEC §2): for one client request, round after round — call the
//! upstream through the chain, run the server tool calls, feed the results back —
//! until the model answers, the round limit is reached, or the round must wait — for
//! the client's own tools (suspension) or for a human "yes" (the confirmation gate).
//!
//! The loop is one stream of `Event`s owned by the response: a client that goes away
//! drops it, and with it the upstream call and the tools in flight.

mod confirm;
mod execute;
mod fit;
mod pause;
mod prepare;
mod round;
mod summary;
mod suspend;

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use serde_json::{Map, Value, json};

use crate::auth::Caller;
use crate::compact::Compactor;
use crate::config::VirtualModel;
use crate::error::ApiError;
use crate::openai::{ChatChunk, ChatCompletion, ChatRequest, Choice, Message, StreamOptions, ToolCall, ToolDef, Usage};
use crate::store::{Store, StoreError};
use crate::telemetry::Metrics;
use crate::tools::{Registry, ToolSet};
use crate::upstream::{Attempt, ChunkStream, Failure, Params, Reply, Route, Upstream};
pub use confirm::Gate;
use execute::{Audit, Executor};
use fit::Fitting;
use pause::Resume;
use round::{Relay, Relayed, RoundResult, StreamRound};
pub use summary::Summarizer;
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
    /// Summarises the turns compaction drops, when configured.
    pub summarizer: Option<Summarizer>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// Cap on one tool result handed to the model.
    pub max_output_bytes: usize,
    /// How long a round suspended on client tools waits for them.
    pub suspend_ttl: Duration,
    /// Which calls wait for a human "yes", and how the answer is read.
    pub gate: Gate,
    pub compaction: crate::config::Compaction,
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
    /// `provider/model` of the target that answered first, if an upstream was called
    /// before the response started.
    pub upstream: Option<String>,
    pub attempts: u32,
    /// The id of the confirmation a non-streamed answer asks for.
    pub confirmation: Option<String>,
}

/// What the loop emits.
enum Event {
    /// The response can start (the first upstream round answered, or the loop resumed).
    Started { upstream: Option<String>, attempts: u32 },
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
    confirmation: Option<String>,
}

/// How the loop begins.
enum Start {
    /// Call the upstream.
    Fresh,
    /// Continue a round paused at the confirmation gate, without calling the upstream first.
    Resume(Box<Resume>),
    /// Answer with this text and call nothing (an expired or already answered approval).
    Say(String),
}

/// Everything one request's loop carries from round to round.
struct LoopState {
    start: Start,
    messages: Vec<Message>,
    /// Fits `messages` into each target's budget; remembers counts across rounds.
    compactor: Compactor,
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

static TOOL_CHOICE_NONE: std::sync::LazyLock<Value> = std::sync::LazyLock::new(|| json!("none"));

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
            let answer = Answer::Stream(Box::pin(chunks));
            return Ok(Outcome { answer, upstream, attempts, confirmation: None });
        }
        while let Some(event) = events.next().await {
            if let Event::Finished(done) = event? {
                let confirmation = done.confirmation.clone();
                let mut completion = completion(*done);
                completion.id = response_id;
                completion.model = model_name;
                let answer = Answer::Complete(Box::new(completion));
                return Ok(Outcome { answer, upstream, attempts, confirmation });
            }
        }
        Err(ApiError::Internal("the loop ended without an answer".into()))
    }

    /// Tool set, overlay, and where the loop starts: fresh, from a round suspended on
    /// client tools, or from a checkpoint the user just answered. The request's parts
    /// move into the loop's state (nothing is copied); `turn.request` is left empty.
    async fn prepare(&self, turn: &mut Turn) -> Result<LoopState, ApiError> {
        let request = &mut turn.request;
        let structured = confirm::take_structured(&mut request.rest)
            .map_err(|message| ApiError::bad_request(message, Some("lariat.confirm")))?;
        let disabled = prepare::server_tools_disabled(request.tool_choice.as_ref());
        let tools = if disabled {
            Arc::new(ToolSet::default())
        } else {
            self.tools.for_request(&turn.model.name, turn.model.tools.as_ref(), turn.caller.access)
        };
        let mut st = LoopState {
            start: Start::Fresh,
            messages: std::mem::take(&mut request.messages),
            compactor: Compactor::new(self.settings.compaction.policy.clone()),
            server_tools_on: !tools.is_empty(),
            passthrough: tools.is_empty(),
            client_names: prepare::client_tools(request.tools.as_deref(), &tools)?,
            tools,
            client_defs: request.tools.take().unwrap_or_default(),
            tool_choice: request.tool_choice.take(),
            rest: std::mem::take(&mut request.rest),
            include_usage: request.stream_options.as_ref().is_some_and(|o| o.include_usage),
            stream_options: request.stream_options.take(),
            client_streams: request.stream,
            rounds: 0,
            limit: turn.model.max_rounds,
            route: Route::default(),
            usage: None,
            role_sent: false,
            content_sent: false,
            finish_sent: false,
        };
        match self.reopen(&turn.caller, &turn.model.name, structured, &st.messages).await? {
            Some(Start::Resume(resume)) => {
                // The checkpoint is the truth about the conversation so far (the client
                // never saw the server's tool calls) and about the request's parameters.
                let checkpoint = &resume.checkpoint;
                st.messages.clone_from(&checkpoint.messages);
                st.client_names = prepare::client_tools(Some(&checkpoint.request.client_tools), &st.tools)?;
                st.client_defs.clone_from(&checkpoint.request.client_tools);
                st.tool_choice.clone_from(&checkpoint.request.tool_choice);
                st.rest.clone_from(&checkpoint.request.rest);
                (st.rounds, st.route) = (checkpoint.rounds, checkpoint.route);
                st.server_tools_on = true;
                st.passthrough = false;
                st.start = Start::Resume(resume);
                return Ok(st);
            }
            Some(start) => st.start = start,
            None => {
                if let Some((rounds, route)) = self.restore(&turn.caller.key_id, &mut st.messages).await? {
                    (st.rounds, st.route) = (rounds, route);
                }
            }
        }
        prepare::overlay(&mut st.messages, &turn.model, st.server_tools_on);
        Ok(st)
    }

    /// Puts a suspended round back into `messages`; returns its rounds and route.
    async fn restore(&self, key_id: &str, messages: &mut Vec<Message>) -> Result<Option<(u32, Route)>, ApiError> {
        let Some((at, ids)) = suspend::pending_results(messages) else { return Ok(None) };
        let Some(first) = ids.first() else { return Ok(None) };
        let key = suspend::key(key_id, first);
        let Some(bytes) = self.store.take(&key).await.map_err(unavailable)? else {
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
            let mut resume = None;
            match std::mem::replace(&mut st.start, Start::Fresh) {
                Start::Fresh => {}
                Start::Say(text) => {
                    yield Ok(Event::Started { upstream: None, attempts: 0 });
                    if st.client_streams {
                        yield Ok(Event::Chunk(rewrite(round::text_chunk(text.clone(), true, Map::new()))));
                    }
                    for chunk in self.ending(&st, "stop") {
                        yield Ok(Event::Chunk(rewrite(chunk)));
                    }
                    yield Ok(Event::Finished(Box::new(Final::plain(round::assistant(Value::String(text), None)))));
                    return;
                }
                Start::Resume(paused) => {
                    // Tools may run before the first upstream call: start the response
                    // now so a streaming client gets keep-alives meanwhile.
                    started = true;
                    let upstream = st.route.sticky().and_then(|i| model.chain.get(i)).map(|e| e.label().to_owned());
                    yield Ok(Event::Started { upstream, attempts: 0 });
                    resume = Some(paused);
                }
            }
            let client_tool_names: Vec<String> = st.client_names.iter().cloned().collect();
            let tools = st.tools.clone();
            let executor = Executor {
                tools: &tools,
                client_tools: &client_tool_names,
                max_output_bytes: self.settings.max_output_bytes,
                metrics: &self.metrics,
                audit: Audit { user: &turn.caller.user, model: &model.name, off_record: turn.off_record },
            };
            loop {
                // One round: the assistant message with its calls and the results of the
                // server calls — either resumed from the gate or from a fresh upstream call.
                let (message, results, completion_rest, choice_rest) = if let Some(paused) = resume.take() {
                    let Resume { checkpoint, verdict, followup } = *paused;
                    let held: Vec<&ToolCall> = checkpoint.held.iter().collect();
                    let mut results = checkpoint.results;
                    if let Some(denial) = verdict.denial() {
                        // A round the user turned down: its held calls and its client calls
                        // (never handed out) all get the denial as their result.
                        let client_calls = checkpoint.assistant.tool_calls.iter().flatten().filter(|c| st.client_names.contains(&c.function.name));
                        let denied: Vec<Message> = held.into_iter().chain(client_calls).map(|c| execute::tool_result(&c.id, denial.into())).collect();
                        results.extend(denied);
                        let results = order_like(Some(&checkpoint.assistant), results);
                        st.messages.push(checkpoint.assistant);
                        st.messages.extend(results);
                        st.messages.extend(followup);
                        continue;
                    }
                    results.extend(executor.run(&held).await);
                    (checkpoint.assistant, results, Map::new(), Map::new())
                } else {
                    let final_call = st.rounds >= st.limit;
                    let consumed = match self.call(&model, &turn.caller.user, &mut st, final_call).await {
                        Ok(answered) => answered,
                        Err(error) => {
                            yield Err(error);
                            return;
                        }
                    };
                    let (reply, label, attempts) = consumed;
                    if !started {
                        started = true;
                        yield Ok(Event::Started { upstream: Some(label.clone()), attempts });
                    }
                    let mut consumed = None;
                    {
                        let mut relayed = std::pin::pin!(Self::consume(reply, &st));
                        while let Some(item) = relayed.next().await {
                            match item {
                                Relayed::Chunk(chunk) => yield Ok(Event::Chunk(rewrite(chunk))),
                                Relayed::Done(done) => consumed = Some(done),
                            }
                        }
                    }
                    let Some(done) = consumed else { return };
                    let (round, cut) = self.account(&turn, &mut st, &label, *done);
                    if let Some(error) = cut {
                        yield Err(error);
                        return;
                    }
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
                            confirmation: None,
                        })));
                        return;
                    }
                    let server_calls: Vec<&ToolCall> =
                        calls.iter().filter(|c| !st.passthrough && !st.client_names.contains(&c.function.name)).collect();
                    let (held, runnable): (Vec<&ToolCall>, Vec<&ToolCall>) = server_calls
                        .iter()
                        .partition(|c| st.tools.contains(&c.function.name) && self.settings.gate.holds(&turn.caller, &c.function.name));
                    let results = executor.run(&runnable).await;
                    // A round counts when lariat ran (or held) something; a passthrough round did not.
                    if !server_calls.is_empty() {
                        st.rounds += 1;
                    }
                    if !held.is_empty() {
                        let held: Vec<ToolCall> = held.into_iter().cloned().collect();
                        message.tool_calls = Some(calls);
                        let checkpoint = match self.pause(&turn, &st, message, results, held).await {
                            Ok(checkpoint) => checkpoint,
                            Err(error) => {
                                yield Err(error);
                                return;
                            }
                        };
                        let mut asking = std::pin::pin!(self.ask(&model, &turn, &mut st, checkpoint));
                        while let Some(event) = asking.next().await {
                            yield Ok(match event {
                                Event::Chunk(chunk) => Event::Chunk(rewrite(chunk)),
                                other => other,
                            });
                        }
                        return;
                    }
                    message.tool_calls = Some(calls);
                    (message, results, completion_rest, choice_rest)
                };
                let calls = message.tool_calls.as_deref().unwrap_or_default();
                let client_calls: Vec<&ToolCall> =
                    calls.iter().filter(|c| st.passthrough || st.client_names.contains(&c.function.name)).collect();
                if !client_calls.is_empty() {
                    if let Err(error) = self.suspend(&turn, &st, &message, &client_calls, results).await {
                        yield Err(error);
                        return;
                    }
                    for chunk in self.ending(&st, "tool_calls") {
                        yield Ok(Event::Chunk(rewrite(chunk)));
                    }
                    let mut shown = message.clone();
                    shown.tool_calls = Some(client_calls.into_iter().cloned().collect());
                    self.metrics.record_rounds(&model.name, st.rounds);
                    yield Ok(Event::Finished(Box::new(Final {
                        message: shown,
                        finish_reason: "tool_calls".into(),
                        usage: st.usage.take(),
                        rounds: st.rounds,
                        round_limit: false,
                        completion_rest,
                        choice_rest,
                        confirmation: None,
                    })));
                    return;
                }
                let results = order_like(Some(&message), results);
                st.messages.push(message);
                st.messages.extend(results);
                if prepare::forces_a_call(st.tool_choice.as_ref()) {
                    st.tool_choice = Some(json!("auto"));
                }
            }
        }
    }

    /// One upstream call with the loop's current history; `no_tools` asks for words only.
    async fn call(
        &self,
        model: &VirtualModel,
        user: &str,
        st: &mut LoopState,
        no_tools: bool,
    ) -> Result<(Reply, String, u32), ApiError> {
        let tool_choice = if no_tools { Some(&*TOOL_CHOICE_NONE) } else { st.tool_choice.as_ref() };
        let tools = if st.server_tools_on { st.tools.defs() } else { &[] };
        let params = Params {
            tools,
            client_tools: &st.client_defs,
            tool_choice,
            // The loop sums usage over rounds, so it asks for it; a transparent relay
            // sends what the client sent (some servers refuse the field).
            stream_options: match (st.client_streams, st.passthrough) {
                (false, _) => None,
                (true, true) => st.stream_options.as_ref(),
                (true, false) => Some(&*UPSTREAM_STREAM_OPTIONS),
            },
            rest: &st.rest,
        };
        let mut history = Fitting {
            messages: &mut st.messages,
            compactor: &mut st.compactor,
            tools: [tools, &st.client_defs],
            rest: &st.rest,
            settings: &self.settings.compaction,
            summarizer: self.summarizer.as_ref(),
            upstream: &self.upstream,
            metrics: &self.metrics,
            model: &model.name,
            user,
        };
        let answered =
            self.upstream.call(&model.chain, &mut st.route, &mut history, &params, st.client_streams).await?;
        st.limit = model.max_rounds.min(answered.target.max_rounds.unwrap_or(u32::MAX));
        Ok((answered.reply, answered.target.label().to_owned(), answered.attempts))
    }

    /// An upstream reply as client chunks (when the client streams) and then the whole
    /// round; a non-streamed reply to a non-streaming client is one `Done`.
    fn consume<'a>(reply: Reply, st: &'a LoopState) -> impl Stream<Item = Relayed> + Send + 'a {
        let chunks: ChunkStream = match reply {
            Reply::Complete(completion) if !st.client_streams => {
                let round = RoundResult::from_completion(completion, &st.client_names, st.passthrough);
                let done = Relay { round, role_sent: false, has_content: false, finish_sent: false, failure: None };
                return futures::stream::iter([Relayed::Done(Box::new(done))]).left_stream();
            }
            Reply::Stream(chunks) => chunks,
            Reply::Complete(completion) => {
                Box::pin(futures::stream::iter(completion.into_chunks(true).into_iter().map(Ok)))
            }
        };
        let acc = StreamRound::new(&st.client_names, st.passthrough, st.role_sent, st.content_sent);
        round::relay(chunks, acc).right_stream()
    }

    /// Books a finished upstream call: usage and token metrics, what the client has
    /// seen so far; a stream cut after its start becomes the error it ends with.
    fn account(&self, turn: &Turn, st: &mut LoopState, label: &str, relay: Relay) -> (RoundResult, Option<ApiError>) {
        let Relay { round, role_sent, has_content, finish_sent, failure } = relay;
        if st.client_streams {
            st.role_sent = role_sent;
            st.content_sent |= has_content;
            st.finish_sent = finish_sent;
        }
        if let Some(u) = &round.usage {
            self.metrics.record_tokens(
                &turn.caller.user,
                &turn.model.name,
                label,
                u.prompt_tokens,
                u.completion_tokens,
            );
        }
        st.usage = add_usage(st.usage.take(), round.usage.clone());
        (round, failure.map(|failure| midstream(label, failure)))
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
        client_calls: &[&ToolCall],
        results: Vec<Message>,
    ) -> Result<(), ApiError> {
        if results.is_empty() {
            // Nothing ran on our side: what the client holds is the whole round.
            return Ok(());
        }
        let client_call_ids: Vec<String> = client_calls.iter().map(|c| c.id.clone()).collect();
        let Some(first) = client_call_ids.first() else { return Ok(()) };
        let round = SuspendedRound {
            version: suspend::VERSION,
            key_id: turn.caller.key_id.clone(),
            model: turn.model.name.clone(),
            assistant: message.clone(),
            results,
            client_call_ids: client_call_ids.clone(),
            rounds: st.rounds,
            route: st.route,
        };
        let bytes = serde_json::to_vec(&round).map_err(|e| ApiError::Internal(format!("encoding a round: {e}")))?;
        self.store
            .put(&suspend::key(&turn.caller.key_id, first), bytes, self.settings.suspend_ttl)
            .await
            .map_err(unavailable)
    }
}

impl Final {
    /// A one-message answer that called nothing.
    fn plain(message: Message) -> Self {
        Self {
            message,
            finish_reason: "stop".into(),
            usage: None,
            rounds: 0,
            round_limit: false,
            completion_rest: Map::new(),
            choice_rest: Map::new(),
            confirmation: None,
        }
    }
}

/// The client learns the store is down and that nothing ran; the operator's log gets
/// the details (addresses stay out of responses).
fn unavailable(error: StoreError) -> ApiError {
    // A full store is not an outage: the client is told so (the message says nothing ran).
    if let StoreError::Full(message) = error {
        return ApiError::Unavailable(message);
    }
    tracing::error!(%error, "the store failed; the request is refused");
    ApiError::Unavailable(
        "lariat's store for paused conversations is unreachable right now, so this request cannot be handled \
         safely; nothing was run. Try again shortly."
            .into(),
    )
}

/// Tool results in the order of the assistant message's calls (models and some
/// servers expect them so); results for unknown ids keep their place at the end.
fn order_like(assistant: Option<&Message>, mut results: Vec<Message>) -> Vec<Message> {
    let Some(calls) = assistant.and_then(|m| m.tool_calls.as_deref()) else { return results };
    let position = |m: &Message| {
        m.tool_call_id.as_deref().and_then(|id| calls.iter().position(|c| c.id == id)).unwrap_or(usize::MAX)
    };
    results.sort_by_key(position);
    results
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
