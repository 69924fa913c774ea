//! The [`HistoryStore`] trait: the conversation so far, per session.

use std::fmt::Debug;

use async_trait::async_trait;

use crate::error::Result;
use crate::forward::forward_async_trait;
use crate::types::{SessionId, Turn};

/// Keeps each session's turns, in the order of their [`crate::TurnId`]s.
///
/// Every implementation must pass the suite in `rag_core::testing::conformance` (feature
/// `test-utils`).
#[async_trait]
pub trait HistoryStore: Send + Sync + Debug {
    /// The newest `max_turns` turns of `session`, oldest first (ordered by turn id). An
    /// unknown session has no turns.
    async fn load(&self, session: &SessionId, max_turns: usize) -> Result<Vec<Turn>>;

    /// Adds `turn` to `session`. Idempotent by [`Turn::id`]: appending a turn whose id is
    /// already stored changes nothing, so a retried append never duplicates a turn.
    async fn append(&self, session: &SessionId, turn: &Turn) -> Result<()>;

    /// Deletes every turn of `session`.
    async fn clear(&self, session: &SessionId) -> Result<()>;
}

forward_async_trait!(HistoryStore {
    fn load(&self, session: &SessionId, max_turns: usize) -> Result<Vec<Turn>>;
    fn append(&self, session: &SessionId, turn: &Turn) -> Result<()>;
    fn clear(&self, session: &SessionId) -> Result<()>;
});
