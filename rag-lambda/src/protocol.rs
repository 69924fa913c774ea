//! The `rag.v1` frame protocol, shared by the Lambda handlers and the websocket example.
//!
//! The client sends `{"data":{"message":"...","id":"<client id, optional>"},"timestamp":...}`
//! (the reference architecture's payload; other fields are ignored). For each question the
//! server sends, to that connection only:
//!
//! - `{"type":"session","session_id":"..."}`, the conversation the answer belongs to;
//! - `{"type":"sources","sources":[{"index","passage_id","title","uri","score"}...]}`;
//! - `{"type":"token","text":"..."}`, pieces of the Markdown answer;
//! - `{"type":"warning","message":"..."}` for something that did not stop the answer;
//! - then one `{"type":"done","turn_id","usage","stop_reason","saved"}` or
//!   `{"type":"error","message":"...","retryable":bool}`.
//!
//! Every frame about a client message also carries `"id"` (the client's id echoed, or null)
//! and `"request_id"` (made by the server for that message and logged with any error): see
//! [`Reply`]. An `error` says what happened in plain words ([`plain_message`]); the backend's
//! own message, with its account ids and ARNs, goes to the log only.
//!
//! ```
//! use rag_lambda::protocol::{read_message, Frame, Reply};
//!
//! let (question, id) = read_message(r#"{"data":{"message":"What is RAG?","id":"q1"},"timestamp":0}"#)
//!     .unwrap();
//! assert_eq!((question.as_str(), id.as_deref()), ("What is RAG?", Some("q1")));
//!
//! let frame = Frame::Token { text: "Retrieval".into() };
//! let json = Reply::new(&frame, id.as_deref(), "r-1").to_json();
//! assert_eq!(json, r#"{"type":"token","text":"Retrieval","id":"q1","request_id":"r-1"}"#);
//! ```

use rag_core::{Citation, Error, Event, StopReason, TurnId, Usage, Warning};
use serde::{Deserialize, Serialize};

/// The `error` frame's message for questions a stopping server will not answer.
pub const SHUTTING_DOWN: &str = "the server is shutting down; ask again in a moment";

/// The `error` frame's message for a message over the size limit.
pub const TOO_LARGE: &str = "the payload was too large";

/// The longest client `id` echoed back, in bytes.
pub const MAX_CLIENT_ID_LEN: usize = 128;

/// A question from a client.
#[derive(Debug, Deserialize)]
pub struct ClientMessage {
    /// The payload. The `timestamp` (and any other field) is accepted and not used.
    pub data: ClientData,
}

/// The payload of a [`ClientMessage`].
#[derive(Debug, Deserialize)]
pub struct ClientData {
    /// The question.
    pub message: String,
    /// The client's own id for the question, echoed in every frame of its answer.
    #[serde(default)]
    pub id: Option<String>,
}

/// Reads a client message: its question and client id, or the `error` frame that says why it
/// cannot be read (malformed JSON, or an id longer than [`MAX_CLIENT_ID_LEN`]).
pub fn read_message(text: &str) -> Result<(String, Option<String>), Frame> {
    match serde_json::from_str::<ClientMessage>(text) {
        Ok(m)
            if m.data
                .id
                .as_ref()
                .is_some_and(|id| id.len() > MAX_CLIENT_ID_LEN) =>
        {
            Err(Frame::error(format!(
                "malformed message (the id is longer than {MAX_CLIENT_ID_LEN} bytes)"
            )))
        }
        Ok(m) => Ok((m.data.message, m.data.id)),
        Err(e) => Err(Frame::error(format!(
            r#"malformed message ({e}); send {{"data":{{"message":"...","id":"..."}},"timestamp":...}}"#
        ))),
    }
}

/// A client message's `id`, if it has a readable one (to echo it on a refusal).
pub fn client_id_of(text: &str) -> Option<String> {
    serde_json::from_str::<ClientMessage>(text)
        .ok()
        .and_then(|m| m.data.id)
        .filter(|id| id.len() <= MAX_CLIENT_ID_LEN)
}

