//! The [`Retriever`] trait: finds the passages a question needs.

use std::fmt::Debug;

use async_trait::async_trait;

use crate::error::Result;
use crate::forward::forward_async_trait;
use crate::types::{Passage, RetrievalRequest, Retrieved};

/// Finds the passages relevant to a query, best first.
///
/// Object safe: a pipeline holds one as `Arc<dyn Retriever>`. Errors say whether a retry may
/// succeed ([`crate::Error::is_retryable`]).
#[async_trait]
pub trait Retriever: Send + Sync + Debug {
    /// At most `req.top_k` passages for `req.query`, best first, visible to `req.user`.
    async fn retrieve(&self, req: &RetrievalRequest) -> Result<Vec<Passage>>;

    /// Like [`Retriever::retrieve`], plus warnings for the caller (for example a query that
    /// was shortened to the service's limit). The pipeline calls this one; the default wraps
    /// `retrieve` with no warnings.
    async fn retrieve_with_warnings(&self, req: &RetrievalRequest) -> Result<Retrieved> {
        self.retrieve(req).await.map(Retrieved::from)
    }
}

forward_async_trait!(Retriever {
    fn retrieve(&self, req: &RetrievalRequest) -> Result<Vec<Passage>>;
    fn retrieve_with_warnings(&self, req: &RetrievalRequest) -> Result<Retrieved>;
});
