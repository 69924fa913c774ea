//! JWT verification in the shape of an Amazon Cognito user pool (RS256, keys from the pool's
//! JWKS), usable with any OIDC provider that signs with RS256: the Lambda authorizer
//! ([`crate::authorizer`]) and the websocket example both verify with [`JwtVerifier`].
//!
//! What is checked follows Cognito's guide, "Verifying JSON web tokens"
//! (<https://docs.aws.amazon.com/cognito/latest/developerguide/amazon-cognito-user-pools-using-tokens-verifying-a-jwt.html>):
//! the signature with the key the header's `kid` names in the pool's JWKS
//! (`https://cognito-idp.<region>.amazonaws.com/<pool id>/.well-known/jwks.json`), `exp`,
//! `iss` (the pool's URL), `token_use` (`id` or `access`), and the app client: `aud` in id
//! tokens, `client_id` in access tokens (access tokens carry no `aud`).
//!
//! A token that is not valid is a [`JwtErrorKind::Unauthorized`] error (answer 401); a valid
//! one meant for another app client, or of the other `token_use`, is
//! [`JwtErrorKind::Forbidden`] (answer 403).
//!
//! ```
//! use rag_lambda::jwt::{JwtConfig, JwtVerifier, TokenUse};
//!
//! let config = JwtConfig::cognito("eu-west-1", "eu-west-1_AbC123", vec!["client".into()], TokenUse::Id);
//! assert_eq!(config.issuer, "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123");
//! let verifier = JwtVerifier::new(config).unwrap();
//! assert_eq!(verifier.fetches(), 0, "no key is fetched before load() or the first token");
//! ```

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};
use tokio::time::Instant;

/// The largest JWKS document read.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Which kind of Cognito token the service takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenUse {
    /// ID tokens: the app client is the `aud` claim.
    Id,
    /// Access tokens: the app client is the `client_id` claim.
    Access,
}

impl TokenUse {
    /// The `token_use` claim's value: `id` or `access`.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenUse::Id => "id",
            TokenUse::Access => "access",
        }
    }
}

impl fmt::Display for TokenUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TokenUse {
    type Err = JwtError;

    /// `id` or `access`, as the claim spells them.
    fn from_str(s: &str) -> Result<Self, JwtError> {
        match s {
            "id" => Ok(TokenUse::Id),
            "access" => Ok(TokenUse::Access),
            other => Err(JwtError::new(
                JwtErrorKind::Config,
                format!("`{other}` is not a token use: expected id or access"),
            )),
        }
    }
}

/// What a [`JwtVerifier`] accepts.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// Where the signing keys are published.
    pub jwks_url: String,
    /// The exact `iss` of accepted tokens.
    pub issuer: String,
    /// The app clients whose tokens are accepted (`aud` or `client_id`); must not be empty.
    pub client_ids: Vec<String>,
    /// `id` or `access`.
    pub token_use: TokenUse,
    /// Clock skew allowed on `exp`.
    pub leeway: Duration,
    /// The least time between two fetches caused by unknown key ids, so a flood of tokens
    /// with made-up `kid`s cannot hammer the JWKS endpoint.
    pub refresh_interval: Duration,
}

impl JwtConfig {
    /// A Cognito user pool's settings: its JWKS URL and issuer from the region and pool id,
    /// 30 seconds of leeway on `exp`, and at most one refetch a minute for unknown key ids.
    pub fn cognito(
        region: &str,
        user_pool_id: &str,
        client_ids: Vec<String>,
        token_use: TokenUse,
    ) -> Self {
        let issuer = format!("https://cognito-idp.{region}.amazonaws.com/{user_pool_id}");
        JwtConfig {
            jwks_url: format!("{issuer}/.well-known/jwks.json"),
            issuer,
            client_ids,
            token_use,
            leeway: Duration::from_secs(30),
            refresh_interval: Duration::from_secs(60),
        }
    }
}

