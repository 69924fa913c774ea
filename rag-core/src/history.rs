//! The [`HistoryStore`] trait: the conversation so far, per session.

use std::fmt::Debug;

use async_trait::async_trait;

use crate::error::Result;
use crate::forward::forward_async_trait;
use crate::types::{SessionId, SessionOwner, Turn};

/// Keeps each session's turns, in the order of their [`crate::TurnId`]s, in the namespace of
/// the session's owner.
///
/// The first append to a session records its owner ([`SessionId::owner`], or none); from then
/// on `load`, `append` and `clear` with any other owner fail with [`crate::Error::Forbidden`]
/// and touch nothing. [`HistoryStore::owner`] says who a session belongs to, so a service can
/// refuse a resume before it reads anything.
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

    /// Deletes every turn of `session` (and its owner: the session is unclaimed after).
    async fn clear(&self, session: &SessionId) -> Result<()>;

    /// Who the session with `session`'s id belongs to (`session`'s own owner is not
    /// consulted).
    async fn owner(&self, session: &SessionId) -> Result<SessionOwner>;
}

forward_async_trait!(HistoryStore {
    fn load(&self, session: &SessionId, max_turns: usize) -> Result<Vec<Turn>>;
    fn append(&self, session: &SessionId, turn: &Turn) -> Result<()>;
    fn clear(&self, session: &SessionId) -> Result<()>;
    fn owner(&self, session: &SessionId) -> Result<SessionOwner>;
});
