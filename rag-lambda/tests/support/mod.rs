//! What the Lambda handler tests share: a loopback `@connections` endpoint that records every
//! frame, the events of each route, and the AWS clients of moto's DynamoDB and SQS.

#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

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

/// One PostToConnection the endpoint received.
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

#[derive(Debug)]
struct State {
    posts: Vec<Post>,
    refused: usize,
    answer: Answer,
}

/// A loopback `@connections` endpoint of an API's stage `prod`; it stops when dropped.
pub struct Connections {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Connections {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Connections {
    /// Starts the endpoint on 127.0.0.1.
    pub async fn start(answer: Answer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            posts: Vec::new(),
            refused: 0,
            answer,
        }));
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(Arc::clone(&state), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        Connections { addr, state, task }
    }

    /// The callback URL of the stage, as `https://{domain}/{stage}` is in AWS.
    pub fn url(&self) -> String {
        format!("http://{}/prod", self.addr)
    }

    /// The frames accepted, in order.
    pub fn posts(&self) -> Vec<Post> {
        self.state.lock().unwrap().posts.clone()
    }

    /// The accepted frames as JSON.
    pub fn frames(&self) -> Vec<Value> {
        self.posts().iter().map(Post::json).collect()
    }

    /// How many posts were refused.
    pub fn refused(&self) -> usize {
        self.state.lock().unwrap().refused
    }
}

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().replace("%40", "@").replace("%3D", "=");
    let Some(connection) = path.strip_prefix("/prod/@connections/") else {
        return Ok(Response::builder()
            .status(404)
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap());
    };
    assert_eq!(
        parts.method,
        hyper::Method::POST,
        "PostToConnection is a POST"
    );
    let mut state = state.lock().unwrap();
    let accepted = state.posts.len();
    let refusal = match state.answer {
        Answer::Accept => None,
        Answer::GoneAfter(n) => (accepted >= n).then_some((410, "GoneException")),
        Answer::ForbiddenAfter(n) => (accepted >= n).then_some((403, "ForbiddenException")),
    };
    Ok(match refusal {
        Some((status, error_type)) => {
            state.refused += 1;
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .header("x-amzn-ErrorType", error_type)
                .body(Full::new(Bytes::from(
                    json!({"message": format!("{error_type} for {connection}")}).to_string(),
                )))
                .unwrap()
        }
        None => {
            state.posts.push(Post {
                connection: connection.to_string(),
                body: body.to_vec(),
                at: Instant::now(),
            });
            Response::builder()
                .status(200)
                .body(Full::new(Bytes::new()))
                .unwrap()
        }
    })
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
