//! Who is connecting: the credential a client sends at the upgrade, and its check (a shared
//! token for local use, or a JWT from an Amazon Cognito user pool or any OIDC provider).
//!
//! The credential travels in a header, never in the URL (access logs keep URLs): browsers,
//! which cannot set headers on a WebSocket, offer it as a subprotocol, `["rag.v1",
//! "bearer.TOKEN"]`, and the server selects and echoes `rag.v1` alone; other clients may send
//! `Authorization: Bearer TOKEN`.

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rag::{Owner, UserContext};
use rag_lambda::jwt::{Claims, JwtError, JwtErrorKind};

/// The JWT verifier is the library's, shared with the Lambda authorizer of the same API.
pub(crate) use rag_lambda::jwt::{JwtConfig, JwtVerifier, TokenUse};

/// The subprotocol of this service's frames (the one the server selects), and the prefix of
/// the subprotocol value that carries the token: the Lambda authorizer's, so a page works
/// with both.
pub(crate) use rag_lambda::authorizer::{BEARER_PROTOCOL_PREFIX, PROTOCOL};

/// `--token-use`: which tokens are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum TokenUseArg {
    /// ID tokens: the app client is the `aud` claim.
    Id,
    /// Access tokens: the app client is the `client_id` claim.
    Access,
}

impl From<TokenUseArg> for TokenUse {
    fn from(arg: TokenUseArg) -> Self {
        match arg {
            TokenUseArg::Id => TokenUse::Id,
            TokenUseArg::Access => TokenUse::Access,
        }
    }
}

/// The owner of every conversation in shared-token mode: everyone who holds the token is one
/// principal, so they share one history namespace.
pub(crate) const SHARED_OWNER: &str = "shared";

/// How the upgrade is guarded.
#[derive(Debug, Clone)]
pub(crate) enum Auth {
    /// No credential: every connection is anonymous (local use on loopback).
    None,
    /// One token for everyone (local use); the owner is [`SHARED_OWNER`].
    Shared(String),
    /// A JWT verified against its issuer's keys; the owner is its `sub`.
    Jwt(std::sync::Arc<JwtVerifier>),
}

/// Who is asking, as the upgrade established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Identity {
    /// No credential was needed: sessions have no owner.
    Anonymous,
    /// The shared token.
    Shared,
    /// A verified token's user.
    User {
        /// The token's `sub`.
        sub: String,
        /// The token's `cognito:groups` (or `groups`).
        groups: Vec<String>,
    },
}

impl Identity {
    /// The owner of this identity's conversations (`None`: anonymous sessions).
    pub(crate) fn owner(&self) -> Result<Option<Owner>, rag::Error> {
        match self {
            Identity::Anonymous => Ok(None),
            Identity::Shared => Owner::new(SHARED_OWNER).map(Some),
            Identity::User { sub, .. } => Owner::new(sub.as_str()).map(Some),
        }
    }

    /// The groups that decide which documents this identity may see.
    pub(crate) fn groups(&self) -> &[String] {
        match self {
            Identity::User { groups, .. } => groups,
            _ => &[],
        }
    }

    /// What the retriever is told about the user: its id and groups. The token itself is not
    /// passed on: Kendra takes a token or a user id with groups, not both, and a token needs
    /// the index's own JWT configuration, while the id and groups work on every index.
    pub(crate) fn user_context(&self) -> Option<UserContext> {
        match self {
            Identity::User { sub, groups } => Some(UserContext {
                token: None,
                user_id: Some(sub.clone()),
                groups: groups.clone(),
            }),
            _ => None,
        }
    }

    /// Whether a credential established this identity.
    pub(crate) fn is_authenticated(&self) -> bool {
        !matches!(self, Identity::Anonymous)
    }
}

/// A refused upgrade: the status and the plain-words body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// 400, 401, 403, 429, 500 or 503.
    pub(crate) status: StatusCode,
    /// What happened, for the client.
    pub(crate) message: String,
}

impl Refusal {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Refusal {
            status,
            message: message.into(),
        }
    }

    /// 401: no credential, or one that is not valid.
    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Refusal::new(StatusCode::UNAUTHORIZED, message)
    }

    /// 403: a valid credential that is not allowed this.
    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Refusal::new(StatusCode::FORBIDDEN, message)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 6750: the scheme, and which way the credential failed.
            (
                self.status,
                [(header::WWW_AUTHENTICATE, r#"Bearer realm="rag""#)],
                self.message,
            )
                .into_response()
        } else {
            (self.status, self.message).into_response()
        }
    }
}

/// The credential of an upgrade request: a `bearer.TOKEN` subprotocol value, else an
/// `Authorization: Bearer TOKEN` header.
/// The same reading as the Lambda authorizer's; an empty token counts as none.
pub(crate) fn credential(headers: &HeaderMap) -> Option<String> {
    rag_lambda::authorizer::bearer_token(headers)
}

impl Auth {
    /// Checks the upgrade's credential and says who is connecting.
    pub(crate) async fn identify(&self, headers: &HeaderMap) -> Result<Identity, Refusal> {
        let given = credential(headers);
        match self {
            Auth::None => Ok(Identity::Anonymous),
            Auth::Shared(expected) => match given {
                Some(given) if same_secret(&given, expected) => Ok(Identity::Shared),
                Some(_) => Err(Refusal::unauthorized("the token is not valid")),
                None => Err(missing()),
            },
            Auth::Jwt(verifier) => {
                let Some(token) = given else {
                    return Err(missing());
                };
                let claims = verifier.verify(&token).await.map_err(Refusal::from)?;
                Ok(Identity::from(claims))
            }
        }
    }
}

impl From<Claims> for Identity {
    fn from(claims: Claims) -> Self {
        Identity::User {
            sub: claims.sub,
            groups: claims.groups,
        }
    }
}

impl From<JwtError> for Refusal {
    /// 401 for a token that is not valid, 403 for one that is not for this service, 500 when
    /// the verifier itself failed (the signing keys could not be fetched for a key id it does
    /// not hold): then the token may well be good, and the reason, which names the JWKS URL,
    /// goes to the log only.
    fn from(error: JwtError) -> Self {
        let status = match error.kind() {
            JwtErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            JwtErrorKind::Forbidden => StatusCode::FORBIDDEN,
            _ => {
                tracing::error!(error = %error.message(), "a token could not be checked");
                return Refusal::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the sign-in could not be checked; try again in a moment",
                );
            }
        };
        Refusal::new(status, error.message())
    }
}

fn missing() -> Refusal {
    Refusal::unauthorized(format!(
        "a token is needed: offer the WebSocket subprotocols {PROTOCOL} and \
         {BEARER_PROTOCOL_PREFIX}TOKEN, or send Authorization: Bearer TOKEN"
    ))
}

/// Compares two secrets in time that depends only on their lengths.
fn same_secret(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_own_their_sessions_and_tell_the_retriever() {
        let user = Identity::User {
            sub: "3f9c".into(),
            groups: vec!["eng".into()],
        };
        assert_eq!(user.owner().unwrap().unwrap().as_str(), "3f9c");
        let context = user.user_context().unwrap();
        assert_eq!(context.user_id.as_deref(), Some("3f9c"));
        assert_eq!(context.groups, ["eng"]);
        assert_eq!(context.token, None);
        assert_eq!(
            Identity::Shared.owner().unwrap().unwrap().as_str(),
            "shared"
        );
        assert_eq!(Identity::Anonymous.owner().unwrap(), None);
        assert!(!Identity::Anonymous.is_authenticated());
    }

    #[test]
    fn secrets_compare_by_content() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
    }
}
