//! The Lambda REQUEST authorizer of the WebSocket API's `$connect` route: who is connecting,
//! from a Cognito JWT checked by [`JwtVerifier`].
//!
//! API Gateway calls it once per connection, before the `$connect` integration; a WebSocket
//! API takes a Lambda authorizer on `$connect` only, and its event's `methodArn` ends in
//! `/$connect` ("Control access to WebSocket APIs with AWS Lambda REQUEST authorizers",
//! <https://docs.aws.amazon.com/apigateway/latest/developerguide/apigateway-websocket-api-lambda-auth.html>).
//!
//! The contract the other handlers rely on:
//!
//! - The token travels in a header, never in the URL (access logs keep URLs): browsers,
//!   which cannot set headers on a WebSocket, offer it as a subprotocol,
//!   `Sec-WebSocket-Protocol: rag.v1, bearer.<jwt>` ([`PROTOCOL`],
//!   [`BEARER_PROTOCOL_PREFIX`]); other clients may send `Authorization: Bearer <jwt>`. A
//!   query string with `access_token` is refused, whatever the headers hold.
//! - A valid token is answered with an `Allow` policy for `execute-api:Invoke` on the
//!   event's `methodArn`, the token's `sub` as `principalId`, and the context
//!   `{"groups": "<cognito:groups joined by ','>"}`, plus `"session": "<id>"` when the query
//!   string asks to resume `session=<id>` and the id is a valid [`SessionId`]. The `$connect`
//!   handler reads them as `requestContext.authorizer.principalId`, `.groups` and `.session`
//!   ([`CONTEXT_GROUPS`], [`CONTEXT_SESSION`]; [`groups_of`] splits the groups back). Every
//!   context value is a string: API Gateway takes only string, number and boolean values
//!   there, no object or array ("Output from an API Gateway Lambda authorizer",
//!   <https://docs.aws.amazon.com/apigateway/latest/developerguide/api-gateway-lambda-authorizer-output.html>).
//! - A missing, malformed, expired or badly signed token makes the function fail with the
//!   error message `Unauthorized` ([`AuthorizerError::Unauthorized`]), which is how a Lambda
//!   authorizer has API Gateway answer `401 Unauthorized`; WebSocket authorizers work like
//!   REST ones here ("Use API Gateway Lambda authorizers",
//!   <https://docs.aws.amazon.com/apigateway/latest/developerguide/apigateway-use-lambda-authorizer.html>,
//!   whose example functions fail with `"Unauthorized"` for 401). The reason goes to the log
//!   only.
//! - A valid token that this API does not take (another app client, the other `token_use`),
//!   a `sub` that cannot own a conversation, or a `session` that is not a valid id, is
//!   answered with an explicit `Deny` policy, which API Gateway turns into `403 Forbidden`.

use std::fmt;

use aws_lambda_events::apigw::{
    ApiGatewayCustomAuthorizerPolicy, ApiGatewayCustomAuthorizerRequestTypeRequest,
    ApiGatewayCustomAuthorizerResponse,
};
use aws_lambda_events::http::{header, HeaderMap};
use aws_lambda_events::iam::{IamPolicyEffect, IamPolicyStatement};
use rag_core::{Owner, SessionId};
use serde_json::{json, Value};

use crate::jwt::{Claims, JwtConfig, JwtError, JwtErrorKind, JwtVerifier, TokenUse};

/// The subprotocol of the service's frames: the one a client offers beside its token, and
/// the one the `$connect` answer selects.
pub const PROTOCOL: &str = "rag.v1";

/// The prefix of the subprotocol value that carries the token: `bearer.<jwt>`.
pub const BEARER_PROTOCOL_PREFIX: &str = "bearer.";

/// The query parameter that names a conversation to resume.
pub const SESSION_PARAMETER: &str = "session";

/// The query parameter some clients put a token in; refused, since URLs are logged.
pub const QUERY_TOKEN_PARAMETER: &str = "access_token";

/// The context key of the caller's groups, joined by `,`.
pub const CONTEXT_GROUPS: &str = "groups";

/// The context key of the session to resume, when the query string names a valid one.
pub const CONTEXT_SESSION: &str = "session";

