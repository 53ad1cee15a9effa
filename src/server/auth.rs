//! Bearer-key middleware: resolves the caller or answers 401.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::error::ApiError;

/// Puts the authenticated `Arc<Caller>` into the request extensions.
pub async fn require_key(State(state): State<Arc<AppState>>, mut request: Request, next: Next) -> Response {
    let header = request.headers().get(http::header::AUTHORIZATION).map(http::HeaderValue::as_bytes);
    match state.keys.authenticate(header) {
        Ok(caller) => {
            let caller = state.keys.identify(caller, request.headers());
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(e) => ApiError::Unauthorized(e.to_string()).into_response(),
    }
}
