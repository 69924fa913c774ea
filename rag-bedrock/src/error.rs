//! Turning AWS SDK errors into the workspace's [`rag_core::Error`], with retryability decided
//! here, where the service's error code is known.

use std::error::Error as StdError;

use aws_sdk_bedrockruntime::error::{ProvideErrorMetadata, SdkError};
use rag_core::Error;

/// Error codes after which the same call may succeed: throttling, a stream or server fault on
/// the service's side, a model that is still loading. Everything else a service names
/// (validation, access denied, not found, model timeout, quota exceeded, model error) fails
/// again the same way.
const RETRYABLE_CODES: [&str; 8] = [
    "ThrottlingException",
    "ModelStreamErrorException",
    "InternalServerException",
    "ServiceUnavailableException",
    "ModelNotReadyException",
    "BadGatewayException",
    "DependencyFailedException",
    "TooManyRequestsException",
];

/// Whether a service error code names a transient failure (the code's case is ignored, as
/// in-stream exceptions spell it `throttlingException`).
pub(crate) fn is_retryable_code(code: &str) -> bool {
    RETRYABLE_CODES.iter().any(|c| c.eq_ignore_ascii_case(code))
}

/// Which backend variant of [`rag_core::Error`] a failure belongs to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Backend {
    /// Bedrock Runtime: [`Error::Generation`].
    Generation,
    /// Bedrock Knowledge Bases: [`Error::Retrieval`].
    #[cfg_attr(not(feature = "knowledge-bases"), allow(dead_code))]
    Retrieval,
}

impl Backend {
    fn error(self, message: String, retryable: bool) -> Error {
        match self {
            Backend::Generation => Error::generation(message, retryable),
            Backend::Retrieval => Error::retrieval(message, retryable),
        }
    }
}

/// The service's error code of an SDK error type.
///
/// For a failed call the code comes from the response (`x-amzn-ErrorType`), but for an
/// exception inside an event stream the SDK keeps it only as the error's variant, so the
/// stream error types name their variants here.
pub(crate) trait ServiceCode: ProvideErrorMetadata {
    /// The error code, such as `ThrottlingException`.
    fn service_code(&self) -> Option<&str> {
        self.code()
    }
}

macro_rules! service_codes {
    ($ty:ty { $($variant:ident),* $(,)? }) => {
        impl ServiceCode for $ty {
            fn service_code(&self) -> Option<&str> {
                type E = $ty;
                match self {
                    $(E::$variant(_) => Some(stringify!($variant)),)*
                    other => other.code(),
                }
            }
        }
    };
}

service_codes!(aws_sdk_bedrockruntime::types::error::ResponseStreamError {
    InternalServerException,
    ModelStreamErrorException,
    ValidationException,
    ThrottlingException,
    ModelTimeoutException,
    ServiceUnavailableException,
});
service_codes!(
    aws_sdk_bedrockruntime::types::error::ConverseStreamOutputError {
        InternalServerException,
        ModelStreamErrorException,
        ValidationException,
        ThrottlingException,
        ServiceUnavailableException,
    }
);
impl ServiceCode for aws_sdk_bedrockruntime::operation::invoke_model_with_response_stream::InvokeModelWithResponseStreamError {}
impl ServiceCode for aws_sdk_bedrockruntime::operation::converse_stream::ConverseStreamError {}
impl ServiceCode for aws_sdk_bedrockruntime::operation::count_tokens::CountTokensError {}
impl ServiceCode for aws_sdk_bedrockruntime::operation::invoke_model::InvokeModelError {}
impl ServiceCode for aws_sdk_bedrockruntime::operation::apply_guardrail::ApplyGuardrailError {}
#[cfg(feature = "knowledge-bases")]
impl ServiceCode for aws_sdk_bedrockagentruntime::operation::retrieve::RetrieveError {}

/// What the SDK kept of a response it could not read.
pub(crate) trait RawResponse: std::fmt::Debug + Send + Sync + 'static {
    /// Whether the response arrived whole (a complete, checksummed event-stream frame) and
    /// only its content was unreadable: the service sent something this client does not
    /// understand, which a new call will not fix. A response cut off or corrupted in transit
    /// may come through next time.
    fn arrived_intact(&self) -> bool;

    /// The HTTP status, for the response of a call.
    fn status(&self) -> Option<u16> {
        None
    }
}

impl RawResponse for aws_smithy_types::event_stream::RawMessage {
    fn arrived_intact(&self) -> bool {
        matches!(self, aws_smithy_types::event_stream::RawMessage::Decoded(_))
    }
}

impl RawResponse for aws_sdk_bedrockruntime::config::http::HttpResponse {
    fn arrived_intact(&self) -> bool {
        false
    }

    fn status(&self) -> Option<u16> {
        Some(self.status().as_u16())
    }
}

