//! Serving on several threads (`server.threads`), each with its own runtime: every
//! thread takes connections, new connections are spread evenly, the connection cap
//! holds across threads, and a shutdown lets every thread's requests finish.
//!
//! The handler blocks its thread until released, so a thread serving one request
//! cannot accept another: the next connection must be taken by another thread.

use std::num::NonZeroUsize;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use lariat::config::ConnectionLimits;
use lariat::server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// Requests that hold their threads until released.
#[derive(Default)]
struct Meeting {
    /// How many requests arrived, and whether they were released.
    state: Mutex<(usize, bool)>,
    changed: Condvar,
}

impl Meeting {
    fn arrive(&self) {
        let mut state = self.state.lock().unwrap();
        state.0 += 1;
        self.changed.notify_all();
        // Bounded, so a broken server fails the test instead of hanging it.
        let _ = self.changed.wait_timeout_while(state, Duration::from_secs(20), |s| !s.1).unwrap();
    }

    fn arrived(&self) -> usize {
        self.state.lock().unwrap().0
    }

    fn release(&self) {
        self.state.lock().unwrap().1 = true;
        self.changed.notify_all();
    }
}

/// Blocks this thread (its whole runtime) until released; answers the thread's index.
async fn hold(State(meeting): State<Arc<Meeting>>) -> String {
    meeting.arrive();
    lariat::worker::index().to_string()
}

struct Served {
    addr: String,
    meeting: Arc<Meeting>,
    shutdown: oneshot::Sender<()>,
    /// Resolves when `serve_threads` has returned.
    ended: oneshot::Receiver<()>,
}

/// `serve_threads` on `threads` threads, started from a thread of its own (as `main`
/// does), so the test's runtime stays free when the handlers block theirs.
fn serve(threads: usize, max_connections: usize) -> Served {
    let meeting = Arc::new(Meeting::default());
    let app = Router::new()
        .route("/hold", axum::routing::get(hold))
        .route("/thread", axum::routing::get(|| async { lariat::worker::index().to_string() }))
        .with_state(meeting.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let limits = ConnectionLimits { max_connections, shutdown_timeout: Duration::from_secs(20), ..Default::default() };
    let (shutdown, stop) = oneshot::channel::<()>();
    let (done, ended) = oneshot::channel();
    let threads = NonZeroUsize::new(threads).unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            server::serve_threads(app, listener, threads, limits, async move {
                let _ = stop.await;
            })
            .await
            .unwrap();
        });
        let _ = done.send(());
    });
    Served { addr, meeting, shutdown, ended }
}

/// Sends `GET /hold` on a new connection; the connection, to read the answer from.
async fn send_hold(addr: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET /hold HTTP/1.1\r\nHost: lariat\r\nConnection: close\r\n\r\n").await.unwrap();
    stream
}

async fn read_all(mut stream: TcpStream) -> String {
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_string(&mut out)).await.unwrap().unwrap();
    out
}

/// Waits until `n` requests are being held.
async fn until_arrived(meeting: &Meeting, n: usize) {
    for _ in 0..1000 {
        if meeting.arrived() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} of {n} requests arrived", meeting.arrived());
}

/// The body of a `Connection: close` response.
fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

#[tokio::test]
async fn every_thread_takes_connections_and_shutdown_drains_them_all() {
    let served = serve(3, 100);
    let mut held = Vec::new();
    for n in 1..=3 {
        held.push(send_hold(&served.addr).await);
        until_arrived(&served.meeting, n).await;
    }
    // Three requests are held at once although each holds its thread: three threads
    // are serving. Shutdown begins while they are in flight.
    served.shutdown.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    served.meeting.release();
    let mut threads = Vec::new();
    for stream in held {
        let response = read_all(stream).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        threads.push(body(&response).to_owned());
    }
    threads.sort();
    assert_eq!(threads, ["0", "1", "2"]);
    tokio::time::timeout(Duration::from_secs(20), served.ended).await.unwrap().unwrap();
}

#[tokio::test]
async fn the_connection_cap_holds_across_threads() {
    let served = serve(3, 2);
    let first = send_hold(&served.addr).await;
    until_arrived(&served.meeting, 1).await;
    let second = send_hold(&served.addr).await;
    until_arrived(&served.meeting, 2).await;
    // The third thread is free, but both connections lariat may hold are busy.
    let newcomer = send_hold(&served.addr).await;
    let response = read_all(newcomer).await;
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    assert!(body(&response).contains("\"unavailable\""), "{response}");
    served.meeting.release();
    for stream in [first, second] {
        let response = read_all(stream).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }
    assert_eq!(served.meeting.arrived(), 2);
}

/// Asks which thread serves `stream` (kept alive): reads one response whole.
async fn which_thread(stream: &mut TcpStream) -> String {
    stream.write_all(b"GET /thread HTTP/1.1\r\nHost: lariat\r\n\r\n").await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let text = String::from_utf8_lossy(&seen).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap();
            if body.len() >= length {
                assert!(head.starts_with("HTTP/1.1 200"), "{text}");
                return body[..length].to_owned();
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed early: {text}");
        seen.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn new_connections_go_to_the_thread_holding_fewest() {
    let served = serve(2, 100);
    // Opened at once, as a client's pool does: whichever thread accepts them, each
    // goes to the thread holding fewer, so they split evenly and stay where they went.
    let mut streams = Vec::new();
    for _ in 0..6 {
        streams.push(TcpStream::connect(&served.addr).await.unwrap());
    }
    let mut threads = Vec::new();
    for stream in &mut streams {
        threads.push(which_thread(stream).await);
    }
    for stream in &mut streams {
        threads.push(which_thread(stream).await);
    }
    let on = |thread: &str| threads.iter().filter(|t| *t == thread).count();
    assert_eq!((on("0"), on("1")), (6, 6), "{threads:?}");
    // Each connection stays on its thread.
    assert_eq!(threads[..6], threads[6..]);
    served.shutdown.send(()).unwrap();
    drop(streams);
    tokio::time::timeout(Duration::from_secs(20), served.ended).await.unwrap().unwrap();
}
