//! The WebSocket service: routes, the upgrade check and one task per connection.
//!
//! Shared by the example's `main.rs` and by `tests/websocket.rs`, which builds the router
//! around a pipeline of its own.
//!
//! Protocol, in the shape of the reference architecture:
//!
//! - `GET /ws` upgrades to a WebSocket. With a token configured, the upgrade needs
//!   `Authorization: Bearer TOKEN` or `?access_token=TOKEN` (browsers cannot set headers on a
//!   WebSocket); anything else is refused with 401 before the upgrade. `?session=ID` resumes a
//!   conversation; without it the connection starts a new one.
//! - The server first sends `{"type":"session","session_id":"..."}`.
//! - The client sends `{"data":{"message":"..."},"timestamp":...}`; other fields are ignored.
//! - For each question the server sends `sources`, `token`s and one `done` or `error`, to
//!   that connection only. Questions of one connection are answered one at a time, in order;
//!   closing the connection cancels the answer in progress.
//! - A message that cannot be read gets an `error` frame, and the connection stays open.
//! - When the server stops ([`Shutdown`]), the answer in progress streams to its end; every
//!   question queued or arriving after that gets `{"type":"error","message":"the server is
//!   shutting down; ask again in a moment","retryable":true}`; once idle, the connection sends
//!   a Close frame with code 1001 ("going away") and ends. Upgrades are then refused with 503.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::StreamExt;
use rag::pipeline::ShutdownReport;
use rag::{Ask, Citation, Event, Pipeline, SessionId, StopReason, TurnId, Usage};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// Questions a connection may send while one is being answered; more are refused.
pub(crate) const MAX_QUEUED_QUESTIONS: usize = 8;

/// The `error` frame's message for questions the server will not answer because it stops.
pub(crate) const SHUTTING_DOWN: &str = "the server is shutting down; ask again in a moment";

/// How long a closing connection waits for the client to answer its Close frame: a client
/// that never answers must not hold the shutdown up.
const CLOSE_REPLY_WAIT: Duration = Duration::from_secs(1);

/// What the router needs.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    /// Answers the questions.
    pub(crate) pipeline: Pipeline,
    /// The bearer token that guards the upgrade, if any.
    pub(crate) token: Option<String>,
    /// Tells the connections when the server stops.
    pub(crate) shutdown: ShutdownSignal,
}

/// What [`Shutdown`] and the connections share.
#[derive(Debug)]
struct Shared {
    /// Set once, when the server starts to stop.
    stopping: watch::Sender<bool>,
    /// The connections open (upgrades accepted and not yet ended).
    open: watch::Sender<usize>,
}

/// Stops the service gracefully: the connections finish the answers in progress, refuse the
/// rest in plain words and close, then the pipeline's saves and dead letters finish. `main`
/// runs it on Ctrl-C or SIGTERM; tests run it directly.
#[derive(Debug)]
pub(crate) struct Shutdown(Arc<Shared>);

/// The connections' side of a [`Shutdown`]: whether the server is stopping. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct ShutdownSignal(Arc<Shared>);

/// What was left when [`Shutdown::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stopped {
    /// The pipeline's report: answers still streaming and background tasks (turn saves, dead
    /// letters) still running at the deadline.
    pub(crate) pipeline: ShutdownReport,
    /// Connections still open at the deadline.
    pub(crate) connections_left: usize,
}

impl Shutdown {
    /// A shutdown not yet begun, and the signal to put in [`AppState`].
    pub(crate) fn new() -> (Shutdown, ShutdownSignal) {
        let shared = Arc::new(Shared {
            stopping: watch::Sender::new(false),
            open: watch::Sender::new(0),
        });
        (Shutdown(Arc::clone(&shared)), ShutdownSignal(shared))
    }

    /// Tells the connections that the server stops, and refuses new upgrades from now on.
    /// [`Shutdown::run`] calls it; calling it again does nothing.
    pub(crate) fn begin(&self) {
        self.0.stopping.send_replace(true);
    }

