//! OpenAiCompatGenerator against a loopback server that streams real-shaped chat completion
//! chunks: bodies split across TCP reads, CRLF line ends, keep-alive comments, error objects
//! in the stream, cut connections, stalls, and failed calls.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use rag_core::{
    Chunk, Error, GenerationParams, Generator, Message, Prompt, Stage, StopReason, Usage,
};
use rag_openai::OpenAiCompatGenerator;
use serde_json::json;
use support::{
    answer, answer_chunks, answer_events, collect, finish_event, text, text_event, Part, Reply,
    TestServer, DONE,
};

fn generator(server: &TestServer) -> OpenAiCompatGenerator {
    OpenAiCompatGenerator::builder(server.base_url(), "test-model")
        .with_idle_timeout(Duration::from_millis(300))
        .build()
        .unwrap()
}

fn prompt() -> Prompt {
    Prompt::Chat {
        system: Some("Answer from the passages.".into()),
        messages: vec![Message::user("What does Lambda do?")],
    }
}

fn params() -> GenerationParams {
    GenerationParams::default().with_max_tokens(512)
}

#[tokio::test]
async fn chunks_split_across_reads_with_crlf_and_comments_stream_the_answer() {
    // The whole stream with CRLF line ends and keep-alive comments between the events...
    let mut wire = String::from(": keep-alive\r\n\r\n");
    for event in answer_events() {
        wire.push_str(&event.replace('\n', "\r\n"));
        wire.push_str(": keep-alive\r\n\r\n");
    }
    // ...written in 7-byte pieces, each its own write after a pause, so that lines, the
    // CRLF pairs and the two bytes of `ç` fall across TCP reads.
    let bytes = wire.into_bytes();
    let mut parts = Vec::new();
    for piece in bytes.chunks(7) {
        parts.push(Part::Bytes(Bytes::copy_from_slice(piece)));
        parts.push(Part::Pause(Duration::from_millis(1)));
    }
    let server = TestServer::start([Reply::Sse(parts)]).await;
    let stream = generator(&server)
        .generate(&prompt(), &params())
        .await
        .unwrap();
    let (chunks, error) = collect(stream).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(chunks, answer_chunks());
    assert_eq!(text(&chunks), answer());
}

#[tokio::test]
async fn the_request_carries_the_model_the_messages_and_the_settings() {
    let server = TestServer::start([Reply::events(answer_events())]).await;
    let g = OpenAiCompatGenerator::builder(server.base_url(), "llama3.2")
        .with_api_key("sk-test-key")
        .build()
        .unwrap();
    let chat = Prompt::Chat {
        system: Some("Be brief.".into()),
        messages: vec![
            Message::user("What is Lambda?"),
            Message::assistant("A compute service."),
            Message::user("Its limits?"),
        ],
    };
    let params = GenerationParams::default()
        .with_max_tokens(300)
        .with_temperature(0.3)
        .with_stop_sequence("###");
    collect(g.generate(&chat, &params).await.unwrap()).await;
    let request = &server.requests()[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/v1/chat/completions");
    assert_eq!(
        request.header("authorization").as_deref(),
        Some("Bearer sk-test-key")
    );
    assert_eq!(
        request.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        request.header("accept").as_deref(),
        Some("text/event-stream")
    );
    assert_eq!(
        request.json(),
        json!({
            "model": "llama3.2",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What is Lambda?"},
                {"role": "assistant", "content": "A compute service."},
                {"role": "user", "content": "Its limits?"},
            ],
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": 300,
            "temperature": 0.3,
            "stop": ["###"],
        })
    );
}

#[tokio::test]
async fn no_key_means_no_authorization_header_and_usage_can_be_left_out() {
    let server = TestServer::start([Reply::events(answer_events())]).await;
    let g = OpenAiCompatGenerator::builder(server.base_url(), "m")
        .with_include_usage(false)
        .build()
        .unwrap();
    collect(g.generate(&prompt(), &params()).await.unwrap()).await;
    let request = &server.requests()[0];
    assert_eq!(request.header("authorization"), None);
    let body = request.json();
    assert!(body.get("stream_options").is_none(), "{body}");
    assert_eq!(body["stream"], true);
}

