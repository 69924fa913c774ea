//! Nothing fails silently: a finished answer is saved or dead-lettered whatever the caller
//! does; dead-letter delivery is bounded and what it sheds is counted; a panic in any piece
//! becomes a typed error event for its ask; a service stopping waits for the answers in
//! flight; turns stay in the order they were asked across hosts with skewed clocks.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::StreamExt;
use rag::memory::InMemoryHistory;
use rag::pipeline::{DeadLetterLimits, InMemoryDeadLetters};
use rag::{
    ChunkStream, DeadLetter, DeadLetterSink, Error, Event, GenerationParams, Generator,
    HistoryStore, Passage, Pipeline, Prompt, PromptInput, PromptTemplate, RenderedPrompt,
    RetrievalRequest, Retriever, SessionId, Stage, TokenBudget, Turn, TurnId, Usage, Warning,
};
use rag_core::testing::{FailingHistory, PlainTemplate, ScriptedGenerator, StaticRetriever};
use support::{ask, done, events, failed, session};

fn pipeline(generator: impl Generator + 'static) -> rag::PipelineBuilder {
    Pipeline::builder()
        .with_generator(generator)
        .with_template(PlainTemplate::default())
}

/// Reads the stream up to and including the usage event, then drops it.
async fn leave_at_usage(pipeline: &Pipeline, session_id: &str) -> Vec<Event> {
    let mut stream = pipeline.ask(ask(session_id, "What is Lambda?"));
    let mut seen = Vec::new();
    while let Some(event) = stream.next().await {
        let usage = matches!(event, Event::Usage(_));
        seen.push(event);
        if usage {
            break;
        }
    }
    drop(stream);
    seen
}

#[tokio::test]
async fn a_caller_leaving_at_the_usage_event_still_gets_the_turn_saved() {
    let generator =
        ScriptedGenerator::new(["Lambda ", "runs ", "code."]).with_usage(Usage::new(12, 3));
    let history = Arc::new(InMemoryHistory::new());
    let pipeline = pipeline(generator)
        .with_history(history.clone())
        .build()
        .unwrap();
    let seen = leave_at_usage(&pipeline, "s1").await;
    assert!(matches!(seen.last(), Some(Event::Usage(_))), "{seen:?}");
    pipeline.flush().await;
    let turns = history.load(&session("s1"), 10).await.unwrap();
    assert_eq!(turns.len(), 1, "the complete answer was saved");
    assert_eq!(turns[0].answer, "Lambda runs code.");
}

#[tokio::test]
async fn a_turn_that_cannot_be_saved_after_the_caller_left_is_dead_lettered() {
    let generator = ScriptedGenerator::new(["an ", "answer"]).with_usage(Usage::new(5, 2));
    let letters = Arc::new(InMemoryDeadLetters::new());
    let store = FailingHistory::new(InMemoryHistory::new())
        .fail_appends(usize::MAX, Error::history("table gone", false));
    let pipeline = pipeline(generator)
        .with_history(store)
        .with_dead_letters(letters.clone())
        .build()
        .unwrap();
    leave_at_usage(&pipeline, "s1").await;
    pipeline.flush().await;
    let letters = letters.letters();
    assert_eq!(letters.len(), 1);
    match &letters[0] {
        DeadLetter::TurnNotSaved { turn, .. } => assert_eq!(turn.answer, "an answer"),
        other => panic!("expected an unsaved turn, got {other:?}"),
    }
}

/// A sink that holds every delivery until released.
#[derive(Debug)]
struct StuckSink {
    release: tokio::sync::Semaphore,
    received: AtomicUsize,
}

impl Default for StuckSink {
    fn default() -> Self {
        StuckSink {
            release: tokio::sync::Semaphore::new(0),
            received: AtomicUsize::new(0),
        }
    }
}

