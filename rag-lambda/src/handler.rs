//! The `$default` route: one question in, its answer streamed back to the connection.
//!
//! Each message a client sends on the WebSocket invokes the function once with the route's
//! event. [`AskHandler::handle`] reads the question, runs the [`Pipeline`] (history and
//! retrieval fetched in parallel, the prompt built, the model streamed, the turn saved at the
//! end) and posts the `rag.v1` frames ([`crate::protocol`]) to that connection with
//! PostToConnection, in order: `session`, `sources`, `token`s, then one `done` or `error`.
//!
//! **Longer than 29 s.** API Gateway waits at most 29 s for an integration ("Amazon API
//! Gateway quotas for configuring and running a WebSocket API",
//! <https://docs.aws.amazon.com/apigateway/latest/developerguide/apigateway-execution-service-websocket-limits-table.html>),
//! and a long answer takes longer. The template (`rag-lambda/template.yaml`) therefore
//! invokes this function asynchronously (`X-Amz-Invocation-Type: Event` on an `AWS`
//! integration): the route is acknowledged at once and the answer streams through
//! PostToConnection until it ends, up to the function's own timeout. Near that timeout
//! ([`HandlerLimits::deadline_margin`]) an answer that is not complete is stopped, the ask is
//! dead-lettered and the client gets a retryable `error` frame, so even that is never silent;
//! a complete answer's last frames are posted until shortly before the deadline, and its turn
//! is saved by the pipeline.
//!
//! **The client leaves.** A post answered `410 GoneException` drops the answer stream, which
//! cancels the model call; the turn is saved only once the answer is complete, so nothing is
//! saved. Any other post failure (after the SDK's retries) does the same and dead-letters the
//! ask with what had been answered.
//!
//! **Who asks.** A message without the authorizer's user (`principalId`) is refused: the
//! handler fails closed. The conversation is that user (the owner) and the connection id, or
//! the session the authorizer passed on from `?session=` (see [`crate::authorizer`]), which
//! the history refuses if another user owns it. The user's `groups` reach the retriever with
//! the [`UserContext`].

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use base64::Engine as _;
use futures::StreamExt;
use rag_core::{
    Ask, Citation, DeadLetter, DeadLetterSink, Error, Event, Failure, Owner, Pipeline, SessionId,
    Stage, UserContext,
};
use serde_json::Value;
use tokio::time::Instant;

use crate::coalesce::{FrameLimits, TokenBatcher};
use crate::post::{Callbacks, Connection, PostError};
use crate::protocol::{client_id_of, read_message, Frame, Reply, TOO_LARGE};

/// How long before the invocation's deadline even a complete answer's last frames stop
/// being posted, so that the function returns (and its saves finish) in time; at most half
/// of [`HandlerLimits::deadline_margin`].
const LAST_CALL: Duration = Duration::from_secs(2);

/// The bounds the handler keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandlerLimits {
    /// The frames' size and rate.
    pub frames: FrameLimits,
    /// The largest client message read, in bytes (default 32 KB, API Gateway's frame size;
    /// a larger one gets an `error` frame "the payload was too large").
    pub max_message_bytes: usize,
    /// How long before the invocation's deadline the answer is stopped, so the `error` frame
    /// and the dead letter still go out (default 10 s).
    pub deadline_margin: Duration,
}

impl Default for HandlerLimits {
    fn default() -> Self {
        HandlerLimits {
            frames: FrameLimits::default(),
            max_message_bytes: 32 * 1024,
            deadline_margin: Duration::from_secs(10),
        }
    }
}

/// What became of one message, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The answer streamed to its `done` frame.
    Answered {
        /// Whether the turn was saved.
        saved: bool,
    },
    /// The ask failed; the client got an `error` frame and the ask was dead-lettered.
    Failed,
    /// The message was not a question that could be asked (malformed, too large, a bad
    /// session); the client got an `error` frame saying why.
    Refused,
    /// The client left mid-answer: the answer was cancelled and nothing was saved (or, when
    /// it left during the last frames, the complete answer was saved).
    ClientLeft,
    /// Frames could not be posted: the answer was cancelled and the ask dead-lettered (or,
    /// when only the last frames failed, the complete answer was saved).
    Undeliverable,
    /// The invocation's deadline came before the answer ended; it was dead-lettered.
    OutOfTime,
}

