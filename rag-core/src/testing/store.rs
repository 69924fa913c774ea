use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::history::HistoryStore;
use crate::retriever::Retriever;
use crate::types::{Passage, RetrievalRequest, SessionId, SessionOwner, Turn};

/// Sleeps for `d`; no timer at all for zero (a zero-length tokio sleep still waits a tick).
async fn pause(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

/// Wraps a retriever or a history store and waits before each call: the slow backend.
#[derive(Debug, Clone)]
pub struct Delayed<T> {
    inner: T,
    delay: Duration,
    write_delay: Duration,
}

impl<T> Delayed<T> {
    /// `inner`, `delay` slower on every call.
    pub fn new(inner: T, delay: Duration) -> Self {
        Delayed {
            inner,
            delay,
            write_delay: delay,
        }
    }

    /// A different delay for history writes (`append`, `clear`).
    pub fn with_write_delay(mut self, delay: Duration) -> Self {
        self.write_delay = delay;
        self
    }
}

#[async_trait]
impl<T: Retriever> Retriever for Delayed<T> {
    async fn retrieve(&self, req: &RetrievalRequest) -> Result<Vec<Passage>> {
        pause(self.delay).await;
        self.inner.retrieve(req).await
    }
}

#[async_trait]
impl<T: HistoryStore> HistoryStore for Delayed<T> {
    async fn load(&self, session: &SessionId, max_turns: usize) -> Result<Vec<Turn>> {
        pause(self.delay).await;
        self.inner.load(session, max_turns).await
    }

    async fn append(&self, session: &SessionId, turn: &Turn) -> Result<()> {
        pause(self.write_delay).await;
        self.inner.append(session, turn).await
    }

    async fn clear(&self, session: &SessionId) -> Result<()> {
        pause(self.write_delay).await;
        self.inner.clear(session).await
    }

    async fn owner(&self, session: &SessionId) -> Result<SessionOwner> {
        pause(self.delay).await;
        self.inner.owner(session).await
    }
}

/// Wraps a history store and fails some of its calls: every load when asked to, and the
/// first `n` appends.
#[derive(Debug, Clone)]
pub struct FailingHistory<S> {
    inner: S,
    fail_loads: Option<Error>,
    fail_appends: usize,
    append_error: Error,
    append_calls: Arc<AtomicUsize>,
    load_calls: Arc<AtomicUsize>,
}

impl<S> FailingHistory<S> {
    /// `inner`, failing nothing yet.
    pub fn new(inner: S) -> Self {
        FailingHistory {
            inner,
            fail_loads: None,
            fail_appends: 0,
            append_error: Error::history("scripted append failure", true),
            append_calls: Arc::default(),
            load_calls: Arc::default(),
        }
    }

    /// Every load fails with `error`.
    pub fn fail_loads(mut self, error: Error) -> Self {
        self.fail_loads = Some(error);
        self
    }

    /// The first `n` appends fail with `error` (`usize::MAX`: all of them).
    pub fn fail_appends(mut self, n: usize, error: Error) -> Self {
        self.fail_appends = n;
        self.append_error = error;
        self
    }

    /// Append calls received, failed ones included.
    pub fn append_calls(&self) -> usize {
        self.append_calls.load(Ordering::SeqCst)
    }

    /// Load calls received, failed ones included.
    pub fn load_calls(&self) -> usize {
        self.load_calls.load(Ordering::SeqCst)
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

#[async_trait]
impl<S: HistoryStore> HistoryStore for FailingHistory<S> {
    async fn load(&self, session: &SessionId, max_turns: usize) -> Result<Vec<Turn>> {
        self.load_calls.fetch_add(1, Ordering::SeqCst);
        match &self.fail_loads {
            Some(error) => Err(error.clone()),
            None => self.inner.load(session, max_turns).await,
        }
    }

    async fn append(&self, session: &SessionId, turn: &Turn) -> Result<()> {
        if self.append_calls.fetch_add(1, Ordering::SeqCst) < self.fail_appends {
            return Err(self.append_error.clone());
        }
        self.inner.append(session, turn).await
    }

    async fn clear(&self, session: &SessionId) -> Result<()> {
        self.inner.clear(session).await
    }

    async fn owner(&self, session: &SessionId) -> Result<SessionOwner> {
        self.inner.owner(session).await
    }
}
