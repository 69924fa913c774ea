//! Reads a chat completions event stream (server-sent events) into a [`ChunkStream`].
//!
//! The chunk shape is OpenAI's `chat.completion.chunk` (API reference, "The chat completion
//! chunk object"): `choices[].delta.content` holds the text, `choices[].finish_reason` is
//! `null` until the last chunk of a choice and then `stop`, `length`, `content_filter`,
//! `tool_calls` or (deprecated) `function_call`; with `stream_options: {"include_usage":
//! true}` one more chunk follows whose `choices` is empty (vLLM sends `null`, or leaves the key
//! out) and whose `usage` holds `prompt_tokens` and `completion_tokens`; then the line
//! `data: [DONE]`. Comments (`: keep-alive`) carry nothing.

use std::fmt;
use std::time::Duration;

use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::{Stream, StreamExt};
use rag_core::{Chunk, ChunkStream, Error, Result, Stage, StopReason, Usage};
use serde::Deserialize;
use serde_json::Value;

use crate::error::{quote, stream_error, ServerError, OPERATION};

/// Reads the body of a streamed chat completion (the bytes of its server-sent events, in
/// pieces of any size) into the answer's chunks: text, the stop reason, usage.
///
/// - `data: [DONE]` ends the stream; a body that ends before it, without the model's finish
///   reason, was cut off and ends with a retryable [`Error::Generation`], as does a body that
///   breaks off with a read error. A body that ends after the finish reason but before
///   `[DONE]` lost at most the usage chunk, and ends without an error.
/// - An error object in the stream (`{"error": {...}}`, or an `event: error`) ends it with an
///   error classified as [`crate::OpenAiCompatGenerator`] says; a prompt the server refuses as
///   too long is [`Error::PromptTooLong`], its prompt limit taken as the context window less
///   `max_tokens` (the request's answer length).
/// - A body that sends nothing for `idle_timeout` (not even a keep-alive comment) ends with
///   [`Error::Timeout`], which is retryable.
/// - A body that is not UTF-8, an event whose data is not a chunk: a non-retryable
///   [`Error::Generation`].
///
/// The first error is the stream's last item. [`crate::OpenAiCompatGenerator`] calls this on
/// the response body; it is public for callers with an HTTP client of their own.
pub fn chunk_stream<S, B, E>(body: S, idle_timeout: Duration, max_tokens: u32) -> ChunkStream
where
    S: Stream<Item = std::result::Result<B, E>> + Send + 'static,
    B: AsRef<[u8]> + Send + 'static,
    E: fmt::Display + Send + 'static,
{
    let mut events = Box::pin(bounded(body, idle_timeout).eventsource());
    Box::pin(async_stream::stream! {
        let mut decoder = Decoder::new(max_tokens);
        while let Some(item) = events.next().await {
            let event = match item {
                Ok(event) => event,
                Err(err) => {
                    yield Err(read_error(err, idle_timeout));
                    return;
                }
            };
            match decoder.event(&event) {
                Ok(Step::Chunks(chunks)) => {
                    for chunk in chunks {
                        yield Ok(chunk);
                    }
                }
                Ok(Step::Done) => return,
                Err(err) => {
                    yield Err(err);
                    return;
                }
            }
        }
        if !decoder.stopped {
            yield Err(Error::generation(
                format!("{OPERATION}: the stream ended before `data: [DONE]` and before the model's finish reason (the connection was cut)"),
                true,
            ));
        }
    })
}

/// Why the body could not be read.
#[derive(Debug)]
enum BodyError {
    /// Nothing came for the idle timeout.
    Idle,
    /// The transport failed (the connection broke off, the body was cut).
    Read(String),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Idle => f.write_str("the stream went silent"),
            BodyError::Read(message) => f.write_str(message),
        }
    }
}

/// `body` with each wait for its next piece bounded by `idle`; it ends after its first error.
fn bounded<S, B, E>(
    body: S,
    idle: Duration,
) -> impl Stream<Item = std::result::Result<B, BodyError>> + Send + 'static
where
    S: Stream<Item = std::result::Result<B, E>> + Send + 'static,
    B: Send + 'static,
    E: fmt::Display + Send + 'static,
{
    futures::stream::unfold(Some(Box::pin(body)), move |body| async move {
        let mut body = body?;
        match tokio::time::timeout(idle, body.next()).await {
            Err(_) => Some((Err(BodyError::Idle), None)),
            Ok(None) => None,
            Ok(Some(Ok(bytes))) => Some((Ok(bytes), Some(body))),
            Ok(Some(Err(err))) => Some((Err(BodyError::Read(err.to_string())), None)),
        }
    })
}