/// The `$default` route's handler.
#[derive(Debug, Clone)]
pub struct AskHandler {
    pipeline: Pipeline,
    callbacks: Callbacks,
    dead_letters: Arc<dyn DeadLetterSink>,
    limits: HandlerLimits,
}

/// Who sent a message, and where to answer: from the event's `requestContext`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The connection.
    pub connection_id: String,
    /// The API's domain name.
    pub domain_name: String,
    /// The API's stage.
    pub stage: String,
    /// API Gateway's id of this message's request.
    pub request_id: String,
    /// The authorizer's `principalId` (the user), if there is one.
    pub principal: Option<String>,
    /// The user's groups, from the authorizer's `groups` context value.
    pub groups: Vec<String>,
    /// The session to resume, from the authorizer's `session` context value.
    pub session: Option<String>,
}

impl Caller {
    /// Reads the caller of `event`: its connection, the API's endpoint and the authorizer's
    /// user. An event without a connection id or endpoint is an [`Error::InvalidInput`].
    pub fn of(event: &ApiGatewayWebsocketProxyRequest) -> Result<Caller, Error> {
        let context = &event.request_context;
        let required = |value: &Option<String>, field: &'static str| {
            value
                .clone()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| Error::invalid_input(field, "is missing from the event"))
        };
        let text = |key: &str| {
            context
                .authorizer
                .fields
                .get(key)
                .and_then(Value::as_str)
                .map(str::trim)
                // An empty value, or the request template's `$context.authorizer.<key>` left
                // as it is when the authorizer did not set the key, is no value.
                .filter(|v| !v.is_empty() && !v.starts_with("$context."))
                .map(str::to_string)
        };
        Ok(Caller {
            connection_id: required(&context.connection_id, "requestContext.connectionId")?,
            domain_name: required(&context.domain_name, "requestContext.domainName")?,
            stage: required(&context.stage, "requestContext.stage")?,
            request_id: context
                .request_id
                .clone()
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            principal: text("principalId"),
            groups: text("groups")
                .map(|groups| {
                    groups
                        .split(',')
                        .map(str::trim)
                        .filter(|g| !g.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            session: text("session"),
        })
    }

    /// The conversation: the resumed session or the connection, owned by the principal.
    pub fn session(&self) -> Result<SessionId, Error> {
        let id = SessionId::new(self.session.as_deref().unwrap_or(&self.connection_id))?;
        Ok(match &self.principal {
            Some(principal) => id.owned_by(Owner::new(principal.clone())?),
            None => id,
        })
    }

    /// The user, for the retriever.
    pub fn user(&self) -> Option<UserContext> {
        self.principal.as_ref().map(|principal| UserContext {
            token: None,
            user_id: Some(principal.clone()),
            groups: self.groups.clone(),
        })
    }
}

impl AskHandler {
    /// A handler that answers with `pipeline`, posts through `callbacks` and sends what it
    /// cannot deliver to `dead_letters` (give the pipeline the same sink).
    pub fn new(
        pipeline: Pipeline,
        callbacks: Callbacks,
        dead_letters: Arc<dyn DeadLetterSink>,
    ) -> Self {
        AskHandler {
            pipeline,
            callbacks,
            dead_letters,
            limits: HandlerLimits::default(),
        }
    }

    /// Replaces the default limits; limits no frame could keep are an
    /// [`Error::InvalidInput`]: `max_frame_bytes` from 1,024 to 131,072 (PostToConnection's
    /// largest message), a `min_token_interval` of at most 10 s, a `max_message_bytes` of at
    /// least 1.
    pub fn with_limits(mut self, limits: HandlerLimits) -> Result<Self, Error> {
        let frame = limits.frames.max_frame_bytes;
        if !(1_024..=131_072).contains(&frame) {
            return Err(Error::invalid_input(
                "limits.frames.max_frame_bytes",
                format!("is {frame}; it must be from 1,024 to 131,072 bytes"),
            ));
        }
        if limits.frames.min_token_interval > Duration::from_secs(10) {
            return Err(Error::invalid_input(
                "limits.frames.min_token_interval",
                "must be at most 10 s",
            ));
        }
        if limits.max_message_bytes == 0 {
            return Err(Error::invalid_input(
                "limits.max_message_bytes",
                "must be at least 1",
            ));
        }
        self.limits = limits;
        Ok(self)
    }

    /// The pipeline.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Answers the message of `event`, to be done by `deadline` (the invocation's, from
    /// [`lambda_runtime::Context::deadline`]; `None`: no deadline). Returns once every frame
    /// is posted and the turn saved (or dead-lettered): a Lambda function is frozen when its
    /// handler returns.
    pub async fn handle(
        &self,
        event: &ApiGatewayWebsocketProxyRequest,
        deadline: Option<Instant>,
    ) -> Result<Outcome, Error> {
        let caller = Caller::of(event)?;
        let connection =
            self.callbacks
                .connection(&caller.domain_name, &caller.stage, &caller.connection_id)?;
        let outcome = self.answer(&caller, &connection, event, deadline).await;
        // Saves and dead letters run in the pipeline's background tasks: finish them before
        // the function is frozen (each is bounded by the pipeline's own timeouts).
        let flushed = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, self.pipeline.flush())
                .await
                .is_ok(),
            None => {
                self.pipeline.flush().await;
                true
            }
        };
        if !flushed {
            tracing::error!(
                request_id = %caller.request_id,
                "saves or dead letters were still running at the invocation's deadline"
            );
        }
        tracing::info!(
            request_id = %caller.request_id,
            connection = %caller.connection_id,
            outcome = ?outcome,
            "message handled"
        );
        Ok(outcome)
    }

    /// The Lambda function's response: 200 once the message is handled. Under the template's
    /// asynchronous invocation nobody reads it; behind a synchronous proxy integration it
    /// acknowledges the message.
    pub async fn respond(
        &self,
        event: &ApiGatewayWebsocketProxyRequest,
        deadline: Option<Instant>,
    ) -> Result<ApiGatewayProxyResponse, Error> {
        self.handle(event, deadline).await?;
        let mut response = ApiGatewayProxyResponse::default();
        response.status_code = 200;
        Ok(response)
    }

    async fn answer(
        &self,
        caller: &Caller,
        connection: &Connection,
        event: &ApiGatewayWebsocketProxyRequest,
        deadline: Option<Instant>,
    ) -> Outcome {
        let request_id = caller.request_id.as_str();
        let text = match body_of(event, self.limits.max_message_bytes) {
            Ok(text) => text,
            Err(frame) => return self.refuse(connection, &frame, None, request_id).await,
        };
        let (question, id) = match read_message(&text) {
            Ok(read) => read,
            Err(frame) => {
                let id = client_id_of(&text);
                return self
                    .refuse(connection, &frame, id.as_deref(), request_id)
                    .await;
            }
        };
        let id = id.as_deref();
        if caller.principal.is_none() {
            // Fail closed: without the authorizer's user, the conversation would have no
            // owner and any `?session=` would be open to anyone.
            tracing::error!(request_id, "the event carries no authorizer principalId");
            let frame = Frame::error("this connection has no signed-in user");
            return self.refuse(connection, &frame, id, request_id).await;
        }
        let session = match caller.session() {
            Ok(session) => session,
            Err(e) => {
                tracing::warn!(request_id, error = %e, "the caller's session is not valid");
                let frame = Frame::error("the session is not valid");
                return self.refuse(connection, &frame, id, request_id).await;
            }
        };
        let mut ask = Ask::new(session.clone(), question.clone());
        if let Some(user) = caller.user() {
            ask = ask.with_user(user);
        }
        let mut out = Outbox::new(connection, id, request_id, self.limits.frames);
        let hello = Frame::Session {
            session_id: session.as_str().to_string(),
        };
        if let Err(e) = out.send(&hello).await {
            // Nothing was asked yet: nothing to cancel. A client that left asks nothing; any
            // other failure loses a question, so it is dead-lettered.
            return match e {
                PostError::Gone => {
                    tracing::info!(request_id, "the client left before its answer began");
                    Outcome::ClientLeft
                }
                PostError::Failed { retryable, .. } => {
                    tracing::error!(request_id, error = %e, "the session frame could not be posted");
                    let error = Error::generation(
                        format!("the answer could not be posted to the client: {e}"),
                        retryable,
                    );
                    self.dead_letter(&session, question, error, String::new())
                        .await;
                    Outcome::Undeliverable
                }
            };
        }
        let cutoff = deadline.map(|d| d - self.limits.deadline_margin);
        let last_call = deadline.map(|d| d - LAST_CALL.min(self.limits.deadline_margin / 2));
        let mut events = self.pipeline.ask(ask);
        let stopped = pump(&mut out, &mut events, (cutoff, last_call), request_id).await;
        // Past this point dropping the stream cancels nothing: the turn is saved (or
        // dead-lettered by the pipeline), so the handler must not dead-letter it again.
        let complete = events.is_complete();
        // Dropping the stream cancels the model call when the answer did not end.
        drop(events);
        match stopped {
            Ok(outcome) => outcome,
            Err(Stop::Post(e)) if complete => {
                // The answer is complete (its turn saved or being saved, or its failure
                // dead-lettered by the pipeline); only its last frames did not reach the client.
                tracing::warn!(request_id, error = %e, "the last frames of a complete answer could not be posted");
                match e {
                    PostError::Gone => Outcome::ClientLeft,
                    PostError::Failed { .. } => Outcome::Undeliverable,
                }
            }
            Err(Stop::Post(PostError::Gone)) => {
                tracing::info!(
                    request_id,
                    session = %session,
                    "the client left mid-answer: the answer was cancelled and nothing saved"
                );
                Outcome::ClientLeft
            }
            Err(Stop::Post(e)) => {
                let retryable = matches!(
                    e,
                    PostError::Failed {
                        retryable: true,
                        ..
                    }
                );
                tracing::error!(request_id, error = %e, "frames could not be posted: the answer was cancelled");
                let error = Error::generation(
                    format!("the answer could not be posted to the client: {e}"),
                    retryable,
                );
                self.dead_letter(&session, question, error, out.streamed)
                    .await;
                Outcome::Undeliverable
            }
            Err(Stop::OutOfTime) if complete => {
                // Only the last frames of a complete answer were left: the pipeline saves its
                // turn (or dead-letters it), so it is neither told to try again nor letter-ed.
                tracing::warn!(
                    request_id,
                    "the invocation's deadline came while the last frames of a complete answer were posted"
                );
                Outcome::Undeliverable
            }
            Err(Stop::OutOfTime) => {
                let after = cutoff
                    .zip(deadline)
                    .map(|(c, d)| d.saturating_duration_since(c))
                    .unwrap_or_default();
                tracing::error!(
                    request_id,
                    "the invocation's deadline came before the answer ended"
                );
                // The letter first, while there is time; the text not yet posted is dropped
                // (it is in the letter), and the error frame gets what time is left.
                let error = Error::Timeout {
                    stage: Stage::Generation,
                    after,
                };
                out.discard_pending();
                self.dead_letter(&session, question, error, out.streamed.clone())
                    .await;
                let frame = Frame::Error {
                    message: "the answer took too long, try again".into(),
                    retryable: true,
                };
                let left = last_call.unwrap_or_else(Instant::now);
                match tokio::time::timeout_at(left, out.send(&frame)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(request_id, error = %e, "the error frame could not be posted")
                    }
                    Err(_) => {
                        tracing::warn!(request_id, "no time was left to post the error frame")
                    }
                }
                Outcome::OutOfTime
            }
        }
    }

    /// Posts `frame` about a message that is not asked.
    async fn refuse(
        &self,
        connection: &Connection,
        frame: &Frame,
        id: Option<&str>,
        request_id: &str,
    ) -> Outcome {
        if let Frame::Error { message, .. } = frame {
            tracing::info!(request_id, reason = %message, "message refused");
        }
        let json = Reply::new(frame, id, request_id).to_json();
        if let Err(e) = connection.post(json).await {
            tracing::warn!(request_id, error = %e, "the refusal could not be posted");
        }
        Outcome::Refused
    }

    async fn dead_letter(
        &self,
        session: &SessionId,
        question: String,
        error: Error,
        partial: String,
    ) {
        self.dead_letters
            .send(DeadLetter::AskFailed {
                session: session.clone(),
                question,
                failure: Failure {
                    error,
                    stage: Stage::Generation,
                    partial_answer: partial,
                },
            })
            .await;
    }
}

