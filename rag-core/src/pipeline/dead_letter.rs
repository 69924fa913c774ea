use std::fmt::Debug;
use std::sync::Mutex;

use async_trait::async_trait;

use super::event::DeadLetter;
use crate::forward::forward_async_trait;

/// Receives every ask that ended in a terminal error and every answered turn that could not be
/// saved, so that nothing fails silently (the dead-letter queue of the reference architecture).
///
/// Delivery runs in a background task of the pipeline, so a slow sink never delays the error
/// the user sees; [`crate::Pipeline::flush`] waits for deliveries in flight.
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