/// Which way a token, or the verifier itself, failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JwtErrorKind {
    /// The token is not valid (malformed, expired, badly signed, another issuer, an unknown
    /// key): the caller is not authenticated, 401.
    Unauthorized,
    /// The token is valid but not for this service (another app client, the other
    /// `token_use`): the caller is authenticated and not allowed, 403.
    Forbidden,
    /// The verifier's settings cannot work (no app client id, an unknown token use).
    Config,
    /// The JWKS could not be fetched or read.
    Jwks,
}

/// Why a token was refused, or why the verifier could not be built or load its keys.
///
/// The message is plain words for the client (it names no key and no secret); for
/// [`JwtErrorKind::Jwks`] it names the JWKS URL, for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtError {
    kind: JwtErrorKind,
    message: String,
}

impl JwtError {
    pub(crate) fn new(kind: JwtErrorKind, message: impl Into<String>) -> Self {
        JwtError {
            kind,
            message: message.into(),
        }
    }

    fn unauthorized(message: impl Into<String>) -> Self {
        JwtError::new(JwtErrorKind::Unauthorized, message)
    }

    fn forbidden(message: impl Into<String>) -> Self {
        JwtError::new(JwtErrorKind::Forbidden, message)
    }

    fn jwks(message: impl Into<String>) -> Self {
        JwtError::new(JwtErrorKind::Jwks, message)
    }

    /// Which way it failed.
    pub fn kind(&self) -> JwtErrorKind {
        self.kind
    }

    /// What happened, in plain words.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for JwtError {}

/// Who a verified token says the caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Claims {
    /// The token's `sub`, never empty: the user's stable id.
    pub sub: String,
    /// The token's `cognito:groups` (or, from other providers, `groups`); empty if it has
    /// neither.
    pub groups: Vec<String>,
}

/// The claims read from a token.
#[derive(Debug, Deserialize)]
struct RawClaims {
    sub: String,
    token_use: Option<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    aud: Vec<String>,
    client_id: Option<String>,
    #[serde(rename = "cognito:groups", default)]
    cognito_groups: Option<Vec<String>>,
    #[serde(default)]
    groups: Option<Vec<String>>,
}

/// `aud` is a string or a list of strings.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    })
}

/// The keys of the JWKS, by `kid`, and when an unknown `kid` last caused a fetch.
#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, DecodingKey>,
    refreshed_for_unknown_kid: Option<Instant>,
    /// Why the last fetch failed, until one succeeds: tokens whose key is unknown meanwhile
    /// are told the service failed, not that they are not valid.
    last_fetch_failed: Option<JwtError>,
}

