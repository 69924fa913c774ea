//! A [`DeadLetterSink`] on Amazon SQS: every failed ask, and every answered turn that could
//! not be saved, becomes one JSON message on a queue, as the reference architecture's
//! dead-letter queue.
//!
//! The message body is one JSON object with a `kind`:
//!
//! ```json
//! {"kind":"ask_failed","session":{"id":"...","owner":"..."},"question":"...",
//!  "stage":"generation","error":"...","retryable":true,"partial_answer":"...","truncated":false}
//! {"kind":"turn_not_saved","session":"...","turn":{"id":"...","question":"...","answer":"...",
//!  "created_at":{...}},"error":"...","truncated":false}
//! ```
//!
//! `session` is the id alone for a session without an owner, `{"id","owner"}` with one. The
//! `kind` is also sent as the message attribute `kind`, so a consumer can filter without
//! parsing. A letter over [`MAX_MESSAGE_BYTES`] has its longest text (the partial answer, or
//! the turn's answer) cut, and says `"truncated":true`. The two characters JSON leaves as they
//! are but SQS refuses, U+FFFE and U+FFFF, are sent escaped (`\ufffe`), so they read back
//! unchanged.

use std::fmt;

use async_trait::async_trait;
use aws_sdk_sqs::types::MessageAttributeValue;
use aws_sdk_sqs::Client;
use rag_core::{DeadLetter, DeadLetterSink};
use serde_json::{json, Value};

/// The largest message sent, body and attributes together: 256 KiB, Amazon SQS's message
/// size quota ("Amazon SQS message quotas",
/// <https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/quotas-messages.html>;
/// the attributes' names, types and values count toward it: `MessageAttributeValue`,
/// <https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_MessageAttributeValue.html>).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// The name of the message attribute that carries the letter's `kind`.
const KIND_ATTRIBUTE: &str = "kind";

/// The bytes of the `kind` attribute of a letter of `kind`: its name, type and value.
fn attribute_bytes(kind: &str) -> usize {
    KIND_ATTRIBUTE.len() + "String".len() + kind.len()
}

/// Sends each dead letter to an SQS queue with SendMessage.
///
/// The SDK retries throttling and transient failures on its own; a letter that still
/// cannot be sent is logged as a `tracing` error event with its whole body, so it is never
/// lost silently.
#[derive(Clone)]
pub struct SqsDeadLetterSink {
    client: Client,
    queue_url: String,
}

impl fmt::Debug for SqsDeadLetterSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqsDeadLetterSink")
            .field("queue_url", &self.queue_url)
            .finish_non_exhaustive()
    }
}

impl SqsDeadLetterSink {
    /// A sink that sends to `queue_url` with `client`.
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        SqsDeadLetterSink {
            client,
            queue_url: queue_url.into(),
        }
    }

    /// The queue's URL.
    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }
}

/// The JSON body of `letter`, which with its `kind` attribute fits [`MAX_MESSAGE_BYTES`]:
/// when the whole letter is longer, as much of its long text as fits (found by bisection,
/// since escapes make the JSON longer than the text by a varying amount).
pub fn letter_body(letter: &DeadLetter) -> String {
    let budget = MAX_MESSAGE_BYTES - attribute_bytes(kind(letter));
    let (body, long) = letter_json(letter, usize::MAX);
    let whole = render(&body);
    let Some(long) = long.filter(|_| whole.len() > budget) else {
        return whole;
    };
    let fits = |keep: usize| {
        let text = render(&letter_json(letter, keep).0);
        (text.len() <= budget).then_some(text)
    };
    let (mut lo, mut hi) = (0, long);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(mid).is_some() {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    fits(lo).unwrap_or_else(|| render(&letter_json(letter, 0).0))
}

/// `body` as JSON text SQS accepts: its allowed characters are #x9, #xA, #xD, #x20 to #xD7FF,
/// #xE000 to #xFFFD and #x10000 to #x10FFFF (SendMessage, `MessageBody`,
/// <https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SendMessage.html>).
/// serde_json escapes every control character, which leaves U+FFFE and U+FFFF; they can only
/// be inside strings, where their escapes mean the same.
fn render(body: &Value) -> String {
    let text = body.to_string();
    if !text.contains(['\u{FFFE}', '\u{FFFF}']) {
        return text;
    }
    text.replace('\u{FFFE}', "\\ufffe")
        .replace('\u{FFFF}', "\\uffff")
}

/// The body, with the long text kept to `keep` bytes; and that text's whole length.
fn letter_json(letter: &DeadLetter, keep: usize) -> (Value, Option<usize>) {
    match letter {
        DeadLetter::AskFailed {
            session,
            question,
            failure,
        } => {
            let (partial, truncated) = cut(&failure.partial_answer, keep);
            (
                json!({
                    "kind": "ask_failed",
                    "session": session,
                    "question": question,
                    "stage": failure.stage.to_string(),
                    "error": failure.error.to_string(),
                    "retryable": failure.is_retryable(),
                    "partial_answer": partial,
                    "truncated": truncated,
                }),
                Some(failure.partial_answer.len()),
            )
        }
        DeadLetter::TurnNotSaved {
            session,
            turn,
            error,
        } => {
            let mut turn_json = serde_json::to_value(turn).unwrap_or(Value::Null);
            let (answer, truncated) = cut(&turn.answer, keep);
            turn_json["answer"] = Value::String(answer.to_string());
            (
                json!({
                    "kind": "turn_not_saved",
                    "session": session,
                    "turn": turn_json,
                    "error": error.to_string(),
                    "truncated": truncated,
                }),
                Some(turn.answer.len()),
            )
        }
        other => (json!({ "kind": "other", "summary": other.summary() }), None),
    }
}

/// `text` cut to at most `keep` bytes on a character boundary, and whether it was cut.
fn cut(text: &str, keep: usize) -> (&str, bool) {
    if text.len() <= keep {
        return (text, false);
    }
    let mut end = keep;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], true)
}

