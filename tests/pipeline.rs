//! The pipeline's flow end to end: event order, bad input, faults, cancellation, concurrency.

mod support;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use rag::memory::InMemoryHistory;
use rag::pipeline::{HistoryFailurePolicy, InMemoryDeadLetters, Timeouts};
use rag::{
    DeadLetter, Error, Event, GenerationParams, HistoryStore, ModelProfile, Passage, Pipeline,
    PipelineBuilder, Prompt, RetrievalRequest, Retriever, RetryPolicy, SessionId, Stage,
    StopReason, Turn, Usage, Warning,
};
use rag_core::testing::{
    Delayed, FailingHistory, FailingRetriever, PlainTemplate, ScriptedGenerator, StaticRetriever,
};
use support::{ask, done, events, failed, session, tokens};

fn fast_retry(attempts: u32) -> RetryPolicy {
    RetryPolicy::attempts(attempts).with_backoff(Duration::from_millis(1), Duration::from_millis(5))
}

fn builder(generator: &ScriptedGenerator) -> PipelineBuilder {
    Pipeline::builder()
        .with_generator(generator.clone())
        .with_template(PlainTemplate::default())
        .with_retry(fast_retry(3))
}

fn prompt_text(prompt: &Prompt) -> &str {
    match prompt {
        Prompt::Text(text) => text,
        Prompt::Chat { .. } => panic!("PlainTemplate renders text"),
    }
}

#[tokio::test]
async fn events_come_in_order_and_the_turn_is_saved_after_the_answer() {
    let generator =
        ScriptedGenerator::new(["Lambda ", "runs ", "code."]).with_usage(Usage::new(42, 3));
    let history = Arc::new(InMemoryHistory::new());
    let retriever = StaticRetriever::numbered(3);
    let pipeline = builder(&generator)
        .with_retriever(retriever.clone())
        .with_history(history.clone())
        .with_top_k(2)
        .build()
        .unwrap();

    let events = events(pipeline.ask(ask("s1", "What is Lambda?"))).await;
    match &events[0] {
        Event::Sources(sources) => {
            let ids: Vec<_> = sources
                .iter()
                .map(|c| (c.index, c.passage_id.as_str()))
                .collect();
            assert_eq!(ids, [(1, "p0"), (2, "p1")]);
            assert_eq!(sources[0].uri.as_deref(), Some("https://example.com/doc/0"));
        }
        other => panic!("first event should be Sources, got {other:?}"),
    }
    assert_eq!(tokens(&events), "Lambda runs code.");
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Usage(u) if u.input_tokens == 42)));
    let summary = done(&events);
    assert_eq!(summary.answer, "Lambda runs code.");
    assert_eq!(summary.stop_reason, Some(StopReason::EndTurn));
    assert_eq!(summary.attempts, 1);
    assert!(summary.saved);
    assert_eq!(retriever.requests()[0].top_k, 2);

    let saved = history.load(&session("s1"), 10).await.unwrap();
    assert_eq!(saved.len(), 1);
    assert_eq!(saved[0].id, summary.turn_id);
    assert_eq!(saved[0].question, "What is Lambda?");
    assert_eq!(saved[0].answer, "Lambda runs code.");
}

