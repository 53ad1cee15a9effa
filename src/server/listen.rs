//! lariat's own accept loop over hyper, so that no client can pin the gateway:
//! a connection has `header_read_timeout` to send a request's headers (counted from
//! the request's first byte, or from acceptance for a new connection), is closed
//! after `idle_timeout` without a request, and there are at most `max_connections`.
//!
//! At the cap, a new connection displaces the oldest connection that is not serving
//! a request (never one that is), as nginx reuses idle keep-alive connections: a
//! flood of idle or slow-header connections then cannot lock real clients out, and
//! lariat never needs more descriptors than the cap. Only when every connection is
//! busy does a newcomer get a fast `503` (JSON, `Retry-After: 1`) and a close, rather
//! than waiting in the kernel's backlog behind connections that may never finish.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use super::socket::Watched;
use crate::config::ConnectionLimits;

/// Connections being turned away at once (each for at most `REJECT_LINGER`); more
/// are closed without a word.
const REJECTING: usize = 64;
/// How long a turned-away connection is read from, so that closing it does not
/// reset the connection before the client has read the 503.
const REJECT_LINGER: Duration = Duration::from_secs(1);
/// Pause after a failed `accept` (out of descriptors, say), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
const NONE: u64 = u64::MAX;
/// "Too many open files" (per process, system-wide), as Linux and the BSDs number them.
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;
/// Idle connections closed per "too many open files": enough to drain a backlog of
/// newcomers quickly, few enough to leave most keep-alive clients alone.
const EVICT_ON_EMFILE: usize = 16;

/// Serves `app` on `listener` within `limits` until `shutdown` resolves; then stops
/// accepting and lets in-flight requests finish for at most `limits.shutdown_timeout`.
/// Everything runs on the caller's runtime.
pub async fn serve(
    app: Router,
    listener: TcpListener,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared::new(app, limits));
    let (stop, stopped) = watch::channel(false);
    tokio::select! {
        () = shutdown => {}
        () = accept(&shared, listener, stopped) => {}
    }
    shared.drain(&stop).await;
    Ok(())
}

/// What every thread's accept loop shares: the connection cap and limits.
pub(super) struct Shared {
    app: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    tracker: Arc<Tracker>,
    rejecting: Arc<Semaphore>,
    limits: ConnectionLimits,
}

impl Shared {
    pub(super) fn new(app: Router, limits: ConnectionLimits) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // hyper's own header timer is left off: the watchdog below tells a slow request
        // from an idle keep-alive connection, which hyper's single timer cannot.
        builder.http1().max_buf_size(limits.max_header_bytes);
        builder.http2().max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
        Self {
            app,
            builder: Arc::new(builder),
            tracker: Arc::new(Tracker::new(limits.max_connections)),
            rejecting: Arc::new(Semaphore::new(REJECTING)),
            limits,
        }
    }

    /// Tells every connection to finish, and waits at most `shutdown_timeout` for them.
    pub(super) async fn drain(&self, stop: &watch::Sender<bool>) {
        tracing::info!(
            deadline_s = self.limits.shutdown_timeout.as_secs_f64(),
            "shutting down: no new connections, waiting for in-flight requests"
        );
        let _ = stop.send(true);
        if tokio::time::timeout(self.limits.shutdown_timeout, self.tracker.wait_empty()).await.is_err() {
            tracing::warn!("shutdown deadline passed; dropping the remaining requests");
            self.tracker.cancel_all();
        }
    }
}

