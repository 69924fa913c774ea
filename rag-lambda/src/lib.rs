//! The rag pipeline on AWS Lambda, behind an Amazon API Gateway WebSocket API: the
//! reference architecture deployed serverless.
//!
//! ```text
//! client ──wss──▶ API Gateway ──$connect──▶ authorizer (Cognito JWT) ──▶ connect function
//!                     │
//!                     └─$default (async)──▶ ask function ──▶ Pipeline: DynamoDB history ∥
//!                                             │                retrieval, prompt, Bedrock
//!                                             ├─PostToConnection: session, sources, tokens, done
//!                                             └─SQS: every failed ask (dead letters)
//! ```
//!
//! - [`authorizer`]: the `$connect` REQUEST authorizer: checks the user's Cognito JWT
//!   ([`jwt`]) and passes the user, their groups and a resumed session on to every event.
//! - [`connect`]: the `$connect` and `$disconnect` routes: Origin and subprotocol.
//! - [`handler`]: the `$default` route: one question, its answer streamed back as the
//!   [`protocol`]'s frames, gathered under API Gateway's frame size and at a bounded rate
//!   ([`coalesce`]), posted with PostToConnection ([`post`]). A client that leaves cancels
//!   the model call and nothing is saved.
//! - [`sqs`]: a [`rag_core::DeadLetterSink`] on Amazon SQS.
//! - [`config`]: the functions' environment variables.
//!
//! The binaries `rag-lambda-authorizer`, `rag-lambda-connect` and `rag-lambda-ask` are the
//! three functions of `rag-lambda/template.yaml` (AWS SAM), which docs/lambda.md deploys.
//!
//! # Example
//!
//! The connect route selects `rag.v1` among the subprotocols a browser offers, and never
//! echoes the token:
//!
//! ```
//! use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
//! use rag_lambda::connect::ConnectHandler;
//!
//! let event: ApiGatewayWebsocketProxyRequest = serde_json::from_value(serde_json::json!({
//!     "headers": {"Sec-WebSocket-Protocol": "rag.v1, bearer.eyJraWQiOi"},
//!     "requestContext": {
//!         "routeKey": "$connect", "eventType": "CONNECT", "connectionId": "L0SM9cOFvHcCIhw=",
//!         "connectedAt": 1547230720092_i64, "requestTimeEpoch": 1547230720092_i64,
//!         "authorizer": {"principalId": "user-1"}
//!     }
//! }))
//! .unwrap();
//! let response = ConnectHandler::new().handle(&event);
//! assert_eq!(response.status_code, 200);
//! assert_eq!(response.headers["sec-websocket-protocol"], "rag.v1");
//! ```

pub mod authorizer;
pub mod coalesce;
pub mod config;
pub mod connect;
pub mod handler;
pub mod jwt;
pub mod post;
pub mod protocol;
pub mod sqs;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The invocation's deadline (`context.deadline`, milliseconds since the Unix epoch) as an
/// instant of this process's clock; `None` when the context has none (0, outside Lambda).
pub fn deadline_of(context: &lambda_runtime::Context) -> Option<tokio::time::Instant> {
    if context.deadline == 0 {
        return None;
    }
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let left = u128::from(context.deadline).saturating_sub(now_ms);
    let left = Duration::from_millis(u64::try_from(left).unwrap_or(u64::MAX));
    Some(tokio::time::Instant::now() + left)
}
