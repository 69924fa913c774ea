//! Kendra SDK errors to [`rag_core::Error`], retryability decided here.

use aws_sdk_kendra::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use rag_core::Error;

/// Which Kendra API a call went to, for messages.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Api {
    Retrieve,
    Query,
}

impl std::fmt::Display for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Api::Retrieve => "Retrieve",
            Api::Query => "Query",
        })
    }
}

/// Converts a failed call on `index_id` into a retrieval error that keeps the service's code
/// and message and says whether a retry may succeed: throttling, 5xx and transport failures
/// may; an unknown index, access denied, validation and quota errors will not.
pub(crate) fn from_sdk<E>(err: SdkError<E>, api: Api, index_id: &str) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (message, retryable) = match &err {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status();
            let e = ctx.err();
            let service_message = e.message().unwrap_or("no message");
            match e.code() {
                Some("ResourceNotFoundException") => (
                    format!(
                        "Kendra index `{index_id}` was not found (or is not active) \
                         [{api}: {service_message}]"
                    ),
                    false,
                ),
                Some("AccessDeniedException") => (
                    format!(
                        "access to Kendra index `{index_id}` was denied: check the caller's \
                         kendra:{api} permission [{service_message}]"
                    ),
                    false,
                ),
                Some("ValidationException") => (
                    format!("Kendra rejected the {api} request on index `{index_id}`: {service_message}"),
                    false,
                ),
                Some("ThrottlingException") => (
                    format!("Kendra throttled {api} on index `{index_id}`: {service_message}"),
                    true,
                ),
                Some("InternalServerException") => (
                    format!("Kendra failed internally on {api} (index `{index_id}`): {service_message}"),
                    true,
                ),
                Some(code) => (
                    format!("Kendra {api} on index `{index_id}` failed with {code} (HTTP {}): {service_message}", status.as_u16()),
                    status.is_server_error() || status.as_u16() == 429,
                ),
                // No error code: a 2xx whose body did not parse is a malformed response.
                None if status.is_success() => (
                    format!(
                        "malformed {api} response from Kendra index `{index_id}`: {}",
                        DisplayErrorContext(e)
                    ),
                    false,
                ),
                None => (
                    format!(
                        "Kendra {api} on index `{index_id}` failed with HTTP {}: {}",
                        status.as_u16(),
                        DisplayErrorContext(e)
                    ),
                    status.is_server_error() || status.as_u16() == 429,
                ),
            }
        }
        SdkError::TimeoutError(_) => (
            format!("Kendra {api} on index `{index_id}` timed out"),
            true,
        ),
        SdkError::DispatchFailure(d) => (
            format!(
                "Kendra {api} on index `{index_id}` could not be sent: {}",
                DisplayErrorContext(&err)
            ),
            // A misconfigured client (a user error) fails the same way every time.
            !d.is_user(),
        ),
        SdkError::ResponseError(_) => (
            format!(
                "malformed {api} response from Kendra index `{index_id}`: {}",
                DisplayErrorContext(&err)
            ),
            false,
        ),
        _ => (
            format!(
                "Kendra {api} request on index `{index_id}` could not be built: {}",
                DisplayErrorContext(&err)
            ),
            false,
        ),
    };
    Error::retrieval(message, retryable).with_source(err)
}
