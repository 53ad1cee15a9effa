//! The loop as a state machine: a closed set of `Step`s, driven by one `match`.
//! Each step does its work, says what happened in `Event`s, and names the next.
//!
//! ```text
//! Call ──► Act ──► Call …            (server calls ran; go round again)
//!  ▲        ├────► Ask               (a held call: the human is asked)
//!  │        ├────► Suspend ──► Answer (client calls handed out)
//!  │        └────► Answer            (the model answered, or the round limit)
//! Resume ───┘                        (a "yes"/"no" continues a paused round)
//! Say                                (lariat answers itself; no upstream)
//! ```

use std::collections::HashSet;
use std::sync::Arc;

use futures::StreamExt;
use serde_json::{Map, Value, json};

use super::events::{Event, Finished};
use super::execute::{Audit, Executor};
use super::fit::Fitting;
use super::pause::Resume;
use super::queue;
use super::round::{Keep, Mode, Opening, RoundResult, StreamRound};
use super::running::Running;
use super::{Agent, Error, Events, confirm, prepare};
use crate::auth::Caller;
use crate::compact::Compactor;
use crate::config::VirtualModel;
use crate::openai::{
    ChatCompletion, FinishReason, Message, Reading, StreamChunk, StreamOptions, ToolCall, ToolDef, Usage,
};
use crate::tools::ToolSet;
use crate::upstream::{ChunkStream, Params, Reply, Route};

/// Events waiting for the face; the engine waits when it is this far ahead.
const EVENTS_BUFFER: usize = 32;

static TOOL_CHOICE_NONE: std::sync::LazyLock<Value> = std::sync::LazyLock::new(|| json!("none"));

/// `stream_options` for upstream streams: usage is always asked for, to be summed.
pub(super) static UPSTREAM_STREAM_OPTIONS: std::sync::LazyLock<StreamOptions> =
    std::sync::LazyLock::new(|| StreamOptions { include_usage: true, rest: Map::new() });

/// What the loop does next.
pub(super) enum Step {
    /// Call the upstream with the conversation so far.
    Call,
    /// Continue a round the human answered at the confirmation gate.
    Resume(Box<Resume>),
    /// Act on a finished upstream round.
    Act(Box<Round>),
    /// Ask the human about the held calls of a stored checkpoint.
    Ask(Box<confirm::Checkpoint>),
    /// Hand the client its calls (the rest of the round is stored).
    Suspend(Box<Handout>),
    Answer(Box<Finished>),
    /// The loop model is done: the answer model writes the reply from its notes.
    HandOver(Box<Finished>),
    /// Answer with this text and call nothing.
    Say(String),
    Fail(Error),
}

/// What an upstream call asks of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Offer {
    /// The tools of the request, and its `tool_choice`.
    Tools,
    /// An answer in words (`tool_choice: "none"`): at the round limit, or to ask the human.
    WordsOnly,
}

/// Whose words an upstream reply carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Voice {
    /// The loop model, in a round (with an answer model, its text is not the reply).
    Loop,
    /// The loop model, asking the human to confirm.
    Question,
    /// The answer model, writing the reply.
    Answer,
}

/// A finished upstream round and whether it was the last one allowed.
pub(super) struct Round {
    result: RoundResult,
    final_call: bool,
    shown: Shown,
}

/// Whether a round's client calls already streamed to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shown {
    /// They went out as they arrived.
    Streamed,
    /// Held back (a call of the round might wait for a human), or never streamed (a
    /// resumed round): they go out when the round is handed out.
    Pending,
}

/// A round whose client calls go out.
pub(super) struct Handout {
    pub shown: Shown,
    pub message: Message,
    /// Results of the server calls that ran.
    pub results: Vec<Message>,
    pub client_calls: Vec<ToolCall>,
    pub completion_rest: Map<String, Value>,
    pub choice_rest: Map<String, Value>,
}

