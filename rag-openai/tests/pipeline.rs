//! End to end: the rag-core Pipeline with an OpenAiCompatGenerator pointed at the loopback
//! server streams the answer, saves the turn once, retries a throttled call, and sends a
//! shorter prompt when the server refuses one as too long.

mod support;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rag_core::testing::{FailingHistory, StaticRetriever};
use rag_core::{
    template_for_profile, Ask, Error, Event, GenerationParams, HistoryStore, ModelFamily,
    ModelProfile, Pipeline, RetryPolicy, SessionId, StopReason, Usage, Warning,
};
use rag_memory::InMemoryHistory;
use rag_openai::OpenAiCompatGenerator;
use serde_json::json;
use support::{answer, answer_events, Reply, TestServer, PIECES};

fn pipeline(server: &TestServer, history: Arc<dyn HistoryStore>) -> Pipeline {
    let profile = ModelProfile::custom(ModelFamily::Chat, 8_192, 1_024);
    let generator = OpenAiCompatGenerator::builder(server.base_url(), "test-model")
        .build()
        .unwrap();
    Pipeline::builder()
        .with_model_profile(profile)
        .with_template(template_for_profile(&profile))
        .with_generator(generator)
        .with_retriever(StaticRetriever::numbered(3))
        .with_top_k(3)
        .with_history(history)
        .with_params(GenerationParams::default().with_max_tokens(256))
        .with_retry(
            RetryPolicy::attempts(3)
                .with_backoff(Duration::from_millis(1), Duration::from_millis(5)),
        )
        .build()
        .unwrap()
}

fn tokens(events: &[Event]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Token(t) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn the_pipeline_streams_the_answer_and_saves_the_turn_once() {
    let server = TestServer::start([
        Reply::events(answer_events()),
        Reply::events(answer_events()),
    ])
    .await;
    let history = Arc::new(FailingHistory::new(InMemoryHistory::new()));
    let pipeline = pipeline(&server, history.clone());
    let session = SessionId::new("connection-1").unwrap();

    let events: Vec<Event> = pipeline
        .ask(Ask::new(session.clone(), "What does Lambda do?"))
        .collect()
        .await;
    assert!(
        matches!(events.first(), Some(Event::Sources(s)) if s.len() == 3),
        "{events:?}"
    );
    assert_eq!(tokens(&events), PIECES, "each piece as it arrived");
    match events.last() {
        Some(Event::Done(summary)) => {
            assert_eq!(summary.answer, answer());
            assert_eq!(summary.stop_reason, Some(StopReason::EndTurn));
            assert_eq!(summary.usage, Some(Usage::new(42, 7)));
            assert_eq!(summary.attempts, 1);
            assert!(summary.saved);
        }
        other => panic!("the ask did not finish: {other:?}"),
    }
    assert_eq!(history.append_calls(), 1, "saved exactly once");
    let turns = history.load(&session, 10).await.unwrap();
    assert_eq!(turns.len(), 1);
    assert_eq!(turns[0].question, "What does Lambda do?");
    assert_eq!(turns[0].answer, answer());

    // The request held the system text with the passages, then the question.
    let body = server.requests()[0].json();
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages[0]["role"], "system");
    let last = messages.last().unwrap();
    assert_eq!(last["role"], "user");
    let rendered = body["messages"].to_string();
    assert!(
        rendered.contains("Passage 1 text.") && rendered.contains("What does Lambda do?"),
        "{rendered}"
    );

    // The next question is asked with the saved turn in the conversation.
    pipeline
        .ask(Ask::new(session.clone(), "And its limits?"))
        .text()
        .await
        .unwrap();
    let second = server.requests()[1].json();
    let roles: Vec<&str> = second["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"], "{second}");
    assert_eq!(second["messages"][2]["content"], answer());
    assert_eq!(history.append_calls(), 2);
}

#[tokio::test]
async fn a_429_then_success_is_retried_by_the_pipeline() {
    let server = TestServer::start([
        Reply::error(429, "requests", "Rate limit reached for requests"),
        Reply::events(answer_events()),
    ])
    .await;
    let history = Arc::new(FailingHistory::new(InMemoryHistory::new()));
    let pipeline = pipeline(&server, history.clone());
    let events: Vec<Event> = pipeline
        .ask(Ask::new(
            SessionId::new("s").unwrap(),
            "What does Lambda do?",
        ))
        .collect()
        .await;
    assert_eq!(server.hits(), 2, "the throttled call and its retry");
    match events.last() {
        Some(Event::Done(summary)) => {
            assert_eq!(summary.answer, answer());
            assert_eq!(summary.attempts, 2);
        }
        other => panic!("the ask did not finish: {other:?}"),
    }
    assert_eq!(history.append_calls(), 1);
}

#[tokio::test]
async fn a_401_is_reported_without_a_retry_and_nothing_is_saved() {
    let server = TestServer::start([Reply::error(
        401,
        "invalid_request_error",
        "Incorrect API key provided",
    )])
    .await;
    let history = Arc::new(FailingHistory::new(InMemoryHistory::new()));
    let pipeline = pipeline(&server, history.clone());
    let events: Vec<Event> = pipeline
        .ask(Ask::new(
            SessionId::new("s").unwrap(),
            "What does Lambda do?",
        ))
        .collect()
        .await;
    match events.last() {
        Some(Event::Error(failure)) => {
            assert!(!failure.error.is_retryable(), "{}", failure.error);
            assert!(failure.error.to_string().contains("HTTP 401"));
        }
        other => panic!("not an error: {other:?}"),
    }
    assert_eq!(server.hits(), 1);
    assert_eq!(history.append_calls(), 0);
}

#[tokio::test]
async fn a_prompt_refused_as_too_long_is_sent_again_shorter() {
    // The server counts far more than the template did: the pipeline drops passages and
    // sends the prompt once more.
    let server = TestServer::start([
        Reply::status(
            400,
            json!({"object": "error", "message": "This model's maximum context length is 2048 tokens. However, you requested 2300 tokens (2044 in the messages, 256 in the completion). Please reduce the length of the messages or completion.", "type": "BadRequestError", "param": null, "code": 400}),
        ),
        Reply::events(answer_events()),
    ])
    .await;
    let history = Arc::new(FailingHistory::new(InMemoryHistory::new()));
    let pipeline = pipeline(&server, history);
    let events: Vec<Event> = pipeline
        .ask(Ask::new(
            SessionId::new("s").unwrap(),
            "What does Lambda do?",
        ))
        .collect()
        .await;
    assert_eq!(server.hits(), 2);
    let shortened = events.iter().find_map(|e| match e {
        Event::Warning(Warning::PromptShortened {
            error,
            passages_kept,
            ..
        }) => Some((error.clone(), *passages_kept)),
        _ => None,
    });
    let (error, kept) = shortened.expect("a PromptShortened warning");
    assert!(
        matches!(
            error,
            Error::PromptTooLong {
                tokens: Some(2_044),
                limit: Some(1_792),
                ..
            }
        ),
        "{error}"
    );
    assert!(kept < 3, "passages were dropped: {kept}");
    assert!(matches!(events.last(), Some(Event::Done(_))), "{events:?}");
    let first = server.requests()[0].json()["messages"].to_string();
    let second = server.requests()[1].json()["messages"].to_string();
    assert!(second.len() < first.len(), "the second prompt is shorter");
}
