//! The WebSocket service: routes, the upgrade checks and one task per connection.
//!
//! Shared by the example's `main.rs` and by `tests/websocket.rs`, which builds the router
//! around a pipeline of its own.
//!
//! # Protocol (`rag.v1`)
//!
//! **The upgrade**, `GET /ws`, checked in this order, each refusal a plain-words body:
//!
//! 1. A stopping server refuses with 503.
//! 2. `?access_token=` is refused with 400: access logs keep URLs, so a token never goes in one.
//! 3. `Origin` must be allowed ([`access::Origins`]; default: loopback pages), else 403.
//! 4. The credential, when the server has one configured ([`auth::Auth`]): browsers offer the
//!    subprotocols `["rag.v1", "bearer.<token>"]`, other clients may send
//!    `Authorization: Bearer <token>`. None or an invalid one (bad signature, expired, another
//!    issuer, unknown key) is refused with 401 and a `WWW-Authenticate` header; a valid token
//!    for another app client or of the other `token_use` with 403. A request without `Origin`
//!    (not a browser) must carry a valid token, else 403.
//! 5. Connections per server (503) and per client address (429) ([`limits::Limits`]).
//! 6. `?session=ID` resumes a conversation: an id that is not valid is refused with 400, and
//!    one that belongs to another user with 403, before any of its history is read. Without
//!    it the connection starts a new conversation with a random (UUID v4) id.
//!
//! The server selects the subprotocol `rag.v1` when the client offers it, and never echoes
//! the token. The conversation's owner is the token's `sub` (shared-token mode: `shared`; no
//! credential configured: no owner).
//!
//! **Frames** (`rag_lambda::protocol`, shared with the Lambda functions). The server first sends `{"type":"session","session_id":"..."}`. The client
//! sends `{"data":{"message":"...","id":"<client id, optional>"},"timestamp":...}` (other
//! fields are ignored). For each question the server sends, to that connection only:
//!
//! - `{"type":"sources","sources":[{"index","passage_id","title","uri","score"}...]}`; a `uri`
//!   is a URL or a path relative to the docs root, never a server path;
//! - `{"type":"token","text":"..."}`, pieces of the Markdown answer;
//! - `{"type":"warning","message":"..."}` for something that did not stop the answer;
//! - then one `{"type":"done","turn_id","usage","stop_reason","saved"}` or
//!   `{"type":"error","message":"...","retryable":bool}`.
//!
//! Every one of them carries `"id"` (the client's id echoed, or null) and `"request_id"` (made
//! by the server for each message, and logged with any error). An `error` says what happened
//! in plain words; the backend's own message (account ids, ARNs) goes to the log only.
//!
//! Questions of one connection are answered one at a time, in order; a few may wait
//! ([`limits::Limits::max_queued_questions`]), and closing the connection cancels the answer
//! in progress. A message that cannot be read, one larger than
//! [`limits::Limits::max_message_bytes`] ("the payload was too large"), one past the queue, or
//! past the user's asks in flight gets an `error` frame, and the connection stays open.
//! A connection without a frame from the client for [`limits::Limits::idle_timeout`] (while
//! no answer streams) is closed with code 1000.
//!
//! When the server stops ([`Shutdown`]), the answer in progress streams to its end; every
//! question queued or arriving after that gets an `error` frame "the server is shutting down;
//! ask again in a moment" with `"retryable":true`; once idle, the connection sends a Close
//! frame with code 1001 ("going away") and ends. Upgrades are then refused with 503.

#[path = "access.rs"]
pub(crate) mod access;
#[path = "auth.rs"]
pub(crate) mod auth;
#[path = "limits.rs"]
pub(crate) mod limits;
#[path = "shutdown.rs"]
mod shutdown;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::StreamExt;
use rag::{Ask, Event, HistoryStore, Pipeline, SessionId};
use rag_lambda::protocol::{client_id_of, read_message, Frame, Reply, TOO_LARGE};
use serde::Deserialize;

use access::{GroupAccess, OriginCheck, Origins, SourceRoots};
use auth::{Auth, Identity, Refusal};
use limits::{Full, Gauges, Limits};
#[allow(unused_imports)] // `Stopped` is what `Shutdown::run` returns.
pub(crate) use shutdown::{Shutdown, ShutdownSignal, Stopped};

#[allow(unused_imports)] // tests/websocket.rs reads it as `app::SHUTTING_DOWN`.
pub(crate) use rag_lambda::protocol::SHUTTING_DOWN;

