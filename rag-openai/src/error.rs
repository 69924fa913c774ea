//! Turning a server's failures into the workspace's [`rag_core::Error`], with retryability
//! decided here, where the status and the server's error object are known.

use std::error::Error as StdError;

use rag_core::Error;
use serde_json::Value;

/// The operation named in messages.
pub(crate) const OPERATION: &str = "chat completions";

/// The longest piece of a server's text quoted in an error message.
const QUOTE_LIMIT: usize = 500;

/// The error object of a failed call, or of an error event inside the stream.
///
/// The shapes seen in the wild: `{"error": {"message", "type", "param", "code"}}` (OpenAI,
/// Ollama, LM Studio, vLLM); the same with a numeric `code` and, for a prompt longer than the
/// context, `n_prompt_tokens` and `n_ctx` (llama.cpp's `exceed_context_size_error`);
/// `{"object": "error", "message", "type", "code"}` at the top level (older vLLM); and
/// `{"error": "message"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ServerError {
    /// What the server said.
    pub(crate) message: String,
    /// Its `type` (`invalid_request_error`, `server_error`, `BadRequestError`, ...).
    pub(crate) kind: Option<String>,
    /// Its `code`, a string (`context_length_exceeded`) or an HTTP status as a number.
    pub(crate) code: Option<String>,
    /// The prompt's tokens, when the server counted them (llama.cpp `n_prompt_tokens`).
    pub(crate) prompt_tokens: Option<usize>,
    /// The context size, when the server gave it (llama.cpp `n_ctx`).
    pub(crate) context: Option<usize>,
}

impl ServerError {
    /// The error object `value` holds, if it is one.
    pub(crate) fn from_json(value: &Value) -> Option<Self> {
        let object = match value.get("error") {
            Some(Value::String(message)) => {
                return Some(ServerError {
                    message: message.clone(),
                    ..ServerError::default()
                })
            }
            Some(inner @ Value::Object(_)) => inner,
            _ if value.get("object").and_then(Value::as_str) == Some("error") => value,
            _ => return None,
        };
        let text = |key: &str| match object.get(key) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let count = |key: &str| {
            object
                .get(key)
                .and_then(Value::as_u64)
                .and_then(|n| usize::try_from(n).ok())
        };
        Some(ServerError {
            message: text("message").unwrap_or_default(),
            kind: text("type"),
            code: text("code"),
            prompt_tokens: count("n_prompt_tokens"),
            context: count("n_ctx"),
        })
    }

    /// The error object of a response body, or its text when it holds none.
    pub(crate) fn from_body(body: &[u8]) -> Self {
        serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| ServerError::from_json(&v))
            .unwrap_or_else(|| ServerError {
                message: quote(&String::from_utf8_lossy(body)),
                ..ServerError::default()
            })
    }

    /// `type` and `code`, for messages: ` (invalid_request_error, context_length_exceeded)`.
    fn labels(&self) -> String {
        let labels: Vec<&str> = [self.kind.as_deref(), self.code.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        if labels.is_empty() {
            String::new()
        } else {
            format!(" ({})", labels.join(", "))
        }
    }

    /// Whether `type` or `code` contains one of `words`.
    fn names_any(&self, words: &[&str]) -> bool {
        [self.kind.as_deref(), self.code.as_deref()]
            .into_iter()
            .flatten()
            .map(str::to_ascii_lowercase)
            .any(|label| words.iter().any(|w| label.contains(w)))
    }
}

/// Labels of failures that a new call will meet again: the request, the key or the account
/// is at fault.
const PERMANENT: [&str; 8] = [
    "invalid_request",
    "badrequest",
    "authentication",
    "invalid_api_key",
    "permission",
    "not_found",
    "notfound",
    "insufficient_quota",
];

