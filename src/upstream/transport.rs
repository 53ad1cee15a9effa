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

/// Which URLs the environment sends through a proxy.
pub type Proxies = hyper_util::client::proxy::matcher::Matcher;

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
    /// A pool for each of the server's threads: a connection is then only ever used
    /// by the thread whose runtime drives it, so no request waits on another thread.
    Direct(Box<[Direct]>),
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
    /// The endpoint of `provider`, connecting within `connect`, through a proxy when
    /// `proxies` has one for its URL, with a connection pool for each of `threads`.
    /// `Err` says why it cannot be built (a bad URL or header).
    pub fn new(
        provider: &Provider,
        connect: Duration,
        tls: &rustls::ClientConfig,
        proxies: &Proxies,
        threads: usize,
    ) -> Result<Self, String> {
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
        let client = if let Some(proxy) = proxies.intercept(&uri) {
            Transport::Proxied(proxied_client(provider, connect, &proxy)?)
        } else {
            // A `Host` of the provider's own `headers` stays, as the client would keep it.
            if let Some(host) = plain_http_host(&uri) {
                headers.entry(http::header::HOST).or_insert(host);
            }
            // `pool_max_idle_per_host` bounds the provider's idle connections in all.
            let threads = threads.max(1);
            let idle = provider.pool_max_idle_per_host.div_ceil(threads);
            Transport::Direct((0..threads).map(|_| direct_client(provider, connect, tls.clone(), idle)).collect())
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
            Transport::Direct(pools) => {
                let client = &pools[crate::worker::index() % pools.len()];
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

/// The `Host` header of a plain `http` URL (always HTTP/1.1 here), built once: the
/// client would otherwise format it for every request. An `https` URL may be served
/// over HTTP/2, which carries the host in `:authority` instead, so the client sets
/// it when it knows the protocol.
fn plain_http_host(uri: &Uri) -> Option<HeaderValue> {
    if uri.scheme() != Some(&http::uri::Scheme::HTTP) {
        return None;
    }
    let host = uri.host()?;
    let value = match uri.port_u16() {
        Some(port) if port != 80 => HeaderValue::from_str(&format!("{host}:{port}")),
        _ => HeaderValue::from_str(host),
    };
    value.ok()
}

fn direct_client(provider: &Provider, connect: Duration, tls: rustls::ClientConfig, idle: usize) -> Direct {
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
        .pool_max_idle_per_host(idle)
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

/// reqwest with exactly the proxy chosen for the provider's URL (and its credentials).
fn proxied_client(
    provider: &Provider,
    connect: Duration,
    proxy: &hyper_util::client::proxy::matcher::Intercept,
) -> Result<reqwest::Client, String> {
    let mut through = reqwest::Proxy::all(proxy.uri().to_string()).map_err(|e| format!("its proxy: {e}"))?;
    if let Some(auth) = proxy.basic_auth() {
        through = through.custom_http_auth(auth.clone());
    }
    reqwest::Client::builder()
        .proxy(through)
        .connect_timeout(connect)
        .pool_idle_timeout(provider.pool_idle_timeout)
        .pool_max_idle_per_host(provider.pool_max_idle_per_host)
        // A redirect would carry the provider's key to wherever it points.
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .build()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn provider(url: &str) -> std::sync::Arc<Provider> {
        let text =
            format!("[providers.p]\nbase_url = \"{url}\"\napi_key = \"sk-test\"\n[models.m]\nchain = [\"p/x\"]\n");
        let config = crate::config::Config::from_toml(Path::new("t.toml"), &text, &|_| None).unwrap();
        config.providers["p"].clone()
    }

    /// A one-shot HTTP server: answers `body` and hands back what it was sent.
    async fn one_shot(body: &'static str) -> (String, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let served = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&seen).contains("\r\n\r\n{") {
                let n = socket.read(&mut buf).await.unwrap();
                seen.extend_from_slice(&buf[..n]);
            }
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(answer.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&seen).into_owned()
        });
        (address, served)
    }

    async fn post(endpoint: &Endpoint) -> String {
        use http_body_util::BodyExt;
        let response = endpoint.post(b"{}".to_vec(), false).await.unwrap();
        assert_eq!(response.status(), 200);
        String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_provider_is_reached_directly_with_its_key_and_headers() {
        let (address, served) = one_shot("{\"ok\":1}").await;
        let provider = provider(&format!("http://{address}/v1"));
        let tls = tls_config(false).unwrap();
        let endpoint = Endpoint::new(&provider, Duration::from_secs(1), &tls, &Proxies::builder().build(), 1).unwrap();
        assert!(matches!(endpoint.client, Transport::Direct(_)));
        assert_eq!(post(&endpoint).await, "{\"ok\":1}");
        let request = served.await.unwrap().to_ascii_lowercase();
        assert!(request.starts_with("post /v1/chat/completions http/1.1\r\n"), "{request}");
        assert!(request.contains("authorization: bearer sk-test\r\n"), "{request}");
        assert!(request.contains("accept: application/json\r\n"), "{request}");
        assert!(request.contains(&format!("host: {address}\r\n")), "{request}");
        assert_eq!(request.matches("host:").count(), 1, "{request}");
    }

    #[tokio::test]
    async fn a_host_among_the_providers_headers_is_the_one_sent() {
        let (address, served) = one_shot("{}").await;
        let text = format!(
            "[providers.p]\nbase_url = \"http://{address}/v1\"\nheaders = {{ Host = \"virtual.example\" }}\n[models.m]\nchain = [\"p/x\"]\n"
        );
        let config = crate::config::Config::from_toml(Path::new("t.toml"), &text, &|_| None).unwrap();
        let tls = tls_config(false).unwrap();
        let endpoint =
            Endpoint::new(&config.providers["p"], Duration::from_secs(1), &tls, &Proxies::builder().build(), 1)
                .unwrap();
        post(&endpoint).await;
        let request = served.await.unwrap().to_ascii_lowercase();
        assert!(request.contains("host: virtual.example\r\n"), "{request}");
        assert_eq!(request.matches("host:").count(), 1, "{request}");
    }

    #[test]
    fn a_plain_http_host_is_built_as_the_client_would() {
        let host = |url: &str| plain_http_host(&url.parse().unwrap()).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(host("http://127.0.0.1:8080/v1/chat/completions").as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(host("http://ollama/v1/chat/completions").as_deref(), Some("ollama"));
        assert_eq!(host("http://ollama:80/v1").as_deref(), Some("ollama"));
        assert_eq!(host("http://[::1]:11434/v1").as_deref(), Some("[::1]:11434"));
        assert_eq!(host("https://api.openai.com/v1/chat/completions"), None, "HTTP/2 may carry it as :authority");
    }

    #[tokio::test]
    async fn a_provider_behind_the_environments_proxy_is_reached_through_it() {
        let (proxy, served) = one_shot("{\"via\":\"proxy\"}").await;
        // Nothing listens there: only the proxy can answer.
        let provider = provider("http://upstream.invalid:9/v1");
        let proxies = Proxies::builder().http(format!("http://{proxy}")).build();
        let tls = tls_config(false).unwrap();
        let endpoint = Endpoint::new(&provider, Duration::from_secs(1), &tls, &proxies, 1).unwrap();
        assert!(matches!(endpoint.client, Transport::Proxied(_)));
        assert_eq!(post(&endpoint).await, "{\"via\":\"proxy\"}");
        let request = served.await.unwrap().to_ascii_lowercase();
        assert!(request.starts_with("post http://upstream.invalid:9/v1/chat/completions http/1.1\r\n"), "{request}");
        assert!(request.contains("authorization: bearer sk-test\r\n"), "{request}");
    }
}
