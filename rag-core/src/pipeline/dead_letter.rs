use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use super::event::DeadLetter;
use crate::forward::forward_async_trait;

/// Receives every ask that ended in a terminal error and every answered turn that could not be
/// saved, so that nothing fails silently (the dead-letter queue of the reference architecture).
///
/// Delivery runs in background tasks of the pipeline, so a slow sink never delays the error
/// the user sees, and is bounded ([`DeadLetterLimits`]): a sink that stalls during an outage
/// cannot make the pipeline hold letters without limit; what is shed is counted
/// ([`crate::Pipeline::dead_letter_stats`]) and logged. [`crate::Pipeline::flush`] waits for
/// deliveries in flight.
#[async_trait]
pub trait DeadLetterSink: Send + Sync + Debug {
    /// Takes one dead letter. A sink that can fail should retry or log on its own.
    async fn send(&self, letter: DeadLetter);
}

forward_async_trait!(DeadLetterSink {
    fn send(&self, letter: DeadLetter);
});

/// The default sink: logs each letter as a `tracing` error event.
#[derive(Debug, Default, Clone, Copy)]
pub struct TracingDeadLetters;

#[async_trait]
impl DeadLetterSink for TracingDeadLetters {
    async fn send(&self, letter: DeadLetter) {
        match &letter {
            DeadLetter::AskFailed {
                session, failure, ..
            } => tracing::error!(
                session = %session,
                stage = %failure.stage,
                retryable = failure.is_retryable(),
                partial_chars = failure.partial_answer.len(),
                error = %failure.error,
                "ask failed"
            ),
            DeadLetter::TurnNotSaved {
                session,
                turn,
                error,
            } => tracing::error!(
                session = %session,
                turn = %turn.id,
                error = %error,
                "answered turn was not saved"
            ),
        }
    }
}

/// A sink that keeps every letter in memory, for tests and for services that drain it
/// themselves.
#[derive(Debug, Default)]
pub struct InMemoryDeadLetters {
    letters: Mutex<Vec<DeadLetter>>,
}

impl InMemoryDeadLetters {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of the letters received so far.
    pub fn letters(&self) -> Vec<DeadLetter> {
        self.lock().clone()
    }

    /// How many letters were received.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no letter was received.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Takes the letters received so far.
    pub fn drain(&self) -> Vec<DeadLetter> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<DeadLetter>> {
        // A panic elsewhere while holding the lock cannot leave the Vec half-written.
        self.letters.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl DeadLetterSink for InMemoryDeadLetters {
    async fn send(&self, letter: DeadLetter) {
        self.lock().push(letter);
    }
}

/// Bounds on dead-letter delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadLetterLimits {
    /// Letters waiting or in delivery at most; a letter beyond this is shed (default 1,024).
    pub max_queued: usize,
    /// Deliveries running at once (default 4).
    pub max_concurrent: usize,
    /// How long one delivery may take before it is counted as failed (default 30 s).
    pub timeout: Duration,
}

impl Default for DeadLetterLimits {
    fn default() -> Self {
        DeadLetterLimits {
            max_queued: 1_024,
            max_concurrent: 4,
            timeout: Duration::from_secs(30),
        }
    }
}

/// What became of the dead letters of a pipeline so far: counters for a service's metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeadLetterStats {
    /// Letters waiting or in delivery now.
    pub queued: usize,
    /// Letters the sink took.
    pub delivered: u64,
    /// Letters dropped because the queue was full.
    pub shed: u64,
    /// Deliveries that timed out or whose sink panicked.
    pub failed: u64,
}

/// The bounded delivery of dead letters to a sink.
#[derive(Debug)]
pub(crate) struct DeadLetterQueue {
    sink: Arc<dyn DeadLetterSink>,
    limits: DeadLetterLimits,
    permits: Arc<Semaphore>,
    queued: Arc<AtomicUsize>,
    delivered: Arc<AtomicU64>,
    shed: AtomicU64,
    failed: Arc<AtomicU64>,
}

impl DeadLetterQueue {
    pub(crate) fn new(sink: Arc<dyn DeadLetterSink>, limits: DeadLetterLimits) -> Self {
        DeadLetterQueue {
            sink,
            permits: Arc::new(Semaphore::new(limits.max_concurrent)),
            limits,
            queued: Arc::default(),
            delivered: Arc::default(),
            shed: AtomicU64::new(0),
            failed: Arc::default(),
        }
    }

    /// Hands `letter` to the sink in a tracked task, or sheds it when the queue is full.
    pub(crate) fn push(&self, letter: DeadLetter, tasks: &TaskTracker) {
        let queued = self.queued.fetch_add(1, Ordering::AcqRel);
        if queued >= self.limits.max_queued {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            let shed = self.shed.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::error!(
                shed_total = shed,
                max_queued = self.limits.max_queued,
                letter = %letter.summary(),
                "dead-letter queue full: letter shed"
            );
            return;
        }
        let sink = Arc::clone(&self.sink);
        let permits = Arc::clone(&self.permits);
        let (queued, delivered, failed) = (
            Arc::clone(&self.queued),
            Arc::clone(&self.delivered),
            Arc::clone(&self.failed),
        );
        let timeout = self.limits.timeout;
        tasks.spawn(async move {
            let delivery = async {
                let _permit = permits.acquire().await;
                let summary = letter.summary();
                let send = std::panic::AssertUnwindSafe(sink.send(letter)).catch_unwind();
                match tokio::time::timeout(timeout, send).await {
                    Ok(Ok(())) => {
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Err(_)) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(letter = %summary, "the dead-letter sink panicked");
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(letter = %summary, ?timeout, "dead-letter delivery timed out");
                    }
                }
            };
            delivery.await;
            queued.fetch_sub(1, Ordering::AcqRel);
        });
    }

    pub(crate) fn stats(&self) -> DeadLetterStats {
        DeadLetterStats {
            queued: self.queued.load(Ordering::Acquire),
            delivered: self.delivered.load(Ordering::Relaxed),
            shed: self.shed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}