/// The request's own parts the loop keeps using.
pub(super) struct Request {
    pub client_defs: Vec<ToolDef>,
    pub client_names: HashSet<String>,
    pub tool_choice: Option<Value>,
    /// Every pass-through field (temperature, max_tokens, …).
    pub rest: Map<String, Value>,
    /// The client's `stream_options`, relayed as is in `Mode::Relay`.
    pub stream_options: Option<StreamOptions>,
    pub stream: bool,
}

/// Where the loop stands.
#[derive(Debug, Default)]
pub(super) struct Progress {
    /// Rounds in which lariat ran (or held) server calls.
    pub rounds: u32,
    pub limit: u32,
    pub route: Route,
    pub usage: Option<Usage>,
    /// The response already carries text: a later round's text starts on a new paragraph.
    pub text_shown: bool,
    /// `Event::Started` went out.
    pub started: bool,
}

/// One request's loop: everything it carries from step to step.
pub(super) struct Engine {
    pub agent: Arc<Agent>,
    pub caller: Arc<Caller>,
    pub model: Arc<VirtualModel>,
    pub off_record: bool,
    pub messages: Vec<Message>,
    /// Fits `messages` into each target's budget; remembers counts across rounds.
    pub compactor: Compactor,
    pub tools: Arc<ToolSet>,
    pub mode: Mode,
    pub request: Request,
    pub progress: Progress,
    pub events: queue::Sender,
}

impl Engine {
    /// The events of the loop from `first` on. The engine runs inside the returned
    /// stream (no task is spawned): dropping the stream stops it.
    pub fn run(self, first: Step, received: queue::Receiver) -> Events {
        Box::pin(Running::new(Box::pin(self.drive(first)), received))
    }

    pub fn queue() -> (queue::Sender, queue::Receiver) {
        queue::bounded(EVENTS_BUFFER)
    }

    async fn drive(mut self, first: Step) {
        let mut step = first;
        loop {
            step = match step {
                Step::Call => self.call().await,
                Step::Resume(resume) => self.resume(*resume).await,
                Step::Act(round) => self.act(*round).await,
                Step::Ask(checkpoint) => self.ask(*checkpoint).await,
                Step::Suspend(handout) => self.suspend(*handout).await,
                Step::HandOver(notes) => self.hand_over(*notes).await,
                Step::Say(text) => self.say(text).await,
                Step::Answer(finished) => return self.answer(finished).await,
                Step::Fail(error) => return self.emit(Event::Failed(error)).await,
            }
        }
    }

    pub async fn emit(&self, event: Event) {
        // A closed channel means the face is gone, and this future is being dropped too.
        let _ = self.events.send(event).await;
    }

    async fn start(&mut self, target: Option<Arc<str>>, attempts: u32) {
        if !self.progress.started {
            self.progress.started = true;
            self.emit(Event::Started { target, attempts }).await;
        }
    }

    async fn call(&mut self) -> Step {
        let final_call = self.progress.rounds >= self.progress.limit;
        self.emit(Event::RoundStarted { round: self.progress.rounds + 1 }).await;
        let offer = if final_call { Offer::WordsOnly } else { Offer::Tools };
        let (reply, target, attempts) = match self.upstream(offer).await {
            Ok(answered) => answered,
            Err(error) => return Step::Fail(error),
        };
        self.start(Some(target.clone()), attempts).await;
        let (result, cut) = self.relay(reply, &target, Voice::Loop).await;
        // A round that may hold a call for a human hands its client calls out only
        // after the answer: they were held back (see `relay`).
        let shown = if self.defers_client_calls(Voice::Loop) { Shown::Pending } else { Shown::Streamed };
        match cut {
            Some(error) => Step::Fail(error),
            None => Step::Act(Box::new(Round { result, final_call, shown })),
        }
    }

