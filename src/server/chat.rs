//! The Chat Completions face: renders the loop's events as one `chat.completion`
//! (JSON) or as `chat.completion.chunk`s (SSE).
//!
//! The response commits only once the loop has started: a failure before that is an
//! HTTP error status; after it, an error event in the stream.

use std::sync::Arc;

use axum::Json;
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use http::{HeaderName, HeaderValue};
use serde_json::{Map, Value, json};

use super::commit::{self, Started};
use super::progress;
use super::{AppState, header as names, sse};
use crate::agent::{CallDelta, Delta, Ending, Event, Finished, Remains, Turn};
use crate::config::Progress;
use crate::error::ApiError;
use crate::openai::{ChatChunk, ChatCompletion, Choice, FunctionDelta, RelayedChunk, Role, ToolCallDelta};

/// Chunks for the SSE encoder; an `Err` ends the stream with an error event.
pub type ChunkResults = std::pin::Pin<Box<dyn Stream<Item = Result<Outgoing, ApiError>> + Send>>;

/// One chunk of a Chat Completions stream.
#[derive(Debug)]
pub enum Outgoing {
    /// A chunk lariat wrote or changed (boxed: events are moved through the stream
    /// several times, and most of a relayed stream's are `Relayed`).
    Chunk(Box<ChatChunk>),
    /// An upstream chunk sent on as its bytes, under the response's id and model.
    Relayed(Box<RelayedChunk>, Arc<Stamp>),
}

impl Outgoing {
    /// Appends the chunk's JSON to `out`.
    pub fn write(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        match self {
            Self::Chunk(chunk) => serde_json::to_writer(out, chunk),
            Self::Relayed(chunk, stamp) => {
                chunk.write(&stamp.id, &stamp.model, out);
                Ok(())
            }
        }
    }
}

/// The response's `id` and `model` as JSON values, encoded once per response.
#[derive(Debug)]
pub struct Stamp {
    id: String,
    model: String,
}

impl Stamp {
    fn of(face: &Face) -> Self {
        let json = |s: &str| Value::from(s).to_string();
        Self { id: json(&face.id), model: json(&face.model) }
    }
}

/// Runs `turn` and answers it as Chat Completions; a stream shows `progress`.
pub async fn respond(state: &AppState, turn: Turn, progress: Progress) -> Result<Response, ApiError> {
    let stream = turn.request.stream;
    // With an answer model the loop's target is `x-lariat-loop-upstream`.
    let answering = turn.model.answer.is_some();
    let include_usage = turn.request.stream_options.as_ref().is_some_and(|o| o.include_usage);
    let face = Face { id: crate::text::new_id("chatcmpl-"), model: turn.model.name.clone() };
    let mut events = state.agent.run(turn).await?;
    // Progress before the start (compaction, fallback) waits until the response commits.
    let Started { target, attempts, early } = commit::started(&mut events).await?;
    let (mut confirmation, mut answered_by) = (None, None);
    let mut response = if stream {
        let events = futures::stream::iter(early).chain(events);
        let chunks = render_stream(events, StreamFace::new(face, include_usage, progress));
        sse::respond(chunks, state.config.server.keepalive, state.metrics.stream_opened())
    } else {
        let finished = commit::finished(events).await?;
        confirmation = finished.confirmation.as_ref().map(|c| c.id.clone());
        answered_by = finished.answered_by.clone();
        face.whole(*finished)
    };
    let headers = response.headers_mut();
    let header =
        |name: HeaderName, value: Option<&str>| value.and_then(|v| HeaderValue::from_str(v).ok()).map(|v| (name, v));
    let upstream = match (answering, stream) {
        (false, _) => target.as_deref(),
        // A stream's headers leave before the answer model is called: its target is
        // in the last chunk instead.
        (true, true) => None,
        (true, false) => answered_by.as_deref().or(target.as_deref()),
    };
    let loop_upstream = answering.then_some(target.as_deref()).flatten();
    for (name, value) in
        [header(names::UPSTREAM, upstream), header(names::LOOP_UPSTREAM, loop_upstream)].into_iter().flatten()
    {
        headers.insert(name, value);
    }
    if let Some(value) = confirmation.and_then(|id| HeaderValue::from_str(&id).ok()) {
        headers.insert(names::CONFIRMATION, value);
    }
    headers.insert(names::ATTEMPTS, HeaderValue::from(attempts));
    Ok(response)
}

/// What every chunk and the completion carry.
struct Face {
    id: String,
    model: String,
}

/// What the client has been sent so far.
#[derive(Debug, Default)]
struct Seen {
    /// `role: "assistant"` (only the first chunk may carry it).
    role: bool,
    /// A finish reason (relayed from the upstream as it came).
    finish: bool,
}