/// The `kind` field of `letter`'s body.
fn kind(letter: &DeadLetter) -> &'static str {
    match letter {
        DeadLetter::AskFailed { .. } => "ask_failed",
        DeadLetter::TurnNotSaved { .. } => "turn_not_saved",
        _ => "other",
    }
}

#[async_trait]
impl DeadLetterSink for SqsDeadLetterSink {
    async fn send(&self, letter: DeadLetter) {
        let body = letter_body(&letter);
        let attribute = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(kind(&letter))
            .build();
        let mut request = self
            .client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(&body);
        if let Ok(attribute) = attribute {
            request = request.message_attributes(KIND_ATTRIBUTE, attribute);
        }
        match request.send().await {
            Ok(sent) => tracing::info!(
                message_id = sent.message_id().unwrap_or(""),
                letter = %letter.summary(),
                "dead letter sent to SQS"
            ),
            Err(e) => tracing::error!(
                queue = %self.queue_url,
                error = %aws_sdk_sqs::error::DisplayErrorContext(&e),
                body = %body,
                "a dead letter could not be sent to SQS"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rag_core::{Error, Failure, SessionId, Stage, Turn};

    fn failed(partial: String) -> DeadLetter {
        DeadLetter::AskFailed {
            session: SessionId::new("s-1").unwrap(),
            question: "What is RAG?".into(),
            failure: Failure {
                error: Error::generation("ThrottlingException: slow down", true),
                stage: Stage::Generation,
                partial_answer: partial,
            },
        }
    }

    #[test]
    fn a_failed_ask_is_one_json_object_with_its_stage_and_error() {
        let body: Value = serde_json::from_str(&letter_body(&failed("Retrieval".into()))).unwrap();
        assert_eq!(body["kind"], "ask_failed");
        assert_eq!(body["session"], "s-1");
        assert_eq!(body["question"], "What is RAG?");
        assert_eq!(body["stage"], Stage::Generation.to_string());
        assert_eq!(body["retryable"], true);
        assert_eq!(body["partial_answer"], "Retrieval");
        assert_eq!(body["truncated"], false);
        assert!(body["error"]
            .as_str()
            .unwrap()
            .contains("ThrottlingException"));
    }

    #[test]
    fn a_turn_not_saved_carries_the_turn_to_replay() {
        let turn = Turn::new("q", "a");
        let letter = DeadLetter::TurnNotSaved {
            session: SessionId::new("s-2")
                .unwrap()
                .owned_by(rag_core::Owner::new("user-1").unwrap()),
            turn: turn.clone(),
            error: Error::history("ProvisionedThroughputExceeded", true),
        };
        let body: Value = serde_json::from_str(&letter_body(&letter)).unwrap();
        assert_eq!(body["kind"], "turn_not_saved");
        assert_eq!(body["session"], json!({"id": "s-2", "owner": "user-1"}));
        let back: Turn = serde_json::from_value(body["turn"].clone()).unwrap();
        assert_eq!(back, turn);
    }

    #[test]
    fn a_body_over_the_quota_is_cut_and_says_so() {
        // Quotes double in JSON, so the cut must allow for escapes.
        let partial = "\"é".repeat(200_000);
        let text = letter_body(&failed(partial.clone()));
        let budget = MAX_MESSAGE_BYTES - attribute_bytes("ask_failed");
        assert!(text.len() <= budget, "{}", text.len());
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["truncated"], true);
        let kept = body["partial_answer"].as_str().unwrap();
        assert!(
            partial.starts_with(kept) && kept.len() > 190_000,
            "{}",
            kept.len()
        );
        // As much as fits: a little more would not.
        assert!(text.len() > budget - 8, "{}", text.len());
    }

    #[test]
    fn characters_sqs_refuses_are_sent_escaped_and_read_back_unchanged() {
        let mut letter = failed("ok".into());
        if let DeadLetter::AskFailed { question, .. } = &mut letter {
            *question = "non-characters \u{FFFE} and \u{FFFF}, a NUL \u{0}".into();
        }
        let text = letter_body(&letter);
        assert!(!text.contains(['\u{FFFE}', '\u{FFFF}', '\u{0}']), "{text}");
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            body["question"],
            "non-characters \u{FFFE} and \u{FFFF}, a NUL \u{0}"
        );
    }
}