/// The message text of `event` (its body, base64-decoded when the event says so), or the
/// `error` frame that says why it cannot be read.
fn body_of(event: &ApiGatewayWebsocketProxyRequest, max: usize) -> Result<String, Frame> {
    let body = event.body.as_deref().unwrap_or("");
    let bytes = if event.is_base64_encoded {
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|_| Frame::error("malformed message (the body is not base64)"))?
    } else {
        body.as_bytes().to_vec()
    };
    if bytes.len() > max {
        return Err(Frame::error(format!(
            "{TOO_LARGE} ({} bytes; the limit is {max})",
            bytes.len()
        )));
    }
    String::from_utf8(bytes).map_err(|_| Frame::error("malformed message (not UTF-8 text)"))
}

/// Why the answer stopped before its stream ended.
enum Stop {
    Post(PostError),
    OutOfTime,
}

impl From<PostError> for Stop {
    fn from(e: PostError) -> Self {
        Stop::Post(e)
    }
}

/// Moves the answer's events to the connection until its terminal event is posted.
///
/// The deadline stops only an answer that is not complete yet: once it is, the turn is
/// being saved (bounded by the pipeline's save timeout) and only its last frames remain.
async fn pump(
    out: &mut Outbox<'_>,
    events: &mut rag_core::AnswerStream,
    (cutoff, last_call): (Option<Instant>, Option<Instant>),
    request_id: &str,
) -> Result<Outcome, Stop> {
    loop {
        let flush_at = out.flush_at();
        let racing_the_deadline = cutoff.is_some() && !events.is_complete();
        tokio::select! {
            biased;
            // The last call stops even a complete answer's last frames: the function must
            // return (and the pipeline flush its save) before Lambda stops it.
            () = sleep_until(last_call) => return Err(Stop::OutOfTime),
            () = sleep_until(cutoff), if racing_the_deadline => {
                // The answer may have become complete in this very poll.
                if !events.is_complete() {
                    return Err(Stop::OutOfTime);
                }
            }
            () = sleep_until(flush_at) => out.flush().await?,
            event = events.next() => match event {
                // The stream ends after its terminal event; this is only reached if it did not
                // send one, which the pipeline never does.
                None => return Ok(Outcome::Failed),
                Some(Event::Token(text)) => out.token(&text).await?,
                Some(event) => {
                    let outcome = match &event {
                        Event::Done(summary) => Some(Outcome::Answered { saved: summary.saved }),
                        Event::Error(failure) => {
                            // The raw error (the backend's words, with its ids and ARNs) is
                            // for the log; the pipeline dead-letters the ask.
                            tracing::warn!(
                                request_id,
                                stage = %failure.stage,
                                error = %failure.error,
                                "a question failed"
                            );
                            Some(Outcome::Failed)
                        }
                        Event::Warning(warning) => {
                            tracing::warn!(request_id, warning = %warning, "a warning");
                            None
                        }
                        _ => None,
                    };
                    if let Some(frame) = Frame::of_event(event, |c| c) {
                        out.send(&frame).await?;
                    }
                    if let Some(outcome) = outcome {
                        return Ok(outcome);
                    }
                }
            },
        }
    }
}

