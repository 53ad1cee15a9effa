//! Connection limits: idle and slow clients cannot pin the gateway. Real sockets on
//! loopback, with timeouts lowered to fractions of a second.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lariat::config::Config;
use lariat::server::{self, AppState};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::harness::*;

/// lariat serving with the config's own connection limits.
struct Limited {
    addr: String,
    _stop: oneshot::Sender<()>,
}

async fn start(server: &str, mock: &MockUpstream) -> Limited {
    let text = config_with_server(mock, server, "");
    let config = Config::from_toml(Path::new("test.toml"), &text, &|_| None).unwrap();
    let limits = config.server.connections;
    let state = AppState::new(Arc::new(config)).unwrap();
    state.start();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server::serve_with(server::router(state), listener, limits, async move {
        let _ = stopped.await;
    }));
    Limited { addr, _stop: stop }
}

/// Reads until the peer closes (or `limit` passes); returns what arrived and when
/// the connection ended, if it did.
async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> (String, Option<Duration>) {
    let started = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(started.elapsed()), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), Some(started.elapsed())),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), None),
        }
    }
}

fn json_body(response: &str) -> Value {
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}"))
}

/// The flood: 2,000 idle connections against a cap of 50. Each newcomer
/// displaces the oldest idle connection, so `/health` still answers at once, and
/// lariat holds no more than the cap.
#[tokio::test]
async fn two_thousand_idle_connections_do_not_stop_health() {
    let mock = MockUpstream::start().await;
    let lariat = start("max_connections = 50\nheader_read_timeout_s = 60\n", &mock).await;
    let mut idle = Vec::new();
    for _ in 0..2000 {
        idle.push(TcpStream::connect(&lariat.addr).await.unwrap());
    }
    let started = Instant::now();
    let health = client().get(format!("http://{}/health", lariat.addr)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(2), "/health took {:?}", started.elapsed());
    // All but the newest few were closed by lariat (their reads end at once).
    let mut closed = 0;
    for stream in &mut idle {
        let mut byte = [0u8; 1];
        if matches!(tokio::time::timeout(Duration::from_millis(5), stream.read(&mut byte)).await, Ok(Ok(0) | Err(_))) {
            closed += 1;
        }
    }
    assert!(closed >= 1950, "only {closed} of 2000 idle connections were closed");
}

/// A client that sends its headers a byte at a time is cut at the header timeout;
/// one that sends nothing too; a keep-alive connection may idle longer than that,
/// up to the idle timeout.
#[tokio::test]
async fn slow_headers_are_cut_and_idle_keep_alive_has_its_own_timeout() {
    let mock = MockUpstream::start().await;
    let lariat = start("header_read_timeout_s = 0.4\nidle_timeout_s = 1.2\n", &mock).await;

    let mut slow = TcpStream::connect(&lariat.addr).await.unwrap();
    let dripping = async {
        let head = b"GET /health HTTP/1.1\r\nHost: lariat\r\nX-Padding: ";
        for byte in head.iter().chain(b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter()) {
            if slow.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    };
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), dripping).await.unwrap();
    let (_, ended) = read_to_close(&mut slow, Duration::from_secs(3)).await;
    let cut_after = ended.map(|_| started.elapsed()).expect("the slow client was never cut");
    assert!(cut_after < Duration::from_secs(2), "cut after {cut_after:?}");

    let mut silent = TcpStream::connect(&lariat.addr).await.unwrap();
    let (_, ended) = read_to_close(&mut silent, Duration::from_secs(3)).await;
    let ended = ended.expect("a silent connection was never closed");
    assert!(ended >= Duration::from_millis(300) && ended < Duration::from_secs(2), "{ended:?}");

    let mut kept = TcpStream::connect(&lariat.addr).await.unwrap();
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: lariat\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Longer than the header timeout: still open, and serves a second request.
    tokio::time::sleep(Duration::from_millis(700)).await;
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: lariat\r\n\r\n").await.unwrap();
    let n = kept.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"), "the idle keep-alive was cut too early");
    let idle_from = Instant::now();
    let (_, ended) = read_to_close(&mut kept, Duration::from_secs(4)).await;
    ended.expect("an idle keep-alive connection was never closed");
    assert!(idle_from.elapsed() >= Duration::from_millis(1000), "closed after {:?}", idle_from.elapsed());
}