#[tokio::test]
async fn the_second_question_sees_the_first_turn() {
    let generator = ScriptedGenerator::new(["Use ", "SAM."]);
    let history = Arc::new(InMemoryHistory::new());
    let pipeline = builder(&generator)
        .with_history(history.clone())
        .build()
        .unwrap();
    let first = pipeline
        .ask(ask("s1", "How do I deploy?"))
        .text()
        .await
        .unwrap();
    assert_eq!(first, "Use SAM.");
    let second: Vec<String> = pipeline
        .ask(ask("s1", "Now do it in CDK"))
        .tokens()
        .map(|t| t.unwrap())
        .collect()
        .await;
    assert_eq!(second.concat(), "Use SAM.");
    let prompts = generator.probe().prompts();
    assert!(prompt_text(&prompts[1]).contains("Q: How do I deploy?\nA: Use SAM."));
    assert!(!prompt_text(&prompts[0]).contains("How do I deploy?\nA:"));
    assert_eq!(history.load(&session("s1"), 10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn without_a_retriever_it_is_a_plain_bot() {
    let generator = ScriptedGenerator::new(["Hi."]);
    let pipeline = builder(&generator).build().unwrap();
    let events = events(pipeline.ask(ask("s1", "Hello?"))).await;
    assert!(matches!(&events[0], Event::Sources(s) if s.is_empty()));
    assert_eq!(done(&events).answer, "Hi.");
    assert!(!done(&events).saved, "no history store, nothing saved");
    assert_eq!(
        prompt_text(&generator.probe().prompts()[0]),
        "Question: Hello?\n"
    );
}

/// Every kind of bad input is an `InvalidInput` error event before any backend is called, and
/// the dead-letter sink still hears of it.
#[tokio::test]
async fn bad_input_fails_before_any_backend_is_called() {
    let generator = ScriptedGenerator::new(["never"]);
    let retriever = StaticRetriever::numbered(2);
    let history = Arc::new(FailingHistory::new(InMemoryHistory::new()));
    let letters = Arc::new(InMemoryDeadLetters::new());
    let pipeline = builder(&generator)
        .with_retriever(retriever.clone())
        .with_history(history.clone())
        .with_dead_letters(letters.clone())
        .with_max_question_bytes(100)
        .build()
        .unwrap();

    let cases = [
        (ask("s1", ""), "question"),
        (ask("s1", " \n\t "), "question"),
        (ask("s1", &"x".repeat(101)), "question"),
        (
            ask("s1", "ok").with_params(GenerationParams::default().with_temperature(2.0)),
            "params.temperature",
        ),
        (
            ask("s1", "ok").with_params(GenerationParams::default().with_top_p(1.01)),
            "params.top_p",
        ),
        (
            ask("s1", "ok").with_params(GenerationParams::default().with_max_tokens(0)),
            "params.max_tokens",
        ),
        (
            ask("s1", "ok").with_params(GenerationParams::default().with_max_tokens(100_000)),
            "params.max_tokens",
        ),
        (ask("s1", "ok").with_top_k(0), "top_k"),
    ];
    let n = cases.len();
    for (ask, expected) in cases {
        let events = events(pipeline.ask(ask)).await;
        assert_eq!(events.len(), 1, "only the error: {events:?}");
        let failure = failed(&events);
        assert_eq!(failure.stage, Stage::Input);
        match &failure.error {
            Error::InvalidInput { field, .. } => assert_eq!(*field, expected),
            other => panic!("expected InvalidInput for {expected}, got {other:?}"),
        }
        assert!(!failure.is_retryable());
    }
    for bad in ["", "has space", "new\nline", "ünïcode"] {
        assert!(matches!(
            SessionId::new(bad),
            Err(Error::InvalidInput {
                field: "session_id",
                ..
            })
        ));
    }
    pipeline.flush().await;
    assert_eq!(generator.probe().calls(), 0);
    assert!(retriever.requests().is_empty());
    assert_eq!(history.load_calls(), 0);
    assert_eq!(history.append_calls(), 0);
    assert_eq!(letters.len(), n);
}

#[tokio::test]
async fn a_question_that_cannot_fit_is_a_context_overflow_before_the_model() {
    let generator = ScriptedGenerator::new(["never"]);
    let pipeline = builder(&generator)
        .with_context_window(2_000, 0)
        .with_max_question_bytes(10_000)
        .build()
        .unwrap();
    let events = events(pipeline.ask(ask("s1", &"long ".repeat(400)))).await;
    let failure = failed(&events);
    assert!(
        matches!(failure.error, Error::ContextOverflow { budget: 976, .. }),
        "{failure:?}"
    );
    assert_eq!(failure.stage, Stage::Prompt);
    assert_eq!(generator.probe().calls(), 0);
}

#[tokio::test]
async fn retrieval_failure_stops_before_the_model_and_saves_nothing() {
    let generator = ScriptedGenerator::new(["never"]);
    let history = Arc::new(InMemoryHistory::new());
    let letters = Arc::new(InMemoryDeadLetters::new());
    let retriever = FailingRetriever::new(Error::retrieval("payload too large", false));
    let pipeline = builder(&generator)
        .with_retriever(retriever.clone())
        .with_history(history.clone())
        .with_dead_letters(letters.clone())
        .build()
        .unwrap();
    let events = events(pipeline.ask(ask("s1", "What is EDA?"))).await;
    let failure = failed(&events);
    assert_eq!(failure.stage, Stage::Retrieval);
    assert!(failure.error.to_string().contains("payload too large"));
    assert_eq!(events.len(), 1);
    pipeline.flush().await;
    assert_eq!(retriever.calls(), 1);
    assert_eq!(generator.probe().calls(), 0, "the model is never called");
    assert!(history.load(&session("s1"), 10).await.unwrap().is_empty());
    match letters.letters().as_slice() {
        [DeadLetter::AskFailed {
            session, question, ..
        }] => {
            assert_eq!(session.as_str(), "s1");
            assert_eq!(question, "What is EDA?");
        }
        other => panic!("expected one AskFailed letter, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn retrieval_timeout_is_a_timeout_error() {
    let generator = ScriptedGenerator::new(["never"]);
    let letters = Arc::new(InMemoryDeadLetters::new());
    let pipeline = builder(&generator)
        .with_retriever(Delayed::new(
            StaticRetriever::numbered(1),
            Duration::from_secs(60),
        ))
        .with_dead_letters(letters.clone())
        .with_timeouts(Timeouts {
            retrieval: Some(Duration::from_millis(500)),
            ..Timeouts::default()
        })
        .build()
        .unwrap();
    let events = events(pipeline.ask(ask("s1", "slow?"))).await;
    let failure = failed(&events);
    assert!(matches!(
        failure.error,
        Error::Timeout {
            stage: Stage::Retrieval,
            ..
        }
    ));
    assert!(failure.is_retryable());
    pipeline.flush().await;
    assert_eq!(generator.probe().calls(), 0);
    assert_eq!(letters.len(), 1);
}

#[tokio::test]
async fn model_failures_before_the_first_token_are_retried() {
    let generator =
        ScriptedGenerator::new(["ok"]).fail_first(2, Error::generation("throttled", true));
    let pipeline = builder(&generator).build().unwrap();
    let events = events(pipeline.ask(ask("s1", "q"))).await;
    assert_eq!(done(&events).attempts, 3);
    assert_eq!(done(&events).answer, "ok");
    assert_eq!(generator.probe().calls(), 3);
}

#[tokio::test]
async fn retries_give_up_after_the_policy_and_report_the_error() {
    let generator =
        ScriptedGenerator::new(["ok"]).fail_first(10, Error::generation("throttled", true));
    let letters = Arc::new(InMemoryDeadLetters::new());
    let history = Arc::new(InMemoryHistory::new());
    let pipeline = builder(&generator)
        .with_dead_letters(letters.clone())
        .with_history(history.clone())
        .build()
        .unwrap();
    let events = events(pipeline.ask(ask("s1", "q"))).await;
    let failure = failed(&events);
    assert_eq!(failure.stage, Stage::Generation);
    assert!(failure.partial_answer.is_empty());
    assert_eq!(generator.probe().calls(), 3, "max_attempts calls in all");
    pipeline.flush().await;
    assert_eq!(letters.len(), 1);
    assert!(history.load(&session("s1"), 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn non_retryable_model_errors_are_not_retried() {
    let generator =
        ScriptedGenerator::new(["ok"]).fail_first(1, Error::generation("validation", false));
    let pipeline = builder(&generator).build().unwrap();
    let events = events(pipeline.ask(ask("s1", "q"))).await;
    assert!(!failed(&events).is_retryable());
    assert_eq!(generator.probe().calls(), 1);
}

#[tokio::test]
async fn a_stream_error_before_any_text_is_retried_too() {
    // fail_at(0) fails every stream before its first text: retried, then reported.
    let generator =
        ScriptedGenerator::new(["a", "b"]).fail_at(0, Error::generation("stream", true));
    let pipeline = builder(&generator).build().unwrap();
    let events = events(pipeline.ask(ask("s1", "q"))).await;
    assert_eq!(failed(&events).stage, Stage::Generation);
    assert_eq!(generator.probe().calls(), 3);
    assert_eq!(generator.probe().streams_open(), 0);
}

#[tokio::test]
async fn a_failure_after_k_tokens_carries_the_partial_answer_and_saves_nothing() {
    let generator =
        ScriptedGenerator::counting(10).fail_at(4, Error::generation("model stream error", true));
    let history = Arc::new(InMemoryHistory::new());
    let letters = Arc::new(InMemoryDeadLetters::new());
    let pipeline = builder(&generator)
        .with_history(history.clone())
        .with_dead_letters(letters.clone())
        .build()
        .unwrap();
    let events = events(pipeline.ask(ask("s1", "q"))).await;
    let failure = failed(&events);
    assert_eq!(failure.partial_answer, "t0 t1 t2 t3 ");
    assert_eq!(tokens(&events), "t0 t1 t2 t3 ");
    assert_eq!(
        generator.probe().calls(),
        1,
        "never retried after the first token"
    );
    pipeline.flush().await;
    assert!(history.load(&session("s1"), 10).await.unwrap().is_empty());
    match letters.letters().as_slice() {
        [DeadLetter::AskFailed { failure, .. }] => {
            assert_eq!(failure.partial_answer, "t0 t1 t2 t3 ")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_first_token_times_out_and_is_retried() {
    let generator =
        ScriptedGenerator::new(["late"]).with_first_token_delay(Duration::from_secs(60));
    let pipeline = builder(&generator)
        .with_timeouts(Timeouts {
            first_token: Some(Duration::from_secs(1)),
            ..Timeouts::default()
        })
        .build()
        .unwrap();
    let events = events(pipeline.ask(ask("s1", "q"))).await;
    assert!(matches!(
        failed(&events).error,
        Error::Timeout {
            stage: Stage::Generation,
            ..
        }
    ));
    assert_eq!(generator.probe().calls(), 3);
    assert_eq!(
        generator.probe().streams_dropped(),
        3,
        "each timed-out call is dropped"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stalled_stream_ends_with_a_timeout_and_the_partial_answer() {
    let generator = ScriptedGenerator::counting(5).stall_at(2);
    let history = Arc::new(InMemoryHistory::new());
    let pipeline = builder(&generator)
        .with_history(history.clone())
        .with_timeouts(Timeouts {
            idle: Some(Duration::from_secs(2)),
            ..Timeouts::default()
        })
        .build()
        .unwrap();
    let events = events(pipeline.ask(ask("s1", "q"))).await;
    let failure = failed(&events);
    assert!(
        matches!(failure.error, Error::Timeout { stage: Stage::Generation, after } if after == Duration::from_secs(2))
    );
    assert_eq!(failure.partial_answer, "t0 t1 ");
    assert_eq!(generator.probe().streams_dropped(), 1);
    assert!(history.load(&session("s1"), 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn dropping_the_stream_cancels_the_model_call_and_saves_nothing() {
    let generator = ScriptedGenerator::counting(100).with_delay(Duration::from_millis(1));
    let history = Arc::new(InMemoryHistory::new());
    let letters = Arc::new(InMemoryDeadLetters::new());
    let pipeline = builder(&generator)
        .with_history(history.clone())
        .with_dead_letters(letters.clone())
        .build()
        .unwrap();
    let mut stream = pipeline.ask(ask("s1", "q"));
    let mut seen = 0;
    while let Some(event) = stream.next().await {
        if matches!(event, Event::Token(_)) {
            seen += 1;
            if seen == 3 {
                break;
            }
        }
    }
    assert_eq!(generator.probe().streams_open(), 1);
    drop(stream);
    assert_eq!(
        generator.probe().streams_dropped(),
        1,
        "the model stream is dropped at once"
    );
    assert_eq!(generator.probe().streams_open(), 0);
    pipeline.flush().await;
    assert_eq!(pipeline.background_tasks(), 0);
    assert!(history.load(&session("s1"), 10).await.unwrap().is_empty());
    assert!(letters.is_empty(), "a cancellation is not a failure");
}

#[tokio::test]
async fn the_stream_says_when_the_answer_is_complete_and_dropping_it_no_longer_cancels() {
    let generator = ScriptedGenerator::counting(5);
    let history = Arc::new(InMemoryHistory::new());
    // A slow save: the caller stops between the answer's end and its Done.
    let slow_writes = Delayed::new(Arc::clone(&history), Duration::ZERO)
        .with_write_delay(Duration::from_millis(300));
    let letters = Arc::new(InMemoryDeadLetters::new());
    let pipeline = builder(&generator)
        .with_history(slow_writes)
        .with_dead_letters(letters.clone())
        .build()
        .unwrap();
    let mut stream = pipeline.ask(ask("s1", "q"));
    assert!(!stream.is_complete(), "nothing asked yet");
    let mut tokens = 0;
    while let Some(event) = stream.next().await {
        if matches!(event, Event::Token(_)) {
            tokens += 1;
            assert!(!stream.is_complete(), "mid-answer, dropping still cancels");
            if tokens == 5 {
                break;
            }
        }
    }
    // The next poll ends the answer and arms the save; the save takes 300 ms.
    let next = tokio::time::timeout(Duration::from_millis(100), stream.next()).await;
    assert!(
        !matches!(next, Ok(Some(Event::Done(_)))),
        "Done waits for the slow save"
    );
    assert!(
        stream.is_complete(),
        "the answer is complete and its save armed"
    );
    drop(stream);
    pipeline.flush().await;
    assert_eq!(history.load(&session("s1"), 10).await.unwrap().len(), 1);
    assert!(letters.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_asks_on_one_session_both_save_once_and_sessions_stay_apart() {
    let generator = ScriptedGenerator::counting(20).with_delay(Duration::from_millis(1));
    let history = Arc::new(InMemoryHistory::new());
    let pipeline = builder(&generator)
        .with_history(history.clone())
        .build()
        .unwrap();
    let asks = [("a", "first"), ("a", "second"), ("b", "other")];
    let results = futures::future::join_all(asks.iter().map(|(s, q)| {
        let pipeline = pipeline.clone();
        let ask = ask(s, q);
        tokio::spawn(async move { events(pipeline.ask(ask)).await })
    }))
    .await;
    let summaries: Vec<_> = results
        .iter()
        .map(|r| done(r.as_ref().unwrap()).clone())
        .collect();
    let a = history.load(&session("a"), 10).await.unwrap();
    let b = history.load(&session("b"), 10).await.unwrap();
    let questions: Vec<_> = a.iter().map(|t| t.question.as_str()).collect();
    assert_eq!(
        questions,
        ["first", "second"],
        "both saved once, in ask order"
    );
    assert_eq!(a[0].id, summaries[0].turn_id);
    assert_eq!(a[1].id, summaries[1].turn_id);
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].question, "other");
}

/// A retriever and a history store that each wait until the other has started: run one after
/// the other, the ask would never finish.
#[derive(Debug, Clone)]
struct Rendezvous(Arc<tokio::sync::Barrier>);

#[async_trait]
impl Retriever for Rendezvous {
    async fn retrieve(&self, _req: &RetrievalRequest) -> rag::Result<Vec<Passage>> {
        self.0.wait().await;
        Ok(vec![Passage::new("p", "met in the middle")])
    }
}

#[async_trait]
impl HistoryStore for Rendezvous {
    async fn load(&self, _s: &SessionId, _n: usize) -> rag::Result<Vec<Turn>> {
        self.0.wait().await;
        Ok(vec![Turn::new("earlier", "answer")])
    }
    async fn append(&self, _s: &SessionId, _t: &Turn) -> rag::Result<()> {
        Ok(())
    }
    async fn clear(&self, _s: &SessionId) -> rag::Result<()> {
        Ok(())
    }
    async fn owner(&self, _s: &SessionId) -> rag::Result<rag::SessionOwner> {
        Ok(rag::SessionOwner::Unclaimed)
    }
}

#[tokio::test]
async fn history_and_retrieval_run_at_the_same_time() {
    let both = Rendezvous(Arc::new(tokio::sync::Barrier::new(2)));
    let generator = ScriptedGenerator::new(["ok"]);
    let pipeline = builder(&generator)
        .with_retriever(both.clone())
        .with_history(both)
        .with_timeouts(Timeouts {
            retrieval: None,
            history: None,
            ..Timeouts::default()
        })
        .build()
        .unwrap();
    let events = tokio::time::timeout(Duration::from_secs(10), events(pipeline.ask(ask("s", "q"))))
        .await
        .expect("history and retrieval must run concurrently");
    assert_eq!(done(&events).answer, "ok");
    let prompt = generator.probe().prompts().remove(0);
    assert!(prompt_text(&prompt).contains("met in the middle"));
    assert!(prompt_text(&prompt).contains("Q: earlier"));
}

#[tokio::test]
async fn a_history_load_failure_warns_and_answers_by_default() {
    let generator = ScriptedGenerator::new(["ok"]);
    let history = Arc::new(
        FailingHistory::new(InMemoryHistory::new())
            .fail_loads(Error::history("table unavailable", true)),
    );
    let pipeline = builder(&generator)
        .with_history(history.clone())
        .build()
        .unwrap();
    let events = events(pipeline.ask(ask("s1", "q"))).await;
    assert!(
        matches!(&events[0], Event::Warning(Warning::HistoryUnavailable(e)) if e.to_string().contains("table unavailable"))
    );
    assert_eq!(done(&events).answer, "ok");
    assert!(done(&events).saved, "the turn is still saved");
    assert_eq!(
        history.inner().load(&session("s1"), 5).await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn a_history_load_failure_can_be_fatal() {
    let generator = ScriptedGenerator::new(["ok"]);
    let history = Arc::new(
        FailingHistory::new(InMemoryHistory::new()).fail_loads(Error::history("down", true)),
    );
    let pipeline = builder(&generator)
        .with_history(history)
        .on_history_error(HistoryFailurePolicy::Fail)
        .build()
        .unwrap();
    let events = events(pipeline.ask(ask("s1", "q"))).await;
    assert_eq!(failed(&events).stage, Stage::History);
    assert_eq!(generator.probe().calls(), 0);
}

#[tokio::test]
async fn a_failed_append_is_retried() {
    let generator = ScriptedGenerator::new(["ok"]);
    let history = Arc::new(
        FailingHistory::new(InMemoryHistory::new())
            .fail_appends(2, Error::history("throttled", true)),
    );
    let pipeline = builder(&generator)
        .with_history(history.clone())
        .with_save_retry(fast_retry(3))
        .build()
        .unwrap();
    let events = events(pipeline.ask(ask("s1", "q"))).await;
    assert!(done(&events).saved);
    assert_eq!(history.append_calls(), 3);
    assert_eq!(
        history.inner().load(&session("s1"), 5).await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn an_append_that_keeps_failing_warns_and_goes_to_the_dead_letter_sink() {
    let generator = ScriptedGenerator::new(["ok"]);
    let letters = Arc::new(InMemoryDeadLetters::new());
    let history = Arc::new(
        FailingHistory::new(InMemoryHistory::new())
            .fail_appends(usize::MAX, Error::history("throttled", true)),
    );
    let pipeline = builder(&generator)
        .with_history(history.clone())
        .with_save_retry(fast_retry(3))
        .with_dead_letters(letters.clone())
        .build()
        .unwrap();
    let events = events(pipeline.ask(ask("s1", "q"))).await;
    let warning_at = events
        .iter()
        .position(|e| matches!(e, Event::Warning(Warning::TurnNotSaved(_))))
        .expect("a TurnNotSaved warning");
    assert_eq!(
        warning_at,
        events.len() - 2,
        "the warning comes just before Done"
    );
    let summary = done(&events);
    assert!(!summary.saved);
    assert_eq!(summary.answer, "ok", "the answer was delivered anyway");
    assert_eq!(history.append_calls(), 3);
    // Dead letters are delivered in the background.
    pipeline.flush().await;
    match letters.letters().as_slice() {
        [DeadLetter::TurnNotSaved { turn, .. }] => {
            assert_eq!(turn.id, summary.turn_id);
            assert_eq!(turn.answer, "ok");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn builder_mistakes_fail_at_build() {
    let generator = ScriptedGenerator::new(["ok"]);
    let cases: Vec<(PipelineBuilder, &str)> = vec![
        (
            Pipeline::builder().with_template(PlainTemplate::default()),
            "generator",
        ),
        (
            Pipeline::builder().with_generator(generator.clone()),
            "template",
        ),
        (
            builder(&generator)
                .with_retriever(StaticRetriever::numbered(1))
                .with_top_k(0),
            "top_k",
        ),
        (
            builder(&generator).with_retry(RetryPolicy::attempts(0)),
            "max_attempts",
        ),
        (
            builder(&generator).with_timeouts(Timeouts {
                idle: Some(Duration::ZERO),
                ..Timeouts::default()
            }),
            "idle",
        ),
        (
            builder(&generator).with_context_window(1_000, 0),
            "context window",
        ),
        (
            builder(&generator).with_params(GenerationParams::default().with_top_k(0)),
            "top_k",
        ),
    ];
    for (builder, needle) in cases {
        match builder.build() {
            Err(Error::Config { message }) => assert!(message.contains(needle), "{message}"),
            other => panic!("expected a config error about {needle}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn usage_is_merged_from_partial_reports() {
    let generator = ScriptedGenerator::new(["a"]).with_usage(Usage::new(0, 7));
    let pipeline = builder(&generator).build().unwrap();
    let events = events(pipeline.ask(ask("s1", "q"))).await;
    assert_eq!(done(&events).usage, Some(Usage::new(0, 7)));
}

#[tokio::test]
async fn a_model_profile_sets_the_template_the_window_and_the_answer_limit() {
    let generator = ScriptedGenerator::new(["ok"]);
    let profile = ModelProfile::for_model_id("us.meta.llama3-8b-instruct-v1:0").unwrap();
    let pipeline = Pipeline::builder()
        .with_generator(generator.clone())
        .with_model_profile(profile)
        .with_retriever(StaticRetriever::numbered(2))
        .build()
        .unwrap();
    let first = events(pipeline.ask(ask("s1", "What is Lambda?"))).await;
    assert_eq!(done(&first).answer, "ok");
    let prompt = generator.probe().prompts().remove(0);
    let text = prompt_text(&prompt);
    assert!(text.starts_with("<|begin_of_text|>"), "{text}");
    assert!(text.ends_with("<|start_header_id|>assistant<|end_header_id|>\n\n"));

    // Llama 3 on Bedrock answers with at most 2,048 tokens.
    let too_long = ask("s1", "q").with_params(GenerationParams::default().with_max_tokens(4_096));
    let second = events(pipeline.ask(too_long)).await;
    assert!(matches!(
        failed(&second).error,
        Error::InvalidInput {
            field: "params.max_tokens",
            ..
        }
    ));
    assert_eq!(
        generator.probe().calls(),
        1,
        "the second ask never reached the model"
    );
}

#[tokio::test]
async fn a_caller_leaving_during_the_save_still_gets_the_turn_saved_once() {
    let generator = ScriptedGenerator::new(["complete ", "answer"]);
    let history = Arc::new(InMemoryHistory::new());
    let slow_writes = Delayed::new(Arc::clone(&history), Duration::ZERO)
        .with_write_delay(Duration::from_millis(200));
    let pipeline = builder(&generator)
        .with_history(slow_writes)
        .build()
        .unwrap();
    let mut stream = pipeline.ask(ask("s1", "q"));
    let mut tokens = 0;
    while tokens < 2 {
        if let Some(Event::Token(_)) = stream.next().await {
            tokens += 1;
        }
    }
    // The answer is complete; the next poll starts the slow save. Leave in the middle of it.
    assert!(
        tokio::time::timeout(Duration::from_millis(50), stream.next())
            .await
            .is_err()
    );
    drop(stream);
    assert!(
        history.load(&session("s1"), 10).await.unwrap().is_empty(),
        "not yet written"
    );
    assert_eq!(
        pipeline.background_tasks(),
        1,
        "the save goes on in the background"
    );
    pipeline.flush().await;
    let saved = history.load(&session("s1"), 10).await.unwrap();
    assert_eq!(saved.len(), 1);
    assert_eq!(saved[0].answer, "complete answer");
}
