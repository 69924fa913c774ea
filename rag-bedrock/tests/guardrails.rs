//! Bedrock guardrails through the real SDK client against a loopback server: the guardrail
//! on the wire of InvokeModelWithResponseStream, ConverseStream and ApplyGuardrail, and the
//! typed outcome of an intervention.

mod support;

use std::time::Duration;

use bytes::Bytes;
use rag_bedrock::{
    BedrockGenerator, BedrockGuardrailScreen, Guardrail, GuardrailStreamProcessing, GuardrailTrace,
};
use rag_core::{Error, Generator, GuardrailIntervention, QuestionScreen, Screening, StopReason};
use serde_json::{json, Value};
use support::families::{self, Case};
use support::{
    chunk, client, collect, converse_event, decoded_path, stop, text, Reply, TestServer,
};

const GUARDRAIL_ID: &str = "gr7abc9xyz";
const BLOCKED: &str = "Sorry, the model cannot answer this question.";

fn guardrail() -> Guardrail {
    Guardrail::new(GUARDRAIL_ID, "3")
}

fn native(case: &Case, server: &TestServer, guardrail: Guardrail) -> BedrockGenerator {
    BedrockGenerator::builder(case.model_id)
        .with_client(client::runtime(&server.url()))
        .with_idle_timeout(Duration::from_millis(400))
        .with_guardrail(guardrail)
        .build()
        .unwrap()
}

fn converse(server: &TestServer, guardrail: Guardrail) -> BedrockGenerator {
    BedrockGenerator::converse("us.amazon.nova-pro-v1:0")
        .with_client(client::runtime(&server.url()))
        .with_idle_timeout(Duration::from_millis(400))
        .with_guardrail(guardrail)
        .build()
        .unwrap()
}

fn header<'a>(request: &'a support::Recorded, name: &str) -> Option<&'a str> {
    request.headers.get(name).map(|v| v.to_str().unwrap())
}

fn frames(chunks: &[String]) -> Vec<Bytes> {
    chunks.iter().map(|c| chunk(c)).collect()
}

/// A guardrail trace as Bedrock sends it in a native chunk.
fn native_trace() -> Value {
    json!({
        "inputAssessment": {
            GUARDRAIL_ID: {
                "topicPolicy": {
                    "topics": [{"name": "Investing", "type": "DENY", "action": "BLOCKED"}]
                }
            }
        }
    })
}

fn intervention(message: Option<&str>, trace: Option<Value>) -> StopReason {
    StopReason::GuardrailIntervened(Box::new(GuardrailIntervention {
        message: message.map(str::to_owned),
        trace,
    }))
}

#[tokio::test]
async fn native_requests_carry_the_guardrail_headers_and_body_field() {
    let case = families::claude();
    let asynchronous = guardrail()
        .with_trace(GuardrailTrace::Enabled)
        .with_stream_processing(GuardrailStreamProcessing::Async);
    let server = TestServer::start([
        Reply::frames(frames(&case.chunks)),
        Reply::frames(frames(&case.chunks)),
    ])
    .await;
    for guardrail in [
        asynchronous,
        guardrail().with_trace(GuardrailTrace::EnabledFull),
    ] {
        let stream = native(&case, &server, guardrail)
            .generate(&case.prompt, &families::params())
            .await
            .unwrap();
        let (chunks, err) = collect(stream).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(stop(&chunks), Some(StopReason::EndTurn));
    }
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    for (request, trace) in requests.iter().zip(["ENABLED", "ENABLED_FULL"]) {
        assert!(decoded_path(request).ends_with("/invoke-with-response-stream"));
        assert_eq!(
            header(request, "X-Amzn-Bedrock-GuardrailIdentifier"),
            Some(GUARDRAIL_ID)
        );
        assert_eq!(
            header(request, "X-Amzn-Bedrock-GuardrailVersion"),
            Some("3")
        );
        assert_eq!(header(request, "X-Amzn-Bedrock-Trace"), Some(trace));
    }
    // Asynchronous mode goes in the body; the rest of the body is the family's own.
    let mut body = requests[0].json();
    assert_eq!(
        body["amazon-bedrock-guardrailConfig"],
        json!({"streamProcessingMode": "ASYNCHRONOUS"})
    );
    body.as_object_mut()
        .unwrap()
        .remove("amazon-bedrock-guardrailConfig");
    assert_eq!(body, case.body);
    // Synchronous mode is the service's default: the body is the family's alone.
    assert_eq!(requests[1].json(), case.body);

    // Without a guardrail, no guardrail header is sent.
    let server = TestServer::start([Reply::frames(frames(&case.chunks))]).await;
    let plain = BedrockGenerator::builder(case.model_id)
        .with_client(client::runtime(&server.url()))
        .build()
        .unwrap();
    let (_, err) = collect(
        plain
            .generate(&case.prompt, &families::params())
            .await
            .unwrap(),
    )
    .await;
    assert!(err.is_none(), "{err:?}");
    let request = &server.requests()[0];
    for name in [
        "X-Amzn-Bedrock-GuardrailIdentifier",
        "X-Amzn-Bedrock-GuardrailVersion",
        "X-Amzn-Bedrock-Trace",
    ] {
        assert_eq!(header(request, name), None, "{name}");
    }
}