/// How long a closing connection waits for the client to answer its Close frame: a client
/// that never answers must not hold the shutdown up.
const CLOSE_REPLY_WAIT: Duration = Duration::from_secs(1);

/// What the router needs.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    /// Answers the questions.
    pub(crate) pipeline: Pipeline,
    /// The pipeline's history store, asked who owns a session before a resume.
    pub(crate) history: Arc<dyn HistoryStore>,
    /// How the upgrade is guarded.
    pub(crate) auth: Auth,
    /// The pages that may connect.
    pub(crate) origins: Origins,
    /// The bounds on every input.
    pub(crate) limits: Limits,
    /// The documents each user may see, when documents carry a group attribute.
    pub(crate) access: Option<GroupAccess>,
    /// The docs folders, so sources show paths relative to them.
    pub(crate) sources: SourceRoots,
    /// Tells the connections when the server stops.
    pub(crate) shutdown: ShutdownSignal,
}

impl AppState {
    /// A service for local use: no credential, loopback pages, default limits, no group
    /// filter.
    pub(crate) fn new(
        pipeline: Pipeline,
        history: Arc<dyn HistoryStore>,
        shutdown: ShutdownSignal,
    ) -> Self {
        AppState {
            pipeline,
            history,
            auth: Auth::None,
            origins: Origins::default(),
            limits: Limits::default(),
            access: None,
            sources: SourceRoots::default(),
            shutdown,
        }
    }
}

/// The router's state: the settings and the counters behind the limits.
#[derive(Debug)]
struct Service {
    state: AppState,
    gauges: Arc<Gauges>,
}

/// The service: `/` (the page) and `/ws` (the WebSocket). Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()`: the per-client limits need the peer
/// address.
pub(crate) fn router(state: AppState) -> Router {
    let service = Arc::new(Service {
        state,
        gauges: Arc::new(Gauges::default()),
    });
    Router::new()
        .route("/", get(page))
        .route("/ws", get(upgrade))
        .with_state(service)
}

/// `frame` alone (not about a client message) as a text message.
fn message_of(frame: &Frame) -> Message {
    let json = serde_json::to_string(frame).unwrap_or_else(|e| {
        format!(r#"{{"type":"error","message":"frame not serializable: {e}","retryable":false}}"#)
    });
    Message::Text(json.into())
}

async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}

/// Query parameters of the upgrade.
#[derive(Debug, Deserialize)]
struct UpgradeQuery {
    session: Option<String>,
    /// Refused: see the protocol.
    access_token: Option<String>,
}

async fn upgrade(
    State(service): State<Arc<Service>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<UpgradeQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let state = &service.state;
    if state.shutdown.is_stopping() {
        return Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        )
        .into_response();
    }
    if query.access_token.is_some() {
        return Refusal::new(
            StatusCode::BAD_REQUEST,
            "a token in the URL is refused, since access logs keep URLs: offer it as the \
             WebSocket subprotocol bearer.TOKEN (beside rag.v1), or send Authorization: Bearer TOKEN",
        )
        .into_response();
    }
    let origin = state.origins.check(&headers);
    if let OriginCheck::Refused(origin) = &origin {
        return Refusal::forbidden(format!(
            "pages from {origin} may not connect to this service"
        ))
        .into_response();
    }
    let identity = match state.auth.identify(&headers).await {
        Ok(identity) => identity,
        Err(refusal) => return refusal.into_response(),
    };
    if origin == OriginCheck::Absent && !identity.is_authenticated() {
        return Refusal::forbidden(
            "a client without an Origin header (not a browser) must authenticate with a token",
        )
        .into_response();
    }
    let slot = match service.gauges.connect(peer.ip(), &state.limits) {
        Ok(slot) => slot,
        Err(Full::Server) => {
            return Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server has too many connections; try again later",
            )
            .into_response()
        }
        Err(Full::Client) => {
            return Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "too many connections from your address (at most {}); close one first",
                    state.limits.max_connections_per_client
                ),
            )
            .into_response()
        }
    };
    let session = match open_session(state, &identity, query.session).await {
        Ok(session) => session,
        Err(refusal) => return refusal.into_response(),
    };
    let user_key = match &identity {
        Identity::User { sub, .. } => format!("user:{sub}"),
        Identity::Shared => auth::SHARED_OWNER.to_string(),
        Identity::Anonymous => format!("client:{}", peer.ip()),
    };
    let connection = Connection {
        service: Arc::clone(&service),
        session,
        identity,
        user_key,
        queue: VecDeque::new(),
    };
    // Counted from here, so a shutdown that begins before the upgrade completes waits for it.
    let open = state.shutdown.open_connection();
    let cap = state.limits.hard_cap_bytes();
    ws.protocols([auth::PROTOCOL])
        .max_message_size(cap)
        .max_frame_size(cap)
        .on_upgrade(move |socket| async move {
            connection.serve(socket).await;
            drop(slot);
            drop(open);
        })
}