    /// Resolves once the shutdown has begun: for `axum::serve`'s graceful shutdown, so the
    /// server stops accepting at the same moment.
    pub(crate) fn begun(&self) -> impl Future<Output = ()> + Send + 'static {
        let signal = ShutdownSignal(Arc::clone(&self.0));
        async move { signal.stopping().await }
    }

    /// Begins the shutdown, then waits up to `grace` for the answers in flight to end, for
    /// the turn saves and dead letters after them ([`Pipeline::shutdown`]), and for every
    /// connection to close.
    pub(crate) async fn run(self, pipeline: &Pipeline, grace: Duration) -> Stopped {
        self.begin();
        let mut open = self.0.open.subscribe();
        let closed = async move {
            // The count's read guard is let go at once: connections still ending update it.
            let _ = open.wait_for(|n| *n == 0).await.map(|_| ());
        };
        // Both waits start now and share the deadline.
        let (report, _) = tokio::join!(
            pipeline.shutdown(grace),
            tokio::time::timeout(grace, closed),
        );
        let connections_left = *self.0.open.borrow();
        Stopped {
            pipeline: report,
            connections_left,
        }
    }
}

impl ShutdownSignal {
    /// Whether the server is stopping.
    pub(crate) fn is_stopping(&self) -> bool {
        *self.0.stopping.borrow()
    }

    /// Resolves once the server is stopping (at once if it already is).
    pub(crate) async fn stopping(&self) {
        let mut stopping = self.0.stopping.subscribe();
        // The sender lives in `self`, so this only returns once the flag is set.
        let _ = stopping.wait_for(|stopping| *stopping).await;
    }

    /// Counts a connection as open until the returned guard is dropped.
    fn open_connection(&self) -> OpenConnection {
        self.0.open.send_modify(|n| *n += 1);
        OpenConnection(Arc::clone(&self.0))
    }
}

/// One open connection, counted until dropped.
#[derive(Debug)]
struct OpenConnection(Arc<Shared>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.send_modify(|n| *n -= 1);
    }
}

impl Stopped {
    /// Whether everything finished before the deadline.
    pub(crate) fn completed(&self) -> bool {
        self.pipeline.completed && self.connections_left == 0
    }

    /// What the shutdown finished, in one line for the log.
    pub(crate) fn summary(&self) -> String {
        if self.completed() {
            return "stopped: no answer was cut off, and the turn saves and dead letters finished"
                .to_string();
        }
        let report = self.pipeline;
        let left: Vec<String> = [
            (
                report.asks_left,
                "answer still streaming",
                "answers still streaming",
            ),
            (
                report.tasks_left,
                "turn save or dead letter unfinished",
                "turn saves or dead letters unfinished",
            ),
            (
                self.connections_left,
                "connection still open",
                "connections still open",
            ),
        ]
        .into_iter()
        .filter(|(n, ..)| *n > 0)
        .map(|(n, one, many)| format!("{n} {}", if n == 1 { one } else { many }))
        .collect();
        if left.is_empty() {
            // Everything ended just as the deadline passed.
            "stopped at the deadline".to_string()
        } else {
            format!("stopped: {} at the deadline", left.join(", "))
        }
    }
}

/// The service: `/` (the page) and `/ws` (the WebSocket).
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/ws", get(upgrade))
        .with_state(state)
}

/// A question from a client.
#[derive(Debug, Deserialize)]
pub(crate) struct ClientMessage {
    /// The payload. The `timestamp` (and any other field) is accepted and not used.
    pub(crate) data: ClientData,
}

/// The payload of a [`ClientMessage`].
#[derive(Debug, Deserialize)]
pub(crate) struct ClientData {
    /// The question.
    pub(crate) message: String,
}

