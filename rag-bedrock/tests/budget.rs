//! The pipeline and the model's own limits, through the real SDK client against the loopback
//! Bedrock: a prompt the model refuses as too long is sent once more, shorter; CountTokens
//! checks a prompt before the call; throttling is retried by one layer only; every model id
//! goes to a request shape it takes; settings a model refuses fail before any call.

mod support;

use std::time::Duration;

use futures::StreamExt;
use rag_bedrock::{BedrockGenerator, BedrockTokenCounter};
use rag_core::testing::StaticRetriever;
use rag_core::{
    template_for, template_for_profile, Ask, ChatTemplate, Error, Event, GenerationParams,
    ModelFamily, ModelProfile, Passage, Pipeline, PipelineBuilder, RetryPolicy, SessionId, Warning,
};
use serde_json::json;
use support::families::{self, PIECES};
use support::{chunk, client, converse_event, decoded_path, Reply, TestServer};

const CLAUDE: &str = "us.anthropic.claude-3-5-haiku-20241022-v1:0";

/// 40 passages of about 40 cl100k tokens each.
fn passages() -> Vec<Passage> {
    (0..40)
        .map(|i| {
            Passage::new(
                format!("p{i}"),
                format!(
                    "Passage {i} says that functions scale out with their concurrency, that \
                     reserved concurrency caps a function, and that throttled requests get a 429."
                ),
            )
        })
        .collect()
}

fn claude_stream() -> Reply {
    Reply::frames(families::claude().chunks.iter().map(|c| chunk(c)))
}

fn converse_stream() -> Reply {
    let mut frames = vec![converse_event("messageStart", json!({"role": "assistant"}))];
    frames.extend(PIECES.iter().map(|p| {
        converse_event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": p}}),
        )
    }));
    frames.push(converse_event(
        "messageStop",
        json!({"stopReason": "end_turn"}),
    ));
    frames.push(converse_event(
        "metadata",
        json!({"usage": {"inputTokens": 57, "outputTokens": 24, "totalTokens": 81}, "metrics": {"latencyMs": 400}}),
    ));
    Reply::frames(frames)
}

fn generator(model_id: &str, server: &TestServer) -> BedrockGenerator {
    BedrockGenerator::builder(model_id)
        .with_client(client::runtime(&server.url()))
        .build()
        .unwrap()
}

/// A Claude pipeline with a 2,000-token window, so that the 40 passages do not all fit.
fn small_claude(generator: BedrockGenerator) -> PipelineBuilder {
    let profile = ModelProfile::custom(ModelFamily::Claude, 2_000, 1_000);
    Pipeline::builder()
        .with_generator(generator)
        .with_model_profile(profile)
        .with_retriever(StaticRetriever::new(passages()))
        .with_top_k(40)
        .with_params(GenerationParams::default().with_max_tokens(200))
        .with_retry(RetryPolicy::attempts(3).with_backoff(Duration::ZERO, Duration::ZERO))
}

async fn ask(pipeline: &Pipeline) -> Vec<Event> {
    let ask = Ask::new(
        SessionId::new("session-1").unwrap(),
        "How does Lambda scale?",
    );
    pipeline.ask(ask).collect().await
}

fn documents(body: &serde_json::Value) -> usize {
    body.to_string().matches("<document index=").count()
}

#[tokio::test]
async fn a_prompt_refused_as_too_long_is_sent_once_more_shrunk_by_the_reported_sizes() {
    let server = TestServer::start([
        Reply::error(
            400,
            "ValidationException",
            "prompt is too long: 2300 tokens > 1800 maximum",
        ),
        claude_stream(),
    ])
    .await;
    let pipeline = small_claude(generator(CLAUDE, &server)).build().unwrap();
    let events = ask(&pipeline).await;
    let Some(Event::Done(summary)) = events.last() else {
        panic!("the ask did not finish: {events:?}");
    };
    assert_eq!(summary.answer, families::answer());
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let (first, second) = (
        documents(&requests[0].json()),
        documents(&requests[1].json()),
    );
    assert!(second < first, "{second} passages after {first}");
    // Shrunk by the model's count against its limit: 1,800 / 2,300 of the first prompt.
    assert!(
        second as f64 <= first as f64 * 1_800.0 / 2_300.0,
        "{second} of {first}"
    );
    let shortened = events.iter().find_map(|e| match e {
        Event::Warning(Warning::PromptShortened { passages_kept, .. }) => Some(*passages_kept),
        _ => None,
    });
    assert_eq!(shortened, Some(second));
    // The sources were listed before the call; the answer's prompt holds their first ones.
    let Some(Event::Sources(sources)) = events.iter().find(|e| matches!(e, Event::Sources(_)))
    else {
        panic!("no sources")
    };
    assert_eq!(sources.len(), first);
    assert_eq!(summary.dropped.passages.len(), 40 - second);
}

