//! The WebSocket example's service, started on 127.0.0.1 port 0 with scripted pieces and
//! driven by a tokio-tungstenite client.

#[path = "../examples/websocket/app.rs"]
#[allow(dead_code)]
mod app;
#[path = "support/jwt.rs"]
mod jwt;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{SinkExt, StreamExt};
use rag::memory::{InMemoryHistory, TantivyRetriever};
use rag::testing::{PlainTemplate, ScriptedGenerator, StaticRetriever};
use rag::{
    Chunk, ChunkStream, GenerationParams, Generator, HistoryStore, Passage, Pipeline, Prompt,
    RetryPolicy, SessionId, SessionOwner, StopReason, Turn,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Client = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// How long a test waits for any one frame.
const FRAME_WAIT: Duration = Duration::from_secs(10);

fn passages() -> Vec<Passage> {
    vec![
        Passage::new("p1", "Lambda runs code without servers.")
            .with_title("What is Lambda?")
            .with_uri("docs/lambda.md"),
        Passage::new("p2", "You pay for the compute time you use.").with_title("Pricing"),
    ]
}

/// A pipeline and its history store, as the example's backend returns them.
#[derive(Clone)]
struct Backend {
    pipeline: Pipeline,
    history: Arc<dyn HistoryStore>,
}

fn pipeline(generator: impl Generator + 'static) -> Backend {
    pipeline_with_history(generator, Arc::new(InMemoryHistory::new()))
}

fn pipeline_with_history(
    generator: impl Generator + 'static,
    history: Arc<dyn HistoryStore>,
) -> Backend {
    let pipeline = Pipeline::builder()
        .with_retriever(StaticRetriever::new(passages()))
        .with_history(Arc::clone(&history))
        .with_template(PlainTemplate::default())
        .with_generator(generator)
        .build()
        .expect("a valid pipeline");
    Backend { pipeline, history }
}

/// Serves the example's router on a free loopback port.
async fn serve(backend: Backend, token: Option<&str>) -> SocketAddr {
    serve_stoppable(backend, token, false).await.0
}

/// Serves the example's router on a free loopback port; the test stops it with the returned
/// [`app::Shutdown`], as `main` does on a signal. With `stop_accepting`, axum stops accepting
/// when the shutdown begins, as in `main`; without it, upgrades still reach the router.
async fn serve_stoppable(
    backend: Backend,
    token: Option<&str>,
    stop_accepting: bool,
) -> (SocketAddr, app::Shutdown) {
    let token = token.map(String::from);
    serve_with(
        backend,
        move |state| {
            if let Some(token) = token {
                state.auth = app::auth::Auth::Shared(token);
            }
        },
        stop_accepting,
    )
    .await
}

/// Serves the router with the state `configure` adjusts.
async fn serve_with(
    backend: Backend,
    configure: impl FnOnce(&mut app::AppState),
    stop_accepting: bool,
) -> (SocketAddr, app::Shutdown) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let (shutdown, signal) = app::Shutdown::new();
    let mut state = app::AppState::new(backend.pipeline, backend.history, signal);
    configure(&mut state);
    let router = app::router(state).into_make_service_with_connect_info::<SocketAddr>();
    let begun = shutdown.begun();
    tokio::spawn(async move {
        let serve = axum::serve(listener, router);
        if stop_accepting {
            serve.with_graceful_shutdown(begun).await
        } else {
            serve.await
        }
    });
    (addr, shutdown)
}

/// The upgrade request to `/ws{query}`, from a page on loopback, with `headers`.
async fn connect_with(
    addr: SocketAddr,
    query: &str,
    headers: &[(&'static str, String)],
) -> Result<(Client, tungstenite::handshake::client::Response), tungstenite::Error> {
    let mut request = format!("ws://{addr}/ws{query}")
        .into_client_request()
        .expect("a valid request");
    request.headers_mut().insert(
        "origin",
        format!("http://{addr}").parse().expect("a header value"),
    );
    for (name, value) in headers {
        if value.is_empty() {
            request.headers_mut().remove(*name);
        } else {
            request
                .headers_mut()
                .insert(*name, value.parse().expect("a header value"));
        }
    }
    tokio_tungstenite::connect_async(request).await
}

async fn connect(
    addr: SocketAddr,
    query: &str,
    bearer: Option<&str>,
) -> Result<Client, tungstenite::Error> {
    let headers: Vec<(&'static str, String)> = bearer
        .map(|token| ("authorization", format!("Bearer {token}")))
        .into_iter()
        .collect();
    connect_with(addr, query, &headers)
        .await
        .map(|(client, _)| client)
}

/// The status of a refused upgrade (panics if it was accepted), and its body.
fn refused(result: Result<impl Sized, tungstenite::Error>) -> (u16, String) {
    match result {
        Err(tungstenite::Error::Http(response)) => (
            response.status().as_u16(),
            response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default(),
        ),
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("expected a refusal, the upgrade was accepted"),
    }
}

/// Connects and reads the session frame; returns the client and its session id.
async fn open(addr: SocketAddr, query: &str) -> (Client, String) {
    let client = connect(addr, query, None).await.expect("connected");
    hello(client).await
}

/// Reads the session frame of a new connection.
async fn hello(mut client: Client) -> (Client, String) {
    let hello = next_frame(&mut client).await;
    assert_eq!(hello["type"], "session", "{hello}");
    let session = hello["session_id"]
        .as_str()
        .expect("a session id")
        .to_string();
    (client, session)
}

async fn next_frame(client: &mut Client) -> Value {
    loop {
        let message = tokio::time::timeout(FRAME_WAIT, client.next())
            .await
            .expect("a frame in time")
            .expect("the connection is open")
            .expect("a readable message");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).expect("a JSON frame"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected message {other:?}"),
        }
    }
}

async fn ask(client: &mut Client, question: &str) {
    let message = json!({"data": {"message": question}, "timestamp": 1_700_000_000_000u64});
    client
        .send(Message::text(message.to_string()))
        .await
        .expect("sent");
}

/// The frames of one answer, up to and including `done` or `error`.
async fn answer_frames(client: &mut Client) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let frame = next_frame(client).await;
        let last = matches!(frame["type"].as_str(), Some("done" | "error"));
        frames.push(frame);
        if last {
            return frames;
        }
    }
}

