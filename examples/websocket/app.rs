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

use std::collections::VecDeque;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::StreamExt;
use rag::{Ask, Citation, Event, Pipeline, SessionId, StopReason, TurnId, Usage};
use serde::{Deserialize, Serialize};

/// Questions a connection may send while one is being answered; more are refused.
pub(crate) const MAX_QUEUED_QUESTIONS: usize = 8;

/// What the router needs.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    /// Answers the questions.
    pub(crate) pipeline: Pipeline,
    /// The bearer token that guards the upgrade, if any.
    pub(crate) token: Option<String>,
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
    ws.on_upgrade(move |socket| connection(socket, pipeline, session))
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

/// Serves one connection: one conversation, its questions answered one at a time.
async fn connection(mut socket: WebSocket, pipeline: Pipeline, session: SessionId) {
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
            None => match read(&mut socket).await {
                Some(Incoming::Question(text)) => text,
                Some(Incoming::Closed) | None => return,
            },
        };
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
        Event::Error(failure) => Frame::Error {
            retryable: failure.is_retryable(),
            message: failure.error.to_string(),
        },
        _ => return None,
    })
}