/// What the server sends.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Frame {
    /// The conversation of this connection.
    Session {
        /// Pass it back to resume the conversation.
        session_id: String,
    },
    /// The passages the answer cites as `[index]`.
    Sources {
        /// In citation order.
        sources: Vec<Citation>,
    },
    /// A piece of the answer, in Markdown.
    Token {
        /// The text.
        text: String,
    },
    /// Something went wrong that did not stop the answer.
    Warning {
        /// What.
        message: String,
    },
    /// The answer is complete.
    Done {
        /// The saved turn.
        turn_id: TurnId,
        /// Token counts, when the model reported them.
        usage: Option<Usage>,
        /// Why the model stopped.
        stop_reason: Option<StopReason>,
        /// Whether the turn was saved to the history.
        saved: bool,
    },
    /// The question failed, or the message could not be read.
    Error {
        /// What went wrong, in plain words.
        message: String,
        /// Whether asking again may succeed.
        retryable: bool,
    },
}

impl Frame {
    /// An `error` frame that asking again will not mend.
    pub fn error(message: impl Into<String>) -> Self {
        Frame::Error {
            message: message.into(),
            retryable: false,
        }
    }

    /// The answer to a question a stopping server will not answer: another instance, or
    /// this one restarted, may.
    pub fn shutting_down() -> Self {
        Frame::Error {
            message: SHUTTING_DOWN.to_string(),
            retryable: true,
        }
    }

    /// Whether this frame ends an answer (`done` or `error`).
    pub fn is_terminal(&self) -> bool {
        matches!(self, Frame::Done { .. } | Frame::Error { .. })
    }

    /// The frame of a pipeline event, with each citation shown through `show` (which may
    /// hide a server path, say); `None` for events that have no frame. An `error` frame says
    /// what happened in plain words: log the failure itself before calling this.
    pub fn of_event(event: Event, show: impl Fn(Citation) -> Citation) -> Option<Frame> {
        Some(match event {
            Event::Sources(sources) => Frame::Sources {
                sources: sources.into_iter().map(show).collect(),
            },
            Event::Token(text) => Frame::Token { text },
            Event::Warning(warning) => Frame::Warning {
                message: plain_warning(&warning),
            },
            Event::Done(summary) => Frame::Done {
                turn_id: summary.turn_id,
                usage: summary.usage,
                stop_reason: summary.stop_reason,
                saved: summary.saved,
            },
            Event::Error(failure) => Frame::Error {
                retryable: failure.is_retryable(),
                message: plain_message(&failure.error),
            },
            _ => return None,
        })
    }
}

/// A frame about one client message: the frame's fields, then `id` and `request_id`.
#[derive(Debug, Serialize)]
pub struct Reply<'a> {
    #[serde(flatten)]
    frame: &'a Frame,
    id: Option<&'a str>,
    request_id: &'a str,
}

impl<'a> Reply<'a> {
    /// `frame`, about the client message `id`, answered as request `request_id`.
    pub fn new(frame: &'a Frame, id: Option<&'a str>, request_id: &'a str) -> Self {
        Reply {
            frame,
            id,
            request_id,
        }
    }

    /// The reply as JSON text. These plain structs always serialize; should one ever not,
    /// the text is an `error` frame that says so.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!(
                r#"{{"type":"error","message":"frame not serializable: {e}","retryable":false}}"#
            )
        })
    }
}

/// The plain words a client is told for a warning: what it means for the answer, never the
/// backend's message (log the warning itself).
pub fn plain_warning(warning: &Warning) -> String {
    match warning {
        Warning::HistoryUnavailable(_) => {
            "the conversation history could not be read: this answer does not build on it".into()
        }
        Warning::TurnNotSaved(_) => {
            "this answer could not be saved to the conversation history".into()
        }
        Warning::QueryTruncated {
            original_chars,
            sent_chars,
            ..
        } => format!(
            "the search used the first {sent_chars} of the question's {original_chars} characters"
        ),
        Warning::PromptShortened {
            passages_kept,
            turns_kept,
            ..
        } => format!(
            "the prompt was too long for the model: it was sent again with {passages_kept} \
             passages and {turns_kept} earlier turns"
        ),
        Warning::CountUnavailable(_) => {
            "the model's token count was unavailable, so an estimate kept the prompt in bounds"
                .into()
        }
        Warning::QueryRewriteFailed(_) => {
            "the follow-up could not be rewritten: the search used the question as asked".into()
        }
        _ => "something did not go as planned, but the answer goes on".into(),
    }
}