#[tokio::test]
async fn a_refusal_without_sizes_shrinks_by_a_fixed_fraction() {
    let server = TestServer::start([
        Reply::error(
            400,
            "ValidationException",
            "Input is too long for requested model.",
        ),
        claude_stream(),
    ])
    .await;
    let pipeline = small_claude(generator(CLAUDE, &server)).build().unwrap();
    let events = ask(&pipeline).await;
    assert!(matches!(events.last(), Some(Event::Done(_))), "{events:?}");
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let (first, second) = (
        documents(&requests[0].json()),
        documents(&requests[1].json()),
    );
    assert!(
        second < first && second as f64 >= first as f64 * 0.7,
        "{second} of {first}"
    );
}

#[tokio::test]
async fn a_second_refusal_is_the_error() {
    let refusal = Reply::error(
        400,
        "ValidationException",
        "The model returned the following errors: prompt is too long: 2300 tokens > 1800 maximum",
    );
    let server = TestServer::start(vec![refusal; 3]).await;
    let pipeline = small_claude(generator(CLAUDE, &server)).build().unwrap();
    let events = ask(&pipeline).await;
    match events.last() {
        Some(Event::Error(failure)) => {
            assert!(
                matches!(
                    failure.error,
                    Error::PromptTooLong {
                        tokens: Some(2_300),
                        limit: Some(1_800),
                        ..
                    }
                ),
                "{}",
                failure.error
            );
            assert!(!failure.is_retryable());
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert_eq!(
        server.hits(),
        2,
        "one shorter retry, not the retry policy's three"
    );
}

#[tokio::test]
async fn throttling_is_retried_by_the_pipeline_only() {
    // The SDK client is configured with 3 attempts of its own; the generator turns them off,
    // so an ask makes the pipeline's 3 calls, not 3 x 3.
    let throttled = Reply::error(429, "ThrottlingException", "Too many requests");
    let server = TestServer::start(vec![throttled; 12]).await;
    let pipeline = small_claude(generator(CLAUDE, &server)).build().unwrap();
    let events = ask(&pipeline).await;
    assert!(
        matches!(events.last(), Some(Event::Error(f)) if f.is_retryable()),
        "{events:?}"
    );
    assert_eq!(server.hits(), 3);
}

#[tokio::test]
async fn mistral_large_2_is_asked_through_converse_stream() {
    let id = "mistral.mistral-large-2407-v1:0";
    let server = TestServer::start([converse_stream()]).await;
    let profile = ModelProfile::for_model_id(id).unwrap();
    let pipeline = Pipeline::builder()
        .with_generator(generator(id, &server))
        .with_model_profile(profile)
        .with_retriever(StaticRetriever::numbered(2))
        .build()
        .unwrap();
    let events = ask(&pipeline).await;
    assert!(matches!(events.last(), Some(Event::Done(_))), "{events:?}");
    let request = &server.requests()[0];
    assert_eq!(
        decoded_path(request),
        format!("/model/{id}/converse-stream")
    );
    let body = request.json();
    assert!(body["messages"][0]["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains("<document index=\"2\">"));
    assert!(body.get("prompt").is_none());
}

#[tokio::test]
async fn claude_4_5_sampling_it_refuses_fails_before_any_call() {
    let id = "global.anthropic.claude-sonnet-4-5-20250929-v1:0";
    let server = TestServer::start([claude_stream()]).await;
    let pipeline = Pipeline::builder()
        .with_generator(generator(id, &server))
        .with_model_profile(ModelProfile::for_model_id(id).unwrap())
        .build()
        .unwrap();
    let both = GenerationParams::default()
        .with_temperature(0.3)
        .with_top_p(0.9);
    let events: Vec<Event> = pipeline
        .ask(Ask::new(SessionId::new("s").unwrap(), "Hi?").with_params(both.clone()))
        .collect()
        .await;
    assert!(
        matches!(events.last(), Some(Event::Error(f)) if matches!(f.error, Error::InvalidInput { field: "params.top_p", .. })),
        "{events:?}"
    );
    assert_eq!(server.hits(), 0);
    // As the pipeline's default, it fails at build.
    let err = Pipeline::builder()
        .with_generator(generator(id, &server))
        .with_model_profile(ModelProfile::for_model_id(id).unwrap())
        .with_params(both)
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err}");
}

#[tokio::test]
async fn a_template_that_does_not_fit_the_generator_fails_at_build() {
    let server = TestServer::start([]).await;
    // A Llama 3 text prompt into ConverseStream would be templated twice.
    let err = Pipeline::builder()
        .with_generator(
            BedrockGenerator::converse("meta.llama3-8b-instruct-v1:0")
                .with_client(client::runtime(&server.url()))
                .build()
                .unwrap(),
        )
        .with_template(template_for(ModelFamily::Llama3))
        .build()
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::Config { .. }), "{message}");
    assert!(
        message.contains("llama3 text prompts") && message.contains("chat"),
        "{message}"
    );
    // A chat prompt into a native text family.
    let err = Pipeline::builder()
        .with_generator(generator("meta.llama3-8b-instruct-v1:0", &server))
        .with_template(ChatTemplate::new())
        .build()
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("template_for(ModelFamily::Llama3)"),
        "{err}"
    );
    // A text family's template for another text family.
    assert!(Pipeline::builder()
        .with_generator(generator("mistral.mistral-7b-instruct-v0:2", &server))
        .with_template(template_for(ModelFamily::Llama2))
        .build()
        .is_err());
    // What the profile picks fits.
    let profile = ModelProfile::for_model_id("meta.llama3-8b-instruct-v1:0").unwrap();
    assert!(Pipeline::builder()
        .with_generator(generator("meta.llama3-8b-instruct-v1:0", &server))
        .with_template(template_for_profile(&profile))
        .build()
        .is_ok());
    assert_eq!(server.hits(), 0);
}

