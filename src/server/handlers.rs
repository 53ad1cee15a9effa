//! Route handlers: parse, call the agent, encode. Errors are `ApiError`s.

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequestParts, Request, State};
use axum::response::{IntoResponse, Response};
use http::HeaderValue;
use http::request::Parts;
use serde_json::json;

use super::auth::Key;
use super::extract::JsonBody;
use super::{AppState, ModelLabel, Probe, chat, header};
use crate::agent::Turn;
use crate::auth::Caller;
use crate::config::{Progress, VirtualModel};
use crate::error::ApiError;
use crate::openai::ChatRequest;

pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    Key(caller): Key,
    asked: Asked,
    JsonBody(request): JsonBody<ChatRequest>,
) -> Response {
    let model = state.config.models.get(&request.model).cloned();
    let label = model.as_ref().map(|m| ModelLabel(m.name.clone()));
    let response = chat(&state, caller, model, request, &asked).await;
    labelled(response, label)
}

/// The answer, or the error with how many upstream attempts it took; labelled with
/// its virtual model for the metrics.
pub(super) fn labelled(response: Result<Response, ApiError>, label: Option<ModelLabel>) -> Response {
    let mut response = response.unwrap_or_else(|error| {
        let attempts = error.attempts();
        let mut response = error.into_response();
        response.headers_mut().insert(super::header::ATTEMPTS, HeaderValue::from(attempts));
        response
    });
    if let Some(label) = label {
        response.extensions_mut().insert(label);
    }
    response
}

async fn chat(
    state: &AppState,
    caller: Arc<Caller>,
    model: Option<Arc<VirtualModel>>,
    request: ChatRequest,
    asked: &Asked,
) -> Result<Response, ApiError> {
    let model = authorize(state, &caller, model, &request.model)?;
    if request.messages.is_empty() {
        return Err(ApiError::bad_request("`messages` must contain at least one message", Some("messages")));
    }
    let progress = asked.progress(&caller, &model)?;
    chat::respond(state, Turn { caller, model, request, off_record: asked.off_record }, progress).await
}

/// What a request asks of lariat in its own headers, read from them in place (the
/// header map is not copied).
pub(super) struct Asked {
    /// `x-lariat-off-record: true` (or `1`): keep message and tool contents out of
    /// the logs.
    pub off_record: bool,
    /// `x-lariat-progress`, parsed (an error is reported once the model is known).
    progress: Option<Result<Progress, String>>,
}

impl<S: Send + Sync> FromRequestParts<S> for Asked {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let text = |name| parts.headers.get(name).map(|v: &HeaderValue| v.to_str().unwrap_or_default().trim());
        Ok(Self {
            off_record: text(header::OFF_RECORD).is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1"),
            progress: text(header::PROGRESS).map(str::parse::<Progress>),
        })
    }
}

impl Asked {
    /// The request's `x-lariat-progress`, else the key's setting, else the model's.
    pub(super) fn progress(&self, caller: &Caller, model: &VirtualModel) -> Result<Progress, ApiError> {
        match &self.progress {
            Some(Ok(progress)) => Ok(*progress),
            Some(Err(reason)) => Err(ApiError::bad_request(format!("x-lariat-progress: {reason}"), None)),
            None => Ok(caller.progress.unwrap_or(model.progress)),
        }
    }
}

/// The model must exist and the key must be allowed it; with `hide_forbidden_models`
/// a forbidden model is indistinguishable from a missing one.
pub(super) fn authorize(
    state: &AppState,
    caller: &Caller,
    model: Option<Arc<VirtualModel>>,
    requested: &str,
) -> Result<Arc<VirtualModel>, ApiError> {
    let not_found = || ApiError::ModelNotFound(requested.to_owned());
    let model = model.ok_or_else(not_found)?;
    if caller.may_use_model(&model.name) {
        Ok(model)
    } else if state.config.server.hide_forbidden_models {
        Err(not_found())
    } else {
        Err(ApiError::ForbiddenModel(requested.to_owned()))
    }
}

pub async fn list_models(State(state): State<Arc<AppState>>, Key(caller): Key) -> Response {
    let data: Vec<_> = state
        .config
        .models
        .values()
        .filter(|m| caller.may_use_model(&m.name))
        .map(|m| model_entry(&state, m))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

/// `GET /v1/models/{id}` (the SDKs' `models.retrieve`): the same filtering as the
/// list, so a model the key may not use does not exist for it.
pub async fn get_model(
    State(state): State<Arc<AppState>>,
    Key(caller): Key,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    match state.config.models.get(&id).filter(|m| caller.may_use_model(&m.name)) {
        Some(model) => Json(model_entry(&state, model)).into_response(),
        None => ApiError::ModelNotFound(id).into_response(),
    }
}

fn model_entry(state: &AppState, model: &VirtualModel) -> serde_json::Value {
    let mut entry = json!({"id": model.name, "object": "model", "created": state.started_at, "owned_by": "lariat"});
    if let Some(description) = &model.description {
        entry["description"] = json!(description);
    }
    entry
}

pub async fn health() -> Response {
    probe(Json(json!({"status": "ok"})).into_response())
}

/// 200 once every tool source has been listed; the body names each source's state
/// (a source that failed to start is reported, and its tools are simply absent).
/// A 503 names each part that is not ready yet, in its one log line and its body.
pub async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let sources = state.agent.tools.mcp_sources();
    if state.is_ready() {
        let sources: serde_json::Map<String, serde_json::Value> =
            sources.iter().map(|s| (s.name().to_owned(), json!(s.status().to_string()))).collect();
        return probe(Json(json!({"status": "ready", "tool_sources": sources})).into_response());
    }
    let waiting: Vec<String> = sources
        .iter()
        .filter(|s| !matches!(s.status(), crate::tools::mcp::Status::Ready { .. }))
        .map(|s| format!("tool source `{}` ({})", s.name(), s.status()))
        .collect();
    let message = if waiting.is_empty() {
        "not ready: the tokenizer tables are still loading".to_owned()
    } else {
        format!("not ready: {}", waiting.join("; "))
    };
    probe(ApiError::Unavailable(message).into_response())
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut response = state.metrics.encode().into_response();
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    probe(response)
}

fn probe(mut response: Response) -> Response {
    response.extensions_mut().insert(Probe);
    response
}

pub async fn not_found(request: Request) -> ApiError {
    ApiError::RouteNotFound { method: request.method().to_string(), path: request.uri().path().to_owned() }
}

pub async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::MethodNotAllowed(request.method().to_string())
}