/// The chunks of a Claude Messages answer the guardrail replaced: its message as the text,
/// the family's own stop reason, and the trace on the last chunk.
fn claude_intervened(trace: Option<Value>) -> Vec<String> {
    let mut last = json!({
        "type": "message_stop",
        "amazon-bedrock-invocationMetrics": {"inputTokenCount": 12, "outputTokenCount": 9},
        "amazon-bedrock-guardrailAction": "INTERVENED",
    });
    if let Some(trace) = trace {
        last["amazon-bedrock-trace"] = json!({ "guardrail": trace });
    }
    vec![
        json!({"type": "message_start", "message": {"usage": {"input_tokens": 12, "output_tokens": 1}}}).to_string(),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}).to_string(),
        json!({
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": BLOCKED},
            "amazon-bedrock-guardrailAction": "INTERVENED"
        })
        .to_string(),
        json!({"type": "content_block_stop", "index": 0}).to_string(),
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 9}}).to_string(),
        last.to_string(),
    ]
}

#[tokio::test]
async fn an_intervened_claude_messages_stream_ends_with_the_guardrails_message_and_trace() {
    let case = families::claude();
    let cases = [
        (
            guardrail().with_trace(GuardrailTrace::Enabled),
            Some(native_trace()),
        ),
        // Without the trace asked for, an intervention carries none, even if one came.
        (guardrail(), None),
    ];
    for (guardrail, expected_trace) in cases {
        let server = TestServer::start([Reply::frames(frames(&claude_intervened(Some(
            native_trace(),
        ))))])
        .await;
        let stream = native(&case, &server, guardrail)
            .generate(&case.prompt, &families::params())
            .await
            .unwrap();
        let (chunks, err) = collect(stream).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(text(&chunks), BLOCKED);
        assert_eq!(
            stop(&chunks),
            Some(intervention(Some(BLOCKED), expected_trace))
        );
        assert_eq!(families::merged_usage(&chunks).unwrap().output_tokens, 9);
    }
}

#[tokio::test]
async fn intervened_llama_and_titan_streams_end_with_the_typed_outcome() {
    let traced = guardrail().with_trace(GuardrailTrace::Enabled);
    // Llama 3: one chunk with the guardrail's text, its stop reason, metrics and trace.
    let llama = vec![json!({
        "generation": BLOCKED,
        "prompt_token_count": 20,
        "generation_token_count": 9,
        "stop_reason": "stop",
        "amazon-bedrock-guardrailAction": "INTERVENED",
        "amazon-bedrock-invocationMetrics": {"inputTokenCount": 20, "outputTokenCount": 9},
        "amazon-bedrock-trace": {"guardrail": native_trace()},
    })
    .to_string()];
    // Titan: the trace on a chunk of its own after the stop, which Titan names
    // CONTENT_FILTERED; the guardrail's outcome wins.
    let titan = vec![
        json!({
            "outputText": BLOCKED,
            "index": 0,
            "completionReason": "CONTENT_FILTERED",
            "amazon-bedrock-guardrailAction": "INTERVENED",
        })
        .to_string(),
        json!({
            "outputText": "",
            "amazon-bedrock-trace": {"guardrail": native_trace()},
            "amazon-bedrock-invocationMetrics": {"inputTokenCount": 20, "outputTokenCount": 9},
        })
        .to_string(),
    ];
    for (case, chunks) in [(families::llama3(), llama), (families::titan(), titan)] {
        let server = TestServer::start([Reply::frames(frames(&chunks))]).await;
        let stream = native(&case, &server, traced.clone())
            .generate(&case.prompt, &families::params())
            .await
            .unwrap();
        let (chunks, err) = collect(stream).await;
        assert!(err.is_none(), "{}: {err:?}", case.family);
        assert_eq!(
            stop(&chunks),
            Some(intervention(Some(BLOCKED), Some(native_trace()))),
            "{}",
            case.family
        );
        // Exactly one stop reason.
        let stops = chunks
            .iter()
            .filter(|c| matches!(c, rag_core::Chunk::Stop(_)))
            .count();
        assert_eq!(stops, 1, "{}", case.family);
    }
}

