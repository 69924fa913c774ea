//! JWTs in the Cognito shape, signed by the test keys in `tests/fixtures/jwt/` (test-only:
//! they guard nothing), and a JWKS endpoint on 127.0.0.1 that serves their public halves.
//!
//! Shared by the websocket example's tests and rag-lambda's authorizer tests, which include
//! it with `#[path]`.

#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::Response;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// The test pool's issuer.
pub const ISSUER: &str = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_TestPool";
/// The test pool's app client.
pub const CLIENT: &str = "test-app-client";

/// The private half (PKCS#1 DER) of the test key `kid` (`key1` or `key2`).
pub fn private_key(kid: &str) -> &'static [u8] {
    match kid {
        "key1" => include_bytes!("../fixtures/jwt/key1.der"),
        _ => include_bytes!("../fixtures/jwt/key2.der"),
    }
}

/// The public half (JWK) of the test key `kid`.
pub fn public_jwk(kid: &str) -> Value {
    let text = match kid {
        "key1" => include_str!("../fixtures/jwt/key1.jwk.json"),
        _ => include_str!("../fixtures/jwt/key2.jwk.json"),
    };
    serde_json::from_str(text).expect("a JWK")
}

/// Signs `claims` with the key `signing_key`, naming `kid` in the header.
pub fn sign(claims: &Value, signing_key: &str, kid: &str) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(kid.to_string());
    let key = jsonwebtoken::EncodingKey::from_rsa_der(private_key(signing_key));
    jsonwebtoken::encode(&header, claims, &key).expect("signed")
}

/// Now, in seconds since the epoch.
pub fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// An id token's claims for `sub` in `groups`, valid for an hour.
pub fn id_claims(sub: &str, groups: &[&str]) -> Value {
    json!({
        "sub": sub,
        "iss": ISSUER,
        "aud": CLIENT,
        "token_use": "id",
        "exp": now() + 3600,
        "iat": now(),
        "cognito:groups": groups,
    })
}

/// An id token for `sub` in `groups`, signed with `key1`.
pub fn token_for(sub: &str, groups: &[&str]) -> String {
    sign(&id_claims(sub, groups), "key1", "key1")
}

/// A JWKS endpoint on 127.0.0.1: the keys it serves can change, and it counts its requests.
pub struct Jwks {
    /// Where the keys are served.
    pub url: String,
    /// The JWKs served.
    pub keys: Arc<Mutex<Vec<Value>>>,
    /// How many requests it answered.
    pub hits: Arc<AtomicUsize>,
}

/// Serves the public halves of the test keys `kids`.
pub async fn jwks(kids: &[&str]) -> Jwks {
    let keys = Arc::new(Mutex::new(
        kids.iter().map(|k| public_jwk(k)).collect::<Vec<_>>(),
    ));
    let hits = Arc::new(AtomicUsize::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (served, counted) = (Arc::clone(&keys), Arc::clone(&hits));
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (keys, hits) = (Arc::clone(&served), Arc::clone(&counted));
            tokio::spawn(async move {
                let service = service_fn(move |_request: hyper::Request<hyper::body::Incoming>| {
                    hits.fetch_add(1, Ordering::SeqCst);
                    let body = json!({ "keys": keys.lock().unwrap().clone() }).to_string();
                    let response = Response::builder()
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(body)))
                        .expect("a response");
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    Jwks {
        url: format!("http://{addr}/.well-known/jwks.json"),
        keys,
        hits,
    }
}
