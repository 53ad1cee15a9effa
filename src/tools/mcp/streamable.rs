//! The streamable HTTP transport's client, with what a server streams back (SSE
//! events) read through [`lines::filter`] first, as a stdio server's lines are.
//!
//! A server answering a POST with plain JSON instead of a stream is decoded by rmcp
//! before lariat sees it: there the filter cannot act (most servers stream; rmcp's
//! own and the TypeScript SDK's do by default).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
use http::{HeaderName, HeaderValue};
use rmcp::model::ClientJsonRpcMessage;
use rmcp::transport::streamable_http_client::{
    SseError, StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
};

use super::lines;

type Events = BoxStream<'static, Result<sse_stream::Sse, SseError>>;

#[derive(Clone)]
pub struct Client {
    inner: reqwest::Client,
    server: Arc<str>,
}

impl Client {
    /// Like rmcp's default client: no idle pool (a half-read response would stall
    /// the next request on it), and no redirects at all, so no header of ours ever
    /// follows one elsewhere.
    pub fn new(server: &str) -> Result<Self, String> {
        let inner = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(Self { inner, server: server.into() })
    }

    /// Every event's data through the filter; the rest of the event as it came.
    fn filtered(&self, events: Events) -> Events {
        let server = self.server.clone();
        events
            .map(move |event| {
                event.map(|mut event| {
                    if let Some(text) = event.data.as_deref()
                        && let Cow::Owned(bytes) = lines::filter(&server, text.as_bytes())
                    {
                        event.data = Some(String::from_utf8_lossy(bytes.trim_ascii_end()).into_owned());
                    }
                    event
                })
            })
            .boxed()
    }

    fn filtered_response(&self, response: StreamableHttpPostResponse) -> StreamableHttpPostResponse {
        match response {
            StreamableHttpPostResponse::Sse(events, session) => {
                StreamableHttpPostResponse::Sse(self.filtered(events), session)
            }
            other => other,
        }
    }
}

impl StreamableHttpClient for Client {
    type Error = reqwest::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        let response = self.inner.post_message(uri, message, session_id, auth_header, custom_headers).await?;
        Ok(self.filtered_response(response))
    }

    async fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        let response = self
            .inner
            .post_message_with_max_sse_event_size(
                uri,
                message,
                session_id,
                auth_header,
                custom_headers,
                max_sse_event_size,
            )
            .await?;
        Ok(self.filtered_response(response))
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), StreamableHttpError<Self::Error>> {
        self.inner.delete_session(uri, session_id, auth_header, custom_headers).await
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<Events, StreamableHttpError<Self::Error>> {
        let events = self.inner.get_stream(uri, session_id, last_event_id, auth_header, custom_headers).await?;
        Ok(self.filtered(events))
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<Events, StreamableHttpError<Self::Error>> {
        let events = self
            .inner
            .get_stream_with_max_sse_event_size(
                uri,
                session_id,
                last_event_id,
                auth_header,
                custom_headers,
                max_sse_event_size,
            )
            .await?;
        Ok(self.filtered(events))
    }
}