/// A Mistral stream in asynchronous mode: the model's own text reaches the caller, then the
/// guardrail intervenes with its message.
fn mistral_intervened_asynchronously() -> Vec<String> {
    vec![
        json!({"outputs": [{"text": "Buy shares of ", "stop_reason": null}]}).to_string(),
        json!({
            "outputs": [{"text": BLOCKED, "stop_reason": "stop"}],
            "amazon-bedrock-guardrailAction": "INTERVENED",
            "amazon-bedrock-invocationMetrics": {"inputTokenCount": 20, "outputTokenCount": 12},
        })
        .to_string(),
    ]
}

#[tokio::test]
async fn in_asynchronous_mode_only_the_intervened_text_is_the_guardrails_message() {
    let case = families::mistral();
    let chunks = mistral_intervened_asynchronously();
    let server = TestServer::start([Reply::frames(frames(&chunks))]).await;
    let stream = native(
        &case,
        &server,
        guardrail().with_stream_processing(GuardrailStreamProcessing::Async),
    )
    .generate(&case.prompt, &families::params())
    .await
    .unwrap();
    let (chunks, err) = collect(stream).await;
    assert!(err.is_none(), "{err:?}");
    // The caller saw the model's text before the guardrail stepped in...
    assert_eq!(text(&chunks), format!("Buy shares of {BLOCKED}"));
    // ...but the intervention's message is the guardrail's alone.
    assert_eq!(stop(&chunks), Some(intervention(Some(BLOCKED), None)));
}

fn converse_events(stop_reason: &str, trace: Option<Value>) -> Vec<Bytes> {
    let mut metadata = json!({
        "usage": {"inputTokens": 30, "outputTokens": 9, "totalTokens": 39},
        "metrics": {"latencyMs": 120},
    });
    if let Some(trace) = trace {
        metadata["trace"] = json!({ "guardrail": trace });
    }
    vec![
        converse_event("messageStart", json!({"role": "assistant"})),
        converse_event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": BLOCKED}}),
        ),
        converse_event("contentBlockStop", json!({"contentBlockIndex": 0})),
        converse_event("messageStop", json!({"stopReason": stop_reason})),
        converse_event("metadata", metadata),
    ]
}

/// A ConverseStream guardrail trace on the wire.
fn converse_wire_trace() -> Value {
    json!({
        "inputAssessment": {
            GUARDRAIL_ID: {
                "contentPolicy": {
                    "filters": [{"type": "VIOLENCE", "confidence": "HIGH", "action": "BLOCKED", "detected": true}]
                }
            }
        },
        "actionReason": "Guardrail blocked.",
    })
}

/// The same trace as this crate reports it (the SDK's types are not serde; the crate writes
/// them back in the API's member names).
fn converse_reported_trace() -> Value {
    json!({
        "inputAssessment": {
            GUARDRAIL_ID: {
                "contentPolicy": {
                    "filters": [{
                        "type": "VIOLENCE",
                        "confidence": "HIGH",
                        "filterStrength": null,
                        "action": "BLOCKED",
                        "detected": true
                    }]
                }
            }
        },
        "actionReason": "Guardrail blocked.",
    })
}