struct StreamFace {
    face: Face,
    stamp: Arc<Stamp>,
    include_usage: bool,
    progress: Progress,
    /// The last status line shown (`Progress::Status`): closed at the end.
    status: Option<String>,
    seen: Seen,
}

fn render_stream(events: impl Stream<Item = Event> + Send + 'static, mut face: StreamFace) -> ChunkResults {
    Box::pin(events.flat_map(move |event| futures::stream::iter(face.render(event).into_iter().flatten())))
}

/// At most three chunks per event (the end: status closed, finish reason, usage).
type Rendered = [Option<Result<Outgoing, ApiError>>; 3];

fn out(chunk: ChatChunk) -> Result<Outgoing, ApiError> {
    Ok(Outgoing::Chunk(Box::new(chunk)))
}

impl StreamFace {
    fn new(face: Face, include_usage: bool, progress: Progress) -> Self {
        let stamp = Arc::new(Stamp::of(&face));
        Self { face, stamp, include_usage, progress, status: None, seen: Seen::default() }
    }

    fn render(&mut self, event: Event) -> Rendered {
        // With progress off, its events fall through to the `match` and show nothing.
        if self.progress != Progress::Off
            && let Some(line) = progress::line(&event)
        {
            return [self.progress(line).map(|c| out(self.stamp(c))), None, None];
        }
        let chunk = match event {
            Event::Delta(delta) => return [self.delta(delta).map(Ok), None, None],
            Event::ConfirmationAsked { text, confirmation } => {
                let extra = Map::from_iter([("lariat".to_owned(), json!({"confirmation": confirmation.to_json()}))]);
                let chunk = ChatChunk::text(text, !self.seen.role, extra);
                self.seen.role = true;
                Some(chunk)
            }
            Event::Finished(finished) => {
                let status = self.close_status().map(out);
                let Finished { finish_reason, usage, answered_by, .. } = *finished;
                let finish = (!self.seen.finish).then(|| {
                    let mut chunk = ChatChunk::finish(finish_reason);
                    if let Some(target) = answered_by {
                        chunk.rest.insert("lariat".into(), json!({"upstream": &*target}));
                    }
                    self.stamp(chunk)
                });
                let usage = self.include_usage.then(|| self.stamp(ChatChunk::usage(usage.unwrap_or_default())));
                return [status, finish.map(out), usage.map(out)];
            }
            Event::Failed(error) => return [self.close_status().map(out), Some(Err(error.into())), None],
            // A source is listed where status lines show (Open WebUI); the other
            // progress modes have no place for it.
            Event::SourceRead { name, url, excerpt } if self.progress == Progress::Status => {
                Some(ChatChunk::event(source_event(&name, &url, &excerpt)))
            }
            Event::Started { .. }
            | Event::ClientCall(_)
            | Event::RoundStarted { .. }
            | Event::RoundFinished { .. }
            | Event::ToolStarted { .. }
            | Event::ToolFinished { .. }
            | Event::SourceRead { .. }
            | Event::Fallback { .. }
            | Event::Compacted { .. }
            | Event::HandedOver { .. }
            | Event::Suspended { .. } => None,
        };
        [chunk.map(|c| out(self.stamp(c))), None, None]
    }

    /// A progress line as this response shows progress (or not at all).
    fn progress(&mut self, line: String) -> Option<ChatChunk> {
        match self.progress {
            Progress::Off => None,
            Progress::Status => {
                let line = progress::plain(&line);
                let chunk = ChatChunk::event(json!({"type": "status", "data": {"description": line, "done": false}}));
                self.status = Some(line);
                Some(chunk)
            }
            Progress::Reasoning => {
                let role = (!self.seen.role).then_some(Role::Assistant);
                self.seen.role = true;
                let rest = Map::from_iter([("reasoning_content".to_owned(), json!(format!("{line}\n")))]);
                let delta = crate::openai::Delta { role, rest, ..crate::openai::Delta::default() };
                Some(ChatChunk::delta(delta, None))
            }
            Progress::Content => {
                let chunk = ChatChunk::text(format!("_{line}_\n\n"), !self.seen.role, Map::new());
                self.seen.role = true;
                Some(chunk)
            }
        }
    }

    /// The last status line again, marked done, so the UI stops showing it as running.
    fn close_status(&mut self) -> Option<ChatChunk> {
        let line = self.status.take()?;
        Some(self.stamp(ChatChunk::event(json!({"type": "status", "data": {"description": line, "done": true}}))))
    }

    fn stamp(&self, mut chunk: ChatChunk) -> ChatChunk {
        chunk.id.clone_from(&self.face.id);
        chunk.model.clone_from(&self.face.model);
        chunk
    }