/// Sleeps until `at`; forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => futures::future::pending().await,
    }
}

/// The frames of one answer on their way to the connection: tokens gathered into frames
/// under the size limit and posted at a bounded rate.
struct Outbox<'a> {
    connection: &'a Connection,
    id: Option<&'a str>,
    request_id: &'a str,
    limits: FrameLimits,
    batcher: TokenBatcher,
    full: Vec<String>,
    last_token: Option<Instant>,
    /// The answer's text so far, for a dead letter.
    streamed: String,
}

impl<'a> Outbox<'a> {
    fn new(
        connection: &'a Connection,
        id: Option<&'a str>,
        request_id: &'a str,
        limits: FrameLimits,
    ) -> Self {
        let envelope = Reply::new(
            &Frame::Token {
                text: String::new(),
            },
            id,
            request_id,
        )
        .to_json()
        .len();
        Outbox {
            connection,
            id,
            request_id,
            limits,
            batcher: TokenBatcher::new(limits.max_frame_bytes.saturating_sub(envelope)),
            full: Vec::new(),
            last_token: None,
            streamed: String::new(),
        }
    }

    /// When the gathered text is due, if there is any.
    fn flush_at(&self) -> Option<Instant> {
        if self.batcher.is_empty() {
            return None;
        }
        Some(match self.last_token {
            Some(last) => last + self.limits.min_token_interval,
            None => Instant::now(),
        })
    }

