//! The `$connect` REQUEST authorizer, in process: WebSocket `$connect` authorizer events in the
//! shape of the API Gateway guide's example input ("Control access to WebSocket APIs with AWS
//! Lambda REQUEST authorizers",
//! <https://docs.aws.amazon.com/apigateway/latest/developerguide/apigateway-websocket-api-lambda-auth.html>),
//! JWTs in the Cognito shape signed by the test keys, and the keys' JWKS served on 127.0.0.1.

use std::sync::atomic::Ordering;
use std::time::Duration;

use aws_lambda_events::apigw::ApiGatewayCustomAuthorizerRequestTypeRequest;
use rag_lambda::authorizer::{Authorizer, AuthorizerError};
use rag_lambda::jwt::{JwtConfig, JwtVerifier, TokenUse};
use serde_json::{json, Value};

#[path = "../../tests/support/jwt.rs"]
mod jwt;

use jwt::{id_claims, now, sign, token_for, Jwks, CLIENT, ISSUER};

const METHOD_ARN: &str = "arn:aws:execute-api:us-east-1:123456789012:abcdef123/prod/$connect";

/// The JWKS of the test key `key1`, on 127.0.0.1.
async fn jwks() -> Jwks {
    jwt::jwks(&["key1"]).await
}

/// Signs `claims` with the served key.
fn signed(claims: &Value) -> String {
    sign(claims, "key1", "key1")
}

/// An authorizer for the test pool's `token_use` tokens, its keys loaded as at cold start.
async fn authorizer_for(jwks: &Jwks, token_use: TokenUse) -> Authorizer {
    let verifier = JwtVerifier::new(JwtConfig {
        jwks_url: jwks.url.clone(),
        issuer: ISSUER.to_string(),
        client_ids: vec![CLIENT.to_string()],
        token_use,
        leeway: Duration::from_secs(5),
        refresh_interval: Duration::from_secs(60),
    })
    .expect("a verifier");
    assert_eq!(
        verifier.load().await,
        Ok(1),
        "the key is loaded at cold start"
    );
    Authorizer::new(verifier)
}

/// A `$connect` authorizer event with these headers and query string parameters, as API
/// Gateway sends it (headers once, and again as lists; the query string likewise).
fn connect_event(headers: &[(&str, &str)], query: &[(&str, &str)]) -> Value {
    let mut single = serde_json::Map::new();
    let mut multi = serde_json::Map::new();
    let base = [
        ("Connection", "upgrade"),
        ("content-length", "0"),
        ("Host", "abcdef123.execute-api.us-east-1.amazonaws.com"),
        (
            "Sec-WebSocket-Extensions",
            "permessage-deflate; client_max_window_bits",
        ),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
        ("Upgrade", "websocket"),
        (
            "X-Amzn-Trace-Id",
            "Root=1-5f84c2e4-0123456789abcdef01234567",
        ),
        ("X-Forwarded-For", "203.0.113.7"),
        ("X-Forwarded-Port", "443"),
        ("X-Forwarded-Proto", "https"),
    ];
    for (name, value) in base.iter().chain(headers) {
        single.insert(name.to_string(), json!(value));
        multi.insert(name.to_string(), json!([value]));
    }
    let mut query_single = serde_json::Map::new();
    let mut query_multi = serde_json::Map::new();
    for (name, value) in query {
        query_single.insert(name.to_string(), json!(value));
        query_multi
            .entry(name.to_string())
            .or_insert_with(|| json!([]))
            .as_array_mut()
            .expect("a list")
            .push(json!(value));
    }
    json!({
        "type": "REQUEST",
        "methodArn": METHOD_ARN,
        "headers": single,
        "multiValueHeaders": multi,
        "queryStringParameters": query_single,
        "multiValueQueryStringParameters": query_multi,
        "stageVariables": {},
        "requestContext": {
            "routeKey": "$connect",
            "eventType": "CONNECT",
            "extendedRequestId": "ABCD1234=",
            "requestTime": "09/Feb/2024:18:11:43 +0000",
            "messageDirection": "IN",
            "stage": "prod",
            "connectedAt": 1_707_502_303_419_i64,
            "requestTimeEpoch": 1_707_502_303_420_i64,
            "identity": {"sourceIp": "203.0.113.7", "userAgent": "Mozilla/5.0"},
            "requestId": "ABCD1234=",
            "domainName": "abcdef123.execute-api.us-east-1.amazonaws.com",
            "connectionId": "AAAA1234=",
            "apiId": "abcdef123"
        }
    })
}