/// What the server sends.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Frame {
    /// The conversation of this connection.
    Session {
        /// Pass it back as `?session=` to resume the conversation.
        session_id: String,
    },
    /// The passages the answer cites as `[index]`.
    Sources {
        /// In citation order.
        sources: Vec<Citation>,
    },
    /// A piece of the answer, in Markdown.
    Token {
        /// The text.
        text: String,
    },
    /// Something went wrong that did not stop the answer.
    Warning {
        /// What.
        message: String,
    },
    /// The answer is complete.
    Done {
        /// The saved turn.
        turn_id: TurnId,
        /// Token counts, when the model reported them.
        usage: Option<Usage>,
        /// Why the model stopped.
        stop_reason: Option<StopReason>,
        /// Whether the turn was saved to the history.
        saved: bool,
    },
    /// The question failed, or the message could not be read.
    Error {
        /// What went wrong.
        message: String,
        /// Whether asking again may succeed.
        retryable: bool,
    },
}

impl Frame {
    fn error(message: impl Into<String>) -> Self {
        Frame::Error {
            message: message.into(),
            retryable: false,
        }
    }

    /// The answer to a question the stopping server will not answer: another instance, or
    /// this one restarted, may.
    fn shutting_down() -> Self {
        Frame::Error {
            message: SHUTTING_DOWN.to_string(),
            retryable: true,
        }
    }

    fn to_message(&self) -> Message {
        // Serializing these plain structs cannot fail.
        let json = serde_json::to_string(self).unwrap_or_else(|e| {
            format!(
                r#"{{"type":"error","message":"frame not serializable: {e}","retryable":false}}"#
            )
        });
        Message::Text(json.into())
    }
}

async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}

/// Query parameters of the upgrade.
#[derive(Debug, Deserialize)]
struct UpgradeQuery {
    session: Option<String>,
    access_token: Option<String>,
}

async fn upgrade(
    State(state): State<AppState>,
    Query(query): Query<UpgradeQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if state.shutdown.is_stopping() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        )
            .into_response();
    }
    if let Some(expected) = &state.token {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let given = bearer.or(query.access_token.as_deref());
        if !given.is_some_and(|given| same_secret(given, expected)) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "missing or wrong bearer token",
            )
                .into_response();
        }
    }
    let session = match query.session {
        Some(id) => match SessionId::new(id) {
            Ok(session) => session,
            Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        },
        None => match SessionId::new(uuid::Uuid::now_v7().to_string()) {
            Ok(session) => session,
            Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        },
    };
    let pipeline = state.pipeline.clone();
    // Counted from here, so a shutdown that begins before the upgrade completes waits for it.
    let open = state.shutdown.open_connection();
    let shutdown = state.shutdown;
    ws.on_upgrade(move |socket| async move {
        connection(socket, pipeline, session, shutdown).await;
        drop(open);
    })
}

