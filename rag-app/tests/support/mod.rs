//! A loopback Bedrock for the app tests: the real AWS SDK client against 127.0.0.1, with
//! replies chosen per request by the test (so that nodes running at once each get theirs),
//! in Bedrock's wire format: event-stream frames with their CRCs for streams, JSON bodies
//! with `x-amzn-ErrorType` for errors.

#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_bedrockruntime::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use base64::Engine as _;
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub body: Vec<u8>,
}

impl Recorded {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }

    /// The model id of the path (`/model/{id}/...`), percent-decoded.
    pub fn model(&self) -> String {
        let rest = self.path.trim_start_matches("/model/");
        let id = rest.split('/').next().unwrap_or_default();
        id.replace("%3A", ":").replace("%3a", ":")
    }

    /// The text of every message of a Claude Messages body, joined.
    pub fn prompt_text(&self) -> String {
        let body = self.json();
        let mut out = String::new();
        for m in body["messages"].as_array().into_iter().flatten() {
            for block in m["content"].as_array().into_iter().flatten() {
                if let Some(t) = block["text"].as_str() {
                    out.push_str(t);
                }
            }
        }
        out
    }
}

/// A piece of a streamed body.
#[derive(Debug, Clone)]
pub enum Part {
    Bytes(Bytes),
    Pause(Duration),
    /// Nothing more is sent, and the body never ends.
    Stall,
}

/// A reply.
#[derive(Debug, Clone)]
pub enum Reply {
    Json {
        status: u16,
        error_type: Option<String>,
        body: String,
    },
    Stream(Vec<Part>),
}

impl Reply {
    /// A failed call.
    pub fn error(status: u16, error_type: &str, message: &str) -> Self {
        Reply::Json {
            status,
            error_type: Some(error_type.to_owned()),
            body: json!({ "message": message }).to_string(),
        }
    }

    /// A 200 JSON body (InvokeModel).
    pub fn ok_json(body: Value) -> Self {
        Reply::Json {
            status: 200,
            error_type: None,
            body: body.to_string(),
        }
    }

    /// A Claude Messages stream that answers `text` in pieces of a few words.
    pub fn claude(text: &str) -> Self {
        Reply::Stream(claude_frames(text).into_iter().map(Part::Bytes).collect())
    }
}

/// The frames of a Claude Messages stream answering `text`.
pub fn claude_frames(text: &str) -> Vec<Bytes> {
    let mut frames = vec![
        chunk(
            &json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
            "model": "claude", "content": [], "usage": {"input_tokens": 42, "output_tokens": 1}}}),
        ),
        chunk(
            &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
    ];
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    for piece in words.chunks(2) {
        frames.push(chunk(&json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": piece.concat()}})));
    }
    frames.push(chunk(&json!({"type": "content_block_stop", "index": 0})));
    frames.push(chunk(&json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
        "usage": {"output_tokens": 7}})));
    frames.push(chunk(&json!({"type": "message_stop",
        "amazon-bedrock-invocationMetrics": {"inputTokenCount": 42, "outputTokenCount": 7,
            "invocationLatency": 10, "firstByteLatency": 5}})));
    frames
}

/// One event-stream frame.
pub fn frame(headers: &[(&str, &str)], payload: impl Into<Bytes>) -> Bytes {
    let message = Message::new_from_parts(
        headers
            .iter()
            .map(|(k, v)| Header::new(k.to_string(), HeaderValue::String(v.to_string().into())))
            .collect(),
        payload,
    );
    let mut out = Vec::new();
    write_message_to(&message, &mut out).expect("frame encodes");
    Bytes::from(out)
}

/// An InvokeModelWithResponseStream `chunk` event carrying `model_json`.
pub fn chunk(model_json: &Value) -> Bytes {
    let b64 = base64::engine::general_purpose::STANDARD.encode(model_json.to_string());
    frame(
        &[
            (":event-type", "chunk"),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        json!({ "bytes": b64 }).to_string(),
    )
}

/// Chooses the reply to a request (it may wait, to hold requests in flight together).
pub type Handler = Arc<dyn Fn(Recorded) -> BoxFuture<'static, Reply> + Send + Sync>;

/// The server; it stops when dropped.
pub struct Bedrock {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    /// Set when a streamed body was dropped before its end (the client went away).
    pub cancelled: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Bedrock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sets its flag when dropped unless the body reached its end (`finished`).
struct DropFlag {
    flag: Arc<AtomicBool>,
    finished: bool,
}

impl Drop for DropFlag {
    fn drop(&mut self) {
        if !self.finished {
            self.flag.store(true, Ordering::SeqCst);
        }
    }
}

impl Bedrock {
    /// Starts a server on 127.0.0.1 that answers each request with `handler`'s reply.
    pub async fn start(
        handler: impl Fn(Recorded) -> BoxFuture<'static, Reply> + Send + Sync + 'static,
    ) -> Self {
        let handler: Handler = Arc::new(handler);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let cancelled = Arc::new(AtomicBool::new(false));
        let (shared, flag) = (requests.clone(), cancelled.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let (requests, handler, flag) = (shared.clone(), handler.clone(), flag.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        handle(requests.clone(), handler.clone(), flag.clone(), req)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        Bedrock {
            addr,
            requests,
            cancelled,
            task,
        }
    }

    /// The endpoint URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// The requests for `model`.
    pub fn requests_for(&self, model: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.model() == model)
            .collect()
    }

    /// A Bedrock Runtime client for this server (test credentials, no SDK retries).
    pub fn client(&self) -> aws_sdk_bedrockruntime::Client {
        let config = aws_sdk_bedrockruntime::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::for_tests())
            .endpoint_url(self.url())
            .build();
        aws_sdk_bedrockruntime::Client::from_conf(config)
    }
}

async fn handle(
    requests: Arc<Mutex<Vec<Recorded>>>,
    handler: Handler,
    cancelled: Arc<AtomicBool>,
    req: Request<Incoming>,
) -> Result<Response<BoxBody<Bytes, Infallible>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let recorded = Recorded {
        path: parts.uri.path().to_owned(),
        body: body.to_vec(),
    };
    requests.lock().unwrap().push(recorded.clone());
    let reply = handler(recorded).await;
    Ok(match reply {
        Reply::Json {
            status,
            error_type,
            body,
        } => {
            let mut builder = Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .header("x-amzn-requestid", "test-request");
            if let Some(error_type) = error_type {
                builder = builder.header("x-amzn-ErrorType", error_type);
            }
            builder.body(Full::new(Bytes::from(body)).boxed()).unwrap()
        }
        Reply::Stream(parts) => {
            let guard = DropFlag {
                flag: cancelled,
                finished: false,
            };
            let stream = futures::stream::unfold(
                (parts.into_iter(), guard),
                |(mut parts, mut guard)| async move {
                    loop {
                        match parts.next() {
                            Some(Part::Bytes(bytes)) => {
                                return Some((
                                    Ok::<_, Infallible>(Frame::data(bytes)),
                                    (parts, guard),
                                ))
                            }
                            Some(Part::Pause(d)) => tokio::time::sleep(d).await,
                            Some(Part::Stall) => futures::future::pending::<()>().await,
                            None => {
                                guard.finished = true;
                                drop(guard);
                                return None;
                            }
                        }
                    }
                },
            );
            Response::builder()
                .status(200)
                .header("content-type", "application/vnd.amazon.eventstream")
                .header("x-amzn-bedrock-content-type", "application/json")
                .body(BodyExt::boxed(StreamBody::new(stream)))
                .unwrap()
        }
    })
}
