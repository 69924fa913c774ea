use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::retriever::Retriever;
use crate::types::{Passage, RetrievalRequest};

/// Returns the same passages for every query (the first `top_k` of them) and records the
/// requests it got.
#[derive(Debug, Clone, Default)]
pub struct StaticRetriever {
    passages: Arc<[Passage]>,
    requests: Arc<Mutex<Vec<RetrievalRequest>>>,
    record: bool,
}

impl StaticRetriever {
    /// A retriever of `passages`, best first.
    pub fn new(passages: Vec<Passage>) -> Self {
        StaticRetriever {
            passages: passages.into(),
            requests: Arc::default(),
            record: true,
        }
    }

    /// Keeps no copy of the requests: for benchmarks and soaks, where the record would grow
    /// without end.
    pub fn without_request_record(mut self) -> Self {
        self.record = false;
        self
    }

    /// `n` passages `p0`, `p1`, ... with short distinct texts and titles.
    pub fn numbered(n: usize) -> Self {
        Self::new(
            (0..n)
                .map(|i| {
                    Passage::new(format!("p{i}"), format!("Passage {i} text."))
                        .with_title(format!("Doc {i}"))
                        .with_uri(format!("https://example.com/doc/{i}"))
                        .with_score(1.0 - i as f32 / (n as f32 + 1.0))
                })
                .collect(),
        )
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<RetrievalRequest> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[async_trait]
impl Retriever for StaticRetriever {
    async fn retrieve(&self, req: &RetrievalRequest) -> Result<Vec<Passage>> {
        if self.record {
            self.requests
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(req.clone());
        }
        Ok(self.passages.iter().take(req.top_k).cloned().collect())
    }
}

/// Fails every retrieval with the given error and counts the calls.
#[derive(Debug, Clone)]
pub struct FailingRetriever {
    error: Error,
    calls: Arc<std::sync::atomic::AtomicUsize>,
}

impl FailingRetriever {
    /// A retriever that always fails with `error`.
    pub fn new(error: Error) -> Self {
        FailingRetriever {
            error,
            calls: Arc::default(),
        }
    }

    /// Calls received.
    pub fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[async_trait]
impl Retriever for FailingRetriever {
    async fn retrieve(&self, _req: &RetrievalRequest) -> Result<Vec<Passage>> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Err(self.error.clone())
    }
}