fn counter(server: &TestServer) -> BedrockTokenCounter {
    BedrockTokenCounter::builder(CLAUDE)
        .with_client(client::runtime(&server.url()))
        .build()
        .unwrap()
}

#[tokio::test]
async fn count_tokens_checks_the_prompt_before_the_call() {
    // The model counts the first prompt over the budget, the second one within it.
    let server = TestServer::start([
        Reply::ok_json(json!({"inputTokens": 2_400})),
        Reply::ok_json(json!({"inputTokens": 1_700})),
        claude_stream(),
    ])
    .await;
    let pipeline = small_claude(generator(CLAUDE, &server))
        .with_prompt_counter(counter(&server))
        .build()
        .unwrap();
    let events = ask(&pipeline).await;
    let Some(Event::Done(summary)) = events.last() else {
        panic!("the ask did not finish: {events:?}");
    };
    assert_eq!(summary.counted_prompt_tokens, Some(1_700));
    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    // CountTokens is asked under the base model id, with the chat prompt as Converse input.
    let count = &requests[0];
    assert_eq!(
        decoded_path(count),
        "/model/anthropic.claude-3-5-haiku-20241022-v1:0/count-tokens"
    );
    let input = &count.json()["input"]["converse"];
    assert_eq!(input["messages"][0]["role"], "user");
    assert!(input["system"][0]["text"].as_str().is_some());
    // The prompt sent is the second, smaller one.
    let first = documents(&json!(count.json()["input"]["converse"]["messages"]));
    let sent = documents(&requests[2].json());
    assert!(sent < first, "{sent} of {first}");
    assert_eq!(
        documents(&json!(requests[1].json()["input"]["converse"]["messages"])),
        sent
    );
}

#[tokio::test]
async fn a_roomy_count_packs_more_passages() {
    // The template's upper bound left passages out; the model counts far fewer tokens, so the
    // prompt is rendered again with more of them.
    let server = TestServer::start([
        Reply::ok_json(json!({"inputTokens": 900})),
        Reply::ok_json(json!({"inputTokens": 1_650})),
        claude_stream(),
    ])
    .await;
    let pipeline = small_claude(generator(CLAUDE, &server))
        .with_prompt_counter(counter(&server))
        .build()
        .unwrap();
    let events = ask(&pipeline).await;
    let Some(Event::Done(summary)) = events.last() else {
        panic!("the ask did not finish: {events:?}");
    };
    assert_eq!(summary.counted_prompt_tokens, Some(1_650));
    let requests = server.requests();
    let first = documents(&json!(requests[0].json()["input"]["converse"]["messages"]));
    let sent = documents(&requests[2].json());
    assert!(sent > first, "{sent} after {first}");
}

#[tokio::test]
async fn a_count_that_fails_warns_and_the_template_count_is_used() {
    let server = TestServer::start([
        Reply::error(
            400,
            "ValidationException",
            "The provided model doesn't support counting tokens.",
        ),
        claude_stream(),
    ])
    .await;
    let pipeline = small_claude(generator(CLAUDE, &server))
        .with_prompt_counter(counter(&server))
        .build()
        .unwrap();
    let events = ask(&pipeline).await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Warning(Warning::CountUnavailable(err)) if err.to_string().contains("counting tokens"))),
        "{events:?}"
    );
    let Some(Event::Done(summary)) = events.last() else {
        panic!("the ask did not finish: {events:?}");
    };
    assert_eq!(summary.counted_prompt_tokens, None);
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn count_tokens_over_its_own_cap_reports_the_count_from_the_message() {
    let server = TestServer::start([Reply::error(
        400,
        "ValidationException",
        "prompt is too long: 265031 tokens > 200000 maximum",
    )])
    .await;
    let prompt = families::chat_prompt();
    let n = rag_core::PromptCounter::count(&counter(&server), &prompt, &families::params())
        .await
        .unwrap();
    assert_eq!(n, 265_031);
}