fn subprotocols(token: &str) -> String {
    format!("rag.v1, bearer.{token}")
}

/// Runs `authorizer` on `event` as the Lambda runtime would: the event from its JSON, the
/// answer as the JSON API Gateway reads.
async fn authorize(authorizer: &Authorizer, event: Value) -> Result<Value, AuthorizerError> {
    let request: ApiGatewayCustomAuthorizerRequestTypeRequest =
        serde_json::from_value(event).expect("a REQUEST authorizer event");
    let response = authorizer.authorize(request).await?;
    Ok(serde_json::to_value(response).expect("an answer"))
}

/// The one statement of `answer`'s policy: its effect, after checking it is about invoking
/// this `$connect`.
fn effect(answer: &Value) -> &str {
    let policy = &answer["policyDocument"];
    assert_eq!(policy["Version"], "2012-10-17");
    let statements = policy["Statement"].as_array().expect("statements");
    assert_eq!(statements.len(), 1, "{answer}");
    assert_eq!(statements[0]["Action"], json!(["execute-api:Invoke"]));
    assert_eq!(statements[0]["Resource"], json!([METHOD_ARN]));
    statements[0]["Effect"].as_str().expect("an effect")
}

/// Checks that `result` is a 401: the error message is exactly `Unauthorized`, and the reason
/// (for the log) contains `why`.
fn assert_unauthorized(result: Result<Value, AuthorizerError>, why: &str) {
    match result {
        Err(error) => {
            assert_eq!(error.to_string(), "Unauthorized", "{why}");
            assert!(
                matches!(error, AuthorizerError::Unauthorized { .. }),
                "{why}"
            );
            assert!(error.reason().contains(why), "{why}: {}", error.reason());
        }
        Ok(answer) => panic!("{why}: answered {answer}"),
    }
}

#[tokio::test]
async fn a_valid_subprotocol_token_is_allowed_with_its_user_groups_and_session() {
    let keys = jwks().await;
    let authorizer = authorizer_for(&keys, TokenUse::Id).await;
    let token = token_for("alice-sub", &["eng", "ops"]);
    let protocols = subprotocols(&token);
    let answer = authorize(
        &authorizer,
        connect_event(
            &[("Sec-WebSocket-Protocol", &protocols)],
            &[("session", "3f9c-resume.me")],
        ),
    )
    .await
    .expect("allowed");
    assert_eq!(effect(&answer), "Allow");
    assert_eq!(answer["principalId"], "alice-sub");
    assert_eq!(
        answer["context"],
        json!({"groups": "eng,ops", "session": "3f9c-resume.me"}),
        "string values only"
    );

    // Without a session to resume the context holds the groups alone; the keys loaded at
    // cold start serve every connection.
    let answer = authorize(
        &authorizer,
        connect_event(&[("Sec-WebSocket-Protocol", &protocols)], &[]),
    )
    .await
    .expect("allowed");
    // `session` is always set, empty for a new conversation: the request template reads it.
    assert_eq!(
        answer["context"],
        json!({"groups": "eng,ops", "session": ""})
    );
    assert_eq!(
        keys.hits.load(Ordering::SeqCst),
        1,
        "the keys were fetched once"
    );
}