/// Converts an SDK error (of the initial call or of an event stream) into the core error,
/// keeping the service's code and message and the SDK error as the source.
pub(crate) fn from_sdk_error<E, R>(backend: Backend, operation: &str, err: SdkError<E, R>) -> Error
where
    E: ServiceCode + StdError + Send + Sync + 'static,
    R: RawResponse,
{
    let (message, retryable) = match &err {
        SdkError::ServiceError(ctx) => {
            let service_err = ctx.err();
            match service_err.service_code() {
                Some(code) => {
                    let message = service_err
                        .message()
                        .map(str::to_owned)
                        .unwrap_or_else(|| service_err.to_string());
                    if matches!(backend, Backend::Generation)
                        && code.eq_ignore_ascii_case("ValidationException")
                    {
                        if let Some((tokens, limit)) = prompt_too_long(&message) {
                            return Error::PromptTooLong {
                                message: format!("{operation}: {code}: {message}"),
                                tokens,
                                limit,
                            };
                        }
                    }
                    (
                        format!("{operation}: {code}: {message}"),
                        is_retryable_code(code),
                    )
                }
                // No error code: a success body the SDK could not parse (cut off in transit)
                // or an error the service did not name; its status decides.
                None => {
                    let status = ctx.raw().status();
                    let retryable = status.is_some_and(|s| (200..300).contains(&s) || s >= 500);
                    let status = status.map_or_else(String::new, |s| format!(" (HTTP {s})"));
                    (
                        format!(
                            "{operation}: unreadable or unnamed service response{status}: {}",
                            chain(&err)
                        ),
                        retryable,
                    )
                }
            }
        }
        SdkError::TimeoutError(_) => (format!("{operation}: the request timed out"), true),
        SdkError::DispatchFailure(failure) => {
            // A connection that could not be made or broke off may work next time; a request
            // the client could not even build will not.
            let retryable = !failure.is_user();
            (
                format!(
                    "{operation}: the request could not be sent or its response read: {}",
                    chain(&err)
                ),
                retryable,
            )
        }
        SdkError::ResponseError(ctx) if ctx.raw().arrived_intact() => (
            format!(
                "{operation}: the service sent an event this client cannot read: {}",
                chain(&err)
            ),
            false,
        ),
        SdkError::ResponseError(_) => (
            // Cut off or corrupted in transit, which a new call may not be.
            format!(
                "{operation}: the response could not be read: {}",
                chain(&err)
            ),
            true,
        ),
        SdkError::ConstructionFailure(_) => (
            format!(
                "{operation}: the request could not be built: {}",
                chain(&err)
            ),
            false,
        ),
        _ => (format!("{operation}: {}", chain(&err)), false),
    };
    backend.error(message, retryable).with_source(err)
}

/// Whether a ValidationException's message says the prompt is too long, and the prompt's
/// tokens and the model's prompt limit when it gives them. The wordings are Bedrock's and the
/// models' own, as seen in the wild (AWS's Strands SDK matches the first four):
///
/// - `prompt is too long: 215000 tokens > 200000 maximum` (Claude, on both APIs);
/// - ``input length and `max_tokens` exceed context limit: 199759 + 8192 > 200000`` (Claude);
/// - `Input is too long for requested model.` (any model, no sizes);
/// - `too many total text bytes` (no sizes);
/// - `Too many input tokens. Max input tokens: 4096, request input token count: 7262` (Titan);
/// - `This model's maximum context length is 8192 tokens` (Llama; the window, not the prompt
///   limit, so no sizes are taken from it).
pub(crate) fn prompt_too_long(message: &str) -> Option<(Option<usize>, Option<usize>)> {
    let lower = message.to_ascii_lowercase();
    if let Some(rest) = after(&lower, "prompt is too long: ") {
        let (tokens, rest) = number(rest);
        let limit = after(rest, "> ").and_then(|r| number(r).0);
        return Some((tokens, limit));
    }
    if let Some(rest) = after(&lower, "exceed context limit: ") {
        let (input, rest) = number(rest);
        let (max_tokens, rest) = after(rest, "+ ").map_or((None, rest), number);
        let (window, _) = after(rest, "> ").map_or((None, rest), number);
        let limit = window.zip(max_tokens).map(|(w, m)| w.saturating_sub(m));
        return Some((input, limit));
    }
    if let Some(rest) = after(&lower, "max input tokens: ") {
        let (limit, rest) = number(rest);
        let tokens = after(rest, "request input token count: ").and_then(|r| number(r).0);
        return Some((tokens, limit));
    }
    [
        "input is too long for requested model",
        "too many total text bytes",
        "maximum context length is",
    ]
    .iter()
    .any(|phrase| lower.contains(phrase))
    .then_some((None, None))
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
fn chain(err: &(dyn StdError + 'static)) -> String {
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

    #[test]
    fn too_long_prompts_are_recognized_with_their_sizes() {
        let cases = [
            (
                "The model returned the following errors: prompt is too long: 903884 tokens > 200000 maximum",
                Some((Some(903_884), Some(200_000))),
            ),
            (
                "input length and `max_tokens` exceed context limit: 199759 + 8192 > 200000, decrease input length or `max_tokens` and try again",
                Some((Some(199_759), Some(191_808))),
            ),
            (
                "400 Bad Request: Too many input tokens. Max input tokens: 4096, request input token count: 7262",
                Some((Some(7_262), Some(4_096))),
            ),
            ("Input is too long for requested model.", Some((None, None))),
            (
                "This model's maximum context length is 8192 tokens. Please reduce the length of the prompt",
                Some((None, None)),
            ),
            ("Malformed input request: #: extraneous key [foo] is not permitted", None),
            ("`temperature` and `top_p` cannot both be specified for this model.", None),
        ];
        for (message, expected) in cases {
            assert_eq!(prompt_too_long(message), expected, "{message}");
        }
    }

    #[test]
    fn transient_codes_are_retryable_in_either_casing() {
        for code in [
            "ThrottlingException",
            "throttlingException",
            "modelStreamErrorException",
            "InternalServerException",
            "serviceUnavailableException",
            "ModelNotReadyException",
        ] {
            assert!(is_retryable_code(code), "{code}");
        }
        for code in [
            "ValidationException",
            "modelTimeoutException",
            "AccessDeniedException",
            "ResourceNotFoundException",
            "ServiceQuotaExceededException",
            "ModelErrorException",
            "UnknownError",
        ] {
            assert!(!is_retryable_code(code), "{code}");
        }
    }
}