/// The session of a new connection: the one `?session=` names when its owner is this user
/// (checked before anything of it is read), or a new random one.
async fn open_session(
    state: &AppState,
    identity: &Identity,
    requested: Option<String>,
) -> Result<SessionId, Refusal> {
    let internal = |e: rag::Error| {
        tracing::error!(error = %e, "cannot make a session");
        Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "something went wrong on the server",
        )
    };
    let owner = identity.owner().map_err(internal)?;
    let own = |session: SessionId| match &owner {
        Some(owner) => session.owned_by(owner.clone()),
        None => session,
    };
    let Some(id) = requested else {
        return SessionId::new(uuid::Uuid::new_v4().to_string())
            .map(own)
            .map_err(internal);
    };
    let session = own(SessionId::new(id).map_err(|e| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("the session id is not valid: {e}"),
        )
    })?);
    match state.history.owner(&session).await {
        Ok(owned) if owned.admits(&session) => Ok(session),
        Ok(_) => Err(Refusal::forbidden(
            "this conversation belongs to another user",
        )),
        Err(e) => {
            tracing::warn!(error = %e, session = %session, "cannot check a session's owner");
            Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the conversation history cannot be reached; try again",
            ))
        }
    }
}

/// What the client sent.
enum Incoming {
    /// A text or binary message.
    Message(String),
    /// A ping or pong: the client is there.
    Control,
    /// The connection ended.
    Closed,
}

/// The next frame; `Closed` when the connection ended or broke (including a message over the
/// hard cap, which the WebSocket layer refuses to read).
async fn read(socket: &mut WebSocket) -> Incoming {
    match socket.recv().await {
        Some(Ok(Message::Text(text))) => Incoming::Message(text.to_string()),
        Some(Ok(Message::Binary(bytes))) => {
            Incoming::Message(String::from_utf8_lossy(&bytes).into_owned())
        }
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Incoming::Control,
        Some(Ok(Message::Close(_)) | Err(_)) | None => Incoming::Closed,
    }
}

/// A new request id.
fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// One connection: one conversation of one identity.
struct Connection {
    service: Arc<Service>,
    session: SessionId,
    identity: Identity,
    /// Whose asks in flight count together.
    user_key: String,
    /// Messages that arrived while an answer streamed.
    queue: VecDeque<String>,
}

/// What to do after a frame was sent.
type Sent = Result<(), axum::Error>;

impl Connection {
    fn limits(&self) -> &Limits {
        &self.service.state.limits
    }

    /// Serves the connection: its questions answered one at a time, until the client leaves
    /// or idles, or the server stops.
    async fn serve(mut self, mut socket: WebSocket) {
        let shutdown = self.service.state.shutdown.clone();
        // The shutdown began while the upgrade completed.
        if shutdown.is_stopping() {
            return goodbye(socket, close_code::AWAY, "the server is shutting down").await;
        }
        let hello = Frame::Session {
            session_id: self.session.to_string(),
        };
        if socket.send(message_of(&hello)).await.is_err() {
            return;
        }
        let idle = self.limits().idle_timeout;
        loop {
            let text = match self.queue.pop_front() {
                Some(text) => text,
                None => {
                    let mut deadline = tokio::time::Instant::now() + idle;
                    loop {
                        tokio::select! {
                            // Messages already received come first, so each gets its frame
                            // before the connection closes.
                            biased;
                            incoming = read(&mut socket) => match incoming {
                                Incoming::Message(text) => break text,
                                Incoming::Control => deadline = tokio::time::Instant::now() + idle,
                                Incoming::Closed => return,
                            },
                            () = shutdown.stopping() => {
                                return goodbye(socket, close_code::AWAY, "the server is shutting down").await;
                            }
                            () = tokio::time::sleep_until(deadline) => {
                                let reason = format!("idle for {} s", idle.as_secs());
                                return goodbye(socket, close_code::NORMAL, &reason).await;
                            }
                        }
                    }
                }
            };
            if self.handle(&mut socket, text).await.is_err() {
                return;
            }
        }
    }