/// Whether a call answered with `status` may succeed when made again: request timeouts,
/// conflicts, throttling and server-side failures (408, 409, 429, 5xx) may; a bad request,
/// a refused key, a missing model (400, 401, 403, 404, 422, ...) will not. A 429 that says the
/// account's quota is used up (`insufficient_quota`) will not either.
pub(crate) fn is_retryable_status(status: u16, error: &ServerError) -> bool {
    let transient = matches!(status, 408 | 409 | 429) || status >= 500;
    transient && !error.names_any(&["insufficient_quota"])
}

/// The error of a call the server answered with a status other than 2xx.
pub(crate) fn status_error(status: u16, body: &[u8], max_tokens: u32) -> Error {
    let error = ServerError::from_body(body);
    let message = format!(
        "{OPERATION}: HTTP {status}{}: {}",
        error.labels(),
        error.message
    );
    if let Some((tokens, limit)) = prompt_too_long(&error, max_tokens) {
        return Error::PromptTooLong {
            message,
            tokens,
            limit,
        };
    }
    let message = if (300..400).contains(&status) {
        format!("{message} (the server redirects; give the URL it redirects to as the base URL)")
    } else {
        message
    };
    Error::generation(message, is_retryable_status(status, &error))
}

/// The error of an error object sent inside a stream that had started.
///
/// The server accepted the request (it answered 200), so what fails afterwards is most often
/// the server (OpenAI's mid-stream `server_error`): retryable, unless the object names a
/// status or a label of a failure that a new call meets again (a bad request, a refused key,
/// a missing model), or says the prompt is too long.
pub(crate) fn stream_error(error: &ServerError, max_tokens: u32) -> Error {
    let message = format!(
        "{OPERATION}: the server sent an error in the stream{}: {}",
        error.labels(),
        error.message
    );
    if let Some((tokens, limit)) = prompt_too_long(error, max_tokens) {
        return Error::PromptTooLong {
            message,
            tokens,
            limit,
        };
    }
    let status = error
        .code
        .as_deref()
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|s| (100..600).contains(s));
    let retryable = match status {
        Some(status) => is_retryable_status(status, error),
        None => !error.names_any(&PERMANENT),
    };
    Error::generation(message, retryable)
}

/// The error of a request that got no response: the server could not be reached, or the
/// connection broke before the response's head.
pub(crate) fn send_error(endpoint: &str, err: reqwest::Error) -> Error {
    // A request the client could not build fails the same way again; a connection that could
    // not be made or broke off may work next time.
    let retryable = !err.is_builder();
    let what = if err.is_connect() {
        "could not connect to"
    } else {
        "got no response from"
    };
    Error::generation(
        format!("{OPERATION}: {what} {endpoint}: {}", chain(&err)),
        retryable,
    )
    .with_source(err)
}

