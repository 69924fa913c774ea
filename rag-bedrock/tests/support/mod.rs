//! A loopback server that speaks Bedrock's wire format, for tests through the real AWS SDK.
//!
//! It records every request (method, path, headers, body) and answers from a script:
//! JSON error bodies with `x-amzn-ErrorType` for failed calls, and
//! `application/vnd.amazon.eventstream` bodies built from real event-stream frames (prelude,
//! headers, CRC32s) for streams, which may stall or be cut off.

#![allow(dead_code, unreachable_pub)]

pub mod families;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
    /// When the whole request had arrived.
    pub at: Instant,
}

impl Recorded {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

/// A piece of a streamed body.
#[derive(Debug, Clone)]
pub enum Part {
    /// Bytes sent as one body chunk.
    Bytes(Bytes),
    /// A pause before the next part.
    Pause(Duration),
    /// Nothing more is sent, and the body never ends.
    Stall,
}

/// One scripted reply.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A JSON body with a status and, for errors, an `x-amzn-ErrorType` header.
    Json {
        status: u16,
        error_type: Option<String>,
        body: String,
    },
    /// A 200 event-stream body.
    Stream(Vec<Part>),
    /// A 200 JSON body sent in parts (which may stall or stop short).
    JsonParts(Vec<Part>),
    /// No response at all: the request is read and left unanswered.
    Hang,
}

impl Reply {
    /// A failed call as restJson1 services answer it.
    pub fn error(status: u16, error_type: &str, message: &str) -> Self {
        Reply::Json {
            status,
            error_type: Some(error_type.to_owned()),
            body: serde_json::json!({ "message": message }).to_string(),
        }
    }

    /// A 200 JSON body.
    pub fn ok_json(body: Value) -> Self {
        Reply::Json {
            status: 200,
            error_type: None,
            body: body.to_string(),
        }
    }

    /// An event stream of whole frames, each sent as its own body chunk.
    pub fn frames(frames: impl IntoIterator<Item = Bytes>) -> Self {
        Reply::Stream(frames.into_iter().map(Part::Bytes).collect())
    }
}

#[derive(Default)]
struct State {
    requests: Vec<Recorded>,
    script: VecDeque<Reply>,
    /// Streamed bodies still being sent: a client that stops reading (and closes the
    /// connection) ends its body, so this tells a cancelled stream from a hung one.
    open_streams: usize,
}

/// Counts a streamed body as open while it lives.
struct OpenStream(Arc<Mutex<State>>);

impl OpenStream {
    fn new(state: Arc<Mutex<State>>) -> Self {
        state.lock().unwrap().open_streams += 1;
        OpenStream(state)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.lock().unwrap().open_streams -= 1;
    }
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
            open_streams: 0,
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

    /// The endpoint URL to give the SDK client.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// How many requests arrived.
    pub fn hits(&self) -> usize {
        self.state.lock().unwrap().requests.len()
    }

    /// How many streamed bodies are still being sent (neither finished nor dropped by a
    /// client that went away).
    pub fn open_streams(&self) -> usize {
        self.state.lock().unwrap().open_streams
    }
}

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<BoxBody<Bytes, Infallible>>, Infallible> {
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
            at: Instant::now(),
        });
        state.script.pop_front()
    };
    let reply =
        reply.unwrap_or_else(|| Reply::error(500, "InternalServerException", "no scripted reply"));
    if let Reply::Hang = reply {
        futures::future::pending::<()>().await;
    }
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
        Reply::Stream(parts) => streamed(parts, "application/vnd.amazon.eventstream", state),
        Reply::JsonParts(parts) => streamed(parts, "application/json", state),
        Reply::Hang => unreachable!("answered above"),
    })
}

fn streamed(
    parts: Vec<Part>,
    content_type: &str,
    state: Arc<Mutex<State>>,
) -> Response<BoxBody<Bytes, Infallible>> {
    let open = OpenStream::new(state);
    let stream =
        futures::stream::unfold((parts.into_iter(), open), |(mut parts, open)| async move {
            loop {
                match parts.next()? {
                    Part::Bytes(bytes) => {
                        return Some((Ok::<_, Infallible>(Frame::data(bytes)), (parts, open)))
                    }
                    Part::Pause(d) => tokio::time::sleep(d).await,
                    Part::Stall => futures::future::pending::<()>().await,
                }
            }
        });
    Response::builder()
        .status(200)
        .header("content-type", content_type)
        .header("x-amzn-bedrock-content-type", "application/json")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap()
}

/// The history of one conversation, kept in memory (rag-memory's store is not a dependency
/// of this crate): loads the newest turns, records what the pipeline saves.
#[derive(Debug, Default)]
pub struct OneConversation(pub Mutex<Vec<rag_core::Turn>>);

impl OneConversation {
    /// A conversation that already holds `turns`.
    pub fn with_turns(turns: Vec<rag_core::Turn>) -> Self {
        OneConversation(Mutex::new(turns))
    }