#[tokio::test]
async fn an_authorization_header_is_accepted_too() {
    let keys = jwks().await;
    let authorizer = authorizer_for(&keys, TokenUse::Id).await;
    let bearer = format!("Bearer {}", token_for("bob-sub", &[]));
    let answer = authorize(
        &authorizer,
        connect_event(&[("Authorization", &bearer)], &[]),
    )
    .await
    .expect("allowed");
    assert_eq!(effect(&answer), "Allow");
    assert_eq!(answer["principalId"], "bob-sub");
    assert_eq!(answer["context"], json!({"groups": "", "session": ""}));
}

#[tokio::test]
async fn an_expired_or_badly_signed_token_is_unauthorized() {
    let keys = jwks().await;
    let authorizer = authorizer_for(&keys, TokenUse::Id).await;
    let mut expired = id_claims("alice-sub", &[]);
    expired["exp"] = json!(now() - 600);
    let expired = subprotocols(&signed(&expired));
    assert_unauthorized(
        authorize(
            &authorizer,
            connect_event(&[("Sec-WebSocket-Protocol", &expired)], &[]),
        )
        .await,
        "it has expired",
    );
    // Signed with another key than the one its header names.
    let forged = subprotocols(&sign(&id_claims("alice-sub", &[]), "key2", "key1"));
    assert_unauthorized(
        authorize(
            &authorizer,
            connect_event(&[("Sec-WebSocket-Protocol", &forged)], &[]),
        )
        .await,
        "signature does not match",
    );
    assert_unauthorized(
        authorize(
            &authorizer,
            connect_event(&[("Authorization", "Bearer not-a-jwt")], &[]),
        )
        .await,
        "not a JWT",
    );
}

#[tokio::test]
async fn no_token_is_unauthorized() {
    let keys = jwks().await;
    let authorizer = authorizer_for(&keys, TokenUse::Id).await;
    for headers in [
        &[][..],
        &[("Sec-WebSocket-Protocol", "rag.v1")],
        &[("Sec-WebSocket-Protocol", "rag.v1, bearer.")],
        &[("Authorization", "Basic YWxpY2U6c2VjcmV0")],
    ] {
        assert_unauthorized(
            authorize(&authorizer, connect_event(headers, &[])).await,
            "no token",
        );
    }
}

#[tokio::test]
async fn a_token_in_the_query_string_is_unauthorized_even_beside_a_valid_header() {
    let keys = jwks().await;
    let authorizer = authorizer_for(&keys, TokenUse::Id).await;
    let token = token_for("alice-sub", &[]);
    assert_unauthorized(
        authorize(&authorizer, connect_event(&[], &[("access_token", &token)])).await,
        "query string",
    );
    let protocols = subprotocols(&token);
    assert_unauthorized(
        authorize(
            &authorizer,
            connect_event(
                &[("Sec-WebSocket-Protocol", &protocols)],
                &[("access_token", &token)],
            ),
        )
        .await,
        "query string",
    );
}

#[tokio::test]
async fn a_valid_token_for_another_client_or_use_is_denied() {
    let keys = jwks().await;
    let authorizer = authorizer_for(&keys, TokenUse::Id).await;
    let mut other_client = id_claims("alice-sub", &[]);
    other_client["aud"] = json!("another-client");
    let access = json!({"sub": "alice-sub", "iss": ISSUER, "token_use": "access",
                        "client_id": CLIENT, "exp": now() + 600});
    for claims in [other_client, access] {
        let protocols = subprotocols(&signed(&claims));
        let answer = authorize(
            &authorizer,
            connect_event(&[("Sec-WebSocket-Protocol", &protocols)], &[]),
        )
        .await
        .expect("an explicit Deny, not an error");
        assert_eq!(effect(&answer), "Deny", "{claims}");
        assert_eq!(answer["context"], json!({}), "nothing about the user");
    }

    // An authorizer that takes access tokens denies id tokens and allows its client's.
    let access_authorizer = authorizer_for(&keys, TokenUse::Access).await;
    let id_token = subprotocols(&token_for("alice-sub", &[]));
    let answer = authorize(
        &access_authorizer,
        connect_event(&[("Sec-WebSocket-Protocol", &id_token)], &[]),
    )
    .await
    .expect("a Deny");
    assert_eq!(effect(&answer), "Deny");
    let access_token = subprotocols(&signed(
        &json!({"sub": "alice-sub", "iss": ISSUER, "token_use": "access",
                "client_id": CLIENT, "exp": now() + 600}),
    ));
    let answer = authorize(
        &access_authorizer,
        connect_event(&[("Sec-WebSocket-Protocol", &access_token)], &[]),
    )
    .await
    .expect("allowed");
    assert_eq!(effect(&answer), "Allow");
}