/// `Content-Length: 100000000` is answered 413 (JSON) at once; nothing of the body
/// is waited for.
#[tokio::test]
async fn a_declared_body_over_the_limit_is_refused_before_it_is_sent() {
    let mock = MockUpstream::start().await;
    let lariat = start("max_body_bytes = 65536\n", &mock).await;
    let mut stream = TcpStream::connect(&lariat.addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: lariat\r\nAuthorization: Bearer {ALICE}\r\n\
         Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let (response, ended) = read_to_close(&mut stream, Duration::from_secs(3)).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(ended.is_some() && started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    assert_eq!(json_body(&response)["error"]["code"], "payload_too_large", "{response}");
    assert!(mock.received().is_empty());
}

/// A body that does not arrive within the body timeout ends the request with a JSON
/// error instead of holding it.
#[tokio::test]
async fn a_slow_body_is_cut_at_the_body_timeout() {
    let mock = MockUpstream::start().await;
    let lariat = start("body_read_timeout_s = 0.5\nbody_min_rate_bytes_s = 100\n", &mock).await;
    let mut stream = TcpStream::connect(&lariat.addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: lariat\r\nAuthorization: Bearer {ALICE}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"model\""
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let (response, _) = read_to_close(&mut stream, Duration::from_secs(3)).await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    let error = json_body(&response);
    assert!(error["error"]["message"].as_str().unwrap().contains("did not arrive in time"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

/// When every connection is serving a request, a new one gets a fast 503 (JSON)
/// instead of waiting.
#[tokio::test]
async fn a_newcomer_gets_503_when_every_connection_is_busy() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::Hang).push(Reply::Hang);
    let lariat = start("max_connections = 2\n", &mock).await;
    let mut busy = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(&lariat.addr).await.unwrap();
        let body = serde_json::to_string(&request("assistant", false)).unwrap();
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: lariat\r\nAuthorization: Bearer {ALICE}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        busy.push(stream);
    }
    for _ in 0..100 {
        if mock.received().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(mock.received().len(), 2, "both requests should be in flight");
    let mut newcomer = TcpStream::connect(&lariat.addr).await.unwrap();
    newcomer.write_all(b"GET /health HTTP/1.1\r\nHost: lariat\r\n\r\n").await.unwrap();
    let (response, ended) = read_to_close(&mut newcomer, Duration::from_secs(3)).await;
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    assert!(ended.is_some());
    assert_eq!(json_body(&response)["error"]["code"], "unavailable", "{response}");
}

/// Requests hyper cannot parse get the status it chooses with an OpenAI-shaped body
/// (they used to get an empty one), and the connection closes.
#[tokio::test]
async fn malformed_requests_get_json_errors() {
    let mock = MockUpstream::start().await;
    let lariat = start("", &mock).await;
    let long_header = format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(1024 * 1024));
    let many_headers = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..1000).map(|i| format!("X-H{i}: v\r\n")).collect::<String>()
    );
    let long_url = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "u".repeat(100 * 1024));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "bad content-length",
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n".to_vec(),
            "400",
        ),
        (
            "duplicate content-length",
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 5\r\n\r\n{}"
                .to_vec(),
            "400",
        ),
        ("1 MB header", long_header.into_bytes(), "431"),
        ("1,000 headers", many_headers.into_bytes(), "431"),
        ("header without colon", b"GET /health HTTP/1.1\r\nHost: x\r\nBroken header\r\n\r\n".to_vec(), "400"),
        ("NUL in a header", b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n".to_vec(), "400"),
        ("100 KB URL", long_url.into_bytes(), "431"),
        ("HTTP/0.9", b"GET /health\r\n\r\n".to_vec(), "400"),
        (
            "TLS bytes",
            vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, b'\r', b'\n', b'\r', b'\n'],
            "400",
        ),
    ];
    for (name, bytes, status) in cases {
        let mut stream = TcpStream::connect(&lariat.addr).await.unwrap();
        let _ = stream.write_all(&bytes).await;
        let (response, ended) = read_to_close(&mut stream, Duration::from_secs(3)).await;
        assert!(ended.is_some(), "{name}: the connection stayed open");
        assert!(response.starts_with(&format!("HTTP/1.1 {status} ")), "{name}: {response:.200}");
        assert!(response.to_ascii_lowercase().contains("content-type: application/json"), "{name}: {response:.300}");
        let error = json_body(&response);
        assert_eq!(error["error"]["code"], "invalid_request", "{name}: {error}");
    }
    // A well-formed request on the same server is unaffected.
    assert_eq!(client().get(format!("http://{}/health", lariat.addr)).send().await.unwrap().status(), 200);
}

/// The exhaustion, below the cap: lariat run with only 256 descriptors (the
/// cap at its default of 10,000) and 600 idle connections. Out of descriptors, it
/// closes idle connections to accept new ones, so `/health` still answers.
#[tokio::test]
async fn out_of_descriptors_idle_connections_make_room() {
    let mock = MockUpstream::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let text = config(&mock, "").replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
    let mut child = std::process::Command::new("prlimit")
        .args(["--nofile=256:256", "--", env!("CARGO_BIN_EXE_lariat"), "serve", "--config"])
        .arg(file.path())
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..200 {
        if TcpStream::connect(&addr).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(up, "lariat did not start");
    let mut idle = Vec::new();
    for _ in 0..600 {
        idle.push(TcpStream::connect(&addr).await.unwrap());
    }
    let started = Instant::now();
    let health =
        tokio::time::timeout(Duration::from_secs(5), client().get(format!("http://{addr}/health")).send()).await;
    let _ = child.kill();
    let _ = child.wait();
    let health = health.expect("/health did not answer within 5 s").unwrap();
    assert_eq!(health.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(3), "/health took {:?}", started.elapsed());
}

/// A body trickling in at its minimum rate is read to the end (the deadline grows
/// with what arrived), and HTTP/2 (prior knowledge) is served by the same loop.
#[tokio::test]
async fn a_body_arriving_at_the_minimum_rate_is_accepted_and_h2_is_served() {
    let mock = MockUpstream::start().await;
    mock.always(Reply::text("fine"));
    let lariat = start("body_read_timeout_s = 0.3\nbody_min_rate_bytes_s = 100\n", &mock).await;
    let body = serde_json::to_string(&request("assistant", false)).unwrap();
    let mut stream = TcpStream::connect(&lariat.addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: lariat\r\nAuthorization: Bearer {ALICE}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // 20-byte pieces every 150 ms: 133 bytes/s, longer in total than the 0.3 s grace.
    for piece in body.as_bytes().chunks(20) {
        stream.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let (response, _) = read_to_close(&mut stream, Duration::from_secs(5)).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let response = h2
        .post(format!("http://{}/v1/chat/completions", lariat.addr))
        .bearer_auth(ALICE)
        .json(&request("assistant", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
}
