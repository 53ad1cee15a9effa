//! The Responses API face (`/v1/responses`): the same loop as Chat Completions, its
//! request translated (`input`), its events rendered as a `response` object
//! (`output`) or as the Responses event stream (`stream`), and the response with its
//! conversation kept for `previous_response_id` (`stored`).

mod input;
mod output;
mod stored;
mod stream;

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use http::HeaderValue;
use serde_json::{Value, json};

use super::auth::Key;
use super::commit::{self, Started};
use super::extract::JsonBody;
use super::handlers::{Asked, authorize, labelled};
use super::{AppState, ModelLabel};
use crate::agent::{Events, Finished, Turn};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::openai::Message;
use crate::openai::responses::{Input, ResponsesRequest};
use crate::store::Store;
use output::{End, Shell};
use stored::Stored;
use stream::{After, Out, StreamFace};

/// `POST /v1/responses`.
pub async fn create(
    State(state): State<Arc<AppState>>,
    Key(caller): Key,
    asked: Asked,
    JsonBody(request): JsonBody<ResponsesRequest>,
) -> Response {
    let label = state.config.models.get(&request.model).map(|m| ModelLabel(m.name.clone()));
    labelled(respond(&state, caller, request, &asked).await, label)
}

/// `GET /v1/responses/{id}`: a stored response, to the key that made it.
pub async fn get(
    State(state): State<Arc<AppState>>,
    Key(caller): Key,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    match stored::load(&state.agent.store, &caller, &id).await? {
        Some(stored) => Ok(Json(stored.response).into_response()),
        None => Err(ApiError::ResponseNotFound(id)),
    }
}

/// `DELETE /v1/responses/{id}`.
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Key(caller): Key,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if stored::delete(&state.agent.store, &caller, &id).await? {
        Ok(Json(json!({"id": id, "object": "response", "deleted": true})).into_response())
    } else {
        Err(ApiError::ResponseNotFound(id))
    }
}

async fn respond(
    state: &AppState,
    caller: Arc<Caller>,
    mut request: ResponsesRequest,
    asked: &Asked,
) -> Result<Response, ApiError> {
    let model = authorize(state, &caller, state.config.models.get(&request.model).cloned(), &request.model)?;
    let progress = asked.progress(&caller, &model)?;
    let store = &state.agent.store;
    let history = match &request.previous_response_id {
        Some(id) => match stored::load(store, &caller, id).await? {
            Some(previous) => previous.messages,
            None => return Err(ApiError::ResponseNotFound(id.clone())),
        },
        None => Vec::new(),
    };
    let mut input = request.input.take();
    if let Some(Input::Items(items)) = &mut input {
        stored::resolve_references(store, &caller, items).await?;
    }
    request.input = input;
    let translated = input::translate(&request, history)?;
    let shell = Shell::new(&request, request.stores());
    let keep = request.stores().then(|| Keeper {
        store: store.clone(),
        caller: caller.clone(),
        id: shell.id.clone(),
        // The conversation so far, without this request's instructions.
        conversation: translated.chat.messages[translated.instructions..].to_vec(),
        ttl: state.config.responses.ttl,
    });
    let turn = Turn { caller, model, request: translated.chat, off_record: asked.off_record };
    let mut events = state.agent.run(turn).await?;
    let Started { target, attempts, early } = commit::started(&mut events).await?;
    let mut response = if request.stream {
        let events: Events = Box::pin(futures::stream::iter(early).chain(events));
        let face = StreamFace::new(shell, progress);
        let guard = state.metrics.stream_opened();
        let events = sse(face, events, keep).map(move |event| {
            // The guard lives as long as the stream (the active-streams gauge).
            let _ = &guard;
            Ok::<_, Infallible>(event)
        });
        let keepalive = KeepAlive::new().interval(state.config.server.keepalive).text("keep-alive");
        let mut response = Sse::new(events).keep_alive(keepalive).into_response();
        response.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
        response
    } else {
        let finished = *commit::finished(events).await?;
        let items = output::items(&shell, &finished);
        let (status, incomplete) = output::outcome(&finished);
        let output = items.iter().map(|i| i.to_json(true)).collect();
        let Finished { message, usage, .. } = finished;
        let mut body = shell.object(status, output, End { usage, incomplete, error: None });
        // A stream's last event is marked the same way (see `sse`).
        if let Some(keep) = keep
            && !keep.keep(message, body.clone()).await
        {
            body["store"] = json!(false);
        }
        Json(body).into_response()
    };
    let headers = response.headers_mut();
    if let Some(value) = target.as_deref().and_then(|t| HeaderValue::from_str(t).ok()) {
        headers.insert(super::header::UPSTREAM, value);
    }
    headers.insert(super::header::ATTEMPTS, HeaderValue::from(attempts));
    Ok(response)
}

/// Keeps a finished response and its conversation.
struct Keeper {
    store: Store,
    caller: Arc<Caller>,
    /// The response's id.
    id: String,
    /// The conversation before the answer.
    conversation: Vec<Message>,
    ttl: std::time::Duration,
}

impl Keeper {
    /// Whether it was kept. A store that refuses costs the client the continuation,
    /// never the answer.
    async fn keep(self, answer: Message, response: Value) -> bool {
        let Self { store, caller, id, mut conversation, ttl } = self;
        conversation.push(answer);
        match stored::save(&store, &id, &Stored::new(&caller, conversation, response), ttl).await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, id, "the response could not be stored; it cannot be continued or fetched");
                false
            }
        }
    }
}

/// The stream's events as SSE: rendered, numbered, kept at the end.
fn sse(face: StreamFace, events: Events, keep: Option<Keeper>) -> impl Stream<Item = SseEvent> + Send {
    let mut face = face;
    let start = face.start();
    let state = Pipe { face, events, keep, ended: false };
    let rest = futures::stream::unfold(state, |mut pipe| async move {
        if pipe.ended {
            return None;
        }
        loop {
            let Some(event) = pipe.events.next().await else {
                pipe.ended = true;
                pipe.face.fail(&ApiError::Internal("the loop ended without an answer".into()));
                return Some((pipe.face.drain(), pipe));
            };
            let (mut outs, after) = pipe.face.render(event);
            match after {
                After::Going => {}
                After::Failed => pipe.ended = true,
                After::Finished(ending) => {
                    pipe.ended = true;
                    if let Some(keep) = pipe.keep.take()
                        && !keep.keep(ending.message, ending.response).await
                        && let Some(last) = outs.last_mut()
                    {
                        last.data["response"]["store"] = json!(false);
                    }
                }
            }
            if !outs.is_empty() || pipe.ended {
                return Some((outs, pipe));
            }
        }
    });
    futures::stream::iter(start)
        .chain(rest.flat_map(futures::stream::iter))
        .map(|Out { kind, data }| SseEvent::default().event(kind).data(data.to_string()))
}

struct Pipe {
    face: StreamFace,
    events: Events,
    keep: Option<Keeper>,
    ended: bool,
}