    /// Adds a piece of the answer: full frames go out (each no sooner than the interval after
    /// the last), the rest waits for [`Outbox::flush_at`].
    async fn token(&mut self, text: &str) -> Result<(), PostError> {
        self.streamed.push_str(text);
        self.batcher.push(text, &mut self.full);
        for piece in std::mem::take(&mut self.full) {
            self.post_token(piece).await?;
        }
        match self.flush_at() {
            Some(at) if at <= Instant::now() => self.flush().await,
            _ => Ok(()),
        }
    }

    /// Drops the gathered text that was not posted (it stays in `streamed`).
    fn discard_pending(&mut self) {
        self.full.clear();
        self.batcher.take();
    }

    /// Posts the gathered text now, waiting out the interval first.
    async fn flush(&mut self) -> Result<(), PostError> {
        match self.batcher.take() {
            Some(text) => self.post_token(text).await,
            None => Ok(()),
        }
    }

    async fn post_token(&mut self, text: String) -> Result<(), PostError> {
        if let Some(last) = self.last_token {
            tokio::time::sleep_until(last + self.limits.min_token_interval).await;
        }
        let posted = self.post(&Frame::Token { text }).await;
        // Counted from when the post returned, so the client sees the frames at least the
        // interval apart however long each post took.
        self.last_token = Some(Instant::now());
        posted
    }

