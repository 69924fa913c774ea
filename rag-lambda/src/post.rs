//! Posting frames to WebSocket clients with PostToConnection.
//!
//! A Lambda function behind an API Gateway WebSocket API cannot write to the socket: it sends
//! each message to the connection through the API's `@connections` endpoint,
//! `POST https://{api-id}.execute-api.{region}.amazonaws.com/{stage}/@connections/{connection_id}`
//! ("Use @connections commands in your backend service",
//! <https://docs.aws.amazon.com/apigateway/latest/developerguide/apigateway-how-to-call-websocket-api-connections.html>).
//! The endpoint is the event's `domainName` and `stage`; a custom domain, or a test's
//! loopback server, is set with [`Callbacks::with_endpoint`].
//!
//! A client that has left makes the service answer `410 GoneException`
//! ([`PostError::Gone`]): the answer is then cancelled, since nobody will read it.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::SdkConfig;
use aws_sdk_apigatewaymanagement::error::SdkError;
use aws_sdk_apigatewaymanagement::operation::post_to_connection::PostToConnectionError;
use aws_sdk_apigatewaymanagement::primitives::Blob;
use aws_sdk_apigatewaymanagement::Client;

/// Why a frame could not be posted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostError {
    /// The connection no longer exists: the client left (`410 GoneException`).
    #[error("the connection is gone")]
    Gone,
    /// Any other failure, after the SDK's own retries.
    #[error("PostToConnection failed: {message}")]
    Failed {
        /// What the service or the transport said.
        message: String,
        /// Whether posting again later may succeed (throttling, a timeout, a 5xx).
        retryable: bool,
    },
}

/// Makes [`Connection`]s: one PostToConnection client per callback endpoint, kept for the
/// life of the Lambda instance.
#[derive(Clone)]
pub struct Callbacks {
    config: SdkConfig,
    endpoint: Option<String>,
    clients: Arc<Mutex<HashMap<String, Client>>>,
}

impl fmt::Debug for Callbacks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Callbacks")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Callbacks {
    /// Callbacks with the region and credentials of `config`, to the endpoint each event
    /// names.
    pub fn new(config: &SdkConfig) -> Self {
        Callbacks {
            config: config.clone(),
            endpoint: None,
            clients: Arc::default(),
        }
    }

    /// Posts every frame to `url` (such as `https://chat.example.com/prod` behind a custom
    /// domain name) instead of the endpoint built from the event.
    pub fn with_endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into().trim_end_matches('/').to_string());
        self
    }

    /// The connection `connection_id` of the API at `domain_name` and `stage`, the
    /// `requestContext` fields of its events.
    pub fn connection(
        &self,
        domain_name: &str,
        stage: &str,
        connection_id: &str,
    ) -> Result<Connection, rag_core::Error> {
        let endpoint = match &self.endpoint {
            Some(url) => url.clone(),
            None => endpoint_of(domain_name, stage)?,
        };
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let client = clients
            .entry(endpoint.clone())
            .or_insert_with(|| {
                let config = aws_sdk_apigatewaymanagement::config::Builder::from(&self.config)
                    .endpoint_url(&endpoint)
                    .timeout_config(post_timeouts())
                    .build();
                Client::from_conf(config)
            })
            .clone();
        Ok(Connection {
            client,
            id: connection_id.to_string(),
        })
    }
}

/// A post may take 8 s in all, retries included: a hung post must not hold the answer (and
/// the Lambda invocation) until the function's timeout. There is no per-attempt timeout: the
/// SDK retries a timed-out attempt, and a post that was delivered but answered slowly would
/// reach the client twice.
fn post_timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .operation_timeout(Duration::from_secs(8))
        .build()
}

/// `https://{domain_name}/{stage}`, once both are checked to be what API Gateway sends.
fn endpoint_of(domain_name: &str, stage: &str) -> Result<String, rag_core::Error> {
    let host_ok = !domain_name.is_empty()
        && domain_name.len() <= 253
        && domain_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !host_ok {
        return Err(rag_core::Error::invalid_input(
            "requestContext.domainName",
            format!("{domain_name:?} is not a host name"),
        ));
    }
    // Stage names: letters, digits, `-` and `_` (AWS::ApiGatewayV2::Stage, StageName).
    let stage_ok = !stage.is_empty()
        && stage.len() <= 128
        && stage
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !stage_ok {
        return Err(rag_core::Error::invalid_input(
            "requestContext.stage",
            format!("{stage:?} is not a stage name"),
        ));
    }
    Ok(format!("https://{domain_name}/{stage}"))
}

/// One client's connection.
#[derive(Debug, Clone)]
pub struct Connection {
    client: Client,
    id: String,
}

impl Connection {
    /// The connection id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Sends `data` as one message to the client.
    pub async fn post(&self, data: impl Into<Vec<u8>>) -> Result<(), PostError> {
        let result = self
            .client
            .post_to_connection()
            .connection_id(&self.id)
            .data(Blob::new(data.into()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) => Err(match e.err() {
                PostToConnectionError::GoneException(_) => PostError::Gone,
                // A 410 whose error code could not be read is the same answer.
                _ if e.raw().status().as_u16() == 410 => PostError::Gone,
                PostToConnectionError::LimitExceededException(e) => PostError::Failed {
                    message: format!("LimitExceededException: {}", e.message().unwrap_or("")),
                    retryable: true,
                },
                other => PostError::Failed {
                    message: aws_sdk_apigatewaymanagement::error::DisplayErrorContext(other)
                        .to_string(),
                    retryable: e.raw().status().is_server_error(),
                },
            }),
            Err(e @ (SdkError::TimeoutError(_) | SdkError::DispatchFailure(_))) => {
                Err(PostError::Failed {
                    message: aws_sdk_apigatewaymanagement::error::DisplayErrorContext(e)
                        .to_string(),
                    retryable: true,
                })
            }
            Err(e) => Err(PostError::Failed {
                message: aws_sdk_apigatewaymanagement::error::DisplayErrorContext(e).to_string(),
                retryable: false,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_is_the_events_domain_and_stage_checked() {
        assert_eq!(
            endpoint_of("abc123.execute-api.us-east-1.amazonaws.com", "prod").unwrap(),
            "https://abc123.execute-api.us-east-1.amazonaws.com/prod"
        );
        for (domain, stage) in [
            ("evil.example/steal?", "prod"),
            ("", "prod"),
            ("abc.execute-api.us-east-1.amazonaws.com", "../x"),
            ("abc.execute-api.us-east-1.amazonaws.com", ""),
        ] {
            let error = endpoint_of(domain, stage).unwrap_err();
            assert!(
                matches!(error, rag_core::Error::InvalidInput { .. }),
                "{domain} {stage}: {error}"
            );
        }
    }
}