#[async_trait]
impl DeadLetterSink for StuckSink {
    async fn send(&self, _letter: DeadLetter) {
        let _permit = self.release.acquire().await;
        self.received.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn dead_letters_of_a_stuck_sink_are_bounded_and_the_shed_ones_counted() {
    let sink = Arc::new(StuckSink::default());
    let limits = DeadLetterLimits {
        max_queued: 4,
        max_concurrent: 1,
        timeout: Duration::from_secs(60),
    };
    let generator = ScriptedGenerator::new(["x"])
        .fail_first(usize::MAX, Error::generation("model down", false));
    let pipeline = pipeline(generator)
        .with_dead_letters(sink.clone())
        .with_dead_letter_limits(limits)
        .build()
        .unwrap();
    for i in 0..20 {
        let events = events(pipeline.ask(ask(&format!("s{i}"), "q"))).await;
        assert!(failed(&events).error.to_string().contains("model down"));
    }
    let stats = pipeline.dead_letter_stats();
    assert_eq!(stats.queued, 4, "{stats:?}");
    assert_eq!(stats.shed, 16, "{stats:?}");
    assert_eq!(
        pipeline.background_tasks(),
        4,
        "no more tasks than the queue holds"
    );
    sink.release.add_permits(100);
    pipeline.flush().await;
    let stats = pipeline.dead_letter_stats();
    assert_eq!((stats.queued, stats.delivered, stats.shed), (0, 4, 16));
    assert_eq!(sink.received.load(Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn a_delivery_that_outlasts_its_timeout_counts_as_failed() {
    let sink = Arc::new(StuckSink::default());
    let generator = ScriptedGenerator::new(["x"])
        .fail_first(usize::MAX, Error::generation("model down", false));
    let pipeline = pipeline(generator)
        .with_dead_letters(sink.clone())
        .with_dead_letter_limits(DeadLetterLimits {
            timeout: Duration::from_secs(5),
            ..DeadLetterLimits::default()
        })
        .build()
        .unwrap();
    events(pipeline.ask(ask("s", "q"))).await;
    pipeline.flush().await;
    let stats = pipeline.dead_letter_stats();
    assert_eq!((stats.failed, stats.delivered, stats.queued), (1, 0, 0));
}

/// Panics where it is told to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Where {
    Generate,
    Stream,
    Retrieve,
    Load,
    Append,
    Render,
}

#[derive(Debug)]
struct Panicky(Where);

#[async_trait]
impl Generator for Panicky {
    async fn generate(&self, _p: &Prompt, _params: &GenerationParams) -> rag::Result<ChunkStream> {
        assert_ne!(self.0, Where::Generate, "generator bug");
        let chunks = futures::stream::iter(0..3).map(|i| {
            assert!(i < 2, "stream bug");
            Ok(rag::Chunk::Text(format!("t{i} ")))
        });
        Ok(if self.0 == Where::Stream {
            chunks.boxed()
        } else {
            futures::stream::iter([Ok(rag::Chunk::Text("fine".into()))]).boxed()
        })
    }
}

#[async_trait]
impl Retriever for Panicky {
    async fn retrieve(&self, _req: &RetrievalRequest) -> rag::Result<Vec<Passage>> {
        assert_ne!(self.0, Where::Retrieve, "retriever bug");
        Ok(vec![Passage::new("p", "text")])
    }
}

#[async_trait]
impl HistoryStore for Panicky {
    async fn load(&self, _s: &SessionId, _n: usize) -> rag::Result<Vec<Turn>> {
        assert_ne!(self.0, Where::Load, "store bug");
        Ok(Vec::new())
    }
    async fn append(&self, _s: &SessionId, _t: &Turn) -> rag::Result<()> {
        assert_ne!(self.0, Where::Append, "store bug");
        Ok(())
    }
    async fn clear(&self, _s: &SessionId) -> rag::Result<()> {
        Ok(())
    }
    async fn owner(&self, _s: &SessionId) -> rag::Result<rag::SessionOwner> {
        Ok(rag::SessionOwner::Unclaimed)
    }
}

impl PromptTemplate for Panicky {
    fn render(&self, input: &PromptInput<'_>, budget: &TokenBudget) -> rag::Result<RenderedPrompt> {
        assert_ne!(self.0, Where::Render, "template bug");
        PlainTemplate::default().render(input, budget)
    }
}

#[tokio::test]
async fn a_panic_in_any_piece_is_a_typed_error_event_and_a_dead_letter() {
    for (at, stage) in [
        (Where::Generate, Stage::Generation),
        (Where::Stream, Stage::Generation),
        (Where::Retrieve, Stage::Retrieval),
        (Where::Load, Stage::History),
        (Where::Render, Stage::Prompt),
    ] {
        let letters = Arc::new(InMemoryDeadLetters::new());
        let pipeline = Pipeline::builder()
            .with_generator(Panicky(at))
            .with_retriever(Panicky(at))
            .with_history(Panicky(at))
            .with_template(Panicky(at))
            .with_dead_letters(letters.clone())
            .on_history_error(rag::pipeline::HistoryFailurePolicy::Fail)
            .build()
            .unwrap();
        // The ask runs in this task: a panic that escaped would fail the test here.
        let events = events(pipeline.ask(ask("s", "q"))).await;
        let failure = failed(&events);
        assert!(
            matches!(&failure.error, Error::Panicked { stage: s, message } if *s == stage && message.contains("bug")),
            "{at:?}: {}",
            failure.error
        );
        assert!(!failure.is_retryable());
        if at == Where::Stream {
            assert_eq!(failure.partial_answer, "t0 t1 ");
        }
        pipeline.flush().await;
        assert_eq!(letters.len(), 1, "{at:?}");
    }
    // A store that panics on append: the answer is delivered, the turn dead-lettered.
    let letters = Arc::new(InMemoryDeadLetters::new());
    let pipeline = Pipeline::builder()
        .with_generator(Panicky(Where::Append))
        .with_history(Panicky(Where::Append))
        .with_template(PlainTemplate::default())
        .with_dead_letters(letters.clone())
        .build()
        .unwrap();
    let events = events(pipeline.ask(ask("s", "q"))).await;
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Warning(Warning::TurnNotSaved(Error::Panicked {
            stage: Stage::Save,
            ..
        }))
    )));
    assert!(!done(&events).saved);
    pipeline.flush().await;
    assert!(matches!(
        letters.letters().as_slice(),
        [DeadLetter::TurnNotSaved { .. }]
    ));
}

/// A dead-letter sink that panics.
#[derive(Debug)]
struct PanickySink;

#[async_trait]
impl DeadLetterSink for PanickySink {
    async fn send(&self, _letter: DeadLetter) {
        panic!("sink bug");
    }
}

#[tokio::test]
async fn a_panicking_dead_letter_sink_is_counted_not_fatal() {
    let generator =
        ScriptedGenerator::new(["x"]).fail_first(usize::MAX, Error::generation("down", false));
    let pipeline = pipeline(generator)
        .with_dead_letters(PanickySink)
        .build()
        .unwrap();
    events(pipeline.ask(ask("s", "q"))).await;
    pipeline.flush().await;
    assert_eq!(pipeline.dead_letter_stats().failed, 1);
}

#[tokio::test]
async fn shutting_down_waits_for_answers_in_flight_and_refuses_new_ones() {
    let generator = ScriptedGenerator::counting(20).with_delay(Duration::from_millis(10));
    let history = Arc::new(InMemoryHistory::new());
    let pipeline = pipeline(generator)
        .with_history(history.clone())
        .build()
        .unwrap();
    let running = {
        let pipeline = pipeline.clone();
        tokio::spawn(async move { events(pipeline.ask(ask("s1", "q"))).await })
    };
    // Wait until the ask is answering.
    while pipeline.in_flight() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let report = pipeline.shutdown(Duration::from_secs(10)).await;
    assert!(report.completed, "{report:?}");
    assert_eq!((report.asks_left, report.tasks_left), (0, 0));
    let events = running.await.unwrap();
    assert_eq!(done(&events).answer.split_whitespace().count(), 20);
    assert_eq!(history.load(&session("s1"), 10).await.unwrap().len(), 1);
    // After the shutdown began, a new ask fails at once, retryably.
    let refused = events_of(&pipeline, "s2").await;
    let failure = failed(&refused);
    assert!(matches!(failure.error, Error::ShuttingDown));
    assert!(failure.is_retryable());
}

async fn events_of(pipeline: &Pipeline, session_id: &str) -> Vec<Event> {
    events(pipeline.ask(ask(session_id, "q"))).await
}

#[tokio::test]
async fn a_shutdown_deadline_reports_what_was_still_answering() {
    let generator = ScriptedGenerator::counting(20).stall_at(3);
    let pipeline = pipeline(generator).build().unwrap();
    let stalled = {
        let pipeline = pipeline.clone();
        tokio::spawn(async move { pipeline.ask(ask("s", "q")).collect::<Vec<_>>().await })
    };
    while pipeline.in_flight() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let report = pipeline.shutdown(Duration::from_millis(50)).await;
    assert!(!report.completed);
    assert_eq!(report.asks_left, 1);
    stalled.abort();
}

/// A turn id from a clock `offset` ahead of this host's.
fn id_from_a_clock_ahead_by(offset: Duration) -> TurnId {
    let at = SystemTime::now() + offset;
    let since = at.duration_since(SystemTime::UNIX_EPOCH).unwrap();
    let ts = uuid::Timestamp::from_unix(uuid::NoContext, since.as_secs(), since.subsec_nanos());
    TurnId::from(uuid::Uuid::new_v7(ts))
}

#[tokio::test]
async fn turns_keep_the_order_they_were_asked_in_across_skewed_clocks() {
    let history = Arc::new(InMemoryHistory::new());
    // Another host, whose clock runs an hour ahead, saved the first turn.
    let first = Turn {
        id: id_from_a_clock_ahead_by(Duration::from_secs(3_600)),
        question: "First question?".into(),
        answer: "First answer.".into(),
        created_at: SystemTime::now(),
    };
    history.append(&session("s"), &first).await.unwrap();
    // This host answers the follow-up.
    let pipeline = pipeline(ScriptedGenerator::new(["Second ", "answer."]))
        .with_history(history.clone())
        .with_retriever(StaticRetriever::new(vec![Passage::new("p", "text")]))
        .build()
        .unwrap();
    let summary = done(&events(pipeline.ask(ask("s", "Second question?"))).await).clone();
    assert!(summary.turn_id > first.id);
    let turns = history.load(&session("s"), 10).await.unwrap();
    let questions: Vec<&str> = turns.iter().map(|t| t.question.as_str()).collect();
    assert_eq!(questions, ["First question?", "Second question?"]);
    // Also with no history in the prompt: the newest turn is still read for the order.
    let pipeline = pipeline_without_history_turns(history.clone());
    done(&events(pipeline.ask(ask("s", "Third question?"))).await);
    let turns = history.load(&session("s"), 10).await.unwrap();
    assert_eq!(turns.last().unwrap().question, "Third question?");
}

fn pipeline_without_history_turns(history: Arc<InMemoryHistory>) -> Pipeline {
    pipeline(ScriptedGenerator::new(["Third."]))
        .with_history(history)
        .with_history_turns(0)
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_refused_prompt_that_fit_by_its_length_is_still_sent_shorter() {
    // The first prompt fits by its length alone, so its count is a length bound far above the
    // real count; the shorter prompt must still hold fewer passages, not the same ones again.
    let refusal = Error::PromptTooLong {
        message: "prompt is too long: 700 tokens > 500 maximum".into(),
        tokens: Some(700),
        limit: Some(500),
    };
    let generator = ScriptedGenerator::new(["ok"]).fail_first(1, refusal);
    let pipeline = Pipeline::builder()
        .with_generator(generator.clone())
        .with_template(rag::Llama3Template::new())
        .with_context_window(4_000, 40)
        .with_retriever(StaticRetriever::numbered(6))
        .with_top_k(6)
        .build()
        .unwrap();
    let events = events(pipeline.ask(ask("s", "How do functions scale?"))).await;
    let summary = done(&events);
    let prompts = generator.probe().prompts();
    assert_eq!(prompts.len(), 2);
    let documents = |p: &Prompt| match p {
        Prompt::Text(t) => t.matches("<document index=").count(),
        Prompt::Chat { .. } => unreachable!("Llama 3 renders text"),
    };
    assert_eq!(documents(&prompts[0]), 6);
    assert!(documents(&prompts[1]) < 6, "{:?}", prompts[1]);
    assert!(events.iter().any(|e| matches!(e, Event::Warning(Warning::PromptShortened { passages_kept, .. }) if *passages_kept < 6)));
    assert_eq!(summary.dropped.passages.len(), 6 - documents(&prompts[1]));
}
