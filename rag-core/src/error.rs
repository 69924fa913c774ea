//! The one error type of the workspace.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A boxed, shareable error from a backend, kept as the `source` of an [`Error`].
pub type BoxError = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// The result type of the workspace.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which step of an ask an error or a timing belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Stage {
    /// Checking the ask before any backend is called.
    Input,
    /// Screening the question ([`crate::QuestionScreen`]).
    Screen,
    /// Rewriting a follow-up into a retrieval query ([`crate::QueryRewriter`]); its failures
    /// only warn.
    Rewrite,
    /// Loading the conversation history.
    History,
    /// Retrieving passages.
    Retrieval,
    /// Rendering the prompt inside the token budget.
    Prompt,
    /// Calling the model and streaming its answer.
    Generation,
    /// Appending the finished turn to the history.
    Save,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Input => "input",
            Stage::Screen => "screen",
            Stage::Rewrite => "rewrite",
            Stage::History => "history",
            Stage::Retrieval => "retrieval",
            Stage::Prompt => "prompt",
            Stage::Generation => "generation",
            Stage::Save => "save",
        })
    }
}

/// Every error of the workspace.
///
/// Adapters keep the service's own message and decide retryability where the error is made
/// (throttling, 5xx and timeouts are retryable; validation and access denied are not), so
/// [`Error::is_retryable`] never has to guess. The type is `Clone` so one failure can be both
/// reported to the caller and handed to a dead-letter sink.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller's input was rejected before any backend was called.
    #[error("invalid {field}: {message}")]
    InvalidInput {
        /// The input that was rejected (`question`, `session_id`, `params.temperature`, ...).
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A builder was given an unusable configuration.
    #[error("invalid configuration: {message}")]
    Config {
        /// What is wrong.
        message: String,
    },
    /// A prompt template failed to compile or to render.
    #[error("template `{name}`: {message}")]
    Template {
        /// The template's name.
        name: String,
        /// What is wrong, with line and column where known.
        message: String,
        /// Line of the error in the template source, 1-based.
        line: Option<usize>,
        /// Column of the error in the template source, 1-based.
        column: Option<usize>,
    },
    /// The retriever failed.
    #[error("retrieval failed: {message}")]
    Retrieval {
        /// The backend's message.
        message: String,
        /// Whether trying again may succeed.
        retryable: bool,
        /// The backend error.
        #[source]
        source: Option<BoxError>,
    },
    /// The history store failed.
    #[error("history store failed: {message}")]
    History {
        /// The backend's message.
        message: String,
        /// Whether trying again may succeed.
        retryable: bool,
        /// The backend error.
        #[source]
        source: Option<BoxError>,
    },
    /// The model call failed, before or during its stream.
    #[error("generation failed: {message}")]
    Generation {
        /// The backend's message.
        message: String,
        /// Whether trying again may succeed.
        retryable: bool,
        /// The backend error.
        #[source]
        source: Option<BoxError>,
    },
    /// The question alone does not fit in the model's token budget.
    #[error("context overflow: the prompt needs {needed} tokens but the budget is {budget}")]
    ContextOverflow {
        /// Tokens the smallest possible prompt needs.
        needed: usize,
        /// Tokens available for the prompt.
        budget: usize,
    },
    /// A stage took longer than its configured limit.
    #[error("{stage} timed out after {after:?}")]
    Timeout {
        /// The stage that timed out.
        stage: Stage,
        /// The limit that was exceeded.
        after: Duration,
    },
    /// The model refused the prompt as longer than it takes (Bedrock's ValidationException
    /// for prompt length), with the sizes it reported when it did. The pipeline sends a
    /// shorter prompt once before it reports this.
    #[error("the model refused the prompt as too long: {message}")]
    PromptTooLong {
        /// The service's message.
        message: String,
        /// The prompt's tokens as the model counted them, when it said.
        tokens: Option<usize>,
        /// The most prompt tokens the model takes, when it said.
        limit: Option<usize>,
    },
    /// A backend or template panicked; the ask ended with this error instead of unwinding
    /// into the caller's task.
    #[error("{stage} panicked: {message}")]
    Panicked {
        /// The stage whose code panicked.
        stage: Stage,
        /// The panic's message.
        message: String,
    },
    /// The pipeline is shutting down and takes no new asks.
    #[error("the service is shutting down")]
    ShuttingDown,
    /// The conversation belongs to someone else: a [`crate::HistoryStore`] refuses to read,
    /// extend or clear a session for any owner but the one who started it.
    #[error("forbidden: {message}")]
    Forbidden {
        /// What was refused (never the other owner's id).
        message: String,
    },
}