    /// One upstream call with the conversation so far. The target's label and the
    /// attempts it took come back.
    pub async fn upstream(&mut self, offer: Offer) -> Result<(Reply, Arc<str>, u32), Error> {
        let tool_choice = match offer {
            Offer::WordsOnly => Some(&*TOOL_CHOICE_NONE),
            Offer::Tools => self.request.tool_choice.as_ref(),
        };
        let tools = if self.mode == Mode::Loop { self.tools.defs() } else { &[] };
        let request = &self.request;
        let params = Params {
            tools,
            client_tools: &request.client_defs,
            tool_choice,
            // The loop sums usage over rounds, so it asks for it; a transparent relay
            // sends what the client sent (some servers refuse the field).
            stream_options: match (request.stream, self.mode) {
                (false, _) => None,
                (true, Mode::Relay) => request.stream_options.as_ref(),
                (true, Mode::Loop) => Some(&*UPSTREAM_STREAM_OPTIONS),
            },
            // A relay changes nothing in an answer but its `id` and `model` (unless it
            // resumed a loop's rounds: their answer is lariat's, built whole).
            reading: match self.mode {
                Mode::Relay if request.stream || self.progress.rounds == 0 => Reading::Relayed,
                Mode::Relay | Mode::Loop => Reading::Typed,
            },
            rest: &request.rest,
        };
        let agent = &*self.agent;
        let mut history = Fitting {
            messages: &mut self.messages,
            compactor: &mut self.compactor,
            tools: [tools, &request.client_defs],
            rest: &request.rest,
            settings: &agent.settings.compaction,
            summarizer: agent.summarizer.as_ref(),
            upstream: &*agent.upstream,
            metrics: &agent.metrics,
            model: &self.model.name,
            user: &self.caller.user,
            events: &self.events,
        };
        let chain = &self.model.chain;
        let answered =
            agent.upstream.call(chain, &mut self.progress.route, &mut history, &params, request.stream).await?;
        self.progress.limit = self.model.max_rounds.min(answered.target.max_rounds.unwrap_or(u32::MAX));
        Ok((answered.reply, answered.target.label.clone(), answered.attempts))
    }

    /// Reads an upstream reply: deltas for a streaming client as they arrive, then
    /// the whole round, booked (usage, tokens). A stream cut after its start comes
    /// back as the error it ends with, beside what arrived.
    pub async fn relay(&mut self, reply: Reply, target: &str, voice: Voice) -> (RoundResult, Option<Error>) {
        let request = &self.request;
        // With an answer model the loop model's words are notes, not the reply.
        let hide_text = voice == Voice::Loop && self.model.answer.is_some();
        let defer_calls = self.defers_client_calls(voice);
        let mut chunks: ChunkStream = match reply {
            Reply::Complete(completion) if !request.stream => {
                let round = RoundResult::from_completion(completion, &request.client_names, self.mode);
                return (self.book(round, target, voice).await, None);
            }
            Reply::Relayed(relayed) if !request.stream => {
                return (self.book(RoundResult::from_relayed(*relayed), target, voice).await, None);
            }
            Reply::Stream(chunks) => chunks,
            Reply::Complete(completion) => as_chunks(completion),
            // Asked for by non-streaming requests only: the choice is all a stream needs.
            Reply::Relayed(relayed) => as_chunks(relayed.into_completion()),
        };
        // A relayed stream is the client's: lariat keeps none of its text.
        let keep = if request.stream && self.mode == Mode::Relay { Keep::CallsOnly } else { Keep::Text };
        let opening = if self.progress.text_shown { Opening::AfterText } else { Opening::First };
        let mut round = StreamRound::new(&request.client_names, self.mode, opening, keep);
        let mut cut = None;
        while let Some(item) = chunks.next().await {
            match item {
                Ok(chunk) => {
                    let Some(mut delta) = round.push(chunk) else { continue };
                    if defer_calls && !delta.calls.is_empty() {
                        delta.calls.clear();
                        if delta.text.is_none() && !delta.role && delta.remains.is_none() {
                            continue;
                        }
                    }
                    if hide_text {
                        if delta.calls.is_empty() {
                            continue;
                        }
                        // Only the client's calls go out, as lariat's own chunk.
                        (delta.text, delta.remains, delta.role) = (None, None, true);
                    }
                    // Not `self.emit`: `round` borrows the request.
                    let _ = self.events.send(Event::Delta(delta)).await;
                }
                Err(failure) => {
                    cut = Some(Error::Upstream(crate::upstream::Error::midstream(target, failure)));
                    break;
                }
            }
        }
        if request.stream && round.has_text() && !hide_text {
            self.progress.text_shown = true;
        }
        (self.book(round.finish(), target, voice).await, cut)
    }

