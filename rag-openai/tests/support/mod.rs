//! A loopback server that speaks the chat completions wire format: scripted replies, one per
//! request, as JSON error bodies or as `text/event-stream` bodies sent in pieces (each piece
//! its own write, with pauses between them), which may stall or have their connection cut.

#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rag_core::{Chunk, ChunkStream, Error, StopReason, Usage};
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

impl Recorded {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the request body is JSON")
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }
}

/// A piece of a streamed body.
#[derive(Debug, Clone)]
pub enum Part {
    /// Bytes written (and flushed) as one piece.
    Bytes(Bytes),
    /// A pause before the next piece.
    Pause(Duration),
    /// Nothing more is sent, and the body never ends.
    Stall,
    /// The connection is dropped mid-body (no final chunk of the chunked encoding).
    Cut,
}

/// One scripted reply.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A whole body with a status and a content type.
    Whole {
        status: u16,
        content_type: &'static str,
        body: String,
    },
    /// A 200 `text/event-stream` body in pieces.
    Sse(Vec<Part>),
}

impl Reply {
    /// A failed call with a JSON body.
    pub fn status(status: u16, body: Value) -> Self {
        Reply::Whole {
            status,
            content_type: "application/json",
            body: body.to_string(),
        }
    }

    /// A failed call with an OpenAI error object.
    pub fn error(status: u16, kind: &str, message: &str) -> Self {
        Reply::status(
            status,
            json!({"error": {"message": message, "type": kind, "param": null, "code": null}}),
        )
    }

    /// An event stream of whole events, each its own write.
    pub fn events(events: impl IntoIterator<Item = String>) -> Self {
        Reply::Sse(
            events
                .into_iter()
                .map(|e| Part::Bytes(Bytes::from(e)))
                .collect(),
        )
    }
}

#[derive(Default)]
struct State {
    requests: Vec<Recorded>,
    script: VecDeque<Reply>,
}

/// The server; it stops when dropped.
pub struct TestServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    /// Starts a server on 127.0.0.1 with an ephemeral port that answers with `script`, one
    /// reply per request; once the script is used up it answers 500.
    pub async fn start(script: impl IntoIterator<Item = Reply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            requests: Vec::new(),
            script: script.into_iter().collect(),
        }));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        TestServer { addr, state, task }
    }

    /// The base URL, as a user gives it: `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// How many requests arrived.
    pub fn hits(&self) -> usize {
        self.state.lock().unwrap().requests.len()
    }
}

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<BoxBody<Bytes, std::io::Error>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let reply = {
        let mut state = state.lock().unwrap();
        state.requests.push(Recorded {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            headers: parts.headers,
            body: body.to_vec(),
        });
        state.script.pop_front()
    };
    let reply = reply.unwrap_or_else(|| Reply::error(500, "server_error", "no scripted reply"));
    Ok(match reply {
        Reply::Whole {
            status,
            content_type,
            body,
        } => Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(
                Full::new(Bytes::from(body))
                    .map_err(|never| match never {})
                    .boxed(),
            )
            .unwrap(),
        Reply::Sse(parts) => {
            let stream = futures::stream::unfold(parts.into_iter(), |mut parts| async move {
                loop {
                    match parts.next()? {
                        Part::Bytes(bytes) => return Some((Ok(Frame::data(bytes)), parts)),
                        Part::Pause(d) => tokio::time::sleep(d).await,
                        Part::Stall => futures::future::pending::<()>().await,
                        Part::Cut => {
                            return Some((
                                Err(std::io::Error::other("connection cut by the test")),
                                parts,
                            ))
                        }
                    }
                }
            });
            Response::builder()
                .status(200)
                .header("content-type", "text/event-stream; charset=utf-8")
                .header("cache-control", "no-cache")
                .body(BodyExt::boxed(StreamBody::new(stream)))
                .unwrap()
        }
    })
}

/// A `data:` event of a `chat.completion.chunk` with `choices` (LF line ends).
pub fn chunk_event(choices: Value, usage: Value) -> String {
    format!(
        "data: {}\n\n",
        json!({
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": "test-model",
            "choices": choices,
            "usage": usage,
        })
    )
}

/// The event of one text delta.
pub fn text_event(text: &str) -> String {
    chunk_event(
        json!([{"index": 0, "delta": {"content": text}, "finish_reason": null}]),
        Value::Null,
    )
}

/// The event of the finish reason.
pub fn finish_event(reason: &str) -> String {
    chunk_event(
        json!([{"index": 0, "delta": {}, "finish_reason": reason}]),
        Value::Null,
    )
}

/// The final usage event (empty `choices`).
pub fn usage_event(prompt: u64, completion: u64) -> String {
    chunk_event(
        json!([]),
        json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}),
    )
}

pub const DONE: &str = "data: [DONE]\n\n";

/// The pieces of the test answer.
pub const PIECES: [&str; 5] = ["Lambda ", "runs code ", "without servers", " — façade", "."];

/// The answer `PIECES` make.
pub fn answer() -> String {
    PIECES.concat()
}

/// A complete, real-shaped stream of the test answer: a role chunk, the text, the finish
/// reason, usage, `[DONE]`.
pub fn answer_events() -> Vec<String> {
    let mut events = vec![chunk_event(
        json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
        Value::Null,
    )];
    events.extend(PIECES.iter().map(|p| text_event(p)));
    events.push(finish_event("stop"));
    events.push(usage_event(42, 7));
    events.push(DONE.to_owned());
    events
}

/// The chunks `answer_events` decode to.
pub fn answer_chunks() -> Vec<Chunk> {
    let mut chunks: Vec<Chunk> = PIECES.iter().map(|p| Chunk::Text((*p).into())).collect();
    chunks.push(Chunk::Stop(StopReason::EndTurn));
    chunks.push(Chunk::Usage(Usage::new(42, 7)));
    chunks
}

/// Every chunk of `stream` up to its first error, and that error; checks the stream ends
/// after an error.
pub async fn collect(mut stream: ChunkStream) -> (Vec<Chunk>, Option<Error>) {
    let mut chunks = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => chunks.push(chunk),
            Err(err) => {
                assert!(
                    stream.next().await.is_none(),
                    "the stream goes on after {err}"
                );
                return (chunks, Some(err));
            }
        }
    }
    (chunks, None)
}

/// The text of `chunks`.
pub fn text(chunks: &[Chunk]) -> String {
    chunks
        .iter()
        .filter_map(|c| match c {
            Chunk::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}