/// Accepts connections on `listener` and serves each on a task of this thread's
/// runtime, until `stopped` says to stop.
pub(super) async fn accept(shared: &Shared, listener: TcpListener, mut stopped: watch::Receiver<bool>) {
    let tracker = &shared.tracker;
    loop {
        let (stream, _) = tokio::select! {
            () = stopping(&mut stopped) => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors below the cap (`ulimit -n` set lower than
                    // `max_connections`): free one the way the cap would.
                    let out_of_descriptors = matches!(e.raw_os_error(), Some(EMFILE | ENFILE));
                    let freed = if out_of_descriptors { tracker.evict_idle(EVICT_ON_EMFILE) } else { 0 };
                    tracing::warn!(error = %e, closed_idle_connections = freed, "accepting a connection failed");
                    // Closed connections give their descriptors back as soon as their tasks run.
                    tokio::time::sleep(if freed > 0 { Duration::from_millis(2) } else { ACCEPT_BACKOFF }).await;
                    continue;
                }
            },
        };
        // Small JSON answers and SSE events must leave at once, not wait for Nagle.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        match tracker.admit() {
            Some(slot) => {
                let connection = Connection {
                    app: shared.app.clone(),
                    builder: shared.builder.clone(),
                    limits: shared.limits,
                    slot,
                };
                tokio::spawn(connection.run(stream, stopped.clone()));
            }
            None => {
                if let Ok(permit) = shared.rejecting.clone().try_acquire_owned() {
                    tokio::spawn(async move {
                        reject(stream).await;
                        drop(permit);
                    });
                }
            }
        }
    }
}

/// Resolves once `stopped` says to stop (or its sender is gone).
async fn stopping(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// Answers a connection over the cap: 503 JSON, then close.
async fn reject(mut stream: TcpStream) {
    // At most one line a second: a flood must not turn into a flood of logs.
    static LAST_WARNED: AtomicU64 = AtomicU64::new(0);
    let now = u64::try_from(crate::clock::unix_now()).unwrap_or(0);
    if LAST_WARNED.swap(now, Ordering::Relaxed) != now {
        tracing::warn!("every connection is busy (server.max_connections); turning new ones away with 503");
    }
    let body = r#"{"error":{"message":"lariat is serving as many connections as it may (server.max_connections); retry shortly","type":"server_error","param":null,"code":"unavailable"}}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(response.as_bytes()).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 4096];
    let _ =
        tokio::time::timeout(REJECT_LINGER, async { while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {} })
            .await;
}

/// What one connection is doing, shared by its I/O, its requests and its watchdog.
#[derive(Debug)]
pub(super) struct Activity {
    epoch: Instant,
    /// Requests being served, from their headers to the end of their response.
    busy: AtomicUsize,
    /// Requests begun on this connection.
    requests: AtomicU64,
    /// When the connection last became idle, in ms since `epoch`.
    idle_since: AtomicU64,
    /// When the first byte of the next request arrived (`NONE`: not yet).
    head_started: AtomicU64,
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            busy: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(NONE),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    fn is_idle(&self) -> bool {
        self.busy.load(Ordering::Acquire) == 0
    }

    /// A request's headers are in: it is served until the returned guard drops.
    fn begin(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::AcqRel);
        self.requests.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(NONE, Ordering::Release);
        self.changed.notify_waiters();
        Busy(self.clone())
    }

    /// Bytes arrived; if no request is being served, they start the next one's head.
    pub(super) fn read_some(&self) {
        if self.is_idle() && self.head_started.load(Ordering::Acquire) == NONE {
            self.head_started.store(self.now(), Ordering::Release);
            self.changed.notify_waiters();
        }
    }

    /// When the connection must be closed if nothing changes, and why.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<(u64, &'static str)> {
        if !self.is_idle() {
            return None;
        }
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(NONE / 2);
        let head = self.head_started.load(Ordering::Acquire);
        if head != NONE {
            return Some((head.saturating_add(millis(limits.header_read_timeout)), "request headers too slow"));
        }
        let since = self.idle_since.load(Ordering::Acquire);
        // A connection that never sent a request gets only the header timeout.
        if self.requests.load(Ordering::Acquire) == 0 {
            Some((since.saturating_add(millis(limits.header_read_timeout)), "no request sent"))
        } else {
            Some((since.saturating_add(millis(limits.idle_timeout)), "idle"))
        }
    }
}

/// A request in progress; dropping it (the response is sent, or abandoned) may make
/// the connection idle.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let activity = &self.0;
        if activity.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            activity.idle_since.store(activity.now(), Ordering::Release);
            activity.head_started.store(NONE, Ordering::Release);
        }
        activity.changed.notify_waiters();
    }
}