/// Checks the order `sources`, `token`..., `done` and returns the answer text.
fn check_answer(frames: &[Value]) -> String {
    let types: Vec<&str> = frames
        .iter()
        .map(|f| f["type"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(types.first(), Some(&"sources"), "{types:?}");
    assert_eq!(types.last(), Some(&"done"), "{types:?}");
    assert!(
        types[1..types.len() - 1].iter().all(|t| *t == "token"),
        "only tokens between sources and done: {types:?}"
    );
    assert!(
        types.len() > 3,
        "the answer came in several tokens: {types:?}"
    );
    frames
        .iter()
        .filter(|f| f["type"] == "token")
        .map(|f| f["text"].as_str().expect("token text"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_questions_stream_in_order_and_the_second_prompt_holds_the_first_turn() {
    let generator = ScriptedGenerator::new(["Lambda ", "runs ", "code ", "[1]."]);
    let probe = generator.probe();
    let addr = serve(pipeline(generator), None).await;
    let (mut client, _) = open(addr, "").await;

    ask(&mut client, "What is Lambda?").await;
    let first = answer_frames(&mut client).await;
    assert_eq!(check_answer(&first), "Lambda runs code [1].");
    let sources = &first[0]["sources"];
    assert_eq!(sources[0]["index"], 1);
    assert_eq!(sources[0]["passage_id"], "p1");
    assert_eq!(sources[0]["title"], "What is Lambda?");
    assert_eq!(sources[0]["uri"], "docs/lambda.md");
    let done = first.last().expect("done");
    assert_eq!(done["saved"], true, "{done}");
    assert!(
        done["turn_id"].as_str().is_some_and(|id| id.len() == 36),
        "{done}"
    );

    ask(&mut client, "How is it billed?").await;
    let second = answer_frames(&mut client).await;
    assert_eq!(check_answer(&second), "Lambda runs code [1].");

    let prompts = probe.prompts();
    assert_eq!(prompts.len(), 2);
    let Prompt::Text(second_prompt) = &prompts[1] else {
        panic!("a text prompt: {:?}", prompts[1]);
    };
    assert!(
        second_prompt.contains("Q: What is Lambda?\nA: Lambda runs code [1]."),
        "the second prompt holds the first turn:\n{second_prompt}"
    );
    assert!(
        second_prompt.contains("Question: How is it billed?"),
        "{second_prompt}"
    );
    let Prompt::Text(first_prompt) = &prompts[0] else {
        panic!("a text prompt");
    };
    assert!(
        !first_prompt.contains("Q: "),
        "no history yet:\n{first_prompt}"
    );
}

/// Streams back the question of a [`PlainTemplate`] prompt, one word at a time, slowly
/// enough that two connections' answers overlap.
#[derive(Debug)]
struct EchoGenerator;

#[async_trait]
impl Generator for EchoGenerator {
    async fn generate(
        &self,
        prompt: &Prompt,
        _params: &GenerationParams,
    ) -> rag::Result<ChunkStream> {
        let Prompt::Text(text) = prompt else {
            return Err(rag::Error::invalid_input("prompt", "a text prompt"));
        };
        let question = text
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("Question: "))
            .unwrap_or_default();
        let words: Vec<String> = question
            .split_whitespace()
            .map(|w| format!("{w} "))
            .collect();
        let stream = futures::stream::iter(words)
            .then(|w| async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                Ok(Chunk::Text(w))
            })
            .chain(futures::stream::iter([Ok(Chunk::Stop(
                StopReason::EndTurn,
            ))]));
        Ok(stream.boxed())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_connections_never_receive_each_others_frames() {
    let addr = serve(pipeline(EchoGenerator), None).await;
    let (mut alice, alice_session) = open(addr, "").await;
    let (mut bob, bob_session) = open(addr, "").await;
    assert_ne!(
        alice_session, bob_session,
        "each connection is its own conversation"
    );

    let alice_words = "alpha apple avocado anchor arrow acorn amber atlas";
    let bob_words = "bravo banana basil beacon bridge bison birch bugle";
    // Both questions are in flight at once; each client then reads only its own answer.
    ask(&mut alice, alice_words).await;
    ask(&mut bob, bob_words).await;
    let (alice_frames, bob_frames) =
        tokio::join!(answer_frames(&mut alice), answer_frames(&mut bob));

    assert_eq!(check_answer(&alice_frames).trim(), alice_words);
    assert_eq!(check_answer(&bob_frames).trim(), bob_words);
    // Nothing else is waiting on either connection: a ping round trip comes back first.
    for client in [&mut alice, &mut bob] {
        client
            .send(Message::Ping(vec![7].into()))
            .await
            .expect("ping");
        let reply = tokio::time::timeout(FRAME_WAIT, client.next())
            .await
            .expect("a reply")
            .expect("open")
            .expect("readable");
        assert!(
            matches!(reply, Message::Pong(_)),
            "no stray frame: {reply:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_session_id_resumes_the_conversation() {
    let generator = ScriptedGenerator::new(["Billed ", "per ", "use."]);
    let probe = generator.probe();
    let addr = serve(pipeline(generator), None).await;

    let (mut first, session) = open(addr, "").await;
    ask(&mut first, "How is Lambda billed?").await;
    check_answer(&answer_frames(&mut first).await);
    first.close(None).await.expect("closed");

    let (mut resumed, resumed_session) = open(addr, &format!("?session={session}")).await;
    assert_eq!(resumed_session, session);
    ask(&mut resumed, "And for storage?").await;
    check_answer(&answer_frames(&mut resumed).await);
    let Some(Prompt::Text(prompt)) = probe.prompts().pop() else {
        panic!("a text prompt");
    };
    assert!(
        prompt.contains("Q: How is Lambda billed?\nA: Billed per use."),
        "{prompt}"
    );

    // A session id that is not valid is refused at the upgrade.
    match connect(addr, "?session=not%20valid", None).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 400),
        other => panic!("expected 400, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_refused_at_the_upgrade() {
    let generator = ScriptedGenerator::new(["ok"]);
    let probe = generator.probe();
    let addr = serve(pipeline(generator), Some("s3cret-token")).await;

    for (query, bearer) in [
        ("", None),
        ("", Some("wrong-token")),
        ("", Some("s3cret-token-but-longer")),
    ] {
        match connect(addr, query, bearer).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401, "{query} {bearer:?}")
            }
            other => panic!(
                "{query} {bearer:?} was not refused: {:?}",
                other.map(|_| ())
            ),
        }
    }
    assert_eq!(probe.calls(), 0);

    // A token in the URL is refused whatever it is: access logs keep URLs.
    for query in ["?access_token=wrong", "?access_token=s3cret-token"] {
        let (status, body) = refused(connect(addr, query, None).await);
        assert_eq!(status, 400, "{query}");
        assert!(body.contains("access logs keep URLs"), "{body}");
    }
    assert_eq!(probe.calls(), 0);

    for (query, bearer) in [("", Some("s3cret-token"))] {
        let mut client = connect(addr, query, bearer)
            .await
            .expect("the right token connects");
        assert_eq!(next_frame(&mut client).await["type"], "session");
        ask(&mut client, "Anything?").await;
        assert_eq!(check_answer_short(&answer_frames(&mut client).await), "ok");
    }
}

/// Like [`check_answer`] for a one-token answer.
fn check_answer_short(frames: &[Value]) -> String {
    let types: Vec<&str> = frames
        .iter()
        .map(|f| f["type"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(types, ["sources", "token", "done"]);
    frames[1]["text"].as_str().expect("text").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_gets_an_error_frame_and_the_connection_stays_usable() {
    let generator = ScriptedGenerator::new(["Still ", "here ", "[1]."]);
    let probe = generator.probe();
    let addr = serve(pipeline(generator), None).await;
    let (mut client, _) = open(addr, "").await;

    for bad in ["not json", r#"{"data":{}}"#, r#"{"data":{"message":42}}"#] {
        client.send(Message::text(bad)).await.expect("sent");
        let frame = next_frame(&mut client).await;
        assert_eq!(frame["type"], "error", "{bad}: {frame}");
        assert_eq!(frame["retryable"], false, "{frame}");
        assert!(
            frame["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("malformed message")),
            "{frame}"
        );
    }
    // An empty question is read, then refused by the pipeline before any model call.
    ask(&mut client, "   ").await;
    let refused = answer_frames(&mut client).await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["type"], "error");
    assert!(
        refused[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("question")),
        "{refused:?}"
    );
    assert_eq!(probe.calls(), 0);

    ask(&mut client, "Are you still there?").await;
    assert_eq!(
        check_answer(&answer_frames(&mut client).await),
        "Still here [1]."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_connection_cancels_the_model_call() {
    let generator = ScriptedGenerator::counting(1_000).with_delay(Duration::from_millis(20));
    let probe = generator.probe();
    let addr = serve(pipeline(generator), None).await;
    let (mut client, _) = open(addr, "").await;
    ask(&mut client, "Tell me everything.").await;
    assert_eq!(next_frame(&mut client).await["type"], "sources");
    assert_eq!(next_frame(&mut client).await["type"], "token");
    drop(client);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while probe.streams_dropped() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the model stream was not dropped after the client left"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(probe.streams_open(), 0);
    assert_eq!(probe.streams_finished(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_at_the_root() {
    let addr = serve(pipeline(ScriptedGenerator::new(["x"])), Some("tok")).await;
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("text/html"), "{response}");
    // The page itself needs no token; the WebSocket does.
    for needle in ["new WebSocket", "/ws?", "renderMarkdown", "\"bearer.\""] {
        assert!(response.contains(needle), "the page has {needle}");
    }
}

/// Reads the server's Close frame, checks that it says "going away", and answers it as a
/// client does (the stream then ends).
async fn expect_going_away(client: &mut Client) {
    let message = tokio::time::timeout(FRAME_WAIT, client.next())
        .await
        .expect("a Close frame in time")
        .expect("the connection is open")
        .expect("a readable message");
    let Message::Close(Some(close)) = message else {
        panic!("expected a Close frame, got {message:?}");
    };
    assert_eq!(u16::from(close.code), 1001, "{close:?}");
    assert_eq!(close.reason.as_str(), "the server is shutting down");
    // Reading on sends the client's Close in reply and sees the stream end.
    let end = tokio::time::timeout(FRAME_WAIT, client.next())
        .await
        .expect("the end in time");
    assert!(
        end.as_ref().is_none_or(|r| r.is_err()),
        "nothing after the Close: {end:?}"
    );
}

/// Connects during a shutdown, which fails: with 503 from the router, or at the TCP or HTTP
/// level from a server that stopped accepting (refused, reset from the listener's backlog, or
/// closed before the handshake's answer).
async fn expect_refused_upgrade(addr: SocketAddr) {
    match connect(addr, "", None).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        Err(tungstenite::Error::Io(_) | tungstenite::Error::Protocol(_)) => {}
        other => panic!("an upgrade during shutdown: {:?}", other.map(|_| ())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_answer_in_progress_finish_and_turns_the_next_question_away() {
    // 20 tokens, 25 ms apart: the shutdown begins half a second before the answer ends.
    let generator = ScriptedGenerator::counting(20).with_delay(Duration::from_millis(25));
    let answer = generator.answer();
    let probe = generator.probe();
    let history = Arc::new(InMemoryHistory::new());
    let backend = pipeline_with_history(generator, history.clone());
    let pipeline = backend.pipeline.clone();
    let (addr, shutdown) = serve_stoppable(backend, None, true).await;
    let (mut client, session) = open(addr, "").await;

    ask(&mut client, "Tell me everything.").await;
    let mut frames = vec![next_frame(&mut client).await, next_frame(&mut client).await];
    assert_eq!(frames[1]["type"], "token", "{frames:?}");

    shutdown.begin();
    expect_refused_upgrade(addr).await;
    ask(&mut client, "And one more thing?").await;
    let stopping = tokio::spawn({
        let pipeline = pipeline.clone();
        async move { shutdown.run(&pipeline, Duration::from_secs(10)).await }
    });

    // The answer in progress streams to its end, and its turn is saved.
    frames.extend(answer_frames(&mut client).await);
    assert_eq!(check_answer(&frames), answer);
    let done = frames.last().expect("done");
    assert_eq!(done["saved"], true, "{done}");
    // The question sent after the signal is turned away in plain words, then the connection
    // closes.
    let turned_away = next_frame(&mut client).await;
    assert_eq!(turned_away["type"], "error", "{turned_away}");
    assert_eq!(turned_away["message"], app::SHUTTING_DOWN);
    assert_eq!(turned_away["retryable"], true);
    assert!(turned_away["request_id"].is_string(), "{turned_away}");
    expect_going_away(&mut client).await;

    let stopped = tokio::time::timeout(FRAME_WAIT, stopping)
        .await
        .expect("the shutdown ends once the answer and the connection have")
        .expect("the shutdown task");
    assert!(stopped.completed(), "{}", stopped.summary());
    assert_eq!(stopped.pipeline.asks_left, 0);
    assert_eq!(stopped.pipeline.tasks_left, 0);
    assert_eq!(stopped.connections_left, 0);
    assert_eq!(
        stopped.summary(),
        "stopped: no answer was cut off, and the turn saves and dead letters finished"
    );
    assert_eq!(
        probe.calls(),
        1,
        "the second question never reached the model"
    );
    let session = SessionId::new(session).expect("a session id");
    let turns = history.load(&session, 10).await.expect("the history loads");
    assert_eq!(turns.len(), 1, "{turns:?}");
    assert_eq!(turns[0].question, "Tell me everything.");
    assert_eq!(turns[0].answer, answer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_idle_connections_at_once() {
    let backend = pipeline(ScriptedGenerator::new(["ok"]));
    let pipeline = backend.pipeline.clone();
    // axum keeps accepting, so the router's own refusal is seen.
    let (addr, shutdown) = serve_stoppable(backend, None, false).await;
    let (mut idle, _) = open(addr, "").await;
    let (mut asked, _) = open(addr, "").await;
    ask(&mut asked, "Anything?").await;
    assert_eq!(check_answer_short(&answer_frames(&mut asked).await), "ok");

    let stopping = tokio::spawn({
        let pipeline = pipeline.clone();
        async move { shutdown.run(&pipeline, Duration::from_secs(10)).await }
    });
    expect_going_away(&mut idle).await;
    expect_going_away(&mut asked).await;
    let stopped = tokio::time::timeout(FRAME_WAIT, stopping)
        .await
        .expect("in time")
        .expect("the shutdown task");
    assert!(stopped.completed(), "{}", stopped.summary());
    match connect(addr, "", None).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!("an upgrade after the shutdown: {:?}", other.map(|_| ())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_gives_up_on_a_stalled_answer_at_the_grace_deadline() {
    let generator = ScriptedGenerator::counting(10).stall_at(2);
    let probe = generator.probe();
    let backend = pipeline(generator);
    let pipeline = backend.pipeline.clone();
    let (addr, shutdown) = serve_stoppable(backend, None, true).await;
    let (mut client, _) = open(addr, "").await;
    ask(&mut client, "Tell me everything.").await;
    let types: Vec<Value> = [
        next_frame(&mut client).await,
        next_frame(&mut client).await,
        next_frame(&mut client).await,
    ]
    .iter()
    .map(|f| f["type"].clone())
    .collect();
    assert_eq!(types, ["sources", "token", "token"]);

    let grace = Duration::from_millis(300);
    let started = tokio::time::Instant::now();
    let stopped = tokio::time::timeout(FRAME_WAIT, shutdown.run(&pipeline, grace))
        .await
        .expect("the shutdown gives up at its deadline");
    let took = started.elapsed();
    assert!(took >= grace, "it waited the grace out: {took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(!stopped.completed());
    assert!(!stopped.pipeline.completed, "{:?}", stopped.pipeline);
    assert_eq!(stopped.pipeline.asks_left, 1, "{:?}", stopped.pipeline);
    assert_eq!(stopped.connections_left, 1);
    assert_eq!(
        stopped.summary(),
        "stopped: 1 answer still streaming, 1 connection still open at the deadline"
    );
    assert_eq!(
        probe.streams_open(),
        1,
        "the stalled answer was not cut off early"
    );
}

// ---- Identity: JWTs in the Cognito shape, signed by the test's own keys ----

use jwt::{id_claims, jwks, now, public_jwk, sign, token_for, Jwks, CLIENT, ISSUER};

fn verifier(jwks: &Jwks, token_use: app::auth::TokenUse) -> Arc<app::auth::JwtVerifier> {
    let config = app::auth::JwtConfig {
        jwks_url: jwks.url.clone(),
        issuer: ISSUER.to_string(),
        client_ids: vec![CLIENT.to_string()],
        token_use,
        leeway: Duration::from_secs(5),
        refresh_interval: Duration::from_secs(60),
    };
    Arc::new(app::auth::JwtVerifier::new(config).expect("a verifier"))
}

/// Serves `backend` behind JWTs verified with `jwks`'s keys, adjusted by `configure`.
async fn serve_jwt(
    backend: Backend,
    verifier: Arc<app::auth::JwtVerifier>,
    configure: impl FnOnce(&mut app::AppState),
) -> SocketAddr {
    serve_with(
        backend,
        move |state| {
            state.auth = app::auth::Auth::Jwt(verifier);
            configure(state);
        },
        false,
    )
    .await
    .0
}

fn bearer(token: &str) -> Vec<(&'static str, String)> {
    vec![("authorization", format!("Bearer {token}"))]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_that_are_expired_or_for_another_issuer_audience_or_use_are_refused() {
    let keys = jwks(&["key1"]).await;
    let generator = ScriptedGenerator::new(["ok"]);
    let probe = generator.probe();
    let addr = serve_jwt(
        pipeline(generator),
        verifier(&keys, app::auth::TokenUse::Id),
        |_| {},
    )
    .await;

    let with = |change: &dyn Fn(&mut Value)| {
        let mut claims = id_claims("alice", &["eng"]);
        change(&mut claims);
        sign(&claims, "key1", "key1")
    };
    let unauthorized = [
        (with(&|c| c["exp"] = json!(now() - 600)), "it has expired"),
        (
            with(&|c| c["iss"] = json!("https://cognito-idp.us-east-1.amazonaws.com/other")),
            "another issuer",
        ),
        (
            // Signed with key2 but claiming key1: the signature does not match.
            sign(&id_claims("alice", &[]), "key2", "key1"),
            "signature does not match",
        ),
        ("not-a-jwt".to_string(), "not a JWT"),
    ];
    for (token, why) in &unauthorized {
        match connect_with(addr, "", &bearer(token)).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401, "{why}");
                let challenge = response
                    .headers()
                    .get("www-authenticate")
                    .expect("a WWW-Authenticate header");
                assert!(challenge.to_str().unwrap().starts_with("Bearer"));
                let body =
                    String::from_utf8_lossy(response.body().as_deref().unwrap_or(&[])).into_owned();
                assert!(body.contains(why), "{why}: {body}");
            }
            other => panic!("{why}: not refused: {:?}", other.map(|_| ())),
        }
    }
    // No token at all, from a browser page: 401, saying how to send one.
    let (status, body) = refused(connect_with(addr, "", &[]).await);
    assert_eq!(status, 401);
    assert!(body.contains("bearer.TOKEN"), "{body}");

    let forbidden = [
        (
            with(&|c| c["aud"] = json!("another-client")),
            "another app client",
        ),
        (
            with(&|c| {
                c["token_use"] = json!("access");
                c["client_id"] = json!(CLIENT);
            }),
            "this service takes id tokens",
        ),
    ];
    for (token, why) in &forbidden {
        let (status, body) = refused(connect_with(addr, "", &bearer(token)).await);
        assert_eq!(status, 403, "{why}");
        assert!(body.contains(why), "{why}: {body}");
    }
    assert_eq!(probe.calls(), 0);

    // A token a few seconds past exp is within the leeway; the right token connects.
    let late = with(&|c| c["exp"] = json!(now() - 2));
    for token in [late, token_for("alice", &["eng"])] {
        let (client, _) = connect_with(addr, "", &bearer(&token))
            .await
            .expect("a valid token connects");
        let (mut client, _) = hello(client).await;
        ask(&mut client, "Anything?").await;
        assert_eq!(check_answer_short(&answer_frames(&mut client).await), "ok");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_tokens_are_checked_by_client_id() {
    let keys = jwks(&["key1"]).await;
    let addr = serve_jwt(
        pipeline(ScriptedGenerator::new(["ok"])),
        verifier(&keys, app::auth::TokenUse::Access),
        |_| {},
    )
    .await;
    let access = |client_id: &str| {
        sign(
            &json!({"sub": "alice", "iss": ISSUER, "token_use": "access", "client_id": client_id,
                    "exp": now() + 600}),
            "key1",
            "key1",
        )
    };
    let (client, _) = connect_with(addr, "", &bearer(&access(CLIENT)))
        .await
        .expect("an access token for this client connects");
    hello(client).await;
    let (status, _) = refused(connect_with(addr, "", &bearer(&access("other"))).await);
    assert_eq!(status, 403);
    // An id token is the wrong use here.
    let (status, body) = refused(connect_with(addr, "", &bearer(&token_for("alice", &[]))).await);
    assert_eq!(status, 403);
    assert!(body.contains("takes access tokens"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_kid_refreshes_the_keys_once_and_a_flood_of_bad_kids_does_not() {
    let keys = jwks(&["key1"]).await;
    let verifier = verifier(&keys, app::auth::TokenUse::Id);
    assert_eq!(verifier.load().await, Ok(1), "fetched once at startup");
    let addr = serve_jwt(
        pipeline(ScriptedGenerator::new(["ok"])),
        Arc::clone(&verifier),
        |_| {},
    )
    .await;
    for _ in 0..3 {
        let (client, _) = connect_with(addr, "", &bearer(&token_for("alice", &[])))
            .await
            .expect("key1 is cached");
        hello(client).await;
    }
    assert_eq!(
        keys.hits.load(Ordering::SeqCst),
        1,
        "the cached keys are used"
    );

    // The pool rotates in key2: the first token signed with it causes one fetch.
    keys.keys.lock().unwrap().push(public_jwk("key2"));
    let rotated = sign(&id_claims("alice", &[]), "key2", "key2");
    let (client, _) = connect_with(addr, "", &bearer(&rotated))
        .await
        .expect("the new key is fetched");
    hello(client).await;
    assert_eq!(keys.hits.load(Ordering::SeqCst), 2);

    // Made-up kids: refused, and within the refresh interval not one more fetch.
    for i in 0..10 {
        let bogus = sign(&id_claims("mallory", &[]), "key1", &format!("bogus-{i}"));
        let (status, body) = refused(connect_with(addr, "", &bearer(&bogus)).await);
        assert_eq!(status, 401);
        assert!(body.contains("signing key is unknown"), "{body}");
    }
    assert_eq!(
        keys.hits.load(Ordering::SeqCst),
        2,
        "the JWKS was not hammered"
    );
    assert_eq!(verifier.fetches(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_sends_the_token_as_a_subprotocol_and_gets_only_rag_v1_back() {
    let keys = jwks(&["key1"]).await;
    let addr = serve_jwt(
        pipeline(ScriptedGenerator::new(["ok"])),
        verifier(&keys, app::auth::TokenUse::Id),
        |_| {},
    )
    .await;
    let token = token_for("alice", &["eng"]);
    let offered = vec![("sec-websocket-protocol", format!("rag.v1, bearer.{token}"))];
    let (client, response) = connect_with(addr, "", &offered)
        .await
        .expect("the subprotocol token connects");
    let selected = response
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect::<Vec<_>>();
    assert_eq!(
        selected,
        ["rag.v1"],
        "only rag.v1 is echoed, never the token"
    );
    assert!(
        !format!("{:?}", response.headers()).contains(&token),
        "the token is nowhere in the response"
    );
    let (mut client, _) = hello(client).await;
    ask(&mut client, "Anything?").await;
    assert_eq!(check_answer_short(&answer_frames(&mut client).await), "ok");

    // A bad token in the subprotocol is refused like one in the header.
    let bad = vec![("sec-websocket-protocol", "rag.v1, bearer.nope".to_string())];
    assert_eq!(refused(connect_with(addr, "", &bad).await).0, 401);
    // And never in the URL.
    let (status, _) = refused(connect_with(addr, &format!("?access_token={token}"), &[]).await);
    assert_eq!(status, 400);
}

// ---- Ownership ----

/// An in-memory history that counts the loads it was asked for.
#[derive(Debug, Default)]
struct CountingHistory {
    inner: InMemoryHistory,
    loads: AtomicUsize,
}

#[async_trait]
impl HistoryStore for CountingHistory {
    async fn load(&self, session: &SessionId, max_turns: usize) -> rag::Result<Vec<Turn>> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        self.inner.load(session, max_turns).await
    }
    async fn append(&self, session: &SessionId, turn: &Turn) -> rag::Result<()> {
        self.inner.append(session, turn).await
    }
    async fn clear(&self, session: &SessionId) -> rag::Result<()> {
        self.inner.clear(session).await
    }
    async fn owner(&self, session: &SessionId) -> rag::Result<SessionOwner> {
        self.inner.owner(session).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_another_users_session_is_refused_before_its_history_is_read() {
    let keys = jwks(&["key1"]).await;
    let history = Arc::new(CountingHistory::default());
    let generator = ScriptedGenerator::new(["Alice's ", "answer."]);
    let probe = generator.probe();
    let backend = pipeline_with_history(generator, history.clone());
    let addr = serve_jwt(backend, verifier(&keys, app::auth::TokenUse::Id), |_| {}).await;
    let alice = token_for("alice-sub", &[]);
    let bob = token_for("bob-sub", &[]);

    let (client, _) = connect_with(addr, "", &bearer(&alice))
        .await
        .expect("alice");
    let (mut client, session) = hello(client).await;
    let version = uuid::Uuid::parse_str(&session).map(|u| u.get_version_num());
    assert_eq!(version, Ok(4), "a new session id is random: {session}");
    ask(&mut client, "My secret plans?").await;
    check_answer(&answer_frames(&mut client).await);
    let owner = history
        .owner(&SessionId::new(session.clone()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        owner,
        SessionOwner::User(rag::Owner::new("alice-sub").unwrap()),
        "the session is kept in alice's namespace"
    );
    let loads = history.loads.load(Ordering::SeqCst);
    assert_eq!(loads, 1);

    let (status, body) =
        refused(connect_with(addr, &format!("?session={session}"), &bearer(&bob)).await);
    assert_eq!(status, 403);
    assert_eq!(body, "this conversation belongs to another user");
    assert_eq!(
        history.loads.load(Ordering::SeqCst),
        loads,
        "nothing of the session was read for bob"
    );

    // Alice resumes it, and her history is in the prompt.
    let (client, _) = connect_with(addr, &format!("?session={session}"), &bearer(&alice))
        .await
        .expect("alice resumes");
    let (mut client, resumed) = hello(client).await;
    assert_eq!(resumed, session);
    ask(&mut client, "And then?").await;
    check_answer(&answer_frames(&mut client).await);
    let Some(Prompt::Text(prompt)) = probe.prompts().pop() else {
        panic!("a text prompt");
    };
    assert!(prompt.contains("Q: My secret plans?"), "{prompt}");
}

// ---- Document access ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_with_different_groups_get_different_sources_for_one_question() {
    let index = TantivyRetriever::in_memory().expect("an index");
    let doc = |id: &str, text: &str, groups: Value| {
        let mut passage = Passage::new(id, text).with_title(id);
        passage.attributes.insert("groups".into(), groups);
        passage
    };
    index
        .add_passages([
            doc(
                "eng-runbook",
                "How to deploy the service: the engineering runbook.",
                json!(["eng"]),
            ),
            doc(
                "finance-plan",
                "How to deploy the budget: the finance plan.",
                json!(["finance"]),
            ),
            doc(
                "handbook",
                "How to deploy anything: the public handbook.",
                json!("public"),
            ),
            doc(
                "untagged",
                "How to deploy without any group attribute.",
                json!(null),
            ),
        ])
        .expect("indexed");
    let history: Arc<dyn HistoryStore> = Arc::new(InMemoryHistory::new());
    let pipeline = Pipeline::builder()
        .with_retriever(index)
        .with_history(Arc::clone(&history))
        .with_template(PlainTemplate::default())
        .with_generator(ScriptedGenerator::new(["See ", "[1]."]))
        .build()
        .expect("a pipeline");
    let keys = jwks(&["key1"]).await;
    let addr = serve_jwt(
        Backend { pipeline, history },
        verifier(&keys, app::auth::TokenUse::Id),
        |state| {
            state.access = Some(app::access::GroupAccess {
                attribute: "groups".into(),
                public: vec!["public".into()],
            });
        },
    )
    .await;

    let mut seen = Vec::new();
    for (sub, groups) in [("alice", &["eng"][..]), ("bob", &["finance"][..])] {
        let (client, _) = connect_with(addr, "", &bearer(&token_for(sub, groups)))
            .await
            .expect("connected");
        let (mut client, _) = hello(client).await;
        ask(&mut client, "How do I deploy?").await;
        let frames = answer_frames(&mut client).await;
        assert_eq!(frames[0]["type"], "sources", "{frames:?}");
        let mut ids: Vec<String> = frames[0]["sources"]
            .as_array()
            .expect("sources")
            .iter()
            .map(|s| s["passage_id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        seen.push(ids);
    }
    assert_eq!(
        seen[0],
        ["eng-runbook", "handbook"],
        "alice: eng and public"
    );
    assert_eq!(
        seen[1],
        ["finance-plan", "handbook"],
        "bob: finance and public"
    );
}

// ---- Limits ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_limit_gets_an_error_frame_and_the_connection_stays_open() {
    let (addr, _shutdown) = serve_with(
        pipeline(ScriptedGenerator::new(["ok"])),
        |state| state.limits.max_message_bytes = 1024,
        false,
    )
    .await;
    let (mut client, _) = open(addr, "").await;
    let big = json!({"data": {"message": "x".repeat(2000), "id": "big"}}).to_string();
    client.send(Message::text(big)).await.expect("sent");
    let frame = next_frame(&mut client).await;
    assert_eq!(frame["type"], "error", "{frame}");
    assert!(
        frame["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("the payload was too large")),
        "{frame}"
    );
    assert!(frame["request_id"].is_string(), "{frame}");
    // Still open and answering.
    ask(&mut client, "Small question?").await;
    assert_eq!(check_answer_short(&answer_frames(&mut client).await), "ok");

    // Past the hard cap (four times the limit) the WebSocket layer ends the connection.
    let huge = "y".repeat(8 * 1024);
    let _ = client.send(Message::text(huge)).await;
    let end = tokio::time::timeout(FRAME_WAIT, async {
        loop {
            match client.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the connection ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_limited_per_client_address_and_per_server() {
    let (addr, _s) = serve_with(
        pipeline(ScriptedGenerator::new(["ok"])),
        |state| state.limits.max_connections_per_client = 1,
        false,
    )
    .await;
    let (first, _) = open(addr, "").await;
    let (status, body) = refused(connect(addr, "", None).await);
    assert_eq!(status, 429);
    assert!(
        body.contains("too many connections from your address"),
        "{body}"
    );
    // Once the first closes, its slot is free again.
    drop(first);
    let deadline = tokio::time::Instant::now() + FRAME_WAIT;
    loop {
        match connect(addr, "", None).await {
            Ok(client) => {
                hello(client).await;
                break;
            }
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("the slot was never freed: {e}"),
        }
    }

    let (addr, _s) = serve_with(
        pipeline(ScriptedGenerator::new(["ok"])),
        |state| state.limits.max_connections = 1,
        false,
    )
    .await;
    let (_first, _) = open(addr, "").await;
    let (status, body) = refused(connect(addr, "", None).await);
    assert_eq!(status, 503);
    assert!(body.contains("too many connections"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asks_in_flight_are_limited_per_user_across_connections() {
    let keys = jwks(&["key1"]).await;
    let generator = ScriptedGenerator::counting(30).with_delay(Duration::from_millis(20));
    let addr = serve_jwt(
        pipeline(generator),
        verifier(&keys, app::auth::TokenUse::Id),
        |state| state.limits.max_asks_per_user = 1,
    )
    .await;
    let alice = token_for("alice", &[]);
    let connect_as = |token: String| async move {
        let (client, _) = connect_with(addr, "", &bearer(&token))
            .await
            .expect("connected");
        hello(client).await.0
    };
    let mut first = connect_as(alice.clone()).await;
    let mut second = connect_as(alice).await;
    let mut bob = connect_as(token_for("bob", &[])).await;

    ask(&mut first, "Tell me everything.").await;
    assert_eq!(next_frame(&mut first).await["type"], "sources");
    ask(&mut second, "And me?").await;
    let refused = next_frame(&mut second).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["retryable"], true);
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("at most 1")),
        "{refused}"
    );
    // Another user is not held up by alice's.
    ask(&mut bob, "Mine?").await;
    assert_eq!(next_frame(&mut bob).await["type"], "sources");
    // Once alice's first answer is done, she may ask again.
    let rest = answer_frames(&mut first).await;
    assert_eq!(rest.last().unwrap()["type"], "done");
    ask(&mut second, "Now?").await;
    assert_eq!(next_frame(&mut second).await["type"], "sources");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_and_any_frame_keeps_it_open() {
    let idle = Duration::from_millis(400);
    let (addr, _s) = serve_with(
        pipeline(ScriptedGenerator::new(["ok"])),
        |state| state.limits.idle_timeout = idle,
        false,
    )
    .await;
    let (mut client, _) = open(addr, "").await;
    let started = tokio::time::Instant::now();
    // A ping before the deadline keeps it open past the first deadline.
    tokio::time::sleep(Duration::from_millis(250)).await;
    client
        .send(Message::Ping(vec![1].into()))
        .await
        .expect("ping");
    tokio::time::sleep(Duration::from_millis(250)).await;
    client
        .send(Message::Ping(vec![2].into()))
        .await
        .expect("ping");
    let mut pongs = 0;
    let close = loop {
        let message = tokio::time::timeout(FRAME_WAIT, client.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("readable");
        match message {
            Message::Pong(_) => pongs += 1,
            Message::Close(close) => break close,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(pongs, 2, "open through both pings");
    assert!(started.elapsed() >= Duration::from_millis(500) + idle - Duration::from_millis(50));
    let close = close.expect("a close frame with a code");
    assert_eq!(u16::from(close.code), 1000);
    assert!(close.reason.contains("idle"), "{close:?}");
}

// ---- Origin ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_from_other_origins_are_refused_and_clients_without_one_need_a_token() {
    let addr = serve(pipeline(ScriptedGenerator::new(["ok"])), None).await;
    let origin = |o: &str| vec![("origin", o.to_string())];
    let (status, body) = refused(connect_with(addr, "", &origin("https://evil.example")).await);
    assert_eq!(status, 403);
    assert!(
        body.contains("https://evil.example may not connect"),
        "{body}"
    );
    for ok in ["http://localhost:5173", "http://127.0.0.1:8080"] {
        let (client, _) = connect_with(addr, "", &origin(ok)).await.expect(ok);
        hello(client).await;
    }
    // No Origin (not a browser) and no token configured: refused.
    let (status, body) = refused(connect_with(addr, "", &origin("")).await);
    assert_eq!(status, 403);
    assert!(body.contains("must authenticate with a token"), "{body}");

    // With a token, a client without Origin may connect; an allowlist replaces the default.
    let (addr, _s) = serve_with(
        pipeline(ScriptedGenerator::new(["ok"])),
        |state| {
            state.auth = app::auth::Auth::Shared("tok".into());
            state.origins.allowed = vec!["https://chat.example.com".into()];
        },
        false,
    )
    .await;
    let mut headless = bearer("tok");
    headless.push(("origin", String::new()));
    let (client, _) = connect_with(addr, "", &headless)
        .await
        .expect("a tool with a token");
    hello(client).await;
    let mut page = bearer("tok");
    page.push(("origin", "https://chat.example.com".into()));
    let (client, _) = connect_with(addr, "", &page)
        .await
        .expect("the allowed page");
    hello(client).await;
    let mut local = bearer("tok");
    local.push(("origin", "http://127.0.0.1:8080".into()));
    assert_eq!(refused(connect_with(addr, "", &local).await).0, 403);
}

// ---- Errors and the frame protocol ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_frames_carry_a_request_id_and_plain_words_never_the_backends_message() {
    let raw = "ThrottlingException: Too many requests for \
               arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude";
    let generator =
        ScriptedGenerator::new(["never"]).fail_first(100, rag::Error::generation(raw, true));
    let history: Arc<dyn HistoryStore> = Arc::new(InMemoryHistory::new());
    let pipeline = Pipeline::builder()
        .with_retriever(StaticRetriever::new(passages()))
        .with_history(Arc::clone(&history))
        .with_template(PlainTemplate::default())
        .with_generator(generator)
        .with_retry(RetryPolicy::none())
        .build()
        .expect("a pipeline");
    let addr = serve(Backend { pipeline, history }, None).await;
    let (mut client, _) = open(addr, "").await;
    let question = json!({"data": {"message": "Hello?", "id": "q-1"}, "timestamp": 1});
    client
        .send(Message::text(question.to_string()))
        .await
        .expect("sent");
    let frames = answer_frames(&mut client).await;
    let error = frames.last().expect("an error");
    assert_eq!(error["type"], "error", "{frames:?}");
    assert_eq!(error["message"], "the model is busy, try again");
    assert_eq!(error["retryable"], true);
    assert_eq!(error["id"], "q-1");
    assert!(
        error["request_id"].as_str().is_some_and(|r| r.len() == 36),
        "{error}"
    );
    let all = serde_json::to_string(&frames).unwrap();
    for secret in ["123456789012", "arn:aws", "ThrottlingException"] {
        assert!(!all.contains(secret), "{secret} leaked: {all}");
    }
    // A malformed message's error has a request id too, and a null id.
    client.send(Message::text("not json")).await.expect("sent");
    let malformed = next_frame(&mut client).await;
    assert_eq!(malformed["type"], "error");
    assert!(malformed["request_id"].is_string(), "{malformed}");
    assert_eq!(malformed["id"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_frame_of_an_answer_echoes_the_client_id_and_one_request_id() {
    let history: Arc<dyn HistoryStore> = Arc::new(InMemoryHistory::new());
    let pipeline = Pipeline::builder()
        .with_retriever(StaticRetriever::new(vec![
            Passage::new("p1", "Lambda runs code.")
                .with_title("Lambda")
                .with_uri("/srv/private/docs/lambda.md"),
            Passage::new("p2", "Guide.")
                .with_title("Guide")
                .with_uri("https://docs.example.com/guide"),
        ]))
        .with_history(Arc::clone(&history))
        .with_template(PlainTemplate::default())
        .with_generator(ScriptedGenerator::new(["A ", "[1] ", "[2]."]))
        .build()
        .expect("a pipeline");
    let addr = serve(Backend { pipeline, history }, None).await;
    let (mut client, _) = open(addr, "").await;

    let question = json!({"data": {"message": "What?", "id": "client-7"}, "timestamp": 1});
    client
        .send(Message::text(question.to_string()))
        .await
        .expect("sent");
    let first = answer_frames(&mut client).await;
    check_answer(&first);
    let request_id = first[0]["request_id"].as_str().expect("a request id");
    for frame in &first {
        assert_eq!(frame["id"], "client-7", "{frame}");
        assert_eq!(frame["request_id"], request_id, "{frame}");
    }
    let sources = first[0]["sources"].as_array().expect("sources");
    assert_eq!(sources[0]["title"], "Lambda");
    assert_eq!(
        sources[0]["uri"],
        Value::Null,
        "no server path: {}",
        sources[0]
    );
    assert_eq!(sources[1]["uri"], "https://docs.example.com/guide");

    ask(&mut client, "Again?").await;
    let second = answer_frames(&mut client).await;
    for frame in &second {
        assert_eq!(frame["id"], Value::Null, "{frame}");
        assert_ne!(
            frame["request_id"], request_id,
            "a new request id each question"
        );
        assert!(frame["request_id"].is_string());
    }
}
