//! [`InMemoryHistoryBuilder`]: the limits of an [`InMemoryHistory`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use rag_core::{Error, Result};

use super::{Clock, InMemoryHistory};

/// Sets the limits of an [`InMemoryHistory`]; [`InMemoryHistoryBuilder::build`] checks them.
#[derive(Clone)]
#[must_use = "a builder does nothing until build() is called"]
pub struct InMemoryHistoryBuilder {
    max_turns: usize,
    max_sessions: usize,
    ttl: Option<Duration>,
    clock: Clock,
}

impl Default for InMemoryHistoryBuilder {
    fn default() -> Self {
        InMemoryHistoryBuilder {
            max_turns: InMemoryHistory::DEFAULT_MAX_TURNS_PER_SESSION,
            max_sessions: InMemoryHistory::DEFAULT_MAX_SESSIONS,
            ttl: None,
            clock: Arc::new(Instant::now),
        }
    }
}

impl std::fmt::Debug for InMemoryHistoryBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryHistoryBuilder")
            .field("max_turns_per_session", &self.max_turns)
            .field("max_sessions", &self.max_sessions)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl InMemoryHistoryBuilder {
    /// The most turns kept per session (default 100); older turns are evicted first.
    pub fn with_max_turns_per_session(mut self, n: usize) -> Self {
        self.max_turns = n;
        self
    }

    /// The most sessions kept (default 100,000); the least recently used is evicted first.
    pub fn with_max_sessions(mut self, n: usize) -> Self {
        self.max_sessions = n;
        self
    }

    /// How long a turn is kept after this store received it (default: no limit).
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Reads the time from `clock` instead of [`Instant::now`].
    #[cfg(test)]
    pub(crate) fn with_clock(
        mut self,
        clock: impl Fn() -> Instant + Send + Sync + 'static,
    ) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The store, or [`Error::Config`] when a limit is zero.
    pub fn build(self) -> Result<InMemoryHistory> {
        if self.max_turns == 0 {
            return Err(Error::config(
                "InMemoryHistory: max_turns_per_session must be at least 1",
            ));
        }
        if self.max_sessions == 0 {
            return Err(Error::config(
                "InMemoryHistory: max_sessions must be at least 1",
            ));
        }
        if self.ttl == Some(Duration::ZERO) {
            return Err(Error::config(
                "InMemoryHistory: a ttl of zero would expire every turn at once",
            ));
        }
        Ok(InMemoryHistory::from_parts(
            self.max_turns,
            self.max_sessions,
            self.ttl,
            self.clock,
        ))
    }
}