#[tokio::test]
async fn converse_requests_carry_the_guardrail_config() {
    let server = TestServer::start([
        Reply::frames(converse_events("end_turn", None)),
        Reply::frames(converse_events("end_turn", None)),
    ])
    .await;
    let cases = [
        (
            guardrail()
                .with_trace(GuardrailTrace::EnabledFull)
                .with_stream_processing(GuardrailStreamProcessing::Async),
            json!({
                "guardrailIdentifier": GUARDRAIL_ID,
                "guardrailVersion": "3",
                "trace": "enabled_full",
                "streamProcessingMode": "async"
            }),
        ),
        (
            Guardrail::new(GUARDRAIL_ID, "DRAFT"),
            json!({
                "guardrailIdentifier": GUARDRAIL_ID,
                "guardrailVersion": "DRAFT",
                "trace": "disabled",
                "streamProcessingMode": "sync"
            }),
        ),
    ];
    for (i, (guardrail, expected)) in cases.into_iter().enumerate() {
        let stream = converse(&server, guardrail)
            .generate(&families::chat_prompt(), &families::params())
            .await
            .unwrap();
        let (chunks, err) = collect(stream).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(stop(&chunks), Some(StopReason::EndTurn));
        let request = &server.requests()[i];
        assert!(decoded_path(request).ends_with("/converse-stream"));
        assert_eq!(request.json()["guardrailConfig"], expected);
        // ConverseStream takes the guardrail in the body, not in InvokeModel's headers.
        assert_eq!(header(request, "X-Amzn-Bedrock-GuardrailIdentifier"), None);
    }
}

#[tokio::test]
async fn an_intervened_converse_stream_ends_with_the_guardrails_message_and_trace() {
    let cases = [
        (
            guardrail().with_trace(GuardrailTrace::Enabled),
            Some(BLOCKED),
            Some(converse_reported_trace()),
        ),
        // No trace asked for: none reported.
        (guardrail(), Some(BLOCKED), None),
        // Asynchronous mode: the streamed text may be the model's, so no message is claimed.
        (
            guardrail()
                .with_trace(GuardrailTrace::Enabled)
                .with_stream_processing(GuardrailStreamProcessing::Async),
            None,
            Some(converse_reported_trace()),
        ),
    ];
    for (guardrail, message, trace) in cases {
        let server = TestServer::start([Reply::frames(converse_events(
            "guardrail_intervened",
            Some(converse_wire_trace()),
        ))])
        .await;
        let stream = converse(&server, guardrail.clone())
            .generate(&families::chat_prompt(), &families::params())
            .await
            .unwrap();
        let (chunks, err) = collect(stream).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(text(&chunks), BLOCKED);
        assert_eq!(
            stop(&chunks),
            Some(intervention(message, trace)),
            "{guardrail:?}"
        );
        assert_eq!(families::merged_usage(&chunks).unwrap().output_tokens, 9);
    }
}

