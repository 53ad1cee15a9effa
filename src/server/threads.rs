//! Serving on several threads, as nginx's workers do: each thread runs its own
//! single-threaded runtime and accepts from the same listening socket, so a
//! connection, its requests and their upstream calls stay on the thread that
//! accepted it, with no hand-offs between threads. The connection cap and limits of
//! `listen` hold across all threads.

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::listen::{Shared, accept};
use crate::config::ConnectionLimits;

/// How long a thread's runtime waits, when it stops, for blocking tasks (an HTML
/// conversion, say) still running.
const BLOCKING_GRACE: Duration = Duration::from_millis(100);

/// `listen::serve` on `threads` threads, the caller's among them: each of the others runs
/// its own single-threaded runtime and accepts from the same socket, so a
/// connection is served by the one thread that accepted it. Limits hold across all.
pub async fn serve_threads(
    app: Router,
    listener: TcpListener,
    threads: NonZeroUsize,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared::new(app, limits));
    let (stop, stopped) = watch::channel(false);
    // Set when the last request is done (or given up on): a thread's runtime must run
    // until then, since dropping it would drop the requests it serves.
    let finished = CancellationToken::new();
    let listener = listener.into_std()?;
    let mut workers = Vec::new();
    for index in 1..threads.get() {
        let worker = Worker {
            index,
            listener: listener.try_clone()?,
            shared: shared.clone(),
            stopped: stopped.clone(),
            finished: finished.clone(),
        };
        let (done, exited) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new().name(format!("lariat-{index}")).spawn(move || {
            worker.run();
            drop(done);
        })?;
        workers.push(exited);
    }
    let listener = TcpListener::from_std(listener)?;
    tokio::select! {
        () = shutdown => {}
        () = accept(&shared, listener, stopped) => {}
    }
    shared.drain(&stop).await;
    finished.cancel();
    for exited in workers {
        let _ = exited.await;
    }
    Ok(())
}

/// One of the server's other threads.
struct Worker {
    index: usize,
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    stopped: watch::Receiver<bool>,
    finished: CancellationToken,
}

impl Worker {
    fn run(self) {
        crate::worker::enter(self.index);
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(e) => {
                tracing::error!(thread = self.index, error = %e, "could not start a serving thread's runtime");
                return;
            }
        };
        runtime.block_on(async {
            match TcpListener::from_std(self.listener) {
                Ok(listener) => accept(&self.shared, listener, self.stopped).await,
                Err(e) => tracing::error!(thread = self.index, error = %e, "a serving thread cannot accept"),
            }
            self.finished.cancelled().await;
        });
        runtime.shutdown_timeout(BLOCKING_GRACE);
    }
}