    /// The upstream's chunk with lariat's view of choice 0 put back; `None` when
    /// nothing is left for the client. A relayed chunk goes out as it came.
    fn delta(&mut self, delta: Delta) -> Option<Outgoing> {
        let Delta { role, text, calls, finish, remains } = delta;
        let mut chunk = match remains {
            // A role that already went out (with a progress line) must not go out again.
            Some(Remains::Relayed(chunk)) if role && self.seen.role => match without_choice_zero(&chunk) {
                Some(typed) => typed,
                None => return Some(Outgoing::Relayed(chunk, self.stamp.clone())),
            },
            Some(Remains::Relayed(chunk)) => {
                self.seen.role |= role;
                self.seen.finish |= finish.is_some();
                return Some(Outgoing::Relayed(chunk, self.stamp.clone()));
            }
            Some(Remains::Typed(chunk)) => *chunk,
            None => ChatChunk::delta(crate::openai::Delta::default(), None),
        };
        if let Some(at) = chunk.choices.iter().position(|c| c.index == 0) {
            let choice = &mut chunk.choices[at];
            if role && !self.seen.role {
                choice.delta.role = Some(Role::Assistant);
                self.seen.role = true;
            }
            choice.delta.content = text;
            if !calls.is_empty() {
                choice.delta.tool_calls = Some(calls.into_iter().map(tool_call_delta).collect());
            }
            if finish.is_some() {
                self.seen.finish = true;
                choice.finish_reason = finish;
            }
            if choice.delta.is_empty() && choice.finish_reason.is_none() && choice.rest.values().all(Value::is_null) {
                chunk.choices.remove(at);
            }
        }
        (!chunk.choices.is_empty()).then(|| Outgoing::Chunk(Box::new(self.stamp(chunk))))
    }
}

/// A relayed chunk read typed, with what the round took from choice 0 (role, text,
/// calls, finish reason) taken out, as a typed round leaves its remains.
fn without_choice_zero(chunk: &RelayedChunk) -> Option<ChatChunk> {
    let mut typed = chunk.typed().ok()?;
    for choice in typed.choices.iter_mut().filter(|c| c.index == 0) {
        (choice.delta.role, choice.delta.content, choice.delta.tool_calls) = (None, None, None);
        choice.finish_reason = None;
    }
    Some(typed)
}

/// Open WebUI's `source` event, shaped as its own web search sends one: it lists
/// `source` under the answer, names it by the URL in `metadata`, and shows
/// `document` when the source is opened.
fn source_event(tool: &str, url: &str, excerpt: &str) -> Value {
    json!({
        "type": "source",
        "data": {
            "source": {"name": url, "url": url},
            "document": [excerpt],
            "metadata": [{"source": url, "name": url, "tool": tool}],
        }
    })
}

fn tool_call_delta(call: CallDelta) -> ToolCallDelta {
    let CallDelta { index, id, name, arguments } = call;
    let kind = id.is_some().then(|| "function".to_owned());
    let function = (name.is_some() || arguments.is_some()).then_some(FunctionDelta { name, arguments });
    ToolCallDelta { index, id, kind, function }
}

impl Face {
    /// The non-streaming response: a relayed answer as it came, under the response's
    /// `id` and `model`, or the answer lariat built.
    fn whole(self, mut finished: Finished) -> Response {
        match finished.kept.take() {
            Some(kept) if finished.rounds == 0 && finished.confirmation.is_none() => {
                let (stamp, mut body) = (Stamp::of(&self), Vec::new());
                kept.write(&stamp.id, &stamp.model, crate::clock::unix_now(), &mut body);
                ([(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
            }
            _ => Json(self.completion(finished)).into_response(),
        }
    }

    /// The answer lariat built: the last round's answer, every round's usage.
    fn completion(self, finished: Finished) -> ChatCompletion {
        let Finished {
            mut message,
            finish_reason,
            usage,
            rounds,
            ended_by,
            confirmation,
            answered_by: _,
            mut completion_rest,
            choice_rest,
            kept: _,
        } = finished;
        completion_rest.entry("object").or_insert_with(|| json!("chat.completion"));
        completion_rest.entry("created").or_insert_with(|| json!(crate::clock::unix_now()));
        if rounds > 0 {
            let round_limit = ended_by == Ending::RoundLimit;
            completion_rest.insert("lariat".into(), json!({"rounds": rounds, "round_limit": round_limit}));
        }
        if let Some(confirmation) = confirmation {
            message.rest.insert("lariat".into(), json!({"confirmation": confirmation.to_json()}));
        }
        ChatCompletion {
            id: self.id,
            model: self.model,
            choices: vec![Choice { index: 0, message, finish_reason: Some(finish_reason), rest: choice_rest }],
            usage,
            rest: completion_rest,
        }
    }
}

#[cfg(test)]
#[path = "chat_tests.rs"]
mod tests;