/// The error of a body that could not be read as server-sent events.
fn read_error(err: EventStreamError<BodyError>, idle: Duration) -> Error {
    match err {
        EventStreamError::Transport(BodyError::Idle) => {
            tracing::warn!(?idle, "chat completions stream went silent");
            Error::Timeout {
                stage: Stage::Generation,
                after: idle,
            }
        }
        EventStreamError::Transport(BodyError::Read(message)) => Error::generation(
            format!("{OPERATION}: the stream broke off before `data: [DONE]`: {message}"),
            true,
        ),
        EventStreamError::Utf8(err) => Error::generation(
            format!("{OPERATION}: the stream is not UTF-8: {err}"),
            false,
        ),
        EventStreamError::Parser(err) => Error::generation(
            format!("{OPERATION}: the stream is not server-sent events: {err}"),
            false,
        ),
    }
}

/// What one event means.
#[derive(Debug, PartialEq)]
pub(crate) enum Step {
    /// Chunks of the answer (maybe none).
    Chunks(Vec<Chunk>),
    /// `[DONE]`: the answer is complete.
    Done,
}

/// Turns events into chunks, remembering whether the finish reason came.
#[derive(Debug)]
pub(crate) struct Decoder {
    max_tokens: u32,
    stopped: bool,
}

/// A `chat.completion.chunk`; every field may be missing or `null`.
#[derive(Debug, Deserialize)]
struct ChunkBody {
    #[serde(default)]
    choices: Option<Vec<Choice>>,
    #[serde(default)]
    usage: Option<UsageBody>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
    /// vLLM's extra: the stop string that ended the answer (or a token id).
    #[serde(default)]
    stop_reason: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct Delta {
    /// The answer's text. Reasoning (`reasoning_content`, `reasoning`) and tool-call deltas
    /// are not part of it and are left out.
    #[serde(default)]
    content: Option<String>,
}

/// The chat completions `usage` object. `prompt_tokens` counts every prompt token, the cached
/// ones included; `prompt_tokens_details.cached_tokens` says how many were read from the
/// cache (OpenAI's chat completions reference, "The chat completion object").
#[derive(Debug, Deserialize)]
struct UsageBody {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptTokensDetails>,
}

#[derive(Debug, Deserialize)]
struct PromptTokensDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

impl Decoder {
    pub(crate) fn new(max_tokens: u32) -> Self {
        Decoder {
            max_tokens,
            stopped: false,
        }
    }

    /// The meaning of one event.
    pub(crate) fn event(&mut self, event: &Event) -> Result<Step> {
        let data = event.data.trim();
        if event.event == "error" {
            let error = serde_json::from_str::<Value>(data)
                .ok()
                .and_then(|v| ServerError::from_json(&v))
                .unwrap_or_else(|| ServerError {
                    message: quote(data),
                    ..ServerError::default()
                });
            return Err(stream_error(&error, self.max_tokens));
        }
        if data == "[DONE]" {
            return Ok(Step::Done);
        }
        if data.is_empty() {
            return Ok(Step::Chunks(Vec::new()));
        }
        let value: Value = serde_json::from_str(data).map_err(|e| unreadable(data, e))?;
        if let Some(error) = ServerError::from_json(&value) {
            return Err(stream_error(&error, self.max_tokens));
        }
        if !value.is_object() {
            return Err(unreadable(data, "not a JSON object"));
        }
        let body: ChunkBody = serde_json::from_value(value).map_err(|e| unreadable(data, e))?;
        let mut chunks = Vec::new();
        // Only the first choice is asked for (no `n`); others are not part of this answer.
        for choice in body
            .choices
            .into_iter()
            .flatten()
            .filter(|c| c.index.unwrap_or(0) == 0)
        {
            if let Some(text) = choice.delta.and_then(|d| d.content) {
                if !text.is_empty() {
                    chunks.push(Chunk::Text(text));
                }
            }
            if let Some(reason) = choice.finish_reason {
                chunks.push(Chunk::Stop(stop_reason(&reason, choice.stop_reason)));
                self.stopped = true;
            }
        }
        if let Some(usage) = body.usage {
            // `Usage::input_tokens` leaves the cached tokens out, as Bedrock counts them.
            let prompt = usage.prompt_tokens.unwrap_or(0);
            let cached = usage
                .prompt_tokens_details
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0)
                .min(prompt);
            chunks.push(Chunk::Usage(
                Usage::new(prompt - cached, usage.completion_tokens.unwrap_or(0))
                    .with_cache(cached, 0),
            ));
        }
        Ok(Step::Chunks(chunks))
    }
}

/// A `finish_reason` as a [`StopReason`]; vLLM's `stop_reason` names the stop string.
fn stop_reason(reason: &str, matched: Option<Value>) -> StopReason {
    match reason {
        "stop" => match matched {
            Some(Value::String(s)) => StopReason::StopSequence(Some(s)),
            _ => StopReason::EndTurn,
        },
        "length" => StopReason::MaxTokens,
        "content_filter" => StopReason::ContentFiltered,
        other => StopReason::Other(other.to_owned()),
    }
}

