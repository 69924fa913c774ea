//! Stages an ask may run before retrieval: [`QuestionScreen`], which may block a question
//! before anything is spent on it, and [`QueryRewriter`], which turns a follow-up question into
//! a query that retrieves well on its own.

use std::fmt::Debug;

use async_trait::async_trait;

use crate::error::Result;
use crate::forward::forward_async_trait;
use crate::types::{GuardrailIntervention, Turn};

/// What a [`QuestionScreen`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Screening {
    /// The question may be answered.
    Allowed,
    /// The question is blocked: no retrieval and no model call are made for it, and the
    /// answer is the intervention's message.
    Blocked(GuardrailIntervention),
}

/// Screens a question before retrieval (for example with Bedrock's ApplyGuardrail API), so a
/// blocked question costs no retrieval and no model call.
#[async_trait]
pub trait QuestionScreen: Send + Sync + Debug {
    /// Whether `question` may be answered.
    async fn screen(&self, question: &str) -> Result<Screening>;
}

forward_async_trait!(QuestionScreen {
    fn screen(&self, question: &str) -> Result<Screening>;
});

/// Rewrites a follow-up question into a standalone retrieval query from the conversation so
/// far ("now do it in CDK" after a question about a Lambda function becomes "How do I create
/// a Lambda function with the AWS CDK?").
///
/// The pipeline calls it only when the conversation has earlier turns; the model's prompt
/// still holds the question as it was asked, only retrieval sees the rewritten query.
#[async_trait]
pub trait QueryRewriter: Send + Sync + Debug {
    /// The standalone query for `question`, given the earlier turns, oldest first (never
    /// empty).
    async fn rewrite(&self, question: &str, history: &[Turn]) -> Result<String>;
}

forward_async_trait!(QueryRewriter {
    fn rewrite(&self, question: &str, history: &[Turn]) -> Result<String>;
});
