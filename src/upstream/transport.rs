//! How lariat reaches one provider: hyper's pooled client, with the URL parsed and
//! the fixed headers built once at start-up, so a request costs no URL parsing and
//! no header building. A provider the environment routes through a proxy
//! (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, minus `NO_PROXY`) is reached through
//! reqwest instead, which speaks to proxies; both answer with the same body type.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use http_body_util::{Either, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use secrecy::ExposeSecret;

use crate::config::Provider;

/// An upstream answer's body, whichever client fetched it.
pub type Body = Either<hyper::body::Incoming, reqwest::Body>;

type Direct = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// One provider's client, its chat URL and the headers every request to it carries.
#[derive(Debug)]
pub struct Endpoint {
    client: Transport,
    uri: Uri,
    /// `content-type`, the provider's `authorization` (marked sensitive) and its own headers.
    headers: HeaderMap,
}

#[derive(Debug)]
enum Transport {
    Direct(Direct),
    Proxied(reqwest::Client),
}

/// Why a request got no answer from the provider.
#[derive(Debug)]
pub struct SendError {
    /// No connection could be made (so the request never left).
    pub connect: bool,
    pub cause: String,
}

impl Endpoint {
    /// The endpoint of `provider`, connecting within `connect`. `Err` says why it
    /// cannot be built (a bad URL or header, no TLS roots).
    pub fn new(provider: &Provider, connect: Duration, tls: &rustls::ClientConfig) -> Result<Self, String> {
        // `url` first: it turns an international host name into its ASCII form.
        let url = url::Url::parse(&provider.chat_url).map_err(|e| format!("its URL: {e}"))?;
        let uri: Uri = url.as_str().parse().map_err(|e| format!("its URL: {e}"))?;
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(key) = &provider.api_key {
            let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose_secret()))
                .map_err(|_| "its api_key is not a valid header value".to_owned())?;
            value.set_sensitive(true);
            headers.insert(http::header::AUTHORIZATION, value);
        }
        for (name, value) in &provider.headers {
            let name =
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("header `{name}`: not a valid name"))?;
            let mut value = HeaderValue::from_str(value.expose_secret())
                .map_err(|_| format!("header `{name}`: not a valid value"))?;
            value.set_sensitive(true);
            headers.append(name, value);
        }
        let proxied = hyper_util::client::proxy::matcher::Matcher::from_env().intercept(&uri).is_some();
        let client = if proxied {
            Transport::Proxied(proxied_client(provider, connect)?)
        } else {
            Transport::Direct(direct_client(provider, connect, tls.clone()))
        };
        Ok(Self { client, uri, headers })
    }

    /// Posts `body` (JSON) to the provider's chat URL.
    pub async fn post(&self, body: Vec<u8>, stream: bool) -> Result<http::Response<Body>, SendError> {
        let mut request = http::Request::new(Bytes::from(body));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = self.uri.clone();
        let headers = request.headers_mut();
        headers.clone_from(&self.headers);
        let accept = if stream { "text/event-stream" } else { "application/json" };
        headers.insert(http::header::ACCEPT, HeaderValue::from_static(accept));
        match &self.client {
            Transport::Direct(client) => {
                let response = client
                    .request(request.map(Full::new))
                    .await
                    .map_err(|e| SendError { connect: e.is_connect(), cause: crate::text::root_cause(&e) })?;
                Ok(response.map(Either::Left))
            }
            Transport::Proxied(client) => {
                let request = reqwest::Request::try_from(request)
                    .map_err(|e| SendError { connect: true, cause: crate::text::root_cause(&e) })?;
                let response = client
                    .execute(request)
                    .await
                    .map_err(|e| SendError { connect: e.is_connect(), cause: crate::text::root_cause(&e) })?;
                Ok(http::Response::from(response).map(Either::Right))
            }
        }
    }
}

fn direct_client(provider: &Provider, connect: Duration, tls: rustls::ClientConfig) -> Direct {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect));
    http.set_nodelay(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(provider.pool_idle_timeout)
        .pool_max_idle_per_host(provider.pool_max_idle_per_host)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector)
}

/// TLS as reqwest sets it up: the platform's verifier (system roots) on aws-lc-rs.
/// Without an `https` provider no roots are loaded (they cost start-up time and are
/// never used): the connector then has no root to trust, and no URL that needs one.
pub fn tls_config(https: bool) -> Result<rustls::ClientConfig, String> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = if https {
        builder.with_platform_verifier().map_err(|e| format!("TLS: {e}"))?
    } else {
        builder.with_root_certificates(rustls::RootCertStore::empty())
    };
    Ok(builder.with_no_client_auth())
}

fn proxied_client(provider: &Provider, connect: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(connect)
        .pool_idle_timeout(provider.pool_idle_timeout)
        .pool_max_idle_per_host(provider.pool_max_idle_per_host)
        // A redirect would carry the provider's key to wherever it points.
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .build()
        .map_err(|e| e.to_string())
}