/// Verifies JWTs against a JWKS that it fetches once, caches, and fetches again when a token
/// names a key it does not hold (at most once per [`JwtConfig::refresh_interval`]).
///
/// Meant to live as long as the process (a Lambda instance, a server), shared by reference
/// or in an `Arc`.
pub struct JwtVerifier {
    config: JwtConfig,
    http: reqwest::Client,
    keys: RwLock<Keys>,
    /// One fetch at a time; the others wait for it and use its keys.
    fetching: Mutex<()>,
    fetches: AtomicUsize,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("config", &self.config)
            .field("fetches", &self.fetches())
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// A verifier for `config`; no key is fetched until [`JwtVerifier::load`] or the first
    /// token. Fails ([`JwtErrorKind::Config`]) without an app client id.
    pub fn new(config: JwtConfig) -> Result<Self, JwtError> {
        if config.client_ids.is_empty() {
            return Err(JwtError::new(
                JwtErrorKind::Config,
                "at least one app client id is needed",
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| {
                JwtError::new(
                    JwtErrorKind::Config,
                    format!("cannot build the HTTP client: {e}"),
                )
            })?;
        Ok(JwtVerifier {
            config,
            http,
            keys: RwLock::new(Keys::default()),
            fetching: Mutex::new(()),
            fetches: AtomicUsize::new(0),
        })
    }

    /// The settings.
    pub fn config(&self) -> &JwtConfig {
        &self.config
    }

    /// How many times the JWKS was fetched.
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Fetches the JWKS now (at startup, so a wrong URL is reported before any client comes).
    /// Returns how many usable keys it holds; fails with [`JwtErrorKind::Jwks`].
    pub async fn load(&self) -> Result<usize, JwtError> {
        let _one = self.fetching.lock().await;
        let fetched = self.fetch().await?;
        let n = fetched.len();
        self.keys.write().await.by_kid = fetched;
        Ok(n)
    }

    async fn fetch(&self) -> Result<HashMap<String, DecodingKey>, JwtError> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let url = &self.config.jwks_url;
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| JwtError::jwks(format!("cannot fetch the JWKS at {url}: {e}")))?;
        if !response.status().is_success() {
            return Err(JwtError::jwks(format!(
                "the JWKS at {url} answered {}",
                response.status()
            )));
        }
        let too_large = || {
            JwtError::jwks(format!(
                "the JWKS at {url} is larger than {MAX_JWKS_BYTES} bytes"
            ))
        };
        if response
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(too_large());
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| JwtError::jwks(format!("cannot read the JWKS at {url}: {e}")))?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(too_large());
        }
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| {
            JwtError::jwks(format!("the JWKS at {url} is not a JSON Web Key Set: {e}"))
        })?;
        Ok(set
            .keys
            .iter()
            .filter(|jwk| {
                // Only RS256 signing keys; an unmarked key is taken as one.
                let alg_ok = jwk
                    .common
                    .key_algorithm
                    .is_none_or(|a| matches!(a, jsonwebtoken::jwk::KeyAlgorithm::RS256));
                let use_ok = jwk
                    .common
                    .public_key_use
                    .as_ref()
                    .is_none_or(|u| matches!(u, jsonwebtoken::jwk::PublicKeyUse::Signature));
                alg_ok && use_ok
            })
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                let key = DecodingKey::from_jwk(jwk).ok()?;
                Some((kid, key))
            })
            .collect())
    }

    /// The key named `kid`, fetching the JWKS again if it is unknown and no unknown `kid`
    /// caused a fetch within the refresh interval.
    async fn key(&self, kid: &str) -> Result<DecodingKey, JwtError> {
        if let Some(key) = self.keys.read().await.by_kid.get(kid) {
            return Ok(key.clone());
        }
        let unknown =
            || JwtError::unauthorized("the token is not valid: its signing key is unknown");
        let _one = self.fetching.lock().await;
        {
            // Another request may have fetched it meanwhile; or the last fetch is too recent.
            let keys = self.keys.read().await;
            if let Some(key) = keys.by_kid.get(kid) {
                return Ok(key.clone());
            }
            if keys
                .refreshed_for_unknown_kid
                .is_some_and(|at| at.elapsed() < self.config.refresh_interval)
            {
                return Err(keys.last_fetch_failed.clone().unwrap_or_else(unknown));
            }
        }
        let fetched = self.fetch().await;
        let mut keys = self.keys.write().await;
        keys.refreshed_for_unknown_kid = Some(Instant::now());
        match fetched {
            Ok(fetched) => {
                keys.by_kid = fetched;
                keys.last_fetch_failed = None;
            }
            Err(e) => {
                // The keys held stay in use. A token whose key is not among them may be good:
                // the failure is the service's (a JWKS error), not the token's.
                tracing::warn!(error = %e, "JWKS refresh failed");
                keys.last_fetch_failed = Some(e.clone());
                return keys.by_kid.get(kid).cloned().ok_or(e);
            }
        }
        keys.by_kid.get(kid).cloned().ok_or_else(unknown)
    }

    /// Verifies `token` and returns its user: [`JwtErrorKind::Unauthorized`] for a token
    /// that is not valid, [`JwtErrorKind::Forbidden`] for a valid one meant for another
    /// client or of the other `token_use`.
    pub async fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        let invalid = |why: &str| JwtError::unauthorized(format!("the token is not valid: {why}"));
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("it is not a JWT"))?;
        if header.alg != Algorithm::RS256 {
            return Err(invalid("it is not signed with RS256"));
        }
        let kid = header
            .kid
            .ok_or_else(|| invalid("its header names no key (kid)"))?;
        let key = self.key(&kid).await?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = self.config.leeway.as_secs();
        // Checked below: access tokens carry `client_id`, not `aud`.
        validation.validate_aud = false;
        let claims = jsonwebtoken::decode::<RawClaims>(token, &key, &validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                invalid(match e.kind() {
                    ErrorKind::ExpiredSignature => "it has expired",
                    ErrorKind::InvalidIssuer => "it was issued by another issuer",
                    ErrorKind::InvalidSignature => "its signature does not match",
                    ErrorKind::MissingRequiredClaim(_) => "it lacks exp, iss or sub",
                    _ => "it cannot be read",
                })
            })?
            .claims;
        let expected = self.config.token_use.as_str();
        if claims.token_use.as_deref() != Some(expected) {
            return Err(JwtError::forbidden(format!(
                "this service takes {expected} tokens, and this token's token_use is {}",
                claims.token_use.as_deref().unwrap_or("missing")
            )));
        }
        let client = match self.config.token_use {
            TokenUse::Id => claims
                .aud
                .iter()
                .any(|a| self.config.client_ids.contains(a)),
            TokenUse::Access => claims
                .client_id
                .as_ref()
                .is_some_and(|c| self.config.client_ids.contains(c)),
        };
        if !client {
            return Err(JwtError::forbidden(
                "the token was issued for another app client",
            ));
        }
        if claims.sub.is_empty() {
            return Err(invalid("its sub is empty"));
        }
        let groups = claims.cognito_groups.or(claims.groups).unwrap_or_default();
        Ok(Claims {
            sub: claims.sub,
            groups,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cognito_pool_names_its_issuer_and_keys() {
        let config = JwtConfig::cognito(
            "eu-west-1",
            "eu-west-1_AbC123",
            vec!["client".into()],
            TokenUse::Id,
        );
        assert_eq!(
            config.issuer,
            "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123"
        );
        assert_eq!(
            config.jwks_url,
            "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123/.well-known/jwks.json"
        );
        let empty = JwtVerifier::new(JwtConfig {
            client_ids: vec![],
            ..config
        })
        .unwrap_err();
        assert_eq!(empty.kind(), JwtErrorKind::Config);
    }

    #[test]
    fn aud_is_a_string_or_a_list() {
        let one: RawClaims = serde_json::from_str(r#"{"sub":"s","aud":"a"}"#).unwrap();
        assert_eq!(one.aud, ["a"]);
        let many: RawClaims = serde_json::from_str(r#"{"sub":"s","aud":["a","b"]}"#).unwrap();
        assert_eq!(many.aud, ["a", "b"]);
        let none: RawClaims = serde_json::from_str(r#"{"sub":"s"}"#).unwrap();
        assert!(none.aud.is_empty());
    }

    #[test]
    fn token_uses_read_as_the_claim_spells_them() {
        for token_use in [TokenUse::Id, TokenUse::Access] {
            assert_eq!(token_use.as_str().parse::<TokenUse>(), Ok(token_use));
            assert_eq!(token_use.to_string(), token_use.as_str());
        }
        let err = "ID".parse::<TokenUse>().unwrap_err();
        assert_eq!(err.kind(), JwtErrorKind::Config);
        assert!(err.message().contains("expected id or access"), "{err}");
    }

    #[tokio::test]
    async fn not_a_jwt_is_unauthorized_without_fetching_keys() {
        let verifier = JwtVerifier::new(JwtConfig::cognito(
            "eu-west-1",
            "eu-west-1_AbC123",
            vec!["client".into()],
            TokenUse::Id,
        ))
        .unwrap();
        let err = verifier.verify("not-a-jwt").await.unwrap_err();
        assert_eq!(err.kind(), JwtErrorKind::Unauthorized);
        assert_eq!(err.message(), "the token is not valid: it is not a JWT");
        assert_eq!(verifier.fetches(), 0);
    }
}