/// Resolves when the connection has broken its time limits; never while it serves.
async fn watchdog(activity: &Activity, limits: &ConnectionLimits) -> &'static str {
    loop {
        let changed = activity.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        match activity.deadline(limits) {
            None => changed.await,
            Some((at, why)) => {
                if at <= activity.now() {
                    return why;
                }
                let at = activity.epoch + Duration::from_millis(at);
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = changed => {}
                }
            }
        }
    }
}

/// Every open connection, oldest first.
struct Tracker {
    slots: Mutex<BTreeMap<u64, (Arc<Activity>, CancellationToken)>>,
    next: AtomicU64,
    max: usize,
    emptied: Notify,
}

/// One admitted connection; leaving the tracker when dropped.
struct Slot {
    id: u64,
    activity: Arc<Activity>,
    cancel: CancellationToken,
    tracker: Arc<Tracker>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.tracker.remove(self.id);
    }
}

impl Tracker {
    fn new(max: usize) -> Self {
        Self { slots: Mutex::new(BTreeMap::new()), next: AtomicU64::new(0), max, emptied: Notify::new() }
    }

    /// A slot for a new connection, displacing the oldest idle one at the cap;
    /// `None` when every connection is serving a request.
    fn admit(self: &Arc<Self>) -> Option<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if slots.len() >= self.max && !Self::close_oldest_idle(&mut slots) {
            return None;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (activity, cancel) = (Arc::new(Activity::new()), CancellationToken::new());
        slots.insert(id, (activity.clone(), cancel.clone()));
        Some(Slot { id, activity, cancel, tracker: self.clone() })
    }

    /// Closes up to `n` of the oldest connections not serving a request; how many.
    fn evict_idle(&self, n: usize) -> usize {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        (0..n).take_while(|_| Self::close_oldest_idle(&mut slots)).count()
    }

    fn close_oldest_idle(slots: &mut BTreeMap<u64, (Arc<Activity>, CancellationToken)>) -> bool {
        let Some(idle) = slots.iter().find(|(_, (activity, _))| activity.is_idle()).map(|(id, _)| *id) else {
            return false;
        };
        if let Some((_, cancel)) = slots.remove(&idle) {
            tracing::debug!("closing the oldest idle connection to make room");
            cancel.cancel();
        }
        true
    }

    fn remove(&self, id: u64) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.remove(&id);
        if slots.is_empty() {
            self.emptied.notify_waiters();
        }
    }

    async fn wait_empty(&self) {
        loop {
            let emptied = self.emptied.notified();
            tokio::pin!(emptied);
            emptied.as_mut().enable();
            if self.slots.lock().unwrap_or_else(PoisonError::into_inner).is_empty() {
                return;
            }
            emptied.await;
        }
    }

    fn cancel_all(&self) {
        for (_, cancel) in self.slots.lock().unwrap_or_else(PoisonError::into_inner).values() {
            cancel.cancel();
        }
    }
}

struct Connection {
    app: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    limits: ConnectionLimits,
    slot: Slot,
}

impl Connection {
    async fn run(self, stream: TcpStream, mut stopped: watch::Receiver<bool>) {
        let Self { app, builder, limits, slot } = self;
        let activity = slot.activity.clone();
        let io = TokioIo::new(Watched::new(stream, activity.clone()));
        let requests = activity.clone();
        let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
            let busy = requests.begin();
            let app = app.clone();
            async move {
                let response = app.oneshot(request.map(axum::body::Body::new)).await;
                response.map(|r| r.map(|body| Tracked { body, _busy: busy }))
            }
        });
        let connection = builder.serve_connection(io, service);
        tokio::pin!(connection);
        let mut draining = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                () = slot.cancel.cancelled() => return,
                why = watchdog(&activity, &limits), if !draining => {
                    tracing::debug!(reason = why, "closing a connection");
                    return;
                }
                _ = stopped.wait_for(|stop| *stop), if !draining => {
                    connection.as_mut().graceful_shutdown();
                    draining = true;
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted as in progress until it is
    /// sent (or dropped).
    struct Tracked {
        #[pin]
        body: axum::body::Body,
        _busy: Busy,
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
