//! ConverseStream through the real SDK client against a loopback event-stream server.

mod support;

use std::time::Duration;

use bytes::Bytes;
use rag_bedrock::BedrockGenerator;
use rag_core::{Error, GenerationParams, Generator, Message, Prompt, Stage, StopReason, Usage};
use serde_json::json;
use support::families::{self, PIECES};
use support::{
    client, collect, converse_event, decoded_path, exception, stop, text, Part, Reply, TestServer,
};

fn events(stop_reason: &str) -> Vec<Bytes> {
    let mut out = vec![converse_event("messageStart", json!({"role": "assistant"}))];
    out.extend(PIECES.iter().map(|p| {
        converse_event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": p}}),
        )
    }));
    out.push(converse_event(
        "contentBlockStop",
        json!({"contentBlockIndex": 0}),
    ));
    out.push(converse_event(
        "messageStop",
        json!({"stopReason": stop_reason}),
    ));
    out.push(converse_event(
        "metadata",
        json!({
            "usage": {"inputTokens": 42, "outputTokens": PIECES.len(), "totalTokens": 42 + PIECES.len()},
            "metrics": {"latencyMs": 730}
        }),
    ));
    out
}

fn generator(model_id: &str, server: &TestServer) -> BedrockGenerator {
    BedrockGenerator::converse(model_id)
        .with_client(client::runtime(&server.url()))
        .with_idle_timeout(Duration::from_millis(400))
        .build()
        .unwrap()
}

fn prompt() -> Prompt {
    Prompt::Chat {
        system: Some("Answer from the passages.".into()),
        messages: vec![
            Message::user("What is Lambda?"),
            Message::assistant("A compute service."),
            Message::user("What does it do?"),
        ],
    }
}

#[tokio::test]
async fn any_chat_model_streams_through_converse() {
    // Cohere, AI21 Jamba and Amazon Nova have no native family here: Converse serves them.
    let models = [
        ("cohere.command-r-plus-v1:0", Some(json!({"k": 50}))),
        ("ai21.jamba-1-5-large-v1:0", None),
        (
            "us.amazon.nova-pro-v1:0",
            Some(json!({"inferenceConfig": {"topK": 50}})),
        ),
        (
            "anthropic.claude-3-sonnet-20240229-v1:0",
            Some(json!({"top_k": 50})),
        ),
    ];
    for (model_id, additional) in models {
        let server = TestServer::start([Reply::frames(events("end_turn"))]).await;
        let stream = generator(model_id, &server)
            .generate(&prompt(), &families::params().with_stop_sequence("###"))
            .await
            .unwrap();
        let (chunks, err) = collect(stream).await;
        assert!(err.is_none(), "{model_id}: {err:?}");
        assert_eq!(text(&chunks), families::answer());
        assert_eq!(stop(&chunks), Some(StopReason::EndTurn));
        assert_eq!(
            families::merged_usage(&chunks),
            Some(Usage::new(42, PIECES.len() as u64))
        );
        let request = &server.requests()[0];
        assert_eq!(
            decoded_path(request),
            format!("/model/{model_id}/converse-stream")
        );
        let mut expected = json!({
            "system": [{"text": "Answer from the passages."}],
            "messages": [
                {"role": "user", "content": [{"text": "What is Lambda?"}]},
                {"role": "assistant", "content": [{"text": "A compute service."}]},
                {"role": "user", "content": [{"text": "What does it do?"}]}
            ],
            "inferenceConfig": {"maxTokens": 512, "temperature": 0.2, "topP": 0.9, "stopSequences": ["###"]}
        });
        if let Some(additional) = additional {
            expected["additionalModelRequestFields"] = additional;
        }
        let mut body = request.json();
        // The SDK serializes f32 settings as f64 (0.2f32 is 0.20000000298...).
        for key in ["temperature", "topP"] {
            let v = body["inferenceConfig"][key].as_f64().unwrap();
            body["inferenceConfig"][key] = json!((v * 1e6).round() / 1e6);
        }
        assert_eq!(body, expected, "{model_id}");
    }
}

