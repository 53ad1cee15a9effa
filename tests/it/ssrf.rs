//! `fetch_url` against a proxy from the environment: the address check still runs
//! on the target, and the proxy is never used.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;
use crate::secrets::Spawned;

/// A "proxy" that answers every connection with a page and counts them.
async fn start_proxy() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 13\r\nconnection: close\r\n\r\nproxied page!")
                    .await;
            });
        }
    });
    (format!("http://{addr}"), hits)
}

/// The issue's bypass: with HTTP(S)_PROXY set, hostname fetches went to the proxy
/// and the address filter never ran. Now a name resolving to 127.0.0.1 is refused
/// and the proxy sees nothing.
#[tokio::test]
async fn fetch_url_with_a_proxy_in_the_environment_still_refuses_loopback() {
    let mock = MockUpstream::start().await;
    let tools = ToolServer::start().await;
    let (proxy, hits) = start_proxy().await;
    let port = tools.url.rsplit(':').next().unwrap().to_owned();
    let extra = "[models.agent]\nchain = [\"mock/gpt-test\"]\n";
    // The upstream mock is reached directly (providers may use a proxy); `localhost`
    // is not exempt, so fetches of it went to the proxy before.
    let env = [
        ("HTTP_PROXY", proxy.as_str()),
        ("HTTPS_PROXY", proxy.as_str()),
        ("http_proxy", proxy.as_str()),
        ("NO_PROXY", "127.0.0.1"),
    ];
    let child = Spawned::start(&config(&mock, extra), &env).await;
    let calls = [
        ("a", "fetch_url", format!(r#"{{"url": "http://localhost:{port}/big"}}"#)),
        ("b", "fetch_url", format!(r#"{{"url": "https://localhost:{port}/big"}}"#)),
        ("c", "fetch_url", format!(r#"{{"url": "http://127.0.0.1:{port}/big"}}"#)),
        ("d", "fetch_url", format!(r#"{{"url": "http://[::ffff:127.0.0.1]:{port}/big"}}"#)),
    ];
    let calls: Vec<(&str, &str, &str)> = calls.iter().map(|(i, n, a)| (*i, *n, a.as_str())).collect();
    mock.push(Reply::tool_calls(&calls)).push(Reply::text("ok"));
    let response = child
        .chat(&json!({"model": "agent", "messages": [{"role": "user", "content": "fetch"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let results: Vec<String> =
        crate::tools::tool_results(&mock.received()[1].body).into_iter().map(|(_, content)| content).collect();
    assert_eq!(results.len(), 4);
    for result in &results {
        assert!(result.starts_with("Tool error:") && result.contains("refused"), "{results:?}");
        assert!(!result.contains("proxied page"), "{results:?}");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the proxy was used");
    assert!(tools.hits("/big").is_empty(), "a loopback address was fetched");
    child.stop();
}