impl Error {
    /// An [`Error::InvalidInput`] for `field`.
    pub fn invalid_input(field: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidInput {
            field,
            message: message.into(),
        }
    }

    /// An [`Error::Forbidden`] for `session`, which another owner started.
    pub fn forbidden(session: &crate::SessionId) -> Self {
        Error::Forbidden {
            message: format!("session `{session}` belongs to another user"),
        }
    }

    /// An [`Error::Config`].
    pub fn config(message: impl Into<String>) -> Self {
        Error::Config {
            message: message.into(),
        }
    }

    /// An [`Error::Retrieval`].
    pub fn retrieval(message: impl Into<String>, retryable: bool) -> Self {
        Error::Retrieval {
            message: message.into(),
            retryable,
            source: None,
        }
    }

    /// An [`Error::History`].
    pub fn history(message: impl Into<String>, retryable: bool) -> Self {
        Error::History {
            message: message.into(),
            retryable,
            source: None,
        }
    }

    /// An [`Error::Generation`].
    pub fn generation(message: impl Into<String>, retryable: bool) -> Self {
        Error::Generation {
            message: message.into(),
            retryable,
            source: None,
        }
    }

    /// Attaches the backend error that caused this one (for the backend variants; the others
    /// are returned unchanged).
    pub fn with_source(mut self, err: impl std::error::Error + Send + Sync + 'static) -> Self {
        if let Error::Retrieval { source, .. }
        | Error::History { source, .. }
        | Error::Generation { source, .. } = &mut self
        {
            *source = Some(Arc::new(err));
        }
        self
    }

    /// An [`Error::Panicked`] from a caught panic's payload.
    pub fn panicked(stage: Stage, payload: &(dyn std::any::Any + Send)) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned());
        Error::Panicked { stage, message }
    }

    /// Whether the same call may succeed if tried again: decided where the error was made.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Retrieval { retryable, .. }
            | Error::History { retryable, .. }
            | Error::Generation { retryable, .. } => *retryable,
            Error::Timeout { .. } | Error::ShuttingDown => true,
            Error::Forbidden { .. }
            | Error::InvalidInput { .. }
            | Error::Config { .. }
            | Error::Template { .. }
            | Error::ContextOverflow { .. }
            | Error::PromptTooLong { .. }
            | Error::Panicked { .. } => false,
        }
    }

    /// The stage this error belongs to, when the variant says it.
    pub fn stage(&self) -> Option<Stage> {
        match self {
            Error::InvalidInput { .. } => Some(Stage::Input),
            Error::Retrieval { .. } => Some(Stage::Retrieval),
            Error::History { .. } => Some(Stage::History),
            Error::Generation { .. } => Some(Stage::Generation),
            Error::Template { .. } | Error::ContextOverflow { .. } => Some(Stage::Prompt),
            Error::Timeout { stage, .. } | Error::Panicked { stage, .. } => Some(*stage),
            Error::PromptTooLong { .. } => Some(Stage::Generation),
            Error::Forbidden { .. } => Some(Stage::History),
            Error::Config { .. } | Error::ShuttingDown => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryability_is_decided_at_creation() {
        assert!(Error::generation("throttled", true).is_retryable());
        assert!(!Error::generation("validation", false).is_retryable());
        assert!(Error::Timeout {
            stage: Stage::Retrieval,
            after: Duration::from_secs(1)
        }
        .is_retryable());
        assert!(!Error::invalid_input("question", "empty").is_retryable());
        assert!(!Error::ContextOverflow {
            needed: 10,
            budget: 5
        }
        .is_retryable());
    }

    #[test]
    fn source_chain_is_kept() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let err = Error::retrieval("index unreachable", true).with_source(io);
        let source = std::error::Error::source(&err).expect("source kept");
        assert_eq!(source.to_string(), "reset by peer");
        assert_eq!(err.to_string(), "retrieval failed: index unreachable");
        assert_eq!(err.stage(), Some(Stage::Retrieval));
    }
}