/// The plain words a client is told for `error`; the error itself goes to the log.
pub fn plain_message(error: &Error) -> String {
    match error {
        Error::InvalidInput { field, message } if *field == "question" => {
            format!("the question is not valid: it {message}")
        }
        Error::InvalidInput { .. } => "the request was not valid".into(),
        Error::ShuttingDown => SHUTTING_DOWN.into(),
        Error::Forbidden { .. } => "this conversation belongs to another user".into(),
        Error::Generation {
            retryable: true, ..
        } => "the model is busy, try again".into(),
        Error::Generation { .. } => "the model could not answer this question".into(),
        Error::Retrieval {
            retryable: true, ..
        } => "the document search is busy, try again".into(),
        Error::Retrieval { .. } => "the document search failed".into(),
        Error::History {
            retryable: true, ..
        } => "the conversation history is busy, try again".into(),
        Error::History { .. } => "the conversation history could not be read or saved".into(),
        Error::Timeout { stage, .. } => format!("the {stage} step took too long, try again"),
        Error::ContextOverflow { .. } | Error::PromptTooLong { .. } => {
            "the question is too long for the model".into()
        }
        _ => "something went wrong on the server".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_told_plain_words_and_never_the_backends_message() {
        let raw = "ThrottlingException: Rate exceeded for arn:aws:bedrock:us-east-1:123456789012:foundation-model/x";
        for (error, expected) in [
            (Error::generation(raw, true), "the model is busy, try again"),
            (
                Error::generation(raw, false),
                "the model could not answer this question",
            ),
            (Error::retrieval(raw, false), "the document search failed"),
            (
                Error::history(raw, true),
                "the conversation history is busy, try again",
            ),
            (
                Error::Forbidden {
                    message: raw.into(),
                },
                "this conversation belongs to another user",
            ),
            (Error::config(raw), "something went wrong on the server"),
        ] {
            let plain = plain_message(&error);
            assert_eq!(plain, expected);
            assert!(!plain.contains("123456789012"));
        }
        assert_eq!(
            plain_message(&Error::invalid_input("question", "must not be empty")),
            "the question is not valid: it must not be empty"
        );
    }

    #[test]
    fn warnings_are_told_in_plain_words_without_the_backends_message() {
        let raw = "AccessDeniedException: arn:aws:dynamodb:us-east-1:123456789012:table/chat";
        for warning in [
            Warning::HistoryUnavailable(Error::history(raw, false)),
            Warning::TurnNotSaved(Error::history(raw, true)),
            Warning::CountUnavailable(Error::generation(raw, false)),
            Warning::QueryRewriteFailed(Error::generation(raw, true)),
            Warning::Other(raw.into()),
        ] {
            let Some(Frame::Warning { message }) = Frame::of_event(Event::Warning(warning), |c| c)
            else {
                panic!("a warning frame");
            };
            assert!(!message.contains("123456789012"), "{message}");
        }
    }

    #[test]
    fn replies_carry_the_client_id_and_the_request_id() {
        let frame = Frame::Token { text: "hi".into() };
        let json: serde_json::Value =
            serde_json::from_str(&Reply::new(&frame, Some("q1"), "r1").to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "token", "text": "hi", "id": "q1", "request_id": "r1"})
        );
        let none: serde_json::Value =
            serde_json::from_str(&Reply::new(&frame, None, "r2").to_json()).unwrap();
        assert_eq!(none["id"], serde_json::Value::Null);
    }

    #[test]
    fn messages_are_read_or_refused_with_a_frame_that_says_why() {
        assert_eq!(
            read_message(r#"{"data":{"message":"hi"},"timestamp":1}"#).unwrap(),
            ("hi".to_string(), None)
        );
        let Err(Frame::Error { message, .. }) = read_message(r#"{"message":"hi"}"#) else {
            panic!("a message without data is refused");
        };
        assert!(message.starts_with("malformed message"), "{message}");
        let long = format!(
            r#"{{"data":{{"message":"hi","id":"{}"}}}}"#,
            "x".repeat(129)
        );
        let Err(Frame::Error { message, .. }) = read_message(&long) else {
            panic!("a long id is refused");
        };
        assert!(message.contains("longer than 128 bytes"), "{message}");
        assert_eq!(client_id_of(&long), None);
        assert_eq!(
            client_id_of(r#"{"data":{"message":"hi","id":"q7"}}"#).as_deref(),
            Some("q7")
        );
    }
}