#[tokio::test]
async fn a_session_id_that_is_not_valid_is_denied() {
    let keys = jwks().await;
    let authorizer = authorizer_for(&keys, TokenUse::Id).await;
    let protocols = subprotocols(&token_for("alice-sub", &["eng"]));
    for session in ["not valid", "", "é"] {
        let answer = authorize(
            &authorizer,
            connect_event(
                &[("Sec-WebSocket-Protocol", &protocols)],
                &[("session", session)],
            ),
        )
        .await
        .expect("a Deny");
        assert_eq!(effect(&answer), "Deny", "session {session:?}");
        assert_eq!(answer["principalId"], "alice-sub");
        assert_eq!(answer["context"], json!({}));
    }
}

#[tokio::test]
async fn a_group_whose_name_holds_the_separator_or_a_quote_is_left_out() {
    let keys = jwks().await;
    let authorizer = authorizer_for(&keys, TokenUse::Id).await;
    let protocols = subprotocols(&token_for(
        "alice-sub",
        &["eng", "staff,admin", "say \"hi\"", "back\\slash"],
    ));
    let answer = authorize(
        &authorizer,
        connect_event(&[("Sec-WebSocket-Protocol", &protocols)], &[]),
    )
    .await
    .expect("allowed");
    assert_eq!(
        answer["context"]["groups"], "eng",
        "`staff,admin` must not read back as the group admin"
    );
}

/// An authorizer whose JWKS cannot be fetched: nothing listens on port 9 of loopback, as if
/// Cognito were unreachable.
fn unreachable_keys() -> Authorizer {
    Authorizer::new(
        JwtVerifier::new(JwtConfig {
            jwks_url: "http://127.0.0.1:9/.well-known/jwks.json".to_string(),
            issuer: ISSUER.to_string(),
            client_ids: vec![CLIENT.to_string()],
            token_use: TokenUse::Id,
            leeway: Duration::from_secs(5),
            refresh_interval: Duration::from_secs(60),
        })
        .expect("a verifier"),
    )
}

#[tokio::test]
async fn keys_that_cannot_be_fetched_fail_the_service_not_the_user() {
    let authorizer = unreachable_keys();
    let protocols = subprotocols(&token_for("carol-sub", &["eng"]));
    let error = authorize(
        &authorizer,
        connect_event(&[("Sec-WebSocket-Protocol", &protocols)], &[]),
    )
    .await
    .expect_err("not allowed");
    assert!(
        matches!(error, AuthorizerError::BadEvent(_)),
        "a 500, not Unauthorized: {error:?}"
    );
}

#[tokio::test]
async fn while_the_keys_cannot_be_fetched_every_token_is_the_services_failure() {
    let authorizer = unreachable_keys();
    // The first token fetches and fails; the next ones, within the refresh interval, do not
    // fetch again and are told the same.
    for sub in ["carol-sub", "dave-sub", "erin-sub"] {
        let protocols = subprotocols(&token_for(sub, &[]));
        let error = authorize(
            &authorizer,
            connect_event(&[("Sec-WebSocket-Protocol", &protocols)], &[]),
        )
        .await
        .expect_err("not allowed");
        assert!(
            matches!(error, AuthorizerError::BadEvent(_)),
            "{sub}: {error:?}"
        );
    }
    assert_eq!(authorizer.verifier().fetches(), 1, "one fetch per interval");
}