/// The error message that makes API Gateway answer 401.
pub const UNAUTHORIZED: &str = "Unauthorized";

/// The `principalId` of a `Deny` answer whose token named no usable user.
const DENIED_PRINCIPAL: &str = "denied";

/// Why the authorizer did not answer with a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthorizerError {
    /// No token, or one that is not valid: API Gateway answers 401. Displays as exactly
    /// `Unauthorized`, the message API Gateway looks for.
    Unauthorized {
        /// Why, for the log; never sent to the client.
        reason: String,
    },
    /// The event cannot be answered (it has no `methodArn`), or the token cannot be checked
    /// (the signing keys could not be fetched): API Gateway answers 500.
    BadEvent(String),
}

impl AuthorizerError {
    fn unauthorized(reason: impl Into<String>) -> Self {
        AuthorizerError::Unauthorized {
            reason: reason.into(),
        }
    }

    /// What the log says: the reason, which the client never sees.
    pub fn reason(&self) -> &str {
        match self {
            AuthorizerError::Unauthorized { reason } | AuthorizerError::BadEvent(reason) => reason,
        }
    }
}

impl fmt::Display for AuthorizerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthorizerError::Unauthorized { .. } => f.write_str(UNAUTHORIZED),
            AuthorizerError::BadEvent(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for AuthorizerError {}

impl From<AuthorizerError> for lambda_runtime::Diagnostic {
    /// The invocation's error: `errorMessage` is exactly `Unauthorized` for a 401.
    fn from(error: AuthorizerError) -> Self {
        let error_type = match &error {
            AuthorizerError::Unauthorized { .. } => UNAUTHORIZED,
            AuthorizerError::BadEvent(_) => "BadEvent",
        };
        lambda_runtime::Diagnostic {
            error_type: error_type.to_string(),
            error_message: error.to_string(),
        }
    }
}

/// The token of an upgrade request: a `bearer.<jwt>` value in `Sec-WebSocket-Protocol` (a
/// comma-separated list, in one header or several), else an `Authorization: Bearer <jwt>`
/// header. Empty tokens count as none.
pub fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let from_protocol = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix(BEARER_PROTOCOL_PREFIX))
        .map(str::to_string);
    from_protocol
        .or_else(|| {
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(|t| t.trim().to_string())
        })
        .filter(|t| !t.is_empty())
}

/// The groups of a [`CONTEXT_GROUPS`] value, as the `$connect` handler reads them back.
pub fn groups_of(context_value: &str) -> Vec<String> {
    context_value
        .split(',')
        .filter(|g| !g.is_empty())
        .map(str::to_string)
        .collect()
}

/// The environment variable of the Cognito user pool id (`<region>_<id>`, for example
/// `eu-west-1_AbC123`; the pool's region is its prefix).
pub const ENV_USER_POOL_ID: &str = "RAG_COGNITO_USER_POOL_ID";

/// The environment variable of the app client ids whose tokens are taken, comma-separated.
pub const ENV_CLIENT_ID: &str = "RAG_COGNITO_CLIENT_ID";

/// The environment variable of the tokens taken: `id` (unset or empty) or `access`.
pub const ENV_TOKEN_USE: &str = "RAG_TOKEN_USE";