/// Whether the server's error says the prompt is longer than the model's context, and the
/// prompt's tokens and the most prompt tokens the model takes, as far as it says them.
///
/// `max_tokens` is the request's answer length: servers report the context window, which the
/// prompt shares with the answer, so the prompt limit is the window less `max_tokens`. The
/// wordings, from the servers' own messages:
///
/// - `This model's maximum context length is 16384 tokens. However, you requested 122946
///   tokens (112946 in the messages, 10000 in the completion).` (vLLM, OpenAI);
/// - `This model's maximum context length is 8192 tokens. However, your messages resulted in
///   8765 tokens.` (OpenAI);
/// - `... maximum context length is 16384 tokens and your request has 112946 input tokens`
///   (newer vLLM);
/// - `the request exceeds the available context size`, type `exceed_context_size_error`,
///   with `n_prompt_tokens` and `n_ctx` (llama.cpp);
/// - `The prompt (total length 25938) is too long to fit into the model (context length
///   4096)` (vLLM);
/// - code `context_length_exceeded` (OpenAI) without sizes.
pub(crate) fn prompt_too_long(
    error: &ServerError,
    max_tokens: u32,
) -> Option<(Option<usize>, Option<usize>)> {
    let answer = max_tokens as usize;
    let prompt_limit = |window: usize| window.saturating_sub(answer);
    let lower = error.message.to_ascii_lowercase();
    if let Some(rest) = after(&lower, "maximum context length is ") {
        let (window, rest) = number(rest);
        let limit = window.map(prompt_limit);
        if let Some(rest) = after(rest, "you requested ") {
            let (total, rest) = number(rest);
            // `(112946 in the messages, 10000 in the completion)`: the server's own split.
            let (messages, rest) = after(rest, "(").map_or((None, rest), number);
            let completion = after(rest, "in the messages, ").and_then(|r| number(r).0);
            return Some(match (messages, completion) {
                (Some(messages), Some(completion)) => {
                    (Some(messages), window.map(|w| w.saturating_sub(completion)))
                }
                _ => (total.map(|t| t.saturating_sub(answer)), limit),
            });
        }
        let tokens = after(rest, "resulted in ")
            .or_else(|| after(rest, "your request has "))
            .and_then(|r| number(r).0);
        return Some((tokens, limit));
    }
    if let Some(rest) = after(&lower, "prompt (total length ") {
        let (tokens, rest) = number(rest);
        let limit = after(rest, "(context length ").and_then(|r| number(r).0);
        return Some((tokens, limit.map(prompt_limit)));
    }
    if error.prompt_tokens.is_some()
        || error.context.is_some()
        || error.names_any(&["exceed_context_size", "context_length_exceeded"])
        || lower.contains("exceeds the available context size")
    {
        return Some((error.prompt_tokens, error.context.map(prompt_limit)));
    }
    None
}

/// `text`, cut to [`QUOTE_LIMIT`] bytes on a character boundary.
pub(crate) fn quote(text: &str) -> String {
    let text = text.trim();
    if text.len() <= QUOTE_LIMIT {
        return text.to_owned();
    }
    let mut end = QUOTE_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// The text after the first `needle`.
fn after<'a>(text: &'a str, needle: &str) -> Option<&'a str> {
    text.find(needle).map(|i| &text[i + needle.len()..])
}

/// The number at the start of `text` (commas allowed), and the rest.
fn number(text: &str) -> (Option<usize>, &str) {
    let end = text
        .find(|c: char| !c.is_ascii_digit() && c != ',')
        .unwrap_or(text.len());
    let digits: String = text[..end].chars().filter(char::is_ascii_digit).collect();
    (digits.parse().ok(), &text[end..])
}

