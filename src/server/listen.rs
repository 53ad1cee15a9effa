//! lariat's own accept loop over hyper, so that no client can pin the gateway: there
//! are at most `max_connections`, and each has the time limits of `connection`.
//!
//! At the cap, a new connection displaces the oldest connection that is not serving
//! a request (never one that is), as nginx reuses idle keep-alive connections: a
//! flood of idle or slow-header connections then cannot lock real clients out, and
//! lariat never needs more descriptors than the cap. Only when every connection is
//! busy does a newcomer get a fast `503` (JSON, `Retry-After: 1`) and a close, rather
//! than waiting in the kernel's backlog behind connections that may never finish.
//!
//! With several serving threads (`threads`), every thread accepts, and a connection
//! goes to the thread holding the fewest: the thread that wins an `accept` would
//! otherwise take a whole burst of new connections (a client's pool opening at
//! once) and leave the other cores idle for as long as those connections live.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::connection::{Activity, Connection};
use crate::config::ConnectionLimits;

/// Connections being turned away at once (each for at most `REJECT_LINGER`); more
/// are closed without a word.
const REJECTING: usize = 64;
/// How long a turned-away connection is read from, so that closing it does not
/// reset the connection before the client has read the 503.
const REJECT_LINGER: Duration = Duration::from_secs(1);
/// Pause after a failed `accept` (out of descriptors, say), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// "Too many open files" (per process, system-wide), as Linux and the BSDs number them.
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;
/// Idle connections closed per "too many open files": enough to drain a backlog of
/// newcomers quickly, few enough to leave most keep-alive clients alone.
const EVICT_ON_EMFILE: usize = 16;

/// What every thread's accept loop shares: the connection cap, the limits, and each
/// thread's lane.
pub(super) struct Shared {
    app: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    tracker: Arc<Tracker>,
    rejecting: Arc<Semaphore>,
    limits: ConnectionLimits,
    lanes: Vec<Lane>,
}

/// One serving thread's connections: how many it holds, and where the other threads
/// hand it new ones.
pub(super) struct Lane {
    open: Arc<AtomicUsize>,
    handed: mpsc::UnboundedSender<Handed>,
}

/// An accepted and admitted connection, on its way to the thread that serves it.
pub(super) struct Handed {
    stream: std::net::TcpStream,
    slot: Slot,
    held: Held,
}

/// A connection counted in its thread's lane until dropped.
pub(super) struct Held(Arc<AtomicUsize>);

impl Held {
    fn new(lane: &Lane) -> Self {
        lane.open.fetch_add(1, Ordering::Relaxed);
        Self(lane.open.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The lanes of `threads` serving threads, and each thread's inbox of handed connections.
pub(super) fn lanes(threads: usize) -> (Vec<Lane>, Vec<mpsc::UnboundedReceiver<Handed>>) {
    (0..threads.max(1))
        .map(|_| {
            let (handed, inbox) = mpsc::unbounded_channel();
            (Lane { open: Arc::new(AtomicUsize::new(0)), handed }, inbox)
        })
        .unzip()
}

impl Shared {
    pub(super) fn new(app: Router, limits: ConnectionLimits, lanes: Vec<Lane>) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // hyper's own header timer is left off: the connection's watchdog tells a slow
        // request from an idle keep-alive connection, which hyper's single timer cannot.
        builder.http1().max_buf_size(limits.max_header_bytes);
        builder.http2().max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
        Self {
            app,
            builder: Arc::new(builder),
            tracker: Arc::new(Tracker::new(limits.max_connections)),
            rejecting: Arc::new(Semaphore::new(REJECTING)),
            limits,
            lanes,
        }
    }

    /// Tells every connection to finish (and every accept loop to stop).
    pub(super) fn stop(&self, stop: &watch::Sender<bool>) {
        tracing::info!(
            deadline_s = self.limits.shutdown_timeout.as_secs_f64(),
            "shutting down: no new connections, waiting for in-flight requests"
        );
        let _ = stop.send(true);
    }

    /// Waits at most `shutdown_timeout` for `accepting_stopped` (every accept loop
    /// has returned, so no connection can be admitted any more) and then for the
    /// last connection to end; past it, cancels those left.
    pub(super) async fn drain(&self, accepting_stopped: impl Future<Output = ()>) {
        let drained = async {
            accepting_stopped.await;
            self.tracker.wait_empty().await;
        };
        if tokio::time::timeout(self.limits.shutdown_timeout, drained).await.is_err() {
            tracing::warn!("shutdown deadline passed; dropping the remaining requests");
            self.tracker.cancel_all();
        }
    }

    /// The lane holding the fewest connections, `mine` when it is among them.
    fn least_held(&self, mine: usize) -> usize {
        // A lane whose thread takes no more connections (it could not accept, or is
        // stopping) counts as full.
        let held = |lane: usize| match self.lanes.get(lane) {
            Some(l) if !l.handed.is_closed() => l.open.load(Ordering::Relaxed),
            _ => usize::MAX,
        };
        (0..self.lanes.len()).fold(mine, |best, lane| if held(lane) < held(best) { lane } else { best })
    }

    fn serve(&self, stream: TcpStream, slot: Slot, held: Held, stopped: &watch::Receiver<bool>) {
        let connection =
            Connection { app: self.app.clone(), builder: self.builder.clone(), limits: self.limits, slot, held };
        tokio::spawn(connection.run(stream, stopped.clone()));
    }
}

/// Thread `lane`'s accept loop: accepts connections on `listener`, serves each here
/// or hands it to the thread holding fewer, and serves those handed to it
/// (`inbox`), until `stopped` says to stop.
pub(super) async fn accept(
    shared: &Shared,
    lane: usize,
    listener: TcpListener,
    mut inbox: mpsc::UnboundedReceiver<Handed>,
    mut stopped: watch::Receiver<bool>,
) {
    let tracker = &shared.tracker;
    loop {
        let (stream, _) = tokio::select! {
            () = stopping(&mut stopped) => return,
            Some(handed) = inbox.recv() => {
                match TcpStream::from_std(handed.stream) {
                    Ok(stream) => shared.serve(stream, handed.slot, handed.held, &stopped),
                    Err(e) => tracing::debug!(error = %e, "a handed connection could not be served"),
                }
                continue;
            }
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
        let Some(slot) = tracker.admit() else {
            if let Ok(permit) = shared.rejecting.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    reject(stream).await;
                    drop(permit);
                });
            }
            continue;
        };
        let target = shared.least_held(lane);
        let Some(to) = shared.lanes.get(target) else { continue };
        let held = Held::new(to);
        if target == lane {
            shared.serve(stream, slot, held, &stopped);
            continue;
        }
        // Handed over before anything is read from it: the other thread serves it
        // from its first byte. A thread that has stopped (shutdown) drops it.
        match stream.into_std() {
            Ok(stream) => {
                let _ = to.handed.send(Handed { stream, slot, held });
            }
            Err(e) => tracing::debug!(error = %e, "an accepted connection could not be handed over"),
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

/// Every open connection, oldest first.
struct Tracker {
    slots: Mutex<BTreeMap<u64, (Arc<Activity>, CancellationToken)>>,
    next: AtomicU64,
    max: usize,
    emptied: Notify,
}

/// One admitted connection; leaving the tracker when dropped.
pub(super) struct Slot {
    id: u64,
    pub activity: Arc<Activity>,
    pub cancel: CancellationToken,
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
