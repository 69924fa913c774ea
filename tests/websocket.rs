//! The WebSocket example's service, started on 127.0.0.1 port 0 with scripted pieces and
//! driven by a tokio-tungstenite client.

#[path = "../examples/websocket/app.rs"]
#[allow(dead_code)]
mod app;

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use futures::{SinkExt, StreamExt};
use rag::memory::InMemoryHistory;
use rag::testing::{PlainTemplate, ScriptedGenerator, StaticRetriever};
use rag::{Chunk, ChunkStream, GenerationParams, Generator, Passage, Pipeline, Prompt, StopReason};
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
    Pipeline::builder()
        .with_retriever(StaticRetriever::new(passages()))
        .with_history(InMemoryHistory::new())
        .with_template(PlainTemplate::default())
        .with_generator(generator)
        .build()
        .expect("a valid pipeline")
}

/// Serves the example's router on a free loopback port.
async fn serve(pipeline: Pipeline, token: Option<&str>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let router = app::router(app::AppState {
        pipeline,
        token: token.map(String::from),
    });
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
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