    /// Sums the round's usage and counts its tokens; announces its client calls.
    async fn book(&mut self, round: RoundResult, target: &str, voice: Voice) -> RoundResult {
        if let Some(u) = &round.usage {
            let (user, model) = (&self.caller.user, &self.model.name);
            let metrics = &self.agent.metrics;
            metrics.record_tokens(user, model, target, u.prompt_tokens, u.completion_tokens);
            if voice == Voice::Answer {
                metrics.record_answer_tokens(model, target, u.prompt_tokens, u.completion_tokens);
            }
        }
        self.progress.usage = Usage::add(self.progress.usage.take(), round.usage.clone());
        for call in round.message.calls().iter().filter(|c| self.is_client_call(c)) {
            self.emit(Event::ClientCall(call.clone())).await;
        }
        round
    }

    /// Whether a streamed round's client calls wait for the round's end: when one of
    /// its calls might be held for a human, the client's go out only after the answer.
    fn defers_client_calls(&self, voice: Voice) -> bool {
        voice == Voice::Loop && self.mode == Mode::Loop && self.agent.settings.gate.may_hold(&self.caller)
    }

    fn is_client_call(&self, call: &ToolCall) -> bool {
        self.mode == Mode::Relay || self.request.client_names.contains(&call.function.name)
    }

    /// Decides what a finished round means: the answer, or tools to run, hold or
    /// hand out.
    async fn act(&mut self, round: Round) -> Step {
        let Round { result, final_call, shown } = round;
        let RoundResult { mut message, finish_reason, completion_rest, choice_rest, kept, .. } = result;
        let calls = message.tool_calls.take().unwrap_or_default();
        if calls.is_empty() || final_call {
            if final_call {
                tracing::warn!(rounds = self.progress.rounds, "round limit reached; the model answered without tools");
            }
            let finish_reason = match finish_reason {
                Some(_) if final_call && !calls.is_empty() => FinishReason::Stop,
                reason => reason.unwrap_or(FinishReason::Stop),
            };
            let ended_by = if final_call { super::Ending::RoundLimit } else { super::Ending::Answer };
            let finished = Box::new(Finished {
                message,
                finish_reason,
                usage: None,
                rounds: self.progress.rounds,
                ended_by,
                confirmation: None,
                answered_by: None,
                completion_rest,
                choice_rest,
                kept,
            });
            return self.answered(finished).await;
        }
        let server_calls: Vec<&ToolCall> = calls.iter().filter(|c| !self.is_client_call(c)).collect();
        let gate = &self.agent.settings.gate;
        let (held, runnable): (Vec<&ToolCall>, Vec<&ToolCall>) = server_calls
            .iter()
            .partition(|c| self.tools.contains(&c.function.name) && gate.holds(&self.caller, &c.function.name));
        let round = self.progress.rounds + 1;
        self.emit(Event::RoundFinished { round, server_calls: server_calls.len() }).await;
        let results = self.execute(&runnable).await;
        // A round counts when lariat ran (or held) something; a relayed round did not.
        if !server_calls.is_empty() {
            self.progress.rounds += 1;
        }
        if !held.is_empty() {
            let held: Vec<ToolCall> = held.into_iter().cloned().collect();
            message.tool_calls = Some(calls);
            return match self.pause(message, results, held).await {
                Ok(checkpoint) => Step::Ask(Box::new(checkpoint)),
                Err(error) => Step::Fail(error),
            };
        }
        message.tool_calls = Some(calls);
        self.go_on(message, results, shown, completion_rest, choice_rest)
    }

