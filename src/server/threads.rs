//! Serving on several threads, as nginx's workers do: each thread runs its own
//! single-threaded runtime, accepts from the same listening socket and serves its
//! connections start to end, so a request and its calls to a directly reached
//! provider never change thread. `listen` spreads new connections over the threads
//! and keeps the connection cap across them.

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::listen::{self, Handed, Shared, accept};
use crate::config::ConnectionLimits;

/// How long a thread's runtime waits, when it stops, for blocking tasks (an HTML
/// conversion, say) still running.
const BLOCKING_GRACE: Duration = Duration::from_millis(100);

/// Serves `app` on `listener` within `limits` on `threads` threads, the caller's
/// among them (with one, everything runs on the caller's runtime), until `shutdown`
/// resolves; then stops accepting and lets in-flight requests finish for at most
/// `limits.shutdown_timeout`. A thread whose runtime cannot start is an error before
/// anything is served.
pub(super) async fn serve(
    app: Router,
    listener: TcpListener,
    threads: NonZeroUsize,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (lanes, inboxes) = listen::lanes(threads.get());
    let shared = Arc::new(Shared::new(app, limits, lanes));
    let (stop, stopped) = watch::channel(false);
    // Cancelled once the last request is done (or given up on), or if this future is
    // dropped: the other threads' runtimes run until then, since dropping one would
    // drop the requests it serves.
    let finished = CancellationToken::new();
    let _finish = finished.clone().drop_guard();
    let mut inboxes = inboxes.into_iter();
    let Some(inbox) = inboxes.next() else { return Ok(()) };
    let runtimes = inboxes
        .map(|inbox| Ok((tokio::runtime::Builder::new_current_thread().enable_all().build()?, inbox)))
        .collect::<std::io::Result<Vec<_>>>()?;
    let listener = listener.into_std()?;
    let (mut accepting, mut exited) = (Vec::new(), Vec::new());
    for (index, (runtime, inbox)) in (1..).zip(runtimes) {
        let worker = Worker {
            index,
            runtime,
            listener: listener.try_clone()?,
            inbox,
            shared: shared.clone(),
            stopped: stopped.clone(),
            finished: finished.clone(),
        };
        let (stopped_accepting, accept_ended) = oneshot::channel::<()>();
        let (done, thread_ended) = oneshot::channel::<()>();
        std::thread::Builder::new().name(format!("lariat-{index}")).spawn(move || {
            worker.run(stopped_accepting);
            drop(done);
        })?;
        accepting.push(accept_ended);
        exited.push(thread_ended);
    }
    let listener = TcpListener::from_std(listener)?;
    tokio::select! {
        () = shutdown => {}
        () = accept(&shared, 0, listener, inbox, stopped) => {}
    }
    shared.stop(&stop);
    shared
        .drain(async {
            for ended in accepting {
                let _ = ended.await;
            }
        })
        .await;
    finished.cancel();
    for ended in exited {
        let _ = ended.await;
    }
    Ok(())
}

/// One of the server's other threads.
struct Worker {
    index: usize,
    runtime: Runtime,
    listener: std::net::TcpListener,
    inbox: mpsc::UnboundedReceiver<Handed>,
    shared: Arc<Shared>,
    stopped: watch::Receiver<bool>,
    finished: CancellationToken,
}

impl Worker {
    /// Serves until the server has finished; `stopped_accepting` is dropped once
    /// this thread takes no new connection.
    fn run(self, stopped_accepting: oneshot::Sender<()>) {
        let Self { index, runtime, listener, inbox, shared, stopped, finished } = self;
        crate::worker::enter(index);
        runtime.block_on(async {
            match TcpListener::from_std(listener) {
                Ok(listener) => accept(&shared, index, listener, inbox, stopped).await,
                Err(e) => tracing::error!(thread = index, error = %e, "a serving thread cannot accept"),
            }
            drop(stopped_accepting);
            finished.cancelled().await;
        });
        runtime.shutdown_timeout(BLOCKING_GRACE);
    }
}