    /// The turns saved so far, oldest first.
    pub fn turns(&self) -> Vec<rag_core::Turn> {
        self.0.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl rag_core::HistoryStore for OneConversation {
    async fn load(
        &self,
        _: &rag_core::SessionId,
        max_turns: usize,
    ) -> rag_core::Result<Vec<rag_core::Turn>> {
        let turns = self.0.lock().unwrap();
        Ok(turns[turns.len().saturating_sub(max_turns)..].to_vec())
    }

    async fn append(&self, _: &rag_core::SessionId, turn: &rag_core::Turn) -> rag_core::Result<()> {
        self.0.lock().unwrap().push(turn.clone());
        Ok(())
    }

    async fn clear(&self, _: &rag_core::SessionId) -> rag_core::Result<()> {
        self.0.lock().unwrap().clear();
        Ok(())
    }

    /// Unclaimed while empty, then open to asks without an owner.
    async fn owner(&self, _: &rag_core::SessionId) -> rag_core::Result<rag_core::SessionOwner> {
        Ok(if self.0.lock().unwrap().is_empty() {
            rag_core::SessionOwner::Unclaimed
        } else {
            rag_core::SessionOwner::Anonymous
        })
    }
}

/// A whole ConverseStream answer of `pieces`: the message start, one text delta per piece,
/// the block and message stops with `stop_reason`, then the `metadata` event.
pub fn converse_answer(pieces: &[&str], stop_reason: &str, metadata: Value) -> Vec<Bytes> {
    let mut frames = vec![converse_event(
        "messageStart",
        serde_json::json!({"role": "assistant"}),
    )];
    frames.extend(pieces.iter().map(|p| {
        converse_event(
            "contentBlockDelta",
            serde_json::json!({"contentBlockIndex": 0, "delta": {"text": p}}),
        )
    }));
    frames.push(converse_event(
        "contentBlockStop",
        serde_json::json!({"contentBlockIndex": 0}),
    ));
    frames.push(converse_event(
        "messageStop",
        serde_json::json!({"stopReason": stop_reason}),
    ));
    frames.push(converse_event("metadata", metadata));
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
pub fn chunk(model_json: &str) -> Bytes {
    let b64 = base64::engine::general_purpose::STANDARD.encode(model_json);
    frame(
        &[
            (":event-type", "chunk"),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        serde_json::json!({ "bytes": b64 }).to_string(),
    )
}

/// A ConverseStream event of type `event_type` (`messageStart`, `contentBlockDelta`, ...).
pub fn converse_event(event_type: &str, payload: Value) -> Bytes {
    frame(
        &[
            (":event-type", event_type),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload.to_string(),
    )
}

/// An in-stream exception (`throttlingException`, `modelStreamErrorException`, ...).
pub fn exception(exception_type: &str, message: &str) -> Bytes {
    frame(
        &[
            (":exception-type", exception_type),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        serde_json::json!({ "message": message }).to_string(),
    )
}

pub mod client {
    //! Real SDK clients pointed at a [`super::TestServer`].

    use std::time::Duration;

    use aws_sdk_bedrockruntime::config::{
        retry::RetryConfig, BehaviorVersion, Credentials, Region,
    };

    /// Retries fast enough for tests: 3 attempts, 1 ms initial backoff.
    pub fn fast_retry() -> RetryConfig {
        RetryConfig::standard()
            .with_max_attempts(3)
            .with_initial_backoff(Duration::from_millis(1))
            .with_max_backoff(Duration::from_millis(5))
    }

    /// A Bedrock Runtime client for `url` with test credentials and a fixed region.
    pub fn runtime(url: &str) -> aws_sdk_bedrockruntime::Client {
        let config = aws_sdk_bedrockruntime::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::for_tests())
            .endpoint_url(url)
            .retry_config(fast_retry())
            .build();
        aws_sdk_bedrockruntime::Client::from_conf(config)
    }

    /// A Bedrock Agent Runtime client for `url`.
    pub fn agent_runtime(url: &str) -> aws_sdk_bedrockagentruntime::Client {
        use aws_sdk_bedrockagentruntime::config as c;
        let config = c::Builder::new()
            .behavior_version(c::BehaviorVersion::latest())
            .region(c::Region::new("us-east-1"))
            .credentials_provider(c::Credentials::for_tests())
            .endpoint_url(url)
            .retry_config(fast_retry())
            .build();
        aws_sdk_bedrockagentruntime::Client::from_conf(config)
    }
}

/// Every chunk of `stream` up to its first error, and that error; checks the stream ends
/// after an error.
pub async fn collect(
    mut stream: rag_core::ChunkStream,
) -> (Vec<rag_core::Chunk>, Option<rag_core::Error>) {
    use futures::StreamExt;
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
pub fn text(chunks: &[rag_core::Chunk]) -> String {
    chunks
        .iter()
        .filter_map(|c| match c {
            rag_core::Chunk::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

/// The last stop reason of `chunks`.
pub fn stop(chunks: &[rag_core::Chunk]) -> Option<rag_core::StopReason> {
    chunks.iter().rev().find_map(|c| match c {
        rag_core::Chunk::Stop(s) => Some(s.clone()),
        _ => None,
    })
}

/// A request path with its percent-encoded colons decoded.
pub fn decoded_path(recorded: &Recorded) -> String {
    recorded.path.replace("%3A", ":").replace("%3a", ":")
}

/// An InvokeModel answer of an image model: `{"images": [<base64>], "error": null}`.
pub fn image_answer(png: &[u8]) -> Reply {
    Reply::ok_json(serde_json::json!({
        "images": [base64::engine::general_purpose::STANDARD.encode(png)],
        "error": null
    }))
}