/// The verifier settings of the authorizer function, from [`ENV_USER_POOL_ID`],
/// [`ENV_CLIENT_ID`] and [`ENV_TOKEN_USE`] as `env` reads them (`std::env::var(..).ok()` in
/// the function); a missing or unusable variable is a [`JwtErrorKind::Config`] error that
/// names it.
pub fn jwt_config(env: impl Fn(&str) -> Option<String>) -> Result<JwtConfig, JwtError> {
    let config_error = |message: String| JwtError::new(JwtErrorKind::Config, message);
    let set = |name: &str| {
        env(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let pool = set(ENV_USER_POOL_ID)
        .ok_or_else(|| config_error(format!("{ENV_USER_POOL_ID} is not set: the user pool id")))?;
    let region = match pool.split_once('_') {
        Some((region, id)) if !region.is_empty() && !id.is_empty() => region.to_string(),
        _ => {
            return Err(config_error(format!(
                "{ENV_USER_POOL_ID} is `{pool}`, not a user pool id (REGION_ID)"
            )))
        }
    };
    let client_ids: Vec<String> = set(ENV_CLIENT_ID)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect();
    if client_ids.is_empty() {
        return Err(config_error(format!(
            "{ENV_CLIENT_ID} is not set: the app client ids, comma-separated"
        )));
    }
    let token_use = match set(ENV_TOKEN_USE) {
        None => TokenUse::Id,
        Some(value) => value
            .parse()
            .map_err(|e: JwtError| config_error(format!("{ENV_TOKEN_USE}: {e}")))?,
    };
    Ok(JwtConfig::cognito(&region, &pool, client_ids, token_use))
}

/// The `$connect` REQUEST authorizer: verifies the token and answers with a policy (see the
/// [module docs](self) for the contract).
#[derive(Debug)]
pub struct Authorizer {
    verifier: JwtVerifier,
}

impl Authorizer {
    /// An authorizer that takes the tokens `verifier` accepts.
    pub fn new(verifier: JwtVerifier) -> Self {
        Authorizer { verifier }
    }

    /// The token verifier.
    pub fn verifier(&self) -> &JwtVerifier {
        &self.verifier
    }

    /// Answers one `$connect` authorizer event: `Allow` or `Deny` for its `methodArn`, or
    /// [`AuthorizerError::Unauthorized`] (401) when no valid token came.
    pub async fn authorize(
        &self,
        request: ApiGatewayCustomAuthorizerRequestTypeRequest,
    ) -> Result<ApiGatewayCustomAuthorizerResponse, AuthorizerError> {
        let refuse = |reason: String| {
            tracing::info!(%reason, "unauthorized");
            AuthorizerError::unauthorized(reason)
        };
        if request
            .query_string_parameters
            .first(QUERY_TOKEN_PARAMETER)
            .is_some()
            || request
                .multi_value_query_string_parameters
                .first(QUERY_TOKEN_PARAMETER)
                .is_some()
        {
            return Err(refuse(format!(
                "a token in the query string ({QUERY_TOKEN_PARAMETER}) is not taken: URLs are logged"
            )));
        }
        let Some(token) = bearer_token(&request.headers) else {
            return Err(refuse(format!(
                "no token: offer the subprotocols {PROTOCOL} and {BEARER_PROTOCOL_PREFIX}TOKEN, \
                 or send Authorization: Bearer TOKEN"
            )));
        };
        let method_arn = request
            .method_arn
            .clone()
            .filter(|arn| !arn.is_empty())
            .ok_or_else(|| {
                let why = "the authorizer event has no methodArn".to_string();
                tracing::error!(reason = %why, "bad event");
                AuthorizerError::BadEvent(why)
            })?;
        let claims = match self.verifier.verify(&token).await {
            Ok(claims) => claims,
            Err(e) if e.kind() == JwtErrorKind::Forbidden => {
                return Ok(deny(DENIED_PRINCIPAL, &method_arn, e.message()));
            }
            // The keys could not be fetched (Cognito unreachable) or the verifier is
            // misconfigured: the token may well be good, so this is the service's failure
            // (500), not the user's (401).
            Err(e) if matches!(e.kind(), JwtErrorKind::Jwks | JwtErrorKind::Config) => {
                tracing::error!(error = %e.message(), "the token could not be checked");
                return Err(AuthorizerError::BadEvent(format!(
                    "the token could not be checked: {}",
                    e.message()
                )));
            }
            Err(e) => return Err(refuse(e.message().to_string())),
        };
        let owner = match Owner::new(claims.sub.as_str()) {
            Ok(owner) => owner,
            Err(e) => {
                return Ok(deny(
                    DENIED_PRINCIPAL,
                    &method_arn,
                    &format!("the token's sub cannot own a conversation: {e}"),
                ))
            }
        };
        if !template_safe(&claims.sub) {
            return Ok(deny(
                DENIED_PRINCIPAL,
                &method_arn,
                "the token's sub holds a quote or a backslash",
            ));
        }
        let session = match session_of(&request, owner) {
            Ok(session) => session,
            Err(why) => return Ok(deny(&claims.sub, &method_arn, &why)),
        };
        Ok(allow(&claims, &method_arn, session.as_ref()))
    }
}

/// The session the query string asks to resume, owned by the caller; an error for an id
/// that is not valid, or for more than one.
fn session_of(
    request: &ApiGatewayCustomAuthorizerRequestTypeRequest,
    owner: Owner,
) -> Result<Option<SessionId>, String> {
    let mut ids = request
        .multi_value_query_string_parameters
        .all(SESSION_PARAMETER)
        .or_else(|| request.query_string_parameters.all(SESSION_PARAMETER))
        .unwrap_or_default();
    ids.dedup();
    match ids.as_slice() {
        [] => Ok(None),
        [id] => SessionId::new(*id)
            .map(|id| Some(id.owned_by(owner)))
            .map_err(|e| format!("the session to resume is not valid: {e}")),
        _ => Err("the query string names more than one session".to_string()),
    }
}

fn policy(effect: IamPolicyEffect, method_arn: &str) -> ApiGatewayCustomAuthorizerPolicy {
    let mut statement = IamPolicyStatement::default();
    statement.action = vec!["execute-api:Invoke".to_string()];
    statement.effect = effect;
    statement.resource = vec![method_arn.to_string()];
    let mut policy = ApiGatewayCustomAuthorizerPolicy::default();
    policy.version = Some("2012-10-17".to_string());
    policy.statement = vec![statement];
    policy
}

/// Whether `value` can go between the quotes of the `$default` route's request template
/// (`"$context.authorizer.<key>"`, in `template.yaml`), which inserts it unescaped: no quote,
/// backslash or control character.
fn template_safe(value: &str) -> bool {
    !value.contains(['"', '\\']) && !value.chars().any(char::is_control)
}

fn allow(
    claims: &Claims,
    method_arn: &str,
    session: Option<&SessionId>,
) -> ApiGatewayCustomAuthorizerResponse {
    // A group whose name holds the separator would come back as other groups (`a,admin`
    // as `admin`): it is left out rather than let grant what it does not name. So is one
    // that the `$default` request template could not quote.
    let (groups, dropped): (Vec<&str>, Vec<&str>) = claims
        .groups
        .iter()
        .map(String::as_str)
        .partition(|g| !g.contains(',') && template_safe(g));
    if !dropped.is_empty() {
        tracing::warn!(
            ?dropped,
            "groups whose names hold a comma, a quote or a backslash were left out"
        );
    }
    let mut context = serde_json::Map::new();
    context.insert(CONTEXT_GROUPS.into(), Value::String(groups.join(",")));
    // Always set, empty for a new conversation: the `$default` request template reads
    // `$context.authorizer.session` whether or not there is one.
    context.insert(
        CONTEXT_SESSION.into(),
        Value::String(session.map(|s| s.as_str().to_string()).unwrap_or_default()),
    );
    tracing::info!(principal = %claims.sub, session = ?session.map(SessionId::as_str), "allowed");
    let mut response = ApiGatewayCustomAuthorizerResponse::default();
    response.principal_id = Some(claims.sub.clone());
    response.policy_document = policy(IamPolicyEffect::Allow, method_arn);
    response.context = Value::Object(context);
    response
}

fn deny(principal: &str, method_arn: &str, reason: &str) -> ApiGatewayCustomAuthorizerResponse {
    tracing::info!(%principal, %reason, "denied");
    let mut response = ApiGatewayCustomAuthorizerResponse::default();
    response.principal_id = Some(principal.to_string());
    response.policy_document = policy(IamPolicyEffect::Deny, method_arn);
    response.context = json!({});
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_values_the_request_template_can_quote_are_passed_on() {
        assert!(template_safe("0f3c5a4e-1b2d-4c6e-8f00-123456789abc"));
        assert!(template_safe("staff"));
        for bad in ["a\"b", "a\\b", "line\nbreak", "nul\u{0}"] {
            assert!(!template_safe(bad), "{bad:?}");
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn the_token_comes_from_the_subprotocol_first_then_the_header() {
        let both = headers(&[
            ("sec-websocket-protocol", "rag.v1, bearer.abc.def"),
            ("authorization", "Bearer other"),
        ]);
        assert_eq!(bearer_token(&both).as_deref(), Some("abc.def"));
        let split = headers(&[
            ("sec-websocket-protocol", "rag.v1"),
            ("sec-websocket-protocol", " bearer.x.y "),
        ]);
        assert_eq!(bearer_token(&split).as_deref(), Some("x.y"));
        let header_only = headers(&[("authorization", "Bearer xyz")]);
        assert_eq!(bearer_token(&header_only).as_deref(), Some("xyz"));
        assert_eq!(
            bearer_token(&headers(&[("sec-websocket-protocol", "rag.v1")])),
            None
        );
        assert_eq!(
            bearer_token(&headers(&[("authorization", "Basic xyz")])),
            None
        );
        assert_eq!(
            bearer_token(&headers(&[("sec-websocket-protocol", "bearer.")])),
            None
        );
    }

    #[test]
    fn the_settings_come_from_the_environment_and_name_what_is_missing() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let config = jwt_config(env(&[
            ("RAG_COGNITO_USER_POOL_ID", "eu-west-1_AbC123"),
            ("RAG_COGNITO_CLIENT_ID", " c1, c2 ,"),
        ]))
        .unwrap();
        assert_eq!(
            config.issuer,
            "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123"
        );
        assert_eq!(config.client_ids, ["c1", "c2"]);
        assert_eq!(config.token_use, TokenUse::Id);
        let access = jwt_config(env(&[
            ("RAG_COGNITO_USER_POOL_ID", "eu-west-1_AbC123"),
            ("RAG_COGNITO_CLIENT_ID", "c1"),
            ("RAG_TOKEN_USE", "access"),
        ]))
        .unwrap();
        assert_eq!(access.token_use, TokenUse::Access);
        for (vars, named) in [
            (
                &[("RAG_COGNITO_CLIENT_ID", "c1")][..],
                "RAG_COGNITO_USER_POOL_ID is not set",
            ),
            (
                &[
                    ("RAG_COGNITO_USER_POOL_ID", "AbC123"),
                    ("RAG_COGNITO_CLIENT_ID", "c1"),
                ],
                "not a user pool id",
            ),
            (
                &[("RAG_COGNITO_USER_POOL_ID", "eu-west-1_AbC123")],
                "RAG_COGNITO_CLIENT_ID is not set",
            ),
            (
                &[
                    ("RAG_COGNITO_USER_POOL_ID", "eu-west-1_AbC123"),
                    ("RAG_COGNITO_CLIENT_ID", "c1"),
                    ("RAG_TOKEN_USE", "refresh"),
                ],
                "RAG_TOKEN_USE: `refresh` is not a token use",
            ),
        ] {
            let err = jwt_config(env(vars)).unwrap_err();
            assert_eq!(err.kind(), JwtErrorKind::Config);
            assert!(err.message().contains(named), "{err}");
        }
    }

    #[test]
    fn groups_round_trip_through_the_context() {
        assert_eq!(groups_of("eng,ops"), ["eng", "ops"]);
        assert!(groups_of("").is_empty());
    }

    #[test]
    fn an_unauthorized_error_says_only_unauthorized() {
        let error = AuthorizerError::unauthorized("it has expired");
        assert_eq!(error.to_string(), "Unauthorized");
        assert_eq!(error.reason(), "it has expired");
        let diagnostic = lambda_runtime::Diagnostic::from(error);
        assert_eq!(diagnostic.error_message, "Unauthorized");
    }

    #[test]
    fn policies_name_the_method_and_the_effect() {
        let denied = deny("denied", "arn:aws:execute-api:r:1:a/s/$connect", "why");
        let json = serde_json::to_value(&denied).unwrap();
        assert_eq!(json["principalId"], "denied");
        assert_eq!(json["policyDocument"]["Version"], "2012-10-17");
        let statement = &json["policyDocument"]["Statement"][0];
        assert_eq!(statement["Effect"], "Deny");
        assert_eq!(statement["Action"], json!(["execute-api:Invoke"]));
        assert_eq!(
            statement["Resource"],
            json!(["arn:aws:execute-api:r:1:a/s/$connect"])
        );
        assert_eq!(json["context"], json!({}));
    }
}
