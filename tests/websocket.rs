//! The WebSocket example's service, started on 127.0.0.1 port 0 with scripted pieces and
//! driven by a tokio-tungstenite client.

#[path = "../examples/websocket/app.rs"]
#[allow(dead_code)]
mod app;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{SinkExt, StreamExt};
use rag::memory::InMemoryHistory;
use rag::testing::{PlainTemplate, ScriptedGenerator, StaticRetriever};
use rag::{
    Chunk, ChunkStream, GenerationParams, Generator, HistoryStore, Passage, Pipeline, Prompt,
    SessionId, StopReason,
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

fn pipeline(generator: impl Generator + 'static) -> Pipeline {
    pipeline_with_history(generator, Arc::new(InMemoryHistory::new()))
}

fn pipeline_with_history(
    generator: impl Generator + 'static,
    history: Arc<InMemoryHistory>,
) -> Pipeline {
    Pipeline::builder()
        .with_retriever(StaticRetriever::new(passages()))
        .with_history(history)
        .with_template(PlainTemplate::default())
        .with_generator(generator)
        .build()
        .expect("a valid pipeline")
}

/// Serves the example's router on a free loopback port.
async fn serve(pipeline: Pipeline, token: Option<&str>) -> SocketAddr {
    serve_stoppable(pipeline, token, false).await.0
}

/// Serves the example's router on a free loopback port; the test stops it with the returned
/// [`app::Shutdown`], as `main` does on a signal. With `stop_accepting`, axum stops accepting
/// when the shutdown begins, as in `main`; without it, upgrades still reach the router.
async fn serve_stoppable(
    pipeline: Pipeline,
    token: Option<&str>,
    stop_accepting: bool,
) -> (SocketAddr, app::Shutdown) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let (shutdown, signal) = app::Shutdown::new();
    let router = app::router(app::AppState {
        pipeline,
        token: token.map(String::from),
        shutdown: signal,
    });
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

async fn connect(
    addr: SocketAddr,
    query: &str,
    bearer: Option<&str>,
) -> Result<Client, tungstenite::Error> {
    let mut request = format!("ws://{addr}/ws{query}")
        .into_client_request()
        .expect("a valid request");
    if let Some(token) = bearer {
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("a header value"),
        );
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(client, _)| client)
}

/// Connects and reads the session frame; returns the client and its session id.
async fn open(addr: SocketAddr, query: &str) -> (Client, String) {
    let mut client = connect(addr, query, None).await.expect("connected");
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
        ("?access_token=wrong", None),
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

    for (query, bearer) in [
        ("", Some("s3cret-token")),
        ("?access_token=s3cret-token", None),
    ] {
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
    for needle in ["new WebSocket", "/ws?", "renderMarkdown", "escapeHtml"] {
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
    let pipeline = pipeline_with_history(generator, Arc::clone(&history));
    let (addr, shutdown) = serve_stoppable(pipeline.clone(), None, true).await;
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
    assert_eq!(
        next_frame(&mut client).await,
        json!({"type": "error", "message": app::SHUTTING_DOWN, "retryable": true})
    );
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
    let pipeline = pipeline(ScriptedGenerator::new(["ok"]));
    // axum keeps accepting, so the router's own refusal is seen.
    let (addr, shutdown) = serve_stoppable(pipeline.clone(), None, false).await;
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
    let pipeline = pipeline(generator);
    let (addr, shutdown) = serve_stoppable(pipeline.clone(), None, true).await;
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