#[tokio::test]
async fn a_family_text_prompt_is_refused_before_any_call() {
    // A Llama 3 prompt as one user message would be templated a second time by Bedrock.
    let server = TestServer::start([Reply::frames(events("end_turn"))]).await;
    let err = generator("meta.llama3-8b-instruct-v1:0", &server)
        .generate(
            &Prompt::Text(
                "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is Lambda?<|eot_id|>"
                    .into(),
            ),
            &GenerationParams::default(),
        )
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            Error::InvalidInput {
                field: "prompt",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn stop_reasons_are_normalized() {
    let cases = [
        ("stop_sequence", StopReason::StopSequence(None)),
        ("content_filtered", StopReason::ContentFiltered),
        (
            "guardrail_intervened",
            StopReason::GuardrailIntervened(Box::default()),
        ),
        ("tool_use", StopReason::Other("tool_use".into())),
    ];
    for (wire, expected) in cases {
        let server = TestServer::start([Reply::frames(events(wire))]).await;
        let stream = generator("cohere.command-r-v1:0", &server)
            .generate(&prompt(), &GenerationParams::default())
            .await
            .unwrap();
        let (chunks, _) = collect(stream).await;
        assert_eq!(stop(&chunks), Some(expected), "{wire}");
    }
}

#[tokio::test]
async fn a_throttled_initial_call_is_retried_by_the_sdk_only_when_asked_for() {
    let throttled = || Reply::error(429, "ThrottlingException", "Too many requests");
    // By default the SDK does not retry: the pipeline owns retries.
    let server = TestServer::start([throttled(), Reply::frames(events("end_turn"))]).await;
    let err = generator("amazon.nova-micro-v1:0", &server)
        .generate(&prompt(), &GenerationParams::default())
        .await
        .err()
        .unwrap();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(server.hits(), 1);
    // A generator used without a pipeline can turn the SDK's retries on.
    let server = TestServer::start([throttled(), Reply::frames(events("end_turn"))]).await;
    let stream = BedrockGenerator::converse("amazon.nova-micro-v1:0")
        .with_client(client::runtime(&server.url()))
        .with_retry_config(client::fast_retry())
        .build()
        .unwrap()
        .generate(&prompt(), &GenerationParams::default())
        .await
        .unwrap();
    let (chunks, err) = collect(stream).await;
    assert!(err.is_none());
    assert_eq!(text(&chunks), families::answer());
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn failed_initial_calls_are_classified() {
    // One call each: the SDK does not retry (the pipeline does, for the retryable ones).
    let cases = [
        (400, "ValidationException", false, 1),
        (403, "AccessDeniedException", false, 1),
        (404, "ResourceNotFoundException", false, 1),
        (429, "ThrottlingException", true, 1),
        (500, "InternalServerException", true, 1),
    ];
    for (status, error_type, retryable, attempts) in cases {
        let message = format!("{error_type}: the service's words");
        let server = TestServer::start(vec![Reply::error(status, error_type, &message); 3]).await;
        let err = generator("cohere.command-r-v1:0", &server)
            .generate(&prompt(), &GenerationParams::default())
            .await
            .err()
            .unwrap();
        assert_eq!(err.is_retryable(), retryable, "{error_type}");
        assert!(err.to_string().contains(&message), "{err}");
        assert_eq!(server.hits(), attempts, "{error_type}");
    }
}

#[tokio::test]
async fn faults_inside_the_stream_end_it_with_typed_errors() {
    let all = events("end_turn");
    let k = 6;
    let with = |tail: Vec<Part>| {
        let mut parts: Vec<Part> = all[..k].iter().cloned().map(Part::Bytes).collect();
        parts.extend(tail);
        Reply::Stream(parts)
    };
    let half = all[k].slice(..all[k].len() / 2);
    let scripts = [
        (
            "exception",
            with(vec![Part::Bytes(exception(
                "modelStreamErrorException",
                "stream broke",
            ))]),
        ),
        (
            "validation",
            with(vec![Part::Bytes(exception(
                "validationException",
                "bad input",
            ))]),
        ),
        ("truncated", with(vec![Part::Bytes(half)])),
        (
            "malformed",
            with(vec![Part::Bytes(converse_event(
                "contentBlockDelta",
                json!({"delta": 5}),
            ))]),
        ),
        ("stall", with(vec![Part::Stall])),
    ];
    for (name, script) in scripts {
        let server = TestServer::start([script]).await;
        let stream = generator("cohere.command-r-v1:0", &server)
            .generate(&prompt(), &GenerationParams::default())
            .await
            .unwrap();
        let (chunks, err) = collect(stream).await;
        let err = err.unwrap_or_else(|| panic!("{name}: no error"));
        assert_eq!(text(&chunks), PIECES[..k - 1].concat(), "{name}");
        let msg = err.to_string();
        match name {
            "exception" => assert!(err.is_retryable() && msg.contains("stream broke"), "{msg}"),
            "validation" => assert!(!err.is_retryable() && msg.contains("bad input"), "{msg}"),
            "truncated" => assert!(
                err.is_retryable() && msg.contains("could not be read"),
                "{msg}"
            ),
            // A whole, checksummed frame whose event does not parse: not fixed by retrying.
            "malformed" => assert!(
                matches!(err, Error::Generation { .. })
                    && !err.is_retryable()
                    && msg.contains("cannot read"),
                "{msg}"
            ),
            _ => assert!(
                matches!(
                    err,
                    Error::Timeout {
                        stage: Stage::Generation,
                        ..
                    }
                ),
                "{msg}"
            ),
        }
    }
}