fn screen(server: &TestServer, guardrail: Guardrail) -> BedrockGuardrailScreen {
    BedrockGuardrailScreen::builder(guardrail)
        .with_client(client::runtime(&server.url()))
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_screen_keeps_the_assessments_only_when_the_trace_was_asked_for() {
    let server = TestServer::start([Reply::ok_json(json!({
        "action": "GUARDRAIL_INTERVENED",
        "outputs": [{"text": "Blocked."}],
        "assessments": [{"topicPolicy": {"topics": []}}]
    }))])
    .await;
    let screening = screen(&server, Guardrail::new(GUARDRAIL_ID, "DRAFT"))
        .screen("anything")
        .await
        .unwrap();
    assert_eq!(
        screening,
        Screening::Blocked(GuardrailIntervention {
            message: Some("Blocked.".into()),
            trace: None,
        })
    );
}

#[tokio::test]
async fn the_screen_blocks_a_question_the_guardrail_intervenes_on() {
    let server = TestServer::start([Reply::ok_json(json!({
        "action": "GUARDRAIL_INTERVENED",
        "actionReason": "Guardrail blocked.",
        "outputs": [{"text": "I can't discuss investing."}],
        "assessments": [{
            "topicPolicy": {
                "topics": [{"name": "Investing", "type": "DENY", "action": "BLOCKED", "detected": true}]
            }
        }]
    }))])
    .await;
    let question = "Which shares should I buy?";
    let screening = screen(
        &server,
        Guardrail::new(GUARDRAIL_ID, "DRAFT").with_trace(GuardrailTrace::Enabled),
    )
    .screen(question)
    .await
    .unwrap();
    assert_eq!(
        screening,
        Screening::Blocked(GuardrailIntervention {
            message: Some("I can't discuss investing.".into()),
            trace: Some(json!({
                "actionReason": "Guardrail blocked.",
                "assessments": [{
                    "topicPolicy": {
                        "topics": [{
                            "name": "Investing",
                            "type": "DENY",
                            "action": "BLOCKED",
                            "detected": true
                        }]
                    }
                }]
            })),
        })
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "POST");
    assert_eq!(
        decoded_path(&requests[0]),
        format!("/guardrail/{GUARDRAIL_ID}/version/DRAFT/apply")
    );
    assert_eq!(
        requests[0].json(),
        json!({
            "source": "INPUT",
            "content": [{"text": {"text": question}}],
            "outputScope": "INTERVENTIONS"
        })
    );
}

#[tokio::test]
async fn the_screen_allows_what_the_guardrail_lets_through_and_asks_for_the_full_scope() {
    let server = TestServer::start([Reply::ok_json(json!({
        "action": "NONE",
        "outputs": [],
        "assessments": []
    }))])
    .await;
    let screening = screen(&server, guardrail().with_trace(GuardrailTrace::EnabledFull))
        .screen("What does Lambda do?")
        .await
        .unwrap();
    assert_eq!(screening, Screening::Allowed);
    assert_eq!(server.requests()[0].json()["outputScope"], "FULL");
}

#[tokio::test]
async fn screen_failures_are_typed_generation_errors() {
    let server = TestServer::start([Reply::error(
        400,
        "ValidationException",
        "The guardrail identifier is not valid",
    )])
    .await;
    let err = screen(&server, guardrail()).screen("hi").await.unwrap_err();
    match &err {
        Error::Generation { retryable, .. } => assert!(!retryable, "{err}"),
        other => panic!("not a generation error: {other:?}"),
    }
    assert!(err.to_string().contains("ApplyGuardrail"), "{err}");
    assert!(err.to_string().contains("not valid"), "{err}");
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn a_bad_guardrail_is_a_typed_error_before_any_request() {
    let server = TestServer::start([]).await;
    let cases = [
        (Guardrail::new("", "DRAFT"), "guardrail.identifier"),
        (
            Guardrail::new("My-Guardrail", "DRAFT"),
            "guardrail.identifier",
        ),
        (Guardrail::new(GUARDRAIL_ID, "latest"), "guardrail.version"),
        (Guardrail::new(GUARDRAIL_ID, "0"), "guardrail.version"),
    ];
    for (guardrail, expected) in cases {
        for builder in [
            BedrockGenerator::builder("anthropic.claude-3-haiku-20240307-v1:0"),
            BedrockGenerator::converse("us.amazon.nova-pro-v1:0"),
        ] {
            let err = builder
                .with_client(client::runtime(&server.url()))
                .with_guardrail(guardrail.clone())
                .build()
                .unwrap_err();
            assert!(
                matches!(err, Error::InvalidInput { field, .. } if field == expected),
                "{guardrail:?}: {err}"
            );
        }
        let err = BedrockGuardrailScreen::builder(guardrail.clone())
            .with_client(client::runtime(&server.url()))
            .build()
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidInput { field, .. } if field == expected),
            "{guardrail:?}: {err}"
        );
    }
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn the_pipeline_saves_an_intervened_turn_with_the_guardrails_message() {
    use futures::StreamExt;
    use rag_core::{Ask, Event, Pipeline, SessionId};

    let case = families::mistral();
    // Asynchronous mode: the model's own text reached the caller before the guardrail.
    let chunks = mistral_intervened_asynchronously();
    let server = TestServer::start([Reply::frames(frames(&chunks))]).await;
    let generator = native(
        &case,
        &server,
        guardrail().with_stream_processing(GuardrailStreamProcessing::Async),
    );
    let history = std::sync::Arc::new(support::OneConversation::default());
    let pipeline = Pipeline::builder()
        .with_generator(generator)
        .with_retriever(rag_core::testing::StaticRetriever::numbered(2))
        .with_template(rag_core::template_for(case.family))
        .with_history(history.clone())
        .with_params(families::params())
        .build()
        .unwrap();
    let question = "Which shares should I buy?";
    let events: Vec<Event> = pipeline
        .ask(Ask::new(SessionId::new("s-1").unwrap(), question))
        .collect()
        .await;
    match events.last() {
        Some(Event::Done(summary)) => {
            assert_eq!(summary.stop_reason, Some(intervention(Some(BLOCKED), None)));
        }
        other => panic!("the ask did not finish: {other:?}"),
    }
    let saved = history.turns();
    assert_eq!(saved.len(), 1);
    assert_eq!(saved[0].question, question);
    // The guardrail's message, never the text it stopped.
    assert_eq!(saved[0].answer, BLOCKED);
}