#[tokio::test]
async fn a_mid_stream_error_object_ends_the_stream_with_a_typed_error() {
    let server = TestServer::start([Reply::events([
        text_event("Lambda "),
        text_event("runs "),
        "data: {\"error\":{\"message\":\"The server had an error while processing your request. Sorry about that!\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n".to_owned(),
        text_event("never read"),
        DONE.to_owned(),
    ])])
    .await;
    let (chunks, error) = collect(
        generator(&server)
            .generate(&prompt(), &params())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(text(&chunks), "Lambda runs ");
    let error = error.expect("an error item");
    assert!(
        matches!(
            error,
            Error::Generation {
                retryable: true,
                ..
            }
        ),
        "{error}"
    );
    assert!(
        error.to_string().contains("server_error")
            && error.to_string().contains("The server had an error"),
        "{error}"
    );
}

#[tokio::test]
async fn a_connection_cut_before_done_is_a_retryable_error_not_a_silent_end() {
    // The connection breaks mid-body; and, separately, the body ends cleanly but early.
    // (The pauses let the response head and the first pieces reach the client first.)
    let cut = Reply::Sse(vec![
        Part::Bytes(text_event("Lambda ").into()),
        Part::Pause(Duration::from_millis(30)),
        Part::Bytes(Bytes::from_static(b"data: {\"choices\":[{\"index\":0,\"de")),
        Part::Pause(Duration::from_millis(30)),
        Part::Cut,
    ]);
    let short = Reply::events([text_event("Lambda "), text_event("runs")]);
    let server = TestServer::start([cut, short]).await;
    let g = generator(&server);
    for label in ["cut", "ended early"] {
        let (chunks, error) = collect(g.generate(&prompt(), &params()).await.unwrap()).await;
        assert!(text(&chunks).starts_with("Lambda "), "{label}: {chunks:?}");
        let error = error.unwrap_or_else(|| panic!("{label}: the stream ended silently"));
        assert!(
            matches!(
                error,
                Error::Generation {
                    retryable: true,
                    ..
                }
            ),
            "{label}: {error}"
        );
        assert!(error.to_string().contains("[DONE]"), "{label}: {error}");
    }
}

#[tokio::test]
async fn an_end_after_the_finish_reason_without_done_keeps_the_answer() {
    // A server that stops after the finish reason lost at most the usage chunk.
    let server = TestServer::start([Reply::events([
        text_event("Lambda."),
        finish_event("length"),
    ])])
    .await;
    let (chunks, error) = collect(
        generator(&server)
            .generate(&prompt(), &params())
            .await
            .unwrap(),
    )
    .await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        chunks,
        vec![
            Chunk::Text("Lambda.".into()),
            Chunk::Stop(StopReason::MaxTokens)
        ]
    );
}

#[tokio::test]
async fn a_stall_ends_with_the_idle_timeout() {
    let server = TestServer::start([Reply::Sse(vec![
        Part::Bytes(text_event("Lambda ").into()),
        Part::Stall,
    ])])
    .await;
    let g = OpenAiCompatGenerator::builder(server.base_url(), "m")
        .with_idle_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let started = Instant::now();
    let (chunks, error) = collect(g.generate(&prompt(), &params()).await.unwrap()).await;
    assert_eq!(text(&chunks), "Lambda ");
    let error = error.expect("a timeout");
    assert!(
        matches!(
            error,
            Error::Timeout {
                stage: Stage::Generation,
                after
            } if after == Duration::from_millis(200)
        ),
        "{error}"
    );
    assert!(error.is_retryable());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
}

#[tokio::test]
async fn keep_alive_comments_keep_a_slow_stream_alive() {
    // Comments every 100 ms for 500 ms with an idle timeout of 300 ms: the server is alive.
    let mut parts = vec![Part::Bytes(text_event("slow ").into())];
    for _ in 0..5 {
        parts.push(Part::Pause(Duration::from_millis(100)));
        parts.push(Part::Bytes(Bytes::from_static(b": keep-alive\n\n")));
    }
    parts.extend(
        [finish_event("stop"), DONE.to_owned()]
            .into_iter()
            .map(|e| Part::Bytes(e.into())),
    );
    let server = TestServer::start([Reply::Sse(parts)]).await;
    let (chunks, error) = collect(
        generator(&server)
            .generate(&prompt(), &params())
            .await
            .unwrap(),
    )
    .await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(text(&chunks), "slow ");
}