    /// Sends `frame` about the message `id`, as request `request_id`.
    async fn reply(
        socket: &mut WebSocket,
        frame: &Frame,
        id: Option<&str>,
        request_id: &str,
    ) -> Sent {
        socket
            .send(Message::Text(
                Reply::new(frame, id, request_id).to_json().into(),
            ))
            .await
    }

    /// An `error` frame for a message that is not answered, with a new request id.
    async fn refuse(socket: &mut WebSocket, frame: Frame, text: &str) -> Sent {
        let request_id = request_id();
        let id = client_id_of(text);
        if let Frame::Error { message, .. } = &frame {
            tracing::info!(request_id = %request_id, reason = %message, "message refused");
        }
        Self::reply(socket, &frame, id.as_deref(), &request_id).await
    }

    /// The refusal of a message too large to answer, if it is.
    fn too_large(&self, text: &str) -> Option<Frame> {
        let max = self.limits().max_message_bytes;
        (text.len() > max).then(|| {
            Frame::error(format!(
                "{TOO_LARGE} ({} bytes; the limit is {max})",
                text.len()
            ))
        })
    }

    /// Answers one message, or says why not.
    async fn handle(&mut self, socket: &mut WebSocket, text: String) -> Sent {
        if let Some(frame) = self.too_large(&text) {
            return Self::refuse(socket, frame, "").await;
        }
        if self.service.state.shutdown.is_stopping() {
            return Self::refuse(socket, Frame::shutting_down(), &text).await;
        }
        let (question, id) = match read_message(&text) {
            Ok(read) => read,
            Err(frame) => return Self::refuse(socket, frame, "").await,
        };
        let max = self.limits().max_asks_per_user;
        let Some(_in_flight) = self.service.gauges.ask(&self.user_key, max) else {
            let frame = Frame::Error {
                message: format!(
                    "too many of your questions are being answered at once (at most {max}); \
                     ask again when one is done"
                ),
                retryable: true,
            };
            return Self::refuse(socket, frame, &text).await;
        };
        self.answer(socket, question, id.as_deref()).await
    }

    /// Streams the answer to `question`; messages that arrive meanwhile are queued. An error
    /// when the connection is gone (the ask is then dropped, which cancels it).
    async fn answer(&mut self, socket: &mut WebSocket, question: String, id: Option<&str>) -> Sent {
        let state = &self.service.state;
        let request_id = request_id();
        let mut ask = Ask::new(self.session.clone(), question);
        if let Some(user) = self.identity.user_context() {
            ask = ask.with_user(user);
        }
        if let Some(access) = &state.access {
            ask = ask.with_filter(access.filter(self.identity.groups()));
        }
        let mut events = state.pipeline.ask(ask);
        loop {
            tokio::select! {
                event = events.next() => {
                    let Some(event) = event else { return Ok(()) };
                    let Some(frame) = self.frame_of(event, &request_id) else { continue };
                    Self::reply(socket, &frame, id, &request_id).await?;
                }
                incoming = read(socket) => match incoming {
                    Incoming::Message(text) => {
                        if let Some(frame) = self.too_large(&text) {
                            Self::refuse(socket, frame, "").await?;
                        } else if self.queue.len() < self.limits().max_queued_questions {
                            self.queue.push_back(text);
                        } else {
                            let frame = Frame::error(format!(
                                "too many questions waiting (at most {}); this one was dropped",
                                self.limits().max_queued_questions
                            ));
                            Self::refuse(socket, frame, &text).await?;
                        }
                    }
                    Incoming::Control => {}
                    Incoming::Closed => return Err(axum::Error::new("the client left")),
                },
            }
        }
    }

    /// The frame of a pipeline event (usage is reported with `done`); sources are shown
    /// relative to the docs roots.
    fn frame_of(&self, event: Event, request_id: &str) -> Option<Frame> {
        if let Event::Error(failure) = &event {
            // The raw error (the backend's words, with its ids and ARNs) is for the log.
            tracing::warn!(
                request_id = %request_id,
                session = %self.session,
                stage = %failure.stage,
                error = %failure.error,
                "a question failed"
            );
        }
        Frame::of_event(event, |c| self.service.state.sources.show(c))
    }
}

/// Ends the connection with a Close frame (`code`, `reason`), then waits briefly for the
/// client's Close in reply.
async fn goodbye(mut socket: WebSocket, code: u16, reason: &str) {
    let close = CloseFrame {
        code,
        reason: reason.into(),
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
