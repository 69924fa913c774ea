//! SDK errors into [`rag_core::Error`], retryability decided here.

use std::fmt::Debug;

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use rag_core::Error;

/// Error codes after which the same request may succeed: throttling, capacity and the
/// service's own failures.
const RETRYABLE_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "Throttling",
    "RequestLimitExceeded",
    "LimitExceededException",
    "TransactionConflictException",
    "ReplicatedWriteConflictException",
    "InternalServerError",
    "InternalFailure",
    "ServiceUnavailable",
];

/// Whether a service error with this code and HTTP status may succeed when tried again.
pub(crate) fn is_retryable_code(code: Option<&str>, status: Option<u16>) -> bool {
    if code.is_some_and(|c| RETRYABLE_CODES.contains(&c)) {
        return true;
    }
    matches!(status, Some(429) | Some(500..=599))
}

/// The HTTP status of a raw response, so the conversion can be unit-tested without one.
pub(crate) trait RawStatus {
    fn status_code(&self) -> Option<u16>;
}

impl RawStatus for HttpResponse {
    fn status_code(&self) -> Option<u16> {
        Some(self.status().as_u16())
    }
}

#[cfg(test)]
impl RawStatus for u16 {
    fn status_code(&self) -> Option<u16> {
        Some(*self)
    }
}

/// Converts the error of operation `op` on `table`, keeping the service's code and message.
pub(crate) fn sdk_error<E, R>(op: &'static str, table: &str, err: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: RawStatus + Debug + Send + Sync + 'static,
{
    let (message, retryable) = match &err {
        SdkError::ServiceError(service) => {
            let code = service.err().code();
            let text = service.err().message().unwrap_or("no message");
            let status = service.raw().status_code();
            let retryable = is_retryable_code(code, status);
            let code = code.unwrap_or("UnknownError");
            let message = if code == "ResourceNotFoundException" {
                format!(
                    "{op}: table `{table}` not found ({code}: {text}); create it or fix the table name"
                )
            } else {
                format!("{op} on table `{table}`: {code}: {text}")
            };
            (message, retryable)
        }
        SdkError::TimeoutError(_) => (
            format!(
                "{op} on table `{table}` timed out: {}",
                DisplayErrorContext(&err)
            ),
            true,
        ),
        SdkError::DispatchFailure(failure) => (
            format!(
                "{op} on table `{table}`: could not reach DynamoDB: {}",
                DisplayErrorContext(&err)
            ),
            !failure.is_user(),
        ),
        SdkError::ResponseError(_) => (
            format!(
                "{op} on table `{table}`: unreadable response: {}",
                DisplayErrorContext(&err)
            ),
            true,
        ),
        _ => (
            format!(
                "{op} on table `{table}`: request not sent: {}",
                DisplayErrorContext(&err)
            ),
            false,
        ),
    };
    Error::history(message, retryable).with_source(err)
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::error::{ConnectorError, ErrorMetadata};
    use aws_sdk_dynamodb::operation::put_item::PutItemError;

    use super::*;

    fn service(code: &str, message: &str, status: u16) -> SdkError<PutItemError, u16> {
        let meta = ErrorMetadata::builder().code(code).message(message).build();
        SdkError::service_error(PutItemError::generic(meta), status)
    }

    #[test]
    fn throttling_and_server_errors_are_retryable() {
        for (code, status) in [
            ("ProvisionedThroughputExceededException", 400),
            ("ThrottlingException", 400),
            ("RequestLimitExceeded", 400),
            ("InternalServerError", 500),
            ("SomethingNew", 503),
            ("SlowDown", 429),
        ] {
            let err = sdk_error("PutItem", "t", service(code, "try later", status));
            assert!(err.is_retryable(), "{code} {status} must be retryable");
            assert!(err.to_string().contains(code), "{err}");
            assert!(err.to_string().contains("try later"), "{err}");
        }
    }

    #[test]
    fn validation_and_access_errors_are_not_retryable() {
        for code in [
            "ValidationException",
            "AccessDeniedException",
            "UnrecognizedClientException",
            "ItemCollectionSizeLimitExceededException",
        ] {
            let err = sdk_error("PutItem", "t", service(code, "no", 400));
            assert!(!err.is_retryable(), "{code} must not be retryable");
        }
    }

    #[test]
    fn missing_table_names_the_table() {
        let err = sdk_error(
            "Query",
            "chat-history",
            service(
                "ResourceNotFoundException",
                "Requested resource not found",
                400,
            ),
        );
        assert!(!err.is_retryable());
        let text = err.to_string();
        assert!(text.contains("`chat-history` not found"), "{text}");
        assert!(text.contains("Requested resource not found"), "{text}");
        assert!(std::error::Error::source(&err).is_some(), "SDK error kept");
    }

    #[test]
    fn transport_failures_are_classified() {
        let timeout: SdkError<PutItemError, u16> = SdkError::timeout_error("deadline");
        assert!(sdk_error("PutItem", "t", timeout).is_retryable());

        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let dispatch: SdkError<PutItemError, u16> =
            SdkError::dispatch_failure(ConnectorError::io(io.into()));
        let err = sdk_error("PutItem", "t", dispatch);
        assert!(err.is_retryable());
        assert!(
            err.to_string().contains("could not reach DynamoDB"),
            "{err}"
        );

        let user: SdkError<PutItemError, u16> =
            SdkError::dispatch_failure(ConnectorError::user("bad endpoint".into()));
        assert!(!sdk_error("PutItem", "t", user).is_retryable());

        let build: SdkError<PutItemError, u16> = SdkError::construction_failure("no table");
        assert!(!sdk_error("PutItem", "t", build).is_retryable());
    }

    #[test]
    fn codes_decide_without_status() {
        assert!(is_retryable_code(Some("ThrottlingException"), None));
        assert!(!is_retryable_code(Some("ValidationException"), Some(400)));
        assert!(is_retryable_code(None, Some(502)));
        assert!(!is_retryable_code(None, None));
    }
}
