//! The bearer key: every `/v1` handler takes a [`Key`], so a request without a valid
//! key is answered 401 before its body is read.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use http::request::Parts;

use super::AppState;
use crate::auth::Caller;
use crate::error::ApiError;

/// The caller the request's bearer key names (with the person and chat a
/// frontend's key forwards).
pub struct Key(pub Arc<Caller>);

impl FromRequestParts<Arc<AppState>> for Key {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let header = parts.headers.get(http::header::AUTHORIZATION).map(http::HeaderValue::as_bytes);
        match state.keys.authenticate(header) {
            Ok(caller) => Ok(Self(state.keys.identify(caller, &parts.headers))),
            Err(e) => Err(ApiError::Unauthorized(e.to_string())),
        }
    }
}
