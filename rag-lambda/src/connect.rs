//! The `$connect` and `$disconnect` routes.
//!
//! By the time `$connect` reaches this handler, the REQUEST authorizer
//! ([`crate::authorizer`]) has checked the user's token. This handler checks what the
//! authorizer does not: the page's `Origin` against an allowlist, and the subprotocol. A
//! browser offers `["rag.v1", "bearer.<token>"]` and must get exactly one of its offers back
//! in `Sec-WebSocket-Protocol`, or it closes the connection; the handler selects `rag.v1`
//! and never echoes the token ("Working with subprotocols for WebSocket APIs in API
//! Gateway", <https://docs.aws.amazon.com/apigateway/latest/developerguide/websocket-connect-route-subprotocol.html>).
//! A status other than 2xx refuses the connection.
//!
//! Nothing can be posted to a connection during its `$connect` (it is not open yet: a post
//! gets `410 GoneException`, "How do I troubleshoot 410 Gone errors in API Gateway?",
//! <https://repost.aws/knowledge-center/410-gone-api-gateway>), so the conversation's
//! `session` frame is sent with each answer instead.
//!
//! `$disconnect` is logged with its status code and reason; it holds no state to clean up,
//! since a connection's conversation lives in the history table.

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::HeaderValue;

/// The subprotocol of the `rag.v1` frame protocol.
pub const SUBPROTOCOL: &str = "rag.v1";

/// The `$connect` and `$disconnect` handler.
#[derive(Debug, Clone, Default)]
pub struct ConnectHandler {
    allowed_origins: Vec<String>,
}

impl ConnectHandler {
    /// A handler that lets pages from any origin connect (the authorizer still checks every
    /// user).
    pub fn new() -> Self {
        Self::default()
    }

    /// Lets only pages from these origins (such as `https://chat.example.com`) connect;
    /// clients that send no `Origin` (not browsers) are not affected. An empty list allows
    /// every origin.
    pub fn with_allowed_origins(mut self, origins: impl IntoIterator<Item = String>) -> Self {
        self.allowed_origins = origins
            .into_iter()
            .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
            .filter(|o| !o.is_empty())
            .collect();
        self
    }

    /// Answers the event of `$connect` or `$disconnect`; any other route is refused with
    /// 400.
    pub fn handle(&self, event: &ApiGatewayWebsocketProxyRequest) -> ApiGatewayProxyResponse {
        let context = &event.request_context;
        let connection = context.connection_id.as_deref().unwrap_or("");
        match context.route_key.as_deref() {
            Some("$connect") => self.connect(event),
            Some("$disconnect") => {
                tracing::info!(
                    connection,
                    status = context.disconnect_status_code,
                    reason = context.disconnect_reason.as_deref().unwrap_or(""),
                    "disconnected"
                );
                response(200, None)
            }
            other => {
                tracing::warn!(connection, route = ?other, "not a connection route");
                response(400, Some("this function serves $connect and $disconnect"))
            }
        }
    }

    fn connect(&self, event: &ApiGatewayWebsocketProxyRequest) -> ApiGatewayProxyResponse {
        let context = &event.request_context;
        let connection = context.connection_id.as_deref().unwrap_or("");
        let user = context
            .authorizer
            .fields
            .get("principalId")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        if event
            .query_string_parameters
            .first("access_token")
            .is_some()
        {
            tracing::info!(connection, "refused: a token in the URL");
            return response(
                400,
                Some(
                    "a token in the URL is refused, since access logs keep URLs: offer it as \
                     the WebSocket subprotocol bearer.TOKEN beside rag.v1",
                ),
            );
        }
        let header = |name: &str| {
            event
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        if let Some(origin) = header("origin") {
            let normalized = origin.trim_end_matches('/').to_ascii_lowercase();
            if !self.allowed_origins.is_empty() && !self.allowed_origins.contains(&normalized) {
                tracing::info!(connection, origin, "refused: origin not allowed");
                return response(
                    403,
                    Some(&format!(
                        "pages from {origin} may not connect to this service"
                    )),
                );
            }
        }
        let offered = header("sec-websocket-protocol").unwrap_or_default();
        let offers: Vec<&str> = offered.split(',').map(str::trim).collect();
        let mut ok = response(200, None);
        if offers.contains(&SUBPROTOCOL) {
            ok.headers.insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_static(SUBPROTOCOL),
            );
        } else if offers.iter().any(|o| !o.is_empty()) {
            // A browser would close a connection that selects none of its offers, and the
            // only other offer is the token, which is never echoed.
            tracing::info!(connection, "refused: rag.v1 not offered");
            return response(400, Some("offer the WebSocket subprotocol rag.v1"));
        }
        tracing::info!(connection, user, "connected");
        ok
    }
}

fn response(status: i64, body: Option<&str>) -> ApiGatewayProxyResponse {
    let mut response = ApiGatewayProxyResponse::default();
    response.status_code = status;
    response.body = body.map(|b| Body::Text(b.to_string()));
    response
}
