use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, Stage};
use crate::types::{Citation, StopReason, Turn, TurnId, Usage};

/// One item of an [`crate::AnswerStream`].
///
/// In order: any [`Event::Warning`]s, one [`Event::Sources`], the [`Event::Token`]s, at most one
/// [`Event::Usage`], and exactly one terminal event, [`Event::Done`] or [`Event::Error`], after
/// which the stream ends.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// The passages the prompt holds, numbered as the answer cites them. Always before the
    /// first token; empty without a retriever.
    Sources(Vec<Citation>),
    /// A piece of the answer, as the model produced it.
    Token(String),
    /// Token counts of the model call.
    Usage(Usage),
    /// Something went wrong that did not stop the answer.
    Warning(Warning),
    /// The answer is complete (and its turn is saved unless a warning said otherwise). Boxed,
    /// like `Error`, so the events that stream by the thousand stay small.
    Done(Box<Summary>),
    /// The ask failed; nothing was saved.
    Error(Box<Failure>),
}

impl Event {
    /// Whether this event ends the stream.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Event::Done(_) | Event::Error(_))
    }
}

/// A non-fatal problem, reported in the stream.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Warning {
    /// The history could not be loaded; the answer goes on without it.
    HistoryUnavailable(Error),
    /// The finished turn could not be saved (after retries); it went to the dead-letter sink.
    TurnNotSaved(Error),
    /// A retriever shortened the query to its service's limit.
    QueryTruncated {
        /// The length of the query given, in characters.
        original_chars: usize,
        /// The length of the query sent, in characters.
        sent_chars: usize,
    },
    /// The model refused the prompt as too long before answering; it was sent once more with
    /// fewer passages or turns (the first `passages_kept` sources are in it; the others were
    /// listed in [`Event::Sources`] but not sent).
    PromptShortened {
        /// The model's refusal.
        error: Error,
        /// How many of the listed sources the prompt that was answered holds.
        passages_kept: usize,
        /// How many earlier turns it holds.
        turns_kept: usize,
    },
    /// The model's own count of the prompt ([`crate::PromptCounter`]) failed; the template's
    /// count, an upper bound, was used.
    CountUnavailable(Error),
    /// The [`crate::QueryRewriter`] failed or took too long; retrieval used the question as
    /// asked.
    QueryRewriteFailed(Error),
    /// Any other remark from a backend.
    Other(String),
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Warning::HistoryUnavailable(e) => write!(f, "answering without history: {e}"),
            Warning::TurnNotSaved(e) => write!(f, "the turn was not saved: {e}"),
            Warning::QueryTruncated {
                original_chars,
                sent_chars,
            } => write!(
                f,
                "the query was shortened from {original_chars} to {sent_chars} characters"
            ),
            Warning::PromptShortened {
                error,
                passages_kept,
                turns_kept,
            } => write!(
                f,
                "{error}; sent again with {passages_kept} passages and {turns_kept} earlier turns"
            ),
            Warning::CountUnavailable(e) => {
                write!(
                    f,
                    "the model's token count is unavailable, the estimate was used: {e}"
                )
            }
            Warning::QueryRewriteFailed(e) => write!(
                f,
                "the follow-up could not be rewritten, retrieval used the question as asked: {e}"
            ),
            Warning::Other(s) => f.write_str(s),
        }
    }
}

/// How long each stage of an ask took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Timings {
    /// Screening the question (zero without a [`crate::QuestionScreen`]).
    pub screen: Duration,
    /// Rewriting a follow-up (zero without a [`crate::QueryRewriter`] or history).
    pub rewrite: Duration,
    /// Loading the history (runs at the same time as retrieval, unless a
    /// [`crate::QueryRewriter`] needs it first).
    pub history: Duration,
    /// Retrieving passages (runs at the same time as history).
    pub retrieval: Duration,
    /// Rendering the prompt.
    pub prompt: Duration,
    /// From the start of the ask to the first token.
    pub first_token: Duration,
    /// From the first model call to the end of its stream, retries included.
    pub generation: Duration,
    /// Saving the turn.
    pub save: Duration,
    /// The whole ask.
    pub total: Duration,
}

/// What the token budget left out of the prompt.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Dropped {
    /// Ids of the passages left out, in rank order.
    pub passages: Vec<String>,
    /// How many of the oldest loaded turns were left out.
    pub turns: usize,
}

/// The result of a complete ask.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The id of the saved turn.
    pub turn_id: TurnId,
    /// The whole answer.
    pub answer: String,
    /// Why the model stopped, when it said.
    pub stop_reason: Option<StopReason>,
    /// Token counts, when the model reported them.
    pub usage: Option<Usage>,
    /// Per-stage durations.
    pub timings: Timings,
    /// What the budget left out.
    pub dropped: Dropped,
    /// Model calls made (1 when the first succeeded).
    pub attempts: u32,
    /// Whether the turn was saved to the history store (false without one, or when saving
    /// failed).
    pub saved: bool,
    /// The prompt's tokens as the template counted them ([`crate::RenderedPrompt::token_count`]):
    /// exact for the families whose tokenizer is shipped when the template had to count, an
    /// upper bound otherwise, a length bound when the whole prompt fit by its length alone
    /// (see `docs/token-budget.md`).
    pub prompt_tokens: usize,
    /// The prompt's tokens as the model counted them, when the pipeline has a
    /// [`crate::PromptCounter`].
    pub counted_prompt_tokens: Option<usize>,
    /// The query retrieval was given, when a [`crate::QueryRewriter`] rewrote the question
    /// (`None` when retrieval used the question as asked).
    pub rewritten_query: Option<String>,
}

/// Why an ask failed, with what had been answered before it did.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{error}")]
pub struct Failure {
    /// The error.
    #[source]
    pub error: Error,
    /// The stage that failed.
    pub stage: Stage,
    /// The answer streamed before the failure (empty if it failed before the first token).
    pub partial_answer: String,
}

impl Failure {
    /// Whether asking again may succeed.
    pub fn is_retryable(&self) -> bool {
        self.error.is_retryable()
    }
}

impl DeadLetter {
    /// A one-line description for logs: the kind, the session and the error.
    pub fn summary(&self) -> String {
        match self {
            DeadLetter::AskFailed {
                session, failure, ..
            } => format!(
                "ask failed in session {session} at {}: {}",
                failure.stage, failure.error
            ),
            DeadLetter::TurnNotSaved {
                session,
                turn,
                error,
            } => format!("turn {} of session {session} not saved: {error}", turn.id),
        }
    }
}

/// What the dead-letter sink receives.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum DeadLetter {
    /// An ask ended with [`Event::Error`].
    AskFailed {
        /// The session.
        session: crate::types::SessionId,
        /// The question.
        question: String,
        /// The failure the caller saw.
        failure: Failure,
    },
    /// An answer was delivered but its turn could not be saved; the turn is here to replay.
    TurnNotSaved {
        /// The session.
        session: crate::types::SessionId,
        /// The turn that was not saved.
        turn: Turn,
        /// The last save error.
        error: Error,
    },
}
