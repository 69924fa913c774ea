//! The graceful stop of the service: the answers in progress finish, the rest is refused in
//! plain words, the connections close with 1001.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rag::pipeline::ShutdownReport;
use rag::Pipeline;
use tokio::sync::watch;

/// What [`Shutdown`] and the connections share.
#[derive(Debug)]
struct Shared {
    /// Set once, when the server starts to stop.
    stopping: watch::Sender<bool>,
    /// The connections open (upgrades accepted and not yet ended).
    open: watch::Sender<usize>,
}

/// Stops the service gracefully: the connections finish the answers in progress, refuse the
/// rest in plain words and close, then the pipeline's saves and dead letters finish. `main`
/// runs it on Ctrl-C or SIGTERM; tests run it directly.
#[derive(Debug)]
pub(crate) struct Shutdown(Arc<Shared>);

/// The connections' side of a [`Shutdown`]: whether the server is stopping. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct ShutdownSignal(Arc<Shared>);

/// What was left when [`Shutdown::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stopped {
    /// The pipeline's report: answers still streaming and background tasks (turn saves, dead
    /// letters) still running at the deadline.
    pub(crate) pipeline: ShutdownReport,
    /// Connections still open at the deadline.
    pub(crate) connections_left: usize,
}

impl Shutdown {
    /// A shutdown not yet begun, and the signal to put in [`super::AppState`].
    pub(crate) fn new() -> (Shutdown, ShutdownSignal) {
        let shared = Arc::new(Shared {
            stopping: watch::Sender::new(false),
            open: watch::Sender::new(0),
        });
        (Shutdown(Arc::clone(&shared)), ShutdownSignal(shared))
    }

    /// Tells the connections that the server stops, and refuses new upgrades from now on.
    /// [`Shutdown::run`] calls it; calling it again does nothing.
    pub(crate) fn begin(&self) {
        self.0.stopping.send_replace(true);
    }

    /// Resolves once the shutdown has begun: for `axum::serve`'s graceful shutdown, so the
    /// server stops accepting at the same moment.
    pub(crate) fn begun(&self) -> impl Future<Output = ()> + Send + 'static {
        let signal = ShutdownSignal(Arc::clone(&self.0));
        async move { signal.stopping().await }
    }

    /// Begins the shutdown, then waits up to `grace` for the answers in flight to end, for
    /// the turn saves and dead letters after them ([`Pipeline::shutdown`]), and for every
    /// connection to close.
    pub(crate) async fn run(self, pipeline: &Pipeline, grace: Duration) -> Stopped {
        self.begin();
        let mut open = self.0.open.subscribe();
        let closed = async move {
            // The count's read guard is let go at once: connections still ending update it.
            let _ = open.wait_for(|n| *n == 0).await.map(|_| ());
        };
        // Both waits start now and share the deadline.
        let (report, _) = tokio::join!(
            pipeline.shutdown(grace),
            tokio::time::timeout(grace, closed),
        );
        let connections_left = *self.0.open.borrow();
        Stopped {
            pipeline: report,
            connections_left,
        }
    }
}

impl ShutdownSignal {
    /// Whether the server is stopping.
    pub(crate) fn is_stopping(&self) -> bool {
        *self.0.stopping.borrow()
    }

    /// Resolves once the server is stopping (at once if it already is).
    pub(crate) async fn stopping(&self) {
        let mut stopping = self.0.stopping.subscribe();
        // The sender lives in `self`, so this only returns once the flag is set.
        let _ = stopping.wait_for(|stopping| *stopping).await;
    }

    /// Counts a connection as open until the returned guard is dropped.
    pub(crate) fn open_connection(&self) -> OpenConnection {
        self.0.open.send_modify(|n| *n += 1);
        OpenConnection(Arc::clone(&self.0))
    }
}

/// One open connection, counted until dropped.
#[derive(Debug)]
pub(crate) struct OpenConnection(Arc<Shared>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.send_modify(|n| *n -= 1);
    }
}

impl Stopped {
    /// Whether everything finished before the deadline.
    pub(crate) fn completed(&self) -> bool {
        self.pipeline.completed && self.connections_left == 0
    }

    /// What the shutdown finished, in one line for the log.
    pub(crate) fn summary(&self) -> String {
        if self.completed() {
            return "stopped: no answer was cut off, and the turn saves and dead letters finished"
                .to_string();
        }
        let report = self.pipeline;
        let left: Vec<String> = [
            (
                report.asks_left,
                "answer still streaming",
                "answers still streaming",
            ),
            (
                report.tasks_left,
                "turn save or dead letter unfinished",
                "turn saves or dead letters unfinished",
            ),
            (
                self.connections_left,
                "connection still open",
                "connections still open",
            ),
        ]
        .into_iter()
        .filter(|(n, ..)| *n > 0)
        .map(|(n, one, many)| format!("{n} {}", if n == 1 { one } else { many }))
        .collect();
        if left.is_empty() {
            // Everything ended just as the deadline passed.
            "stopped at the deadline".to_string()
        } else {
            format!("stopped: {} at the deadline", left.join(", "))
        }
    }
}