/// Compares two secrets in time that depends only on their lengths.
fn same_secret(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the client did while a question was being answered.
enum Incoming {
    Question(String),
    Closed,
}

/// Serves one connection: one conversation, its questions answered one at a time, until the
/// client leaves or the server stops.
async fn connection(
    mut socket: WebSocket,
    pipeline: Pipeline,
    session: SessionId,
    shutdown: ShutdownSignal,
) {
    // The shutdown began while the upgrade completed.
    if shutdown.is_stopping() {
        return go_away(socket).await;
    }
    let hello = Frame::Session {
        session_id: session.to_string(),
    };
    if socket.send(hello.to_message()).await.is_err() {
        return;
    }
    let mut queue: VecDeque<String> = VecDeque::new();
    loop {
        let text = match queue.pop_front() {
            Some(text) => text,
            None => tokio::select! {
                // Messages already received come first, so each gets its frame before the
                // connection closes.
                biased;
                incoming = read(&mut socket) => match incoming {
                    Some(Incoming::Question(text)) => text,
                    Some(Incoming::Closed) | None => return,
                },
                () = shutdown.stopping() => return go_away(socket).await,
            },
        };
        if shutdown.is_stopping() {
            if socket
                .send(Frame::shutting_down().to_message())
                .await
                .is_err()
            {
                return;
            }
            continue;
        }
        let question = match serde_json::from_str::<ClientMessage>(&text) {
            Ok(message) => message.data.message,
            Err(e) => {
                let frame = Frame::error(format!(
                    r#"malformed message ({e}); send {{"data":{{"message":"..."}},"timestamp":...}}"#
                ));
                if socket.send(frame.to_message()).await.is_err() {
                    return;
                }
                continue;
            }
        };
        if !answer(&mut socket, &pipeline, &session, question, &mut queue).await {
            return;
        }
    }
}

/// Ends the connection as a stopping server does: a Close frame with code 1001 ("going
/// away"), then, briefly, the client's Close in reply.
async fn go_away(mut socket: WebSocket) {
    let close = CloseFrame {
        code: close_code::AWAY,
        reason: "the server is shutting down".into(),
    };
    if socket.send(Message::Close(Some(close))).await.is_err() {
        return;
    }
    // Nothing may be sent after a Close, so whatever arrives before the reply is dropped.
    let _ = tokio::time::timeout(CLOSE_REPLY_WAIT, async {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// The next text message, skipping control frames; `None` when the connection ended.
async fn read(socket: &mut WebSocket) -> Option<Incoming> {
    loop {
        match socket.recv().await? {
            Ok(Message::Text(text)) => return Some(Incoming::Question(text.to_string())),
            Ok(Message::Binary(bytes)) => {
                return Some(Incoming::Question(
                    String::from_utf8_lossy(&bytes).into_owned(),
                ))
            }
            Ok(Message::Close(_)) | Err(_) => return Some(Incoming::Closed),
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
        }
    }
}

/// Streams the answer to `question`; messages that arrive meanwhile are queued. Returns
/// `false` when the connection is gone (the ask is then dropped, which cancels it).
async fn answer(
    socket: &mut WebSocket,
    pipeline: &Pipeline,
    session: &SessionId,
    question: String,
    queue: &mut VecDeque<String>,
) -> bool {
    let mut events = pipeline.ask(Ask::new(session.clone(), question));
    loop {
        tokio::select! {
            event = events.next() => {
                let Some(event) = event else { return true };
                let Some(frame) = frame_of(event) else { continue };
                if socket.send(frame.to_message()).await.is_err() {
                    return false;
                }
            }
            incoming = read(socket) => match incoming {
                Some(Incoming::Question(text)) if queue.len() < MAX_QUEUED_QUESTIONS => {
                    queue.push_back(text);
                }
                Some(Incoming::Question(_)) => {
                    let frame = Frame::error(format!(
                        "too many questions waiting (at most {MAX_QUEUED_QUESTIONS}); this one was dropped"
                    ));
                    if socket.send(frame.to_message()).await.is_err() {
                        return false;
                    }
                }
                Some(Incoming::Closed) | None => return false,
            },
        }
    }
}

/// The frame of a pipeline event (usage is reported with `done`).
fn frame_of(event: Event) -> Option<Frame> {
    Some(match event {
        Event::Sources(sources) => Frame::Sources { sources },
        Event::Token(text) => Frame::Token { text },
        Event::Warning(warning) => Frame::Warning {
            message: warning.to_string(),
        },
        Event::Done(summary) => Frame::Done {
            turn_id: summary.turn_id,
            usage: summary.usage,
            stop_reason: summary.stop_reason,
            saved: summary.saved,
        },
        // A question that raced the shutdown: said as the queued ones are.
        Event::Error(failure) if matches!(failure.error, rag::Error::ShuttingDown) => {
            Frame::shutting_down()
        }
        Event::Error(failure) => Frame::Error {
            retryable: failure.is_retryable(),
            message: failure.error.to_string(),
        },
        _ => return None,
    })
}
