//! A loopback server speaking Kendra's awsJson 1.1 protocol, and a real SDK client pointed at
//! it.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_kendra::config::retry::RetryConfig;
use aws_sdk_kendra::config::{BehaviorVersion, Credentials, Region};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rag_kendra::{KendraRetriever, KendraRetrieverBuilder};
use serde_json::{json, Value};
use tokio::net::TcpListener;

pub const INDEX: &str = "a1b2c3d4-0000-4000-8000-00000000cafe";

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `Retrieve` or `Query` (the `X-Amz-Target` operation after the service prefix).
    pub operation: String,
    /// The full `X-Amz-Target` header.
    pub target: String,
    /// The `Content-Type` header.
    pub content_type: String,
    /// Whether the request was signed (`Authorization: AWS4-HMAC-SHA256 ...`).
    pub signed: bool,
    /// The body as JSON.
    pub body: Value,
}

/// A scripted reply.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with this JSON body.
    Ok(Value),
    /// An awsJson error: this status with `{"__type": kind, "message": message}`.
    Error {
        status: u16,
        kind: &'static str,
        message: &'static str,
    },
    /// This status and raw body.
    Raw { status: u16, body: &'static str },
    /// This status and these bytes as the body, whatever they are.
    Bytes { status: u16, body: Vec<u8> },
}

impl Reply {
    pub fn error(status: u16, kind: &'static str, message: &'static str) -> Self {
        Reply::Error {
            status,
            kind,
            message,
        }
    }
}

type Handler = dyn Fn(&Recorded, usize) -> Reply + Send + Sync;

/// The fake Kendra endpoint.
pub struct FakeKendra {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeKendra {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeKendra {
    /// Starts a server that answers request number `n` (from 0) with `handler(request, n)`.
    pub async fn start(
        handler: impl Fn(&Recorded, usize) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let recorded = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    break;
                };
                let handler = handler.clone();
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let handler = handler.clone();
                        let recorded = recorded.clone();
                        async move { Ok::<_, Infallible>(serve(req, &*handler, &recorded).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeKendra {
            addr,
            requests,
            task,
        }
    }

    /// A server that always gives the same reply.
    pub async fn always(reply: Reply) -> Self {
        Self::start(move |_, _| reply.clone()).await
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// The real SDK client pointed at this server, with test credentials and a fixed region,
    /// and the SDK's standard retries (3 attempts) with a short backoff.
    pub fn client(&self) -> aws_sdk_kendra::Client {
        let conf = aws_sdk_kendra::Config::builder()
            .endpoint_url(self.url())
            .region(Region::new("us-west-2"))
            .credentials_provider(Credentials::new("test", "test", None, None, "test"))
            .behavior_version(BehaviorVersion::latest())
            .retry_config(fast_retry())
            .build();
        aws_sdk_kendra::Client::from_conf(conf)
    }

    /// A retriever builder on [`INDEX`] using [`FakeKendra::client`].
    pub fn retriever(&self) -> KendraRetrieverBuilder {
        KendraRetriever::builder()
            .with_client(self.client())
            .with_index_id(INDEX)
    }
}

pub fn fast_retry() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(3)
        .with_initial_backoff(Duration::from_millis(5))
        .with_max_backoff(Duration::from_millis(20))
}

async fn serve(
    req: Request<Incoming>,
    handler: &Handler,
    recorded: &Mutex<Vec<Recorded>>,
) -> Response<Full<Bytes>> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let target = header("x-amz-target");
    let content_type = header("content-type");
    let signed = header("authorization").starts_with("AWS4-HMAC-SHA256");
    let path_ok = req.method() == hyper::Method::POST && req.uri().path() == "/";
    let bytes = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if !path_ok {
        return respond(
            404,
            json!({"__type": "UnknownOperationException"}).to_string(),
        );
    }
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let operation = target
        .strip_prefix("AWSKendraFrontendService.")
        .unwrap_or_default()
        .to_owned();
    let request = Recorded {
        operation,
        target,
        content_type,
        signed,
        body,
    };
    let n = {
        let mut all = recorded.lock().unwrap();
        all.push(request.clone());
        all.len() - 1
    };
    match handler(&request, n) {
        Reply::Ok(v) => respond(200, v.to_string()),
        Reply::Error {
            status,
            kind,
            message,
        } => respond(
            status,
            json!({"__type": kind, "message": message}).to_string(),
        ),
        Reply::Raw { status, body } => respond(status, body.to_owned()),
        Reply::Bytes { status, body } => respond(status, body),
    }
}

fn respond(status: u16, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amzn-requestid", "00000000-0000-0000-0000-000000000000")
        .body(Full::new(body.into()))
        .expect("valid response")
}

/// A Retrieve result item as Kendra sends it.
pub fn retrieve_item(id: &str, text: &str, confidence: &str) -> Value {
    json!({
        "Id": id,
        "DocumentId": format!("s3://docs/{id}.html"),
        "DocumentTitle": format!("Title {id}"),
        "Content": text,
        "DocumentURI": format!("https://docs.example.com/{id}"),
        "DocumentAttributes": [
            {"Key": "_category", "Value": {"StringValue": "guide"}},
            {"Key": "_created_at", "Value": {"DateValue": 1704153600}},
            {"Key": "page", "Value": {"LongValue": 3}}
        ],
        "ScoreAttributes": {"ScoreConfidence": confidence}
    })
}

/// A Retrieve response holding `items`.
pub fn retrieve_response(items: Vec<Value>) -> Value {
    json!({"QueryId": "q-1", "ResultItems": items})
}

/// The page of a paged request (`PageNumber`, 1 when absent).
pub fn page_number(req: &Recorded) -> i64 {
    req.body["PageNumber"].as_i64().unwrap_or(1)
}