    /// Posts `frame` after the text gathered before it.
    async fn send(&mut self, frame: &Frame) -> Result<(), PostError> {
        self.flush().await?;
        match frame {
            Frame::Sources { sources } => {
                for part in self.split_sources(sources) {
                    self.post(&Frame::Sources { sources: part }).await?;
                }
                Ok(())
            }
            frame => self.post(frame).await,
        }
    }

    async fn post(&self, frame: &Frame) -> Result<(), PostError> {
        let json = Reply::new(frame, self.id, self.request_id).to_json();
        self.connection.post(json).await
    }

    /// `sources` in as few frames under the size limit as their JSON allows, in order (one
    /// frame unless the list is very long); a citation too large for a frame of its own is
    /// sent without its title, then without its location.
    fn split_sources(&self, sources: &[Citation]) -> Vec<Vec<Citation>> {
        let max = self.limits.max_frame_bytes;
        let size = |part: &[Citation]| {
            Reply::new(
                &Frame::Sources {
                    sources: part.to_vec(),
                },
                self.id,
                self.request_id,
            )
            .to_json()
            .len()
        };
        let mut parts: Vec<Vec<Citation>> = vec![Vec::new()];
        for citation in sources {
            let mut citation = citation.clone();
            if size(std::slice::from_ref(&citation)) > max {
                citation.title = None;
            }
            if size(std::slice::from_ref(&citation)) > max {
                citation.uri = None;
            }
            let last = parts.last_mut().expect("never empty");
            last.push(citation);
            if last.len() > 1 && size(last) > max {
                let citation = last.pop().expect("just pushed");
                parts.push(vec![citation]);
            }
        }
        parts
    }
}
