//! End to end: the rag-core Pipeline with a BedrockGenerator pointed at the loopback server
//! streams a full answer for every family, and through ConverseStream.
//!
//! Each family renders with its own rag-core template (`template_for`); ConverseStream takes
//! the Claude Messages chat prompt.

mod support;

use futures::StreamExt;
use rag_bedrock::BedrockGenerator;
use rag_core::testing::StaticRetriever;
use rag_core::{
    template_for, Ask, ClaudeMessagesTemplate, Event, ModelFamily, Pipeline, SessionId, StopReason,
    Usage,
};
use serde_json::json;
use support::families::{self, PIECES};
use support::{chunk, client, Reply, TestServer};

fn pipeline(generator: BedrockGenerator, family: Option<ModelFamily>) -> Pipeline {
    let builder = Pipeline::builder()
        .with_generator(generator)
        .with_retriever(StaticRetriever::numbered(3))
        .with_top_k(3)
        .with_params(families::params());
    let builder = match family {
        Some(family) => builder.with_template(template_for(family)),
        // ConverseStream takes a chat prompt.
        None => builder.with_template(ClaudeMessagesTemplate::new()),
    };
    builder.build().unwrap()
}

async fn ask(pipeline: &Pipeline) -> Vec<Event> {
    let ask = Ask::new(SessionId::new("session-1").unwrap(), "What does Lambda do?");
    pipeline.ask(ask).collect().await
}

fn check_answer(events: &[Event], expected_usage: Usage, label: &str) {
    assert!(
        matches!(events.first(), Some(Event::Sources(s)) if s.len() == 3),
        "{label}: {events:?}"
    );
    let tokens: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::Token(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(tokens, PIECES, "{label}");
    match events.last() {
        Some(Event::Done(summary)) => {
            assert_eq!(summary.answer, families::answer(), "{label}");
            assert_eq!(summary.stop_reason, Some(StopReason::EndTurn), "{label}");
            assert_eq!(summary.usage, Some(expected_usage), "{label}");
            assert_eq!(summary.attempts, 1, "{label}");
        }
        other => panic!("{label}: the ask did not finish: {other:?}"),
    }
}

#[tokio::test]
async fn the_pipeline_streams_a_full_answer_for_every_family() {
    for case in families::cases() {
        let server = TestServer::start([Reply::frames(case.chunks.iter().map(|c| chunk(c)))]).await;
        let generator = BedrockGenerator::builder(case.model_id)
            .with_client(client::runtime(&server.url()))
            .build()
            .unwrap();
        let events = ask(&pipeline(generator, Some(case.family))).await;
        check_answer(
            &events,
            Usage::new(families::INPUT_TOKENS, families::output_tokens()),
            case.family.name(),
        );
        // The family's rendered prompt, numbered passages included, reached Bedrock.
        let body = server.requests()[0].json();
        let prompt_text = match case.family {
            ModelFamily::Claude => body["messages"][0].to_string(),
            ModelFamily::TitanText => body["inputText"].as_str().unwrap().to_owned(),
            _ => body["prompt"].as_str().unwrap().to_owned(),
        };
        let second = match case.family {
            ModelFamily::Claude => r#"<document index=\"2\">"#,
            _ => r#"<document index="2">"#,
        };
        assert!(
            prompt_text.contains(second) && prompt_text.contains("Passage 1 text."),
            "{}: {prompt_text}",
            case.family
        );
        let opening = match case.family {
            ModelFamily::Llama3 => {
                Some("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n")
            }
            ModelFamily::Llama2 | ModelFamily::Mistral => Some("<s>[INST] "),
            ModelFamily::ClaudeText => Some("\n\nHuman:"),
            ModelFamily::TitanText => Some("User: "),
            _ => None,
        };
        if let Some(opening) = opening {
            assert!(
                prompt_text.starts_with(opening)
                    || (case.family == ModelFamily::ClaudeText && prompt_text.contains(opening)),
                "{}: {prompt_text:?}",
                case.family
            );
        }
    }
}

#[tokio::test]
async fn the_pipeline_streams_a_full_answer_through_converse() {
    let frames = support::converse_answer(
        &PIECES,
        "end_turn",
        json!({"usage": {"inputTokens": 57, "outputTokens": 24, "totalTokens": 81}, "metrics": {"latencyMs": 400}}),
    );
    let server = TestServer::start([Reply::frames(frames)]).await;
    let generator = BedrockGenerator::converse("us.amazon.nova-pro-v1:0")
        .with_client(client::runtime(&server.url()))
        .build()
        .unwrap();
    let events = ask(&pipeline(generator, None)).await;
    check_answer(&events, Usage::new(57, 24), "converse");
}

#[tokio::test]
async fn a_failure_inside_the_stream_reaches_the_caller_with_the_partial_answer() {
    let case = families::llama3();
    let mut frames: Vec<_> = case.chunks[..5].iter().map(|c| chunk(c)).collect();
    frames.push(support::exception(
        "modelStreamErrorException",
        "The model stream failed",
    ));
    let server = TestServer::start([Reply::frames(frames)]).await;
    let generator = BedrockGenerator::builder(case.model_id)
        .with_client(client::runtime(&server.url()))
        .build()
        .unwrap();
    let events = ask(&pipeline(generator, Some(case.family))).await;
    match events.last() {
        Some(Event::Error(failure)) => {
            assert!(failure.is_retryable());
            assert_eq!(failure.partial_answer, PIECES[..5].concat());
            assert!(failure
                .error
                .to_string()
                .contains("The model stream failed"));
        }
        other => panic!("expected an error event, got {other:?}"),
    }
}