/// An event whose data is not a chunk: the server sent something this client cannot read,
/// which a new call will not change.
fn unreadable(data: &str, err: impl fmt::Display) -> Error {
    Error::generation(
        format!(
            "{OPERATION}: the server sent an event that is not a chat completion chunk ({err}): {}",
            quote(data)
        ),
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(data: &str) -> Event {
        Event {
            data: data.to_owned(),
            ..Event::default()
        }
    }

    fn chunks(decoder: &mut Decoder, data: &str) -> Vec<Chunk> {
        match decoder.event(&event(data)).unwrap() {
            Step::Chunks(chunks) => chunks,
            Step::Done => panic!("done at {data}"),
        }
    }

    #[test]
    fn text_finish_reason_and_usage_are_read() {
        let mut d = Decoder::new(100);
        assert_eq!(
            chunks(
                &mut d,
                r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#
            ),
            vec![]
        );
        assert_eq!(
            chunks(
                &mut d,
                r#"{"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}],"usage":null}"#
            ),
            vec![Chunk::Text("Hi".into())]
        );
        assert!(!d.stopped);
        assert_eq!(
            chunks(
                &mut d,
                r#"{"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}"#
            ),
            vec![Chunk::Stop(StopReason::MaxTokens)]
        );
        assert!(d.stopped);
        for usage_chunk in [
            r#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}"#,
            r#"{"choices":null,"usage":{"prompt_tokens":12,"completion_tokens":3}}"#,
            r#"{"usage":{"prompt_tokens":12,"completion_tokens":3}}"#,
        ] {
            assert_eq!(
                chunks(&mut d, usage_chunk),
                vec![Chunk::Usage(Usage::new(12, 3))],
                "{usage_chunk}"
            );
        }
        // Cached prompt tokens are part of `prompt_tokens`: they are counted once, as read.
        assert_eq!(
            chunks(
                &mut d,
                r#"{"usage":{"prompt_tokens":2000,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":1536}}}"#
            ),
            vec![Chunk::Usage(Usage::new(464, 3).with_cache(1536, 0))]
        );
        assert_eq!(d.event(&event("[DONE]")).unwrap(), Step::Done);
    }

    #[test]
    fn finish_reasons_are_normalized() {
        let cases = [
            ("stop", None, StopReason::EndTurn),
            (
                "stop",
                Some(Value::String("###".into())),
                StopReason::StopSequence(Some("###".into())),
            ),
            ("stop", Some(Value::from(128_009)), StopReason::EndTurn),
            ("length", None, StopReason::MaxTokens),
            ("content_filter", None, StopReason::ContentFiltered),
            ("tool_calls", None, StopReason::Other("tool_calls".into())),
        ];
        for (reason, matched, expected) in cases {
            assert_eq!(stop_reason(reason, matched), expected, "{reason}");
        }
    }

    #[test]
    fn other_choices_reasoning_and_tool_calls_are_not_the_answer() {
        let mut d = Decoder::new(100);
        assert_eq!(
            chunks(
                &mut d,
                r#"{"choices":[{"index":1,"delta":{"content":"other"}},{"index":0,"delta":{"reasoning_content":"hmm","content":"yes"}}]}"#
            ),
            vec![Chunk::Text("yes".into())]
        );
        assert_eq!(
            chunks(
                &mut d,
                r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{"}}]}}]}"#
            ),
            vec![]
        );
    }

    #[test]
    fn error_objects_and_error_events_are_errors() {
        let mut d = Decoder::new(100);
        let err = d
            .event(&event(r#"{"error":{"message":"The server had an error while processing your request.","type":"server_error"}}"#))
            .unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert!(err.to_string().contains("server had an error"), "{err}");
        let too_long = d
            .event(&event(r#"{"error":{"code":400,"message":"the request exceeds the available context size, try increasing it","type":"exceed_context_size_error","n_prompt_tokens":5000,"n_ctx":4096}}"#))
            .unwrap_err();
        assert!(
            matches!(
                too_long,
                Error::PromptTooLong {
                    tokens: Some(5000),
                    limit: Some(3996),
                    ..
                }
            ),
            "{too_long}"
        );
        let named = Event {
            event: "error".into(),
            data: "upstream overloaded".into(),
            ..Event::default()
        };
        let err = d.event(&named).unwrap_err();
        assert!(
            err.is_retryable() && err.to_string().contains("upstream overloaded"),
            "{err}"
        );
    }

    #[test]
    fn unreadable_chunks_are_not_retryable() {
        let mut d = Decoder::new(100);
        for data in [
            "{not json",
            r#"{"choices":[{"delta":{"content":7}}]}"#,
            "[]",
            "42",
        ] {
            let err = d.event(&event(data)).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Generation {
                        retryable: false,
                        ..
                    }
                ),
                "{data}: {err}"
            );
        }
    }
}