#[tokio::test]
async fn a_context_length_400_is_prompt_too_long_with_the_sizes() {
    let vllm = Reply::status(
        400,
        json!({
            "object": "error",
            "message": "This model's maximum context length is 4096 tokens. However, you requested 6000 tokens (5488 in the messages, 512 in the completion). Please reduce the length of the messages or completion.",
            "type": "BadRequestError",
            "param": null,
            "code": 400
        }),
    );
    let openai = Reply::status(
        400,
        json!({"error": {
            "message": "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens. Please reduce the length of the messages.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded"
        }}),
    );
    let server = TestServer::start([vllm, openai]).await;
    let g = generator(&server);
    for (tokens, limit) in [(5_488, 3_584), (9_000, 7_680)] {
        let err = g.generate(&prompt(), &params()).await.err().unwrap();
        match &err {
            Error::PromptTooLong {
                tokens: t,
                limit: l,
                message,
            } => {
                assert_eq!((*t, *l), (Some(tokens), Some(limit)), "{message}");
                assert!(message.contains("maximum context length"), "{message}");
            }
            other => panic!("not PromptTooLong: {other}"),
        }
        assert!(!err.is_retryable());
    }
}

#[tokio::test]
async fn failed_calls_are_classified_by_status() {
    let server = TestServer::start([
        Reply::error(401, "invalid_request_error", "Incorrect API key provided"),
        Reply::error(403, "permission_error", "not allowed"),
        Reply::error(404, "invalid_request_error", "model 'nope' not found"),
        Reply::error(400, "invalid_request_error", "bad temperature"),
        Reply::error(429, "requests", "Rate limit reached"),
        Reply::error(500, "server_error", "boom"),
        Reply::Whole {
            status: 503,
            content_type: "text/html",
            body: "<html>Service Unavailable</html>".into(),
        },
    ])
    .await;
    let g = generator(&server);
    for (status, retryable, says) in [
        (401, false, "Incorrect API key"),
        (403, false, "not allowed"),
        (404, false, "not found"),
        (400, false, "bad temperature"),
        (429, true, "Rate limit"),
        (500, true, "boom"),
        (503, true, "Service Unavailable"),
    ] {
        let err = g.generate(&prompt(), &params()).await.err().unwrap();
        assert!(
            matches!(err, Error::Generation { retryable: r, .. } if r == retryable),
            "{status}: {err}"
        );
        let text = err.to_string();
        assert!(
            text.contains(&format!("HTTP {status}")) && text.contains(says),
            "{status}: {text}"
        );
    }
    assert_eq!(server.hits(), 7, "one request per call: no client retries");
}

#[tokio::test]
async fn an_unreachable_server_is_retryable_and_a_slow_start_times_out() {
    // A port nothing listens on.
    let closed = OpenAiCompatGenerator::builder("http://127.0.0.1:9/v1", "m")
        .build()
        .unwrap();
    let err = closed.generate(&prompt(), &params()).await.err().unwrap();
    assert!(
        matches!(
            err,
            Error::Generation {
                retryable: true,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("127.0.0.1:9"), "{err}");

    // A listener that accepts and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let slow = OpenAiCompatGenerator::builder(format!("http://{addr}/v1"), "m")
        .with_request_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let err = slow.generate(&prompt(), &params()).await.err().unwrap();
    assert!(
        matches!(err, Error::Timeout { stage: Stage::Generation, after } if after == Duration::from_millis(200)),
        "{err}"
    );
}

#[tokio::test]
async fn a_json_answer_to_a_stream_request_is_an_error() {
    let server = TestServer::start([
        Reply::status(
            200,
            json!({"error": {"message": "slot unavailable", "code": 503}}),
        ),
        Reply::status(
            200,
            json!({"object": "chat.completion", "choices": [{"message": {"content": "hi"}}]}),
        ),
    ])
    .await;
    let g = generator(&server);
    let err = g.generate(&prompt(), &params()).await.err().unwrap();
    assert!(
        err.is_retryable() && err.to_string().contains("slot unavailable"),
        "{err}"
    );
    let err = g.generate(&prompt(), &params()).await.err().unwrap();
    assert!(
        !err.is_retryable() && err.to_string().contains("not an event stream"),
        "{err}"
    );
}

#[tokio::test]
async fn usage_arrives_as_a_chunk() {
    let server = TestServer::start([Reply::events(answer_events())]).await;
    let (chunks, _) = collect(
        generator(&server)
            .generate(&prompt(), &params())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(chunks.last(), Some(&Chunk::Usage(Usage::new(42, 7))));
}
