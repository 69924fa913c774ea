//! What the Lambda handler tests share: a loopback `@connections` endpoint that records every
//! frame, the events of each route, and the AWS clients of moto's DynamoDB and SQS. The test
//! files that use it also include rag-bedrock's loopback server as `bedrock`.

#![allow(dead_code, unreachable_pub)]

use std::time::Instant;

use serde_json::{json, Value};

use crate::bedrock::{Reply, TestServer};

/// The variable naming moto's endpoint (DynamoDB and SQS), as in rag-dynamodb's tests.
pub const ENDPOINT_VAR: &str = "RAG_TEST_DYNAMODB_ENDPOINT";

/// moto's endpoint; a failure (never a silent skip) telling how to run the tests when unset.
pub fn moto_endpoint() -> String {
    match std::env::var(ENDPOINT_VAR) {
        Ok(url) if !url.trim().is_empty() => url.trim().to_owned(),
        _ => panic!(
            "{ENDPOINT_VAR} is not set: the Lambda handler tests need moto's server (DynamoDB \
             and SQS) on loopback. Run the project's test command `scripts/test.sh`, or start \
             one with `scripts/moto.sh start` and run \
             `{ENDPOINT_VAR}=$(cat target/moto.endpoint) cargo test -p rag-lambda`"
        ),
    }
}

/// An SDK configuration for moto or a loopback server: test credentials, us-east-1.
pub fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    use aws_config::{BehaviorVersion, Region};
    use aws_sdk_dynamodb::config::Credentials;
    aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::SharedCredentialsProvider::new(
            Credentials::for_tests(),
        ))
        .endpoint_url(endpoint)
        .build()
}

/// One PostToConnection the endpoint accepted.
#[derive(Debug, Clone)]
pub struct Post {
    /// The connection id from the path.
    pub connection: String,
    /// The frame.
    pub body: Vec<u8>,
    /// When it arrived.
    pub at: Instant,
}

impl Post {
    /// The frame as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a frame is JSON")
    }
}

/// How the endpoint answers.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    /// 200 to every post.
    Accept,
    /// 200 to the first `n` posts, then `410 GoneException`: the client left.
    GoneAfter(usize),
    /// 200 to the first `n` posts, then `403 ForbiddenException`.
    ForbiddenAfter(usize),
}

/// The most posts a test makes.
const MAX_POSTS: usize = 10_000;

/// A loopback `@connections` endpoint of an API's stage `prod`: rag-bedrock's loopback server
/// with a script of PostToConnection answers. It stops when dropped.
pub struct Connections {
    server: TestServer,
    /// How many posts the script accepts before it refuses the rest.
    accepts: usize,
}

impl Connections {
    /// Starts the endpoint on 127.0.0.1.
    pub async fn start(answer: Answer) -> Self {
        let (accepts, refusal) = match answer {
            Answer::Accept => (MAX_POSTS, None),
            Answer::GoneAfter(n) => (n, Some((410, "GoneException"))),
            Answer::ForbiddenAfter(n) => (n, Some((403, "ForbiddenException"))),
        };
        let script = (0..MAX_POSTS).map(|i| match refusal {
            Some((status, error_type)) if i >= accepts => Reply::error(
                status,
                error_type,
                &format!("{error_type} for the connection"),
            ),
            _ => Reply::Json {
                status: 200,
                error_type: None,
                body: String::new(),
            },
        });
        Connections {
            server: TestServer::start(script).await,
            accepts,
        }
    }

    /// The callback URL of the stage, as `https://{domain}/{stage}` is in AWS.
    pub fn url(&self) -> String {
        format!("{}/prod", self.server.url())
    }

    /// Every post, accepted or not, in order, with the connection id from its path.
    fn all(&self) -> Vec<Post> {
        self.server
            .requests()
            .into_iter()
            .map(|r| {
                assert_eq!(r.method, "POST", "PostToConnection is a POST");
                let path = r.path.replace("%40", "@").replace("%3D", "=");
                let connection = path
                    .strip_prefix("/prod/@connections/")
                    .unwrap_or_else(|| panic!("not a PostToConnection path: {path}"));
                Post {
                    connection: connection.to_string(),
                    body: r.body,
                    at: r.at,
                }
            })
            .collect()
    }

    /// The frames accepted, in order.
    pub fn posts(&self) -> Vec<Post> {
        self.all().into_iter().take(self.accepts).collect()
    }

    /// The accepted frames as JSON.
    pub fn frames(&self) -> Vec<Value> {
        self.posts().iter().map(Post::json).collect()
    }

    /// How many posts were refused.
    pub fn refused(&self) -> usize {
        self.all().len().saturating_sub(self.accepts)
    }
}

/// The event of a message on the `$default` route as the template's request template passes
/// it to the function (asynchronously, the body base64-encoded): the `requestContext` of a
/// WebSocket message event, with the authorizer's `principalId`, `groups` and `session`.
pub fn message_event(connection: &str, body: &str, principal: &str, session: &str) -> Value {
    use base64::Engine as _;
    json!({
        "requestContext": {
            "routeKey": "$default",
            "eventType": "MESSAGE",
            "messageId": "TXEaAfYzoAMCLqg=",
            "extendedRequestId": "TXEaAFl4oAMFqLA=",
            "requestTime": "07/Jan/2019:09:20:57 +0000",
            "messageDirection": "IN",
            "stage": "prod",
            "connectedAt": 1_547_230_720_092_i64,
            "requestTimeEpoch": 1_547_230_720_500_i64,
            "requestId": format!("req-{connection}"),
            "domainName": "abc123defg.execute-api.us-east-1.amazonaws.com",
            "connectionId": connection,
            "apiId": "abc123defg",
            "authorizer": {"principalId": principal, "groups": "staff,public", "session": session}
        },
        "body": base64::engine::general_purpose::STANDARD.encode(body),
        "isBase64Encoded": true
    })
}

/// The talk's payload for `question`, with the client id `id`.
pub fn question(question: &str, id: &str) -> String {
    json!({"data": {"message": question, "id": id}, "timestamp": 1_700_000_000_000_i64}).to_string()
}