/// The error's message followed by its sources' messages.
pub(crate) fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(text: &str) -> ServerError {
        ServerError {
            message: text.to_owned(),
            ..ServerError::default()
        }
    }

    #[test]
    fn too_long_prompts_are_recognized_with_their_sizes() {
        let cases = [
            (
                "This model's maximum context length is 16384 tokens. However, you requested 122946 tokens (112946 in the messages, 10000 in the completion). Please reduce the length of the messages or completion.",
                Some((Some(112_946), Some(6_384))),
            ),
            // Without the split, the request's own answer length gives it.
            (
                "This model's maximum context length is 4097 tokens. However, you requested 5000 tokens. Please reduce your prompt.",
                Some((Some(4_000), Some(3_097))),
            ),
            (
                "This model's maximum context length is 8192 tokens. However, your messages resulted in 8765 tokens. Please reduce the length of the messages.",
                Some((Some(8_765), Some(7_192))),
            ),
            (
                "'max_tokens' is too large: 1000. This model's maximum context length is 16384 tokens and your request has 112946 input tokens (1000 > 16384 - 112946).",
                Some((Some(112_946), Some(15_384))),
            ),
            (
                "The prompt (total length 25938) is too long to fit into the model (context length 4096).",
                Some((Some(25_938), Some(3_096))),
            ),
            ("max_tokens must be at least 1, got -186.", None),
            ("The model `llama9` does not exist.", None),
        ];
        for (text, expected) in cases {
            assert_eq!(prompt_too_long(&message(text), 1_000), expected, "{text}");
        }
    }

    #[test]
    fn llama_cpp_context_errors_carry_their_counts() {
        let body = json!({"error": {
            "code": 400,
            "message": "the request exceeds the available context size, try increasing it",
            "type": "exceed_context_size_error",
            "n_prompt_tokens": 14_429,
            "n_ctx": 8_192
        }});
        let error = ServerError::from_json(&body).unwrap();
        assert_eq!(error.code.as_deref(), Some("400"));
        assert_eq!(
            prompt_too_long(&error, 1_024),
            Some((Some(14_429), Some(7_168)))
        );
        // OpenAI's code alone, without sizes.
        let coded = ServerError::from_json(&json!({"error": {
            "message": "Your input is too long.",
            "type": "invalid_request_error",
            "code": "context_length_exceeded"
        }}))
        .unwrap();
        assert_eq!(prompt_too_long(&coded, 1_024), Some((None, None)));
    }

    #[test]
    fn every_error_shape_is_read() {
        let nested = ServerError::from_body(
            br#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
        );
        assert_eq!(nested.message, "Rate limit reached");
        assert_eq!(nested.kind.as_deref(), Some("requests"));
        assert_eq!(nested.code.as_deref(), Some("rate_limit_exceeded"));
        let top = ServerError::from_body(
            br#"{"object":"error","message":"bad","type":"BadRequestError","param":null,"code":400}"#,
        );
        assert_eq!(
            (top.message.as_str(), top.code.as_deref()),
            ("bad", Some("400"))
        );
        let plain =
            ServerError::from_body(br#"{"error":"model \"x\" not found, try pulling it first"}"#);
        assert!(plain.message.starts_with("model \"x\" not found"));
        let text = ServerError::from_body(b"<html>502 Bad Gateway</html>");
        assert_eq!(text.message, "<html>502 Bad Gateway</html>");
        assert_eq!(ServerError::from_json(&json!({"choices": []})), None);
    }

    #[test]
    fn statuses_are_classified() {
        for status in [408, 409, 429, 500, 502, 503, 504] {
            let err = status_error(status, b"{}", 100);
            assert!(err.is_retryable(), "{status}: {err}");
        }
        for status in [301, 400, 401, 403, 404, 413, 422] {
            let err = status_error(status, b"{}", 100);
            assert!(
                matches!(err, Error::Generation { .. }) && !err.is_retryable(),
                "{status}: {err}"
            );
        }
        let quota = status_error(
            429,
            br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#,
            100,
        );
        assert!(!quota.is_retryable(), "{quota}");
        assert!(quota.to_string().contains("current quota"), "{quota}");
    }

    #[test]
    fn stream_errors_are_retryable_unless_they_name_a_permanent_failure() {
        let server = ServerError::from_json(
            &json!({"error": {"message": "The server had an error", "type": "server_error"}}),
        )
        .unwrap();
        assert!(stream_error(&server, 10).is_retryable());
        let unnamed = message("something broke");
        assert!(stream_error(&unnamed, 10).is_retryable());
        let bad = ServerError::from_json(
            &json!({"error": {"message": "bad", "type": "invalid_request_error"}}),
        )
        .unwrap();
        assert!(!stream_error(&bad, 10).is_retryable());
        let numbered =
            ServerError::from_json(&json!({"error": {"message": "no", "code": 401}})).unwrap();
        assert!(!stream_error(&numbered, 10).is_retryable());
        let busy =
            ServerError::from_json(&json!({"error": {"message": "busy", "code": 503}})).unwrap();
        assert!(stream_error(&busy, 10).is_retryable());
    }

    #[test]
    fn long_bodies_are_cut_on_a_character_boundary() {
        let long = "é".repeat(400);
        let quoted = quote(&long);
        assert!(
            quoted.ends_with("...") && quoted.len() <= QUOTE_LIMIT + 3,
            "{}",
            quoted.len()
        );
    }
}