    /// After a round's server calls ran: hand out its client calls, or append it to
    /// the conversation and go round again.
    fn go_on(
        &mut self,
        message: Message,
        results: Vec<Message>,
        shown: Shown,
        completion_rest: Map<String, Value>,
        choice_rest: Map<String, Value>,
    ) -> Step {
        let client_calls: Vec<ToolCall> = message.calls().iter().filter(|c| self.is_client_call(c)).cloned().collect();
        if !client_calls.is_empty() {
            let handout = Handout { shown, message, results, client_calls, completion_rest, choice_rest };
            return Step::Suspend(Box::new(handout));
        }
        self.append_round(message, results);
        if prepare::forces_a_call(self.request.tool_choice.as_ref()) {
            self.request.tool_choice = Some(json!("auto"));
        }
        Step::Call
    }

    /// Appends a round to the conversation: its assistant message, then the results
    /// in the order of its calls (models and some servers expect them so).
    pub fn append_round(&mut self, message: Message, mut results: Vec<Message>) {
        let calls = message.calls();
        let position = |m: &Message| {
            m.tool_call_id.as_deref().and_then(|id| calls.iter().position(|c| c.id == id)).unwrap_or(usize::MAX)
        };
        results.sort_by_key(position);
        self.messages.push(message);
        self.messages.extend(results);
    }

    /// Runs `calls` with the request's executor; results in the same order.
    pub async fn execute(&self, calls: &[&ToolCall]) -> Vec<Message> {
        let client_tools: Vec<&str> = self.request.client_names.iter().map(String::as_str).collect();
        let executor = Executor {
            tools: &self.tools,
            client_tools: &client_tools,
            max_output_bytes: self.agent.settings.max_output_bytes,
            metrics: &self.agent.metrics,
            audit: Audit { user: &self.caller.user, model: &self.model.name, off_record: self.off_record },
            events: &self.events,
        };
        executor.run(calls).await
    }

    /// Continues a paused round with the human's answer: the held calls run (yes) or
    /// get the denial as their result (anything else).
    async fn resume(&mut self, resume: Resume) -> Step {
        // Tools may run before the first upstream call: start the response now so a
        // streaming client gets keep-alives meanwhile.
        let sticky = self.progress.route.sticky().and_then(|i| self.model.chain.get(i)).map(|e| e.label.clone());
        self.start(sticky, 0).await;
        let Resume { checkpoint, verdict, followup } = resume;
        let mut results = checkpoint.results;
        let held: Vec<&ToolCall> = checkpoint.held.iter().collect();
        if let Some(denial) = verdict.denial() {
            // Its held calls and its client calls (never handed out) all get the denial.
            let client_calls = checkpoint.assistant.calls().iter().filter(|c| self.is_client_call(c));
            let denied = held.into_iter().chain(client_calls).map(|c| Message::tool_result(&c.id, denial.into()));
            results.extend(denied.collect::<Vec<_>>());
            self.append_round(checkpoint.assistant, results);
            self.messages.extend(followup);
            return Step::Call;
        }
        results.extend(self.execute(&held).await);
        self.go_on(checkpoint.assistant, results, Shown::Pending, Map::new(), Map::new())
    }

    async fn say(&mut self, text: String) -> Step {
        self.start(None, 0).await;
        if self.request.stream {
            let delta = super::Delta { role: true, text: Some(text.clone()), ..super::Delta::default() };
            self.emit(Event::Delta(delta)).await;
        }
        let message = Message::assistant(text.into(), Vec::new());
        Step::Answer(Box::new(Finished::plain(message)))
    }

    async fn answer(&mut self, finished: Box<Finished>) {
        if finished.ended_by != super::Ending::Notice {
            self.agent.metrics.record_rounds(&self.model.name, finished.rounds);
        }
        self.emit(Event::Finished(finished)).await;
    }
}

/// A whole answer as the chunks of a stream.
fn as_chunks(completion: ChatCompletion) -> ChunkStream {
    let chunks = ChatCompletion::into_chunks(completion).into_iter();
    Box::pin(futures::stream::iter(chunks.map(|chunk| Ok(StreamChunk::Typed(chunk)))))
}
