//! One client connection, served by hyper, and its watchdog: a connection has
//! `header_read_timeout` to send a request's headers (counted from the request's
//! first byte, or from acceptance for a new connection), and is closed after
//! `idle_timeout` without a request; never while it serves one.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tower::ServiceExt as _;

use super::listen::{Held, Slot};
use super::socket::Watched;
use crate::config::ConnectionLimits;

const NONE: u64 = u64::MAX;

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
    pub(super) fn new() -> Self {
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

    pub(super) fn is_idle(&self) -> bool {
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

/// An admitted connection, ready to be served on this thread's runtime.
pub(super) struct Connection {
    pub app: Router,
    pub builder: Arc<auto::Builder<TokioExecutor>>,
    pub limits: ConnectionLimits,
    pub slot: Slot,
    /// Counts it on the thread serving it.
    pub held: Held,
}

impl Connection {
    pub(super) async fn run(self, stream: TcpStream, mut stopped: watch::Receiver<bool>) {
        let Self { app, builder, limits, slot, held: _held } = self;
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
