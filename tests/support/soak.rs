//! The soak harness: many asks over many sessions, hundreds in flight at once, with faults
//! injected at random (fixed seed) into every stage, through the real `Pipeline` and the
//! history store under test. The invariants of DESIGN section 1 are checked at the end and
//! their counts printed.
//!
//! Used by `tests/soak.rs` (`InMemoryHistory`) and `tests/soak_dynamodb.rs` (`DynamoDbHistory`
//! on moto). It declares the binary's global allocator, so each test binary that includes it
//! measures its own heap.
#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cap::Cap;
use futures::StreamExt;
use rag::pipeline::{InMemoryDeadLetters, Timeouts};
use rag::{Ask, DeadLetter, Error, Event, HistoryStore, Pipeline, RetryPolicy, SessionId, TurnId};
use rag_core::testing::{
    Delayed, FailingHistory, GeneratorProbe, PlainTemplate, ScriptedGenerator, StaticRetriever,
};

#[global_allocator]
static ALLOCATOR: Cap<std::alloc::System> = Cap::new(std::alloc::System, usize::MAX);

const TOKENS: usize = 20;
const SEED: u64 = 0x5eed_2026;

/// The size and limits of one soak run.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    /// What the run is called in the printed report (the history store's name).
    pub label: &'static str,
    /// Sessions asking at once, each a task of its own.
    pub sessions: usize,
    /// Asks per session, one after the other.
    pub asks_per_session: usize,
    /// The run fails unless at least this many asks were in flight at one moment.
    pub min_in_flight: usize,
    /// The pipeline's stage timeouts. The history and save limits must suit the store: a save
    /// that times out after the store wrote it would be counted as unsaved.
    pub timeouts: Timeouts,
    /// How far above its starting point the heap may stay once everything is dropped.
    pub max_heap_growth: usize,
}

impl SoakConfig {
    /// `sessions` x `asks_per_session` asks with the limits the in-memory soak uses.
    pub fn new(label: &'static str, sessions: usize, asks_per_session: usize) -> Self {
        SoakConfig {
            label,
            sessions,
            asks_per_session,
            min_in_flight: 500,
            timeouts: Timeouts {
                retrieval: Some(Duration::from_millis(100)),
                history: Some(Duration::from_millis(500)),
                first_token: Some(Duration::from_millis(500)),
                idle: Some(Duration::from_millis(100)),
                save: Some(Duration::from_millis(500)),
                ..Timeouts::default()
            },
            max_heap_growth: 2 * 1024 * 1024,
        }
    }

    fn asks(&self) -> usize {
        self.sessions * self.asks_per_session
    }
}

/// The session id of session number `s`.
fn session_id(s: usize) -> SessionId {
    SessionId::new(format!("soak-{s}")).unwrap()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Scenario {
    Ok,
    SlowStream,
    RetrievalError,
    RetrievalTimeout,
    FlakyModel,
    DeadModel,
    MidStreamFailure,
    Stalled,
    CallerDrops,
    FlakyAppend,
    LostAppend,
}

impl Scenario {
    fn pick(rng: &mut fastrand::Rng) -> Self {
        use Scenario::*;
        const WEIGHTED: [(Scenario, u32); 11] = [
            (Ok, 40),
            (SlowStream, 10),
            (RetrievalError, 5),
            (RetrievalTimeout, 3),
            (FlakyModel, 8),
            (DeadModel, 3),
            (MidStreamFailure, 6),
            (Stalled, 3),
            (CallerDrops, 8),
            (FlakyAppend, 9),
            (LostAppend, 5),
        ];
        let mut roll = rng.u32(0..100);
        for (scenario, weight) in WEIGHTED {
            if roll < weight {
                return scenario;
            }
            roll -= weight;
        }
        unreachable!("weights add up to 100")
    }
}

#[derive(Debug)]
enum Outcome {
    Done { turn_id: TurnId, saved: bool },
    Failed,
    Cancelled,
}

struct Shared {
    config: SoakConfig,
    history: Arc<dyn HistoryStore>,
    letters: Arc<InMemoryDeadLetters>,
    retriever: StaticRetriever,
    probes: std::sync::Mutex<Vec<Arc<GeneratorProbe>>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

fn pipeline_for(scenario: Scenario, shared: &Shared, rng: &mut fastrand::Rng) -> Pipeline {
    use Scenario::*;
    let k = rng.usize(1..TOKENS);
    let mut generator = ScriptedGenerator::counting(TOKENS);
    generator = match scenario {
        SlowStream => generator.with_delay(Duration::from_millis(2)),
        FlakyModel => generator.fail_first(1, Error::generation("throttled", true)),
        DeadModel => generator.fail_first(usize::MAX, Error::generation("unavailable", true)),
        MidStreamFailure => generator.fail_at(k, Error::generation("model stream error", true)),
        Stalled => generator.stall_at(k),
        CallerDrops => generator.with_delay(Duration::from_millis(1)),
        _ => generator,
    };
    shared.probes.lock().unwrap().push(generator.probe());
    let slow_history = Delayed::new(Arc::clone(&shared.history), Duration::from_millis(1));
    let history = match scenario {
        FlakyAppend => {
            FailingHistory::new(slow_history).fail_appends(1, Error::history("throttled", true))
        }
        LostAppend => FailingHistory::new(slow_history)
            .fail_appends(usize::MAX, Error::history("throttled", true)),
        _ => FailingHistory::new(slow_history),
    };
    let builder = Pipeline::builder()
        .with_generator(generator)
        .with_template(PlainTemplate::default())
        .with_history(history)
        .with_dead_letters(Arc::clone(&shared.letters))
        .with_retry(
            RetryPolicy::attempts(3)
                .with_backoff(Duration::from_millis(1), Duration::from_millis(4)),
        )
        .with_save_retry(
            RetryPolicy::attempts(3)
                .with_backoff(Duration::from_millis(1), Duration::from_millis(4)),
        )
        .with_timeouts(shared.config.timeouts);
    let builder = match scenario {
        RetrievalError => builder.with_retriever(rag_core::testing::FailingRetriever::new(
            Error::retrieval("payload too large", false),
        )),
        // Far past the limit: under load a late poll could otherwise see both done at once.
        RetrievalTimeout => builder.with_retriever(Delayed::new(
            shared.retriever.clone(),
            Duration::from_secs(30),
        )),
        _ => builder.with_retriever(shared.retriever.clone()),
    };
    builder.build().expect("pipeline")
}

async fn run_ask(pipeline: &Pipeline, ask: Ask, drop_after: Option<usize>) -> Outcome {
    let mut events = pipeline.ask(ask);
    let mut terminals = 0;
    let mut tokens = 0;
    let mut outcome = None;
    while let Some(event) = events.next().await {
        match event {
            Event::Token(_) => {
                tokens += 1;
                if drop_after == Some(tokens) {
                    drop(events);
                    return Outcome::Cancelled;
                }
            }
            Event::Done(summary) => {
                terminals += 1;
                assert_eq!(
                    summary.answer.split_whitespace().count(),
                    TOKENS,
                    "whole answer"
                );
                outcome = Some(Outcome::Done {
                    turn_id: summary.turn_id,
                    saved: summary.saved,
                });
            }
            Event::Error(_) => {
                terminals += 1;
                outcome = Some(Outcome::Failed);
            }
            _ => assert_eq!(terminals, 0, "nothing after the terminal event"),
        }
    }
    assert_eq!(terminals, 1, "exactly one terminal event");
    outcome.expect("a terminal event")
}

async fn soak(shared: Arc<Shared>) -> Vec<Vec<(Scenario, String, Outcome)>> {
    let tasks: Vec<_> = (0..shared.config.sessions)
        .map(|s| {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(SEED ^ s as u64);
                let session = session_id(s);
                let mut results = Vec::with_capacity(shared.config.asks_per_session);
                for q in 0..shared.config.asks_per_session {
                    let scenario = Scenario::pick(&mut rng);
                    let pipeline = pipeline_for(scenario, &shared, &mut rng);
                    let drop_after =
                        (scenario == Scenario::CallerDrops).then(|| rng.usize(1..TOKENS));
                    let question = format!("session {s} question {q} ({scenario:?})");
                    let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
                    let outcome =
                        run_ask(&pipeline, Ask::new(session.clone(), &question), drop_after).await;
                    shared.in_flight.fetch_sub(1, Ordering::SeqCst);
                    pipeline.flush().await;
                    assert_eq!(pipeline.background_tasks(), 0);
                    results.push((scenario, question, outcome));
                }
                results
            })
        })
        .collect();
    let mut all = Vec::with_capacity(shared.config.sessions);
    for task in tasks {
        all.push(task.await.expect("session task"));
    }
    all
}

/// Runs the soak with the history store `make_history` builds (on the soak's runtime), checks
/// every invariant and prints the counts.
pub fn run<F, Fut>(config: SoakConfig, make_history: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Arc<dyn HistoryStore>>,
{
    let label = config.label;
    let sessions = config.sessions;
    let asks = config.asks();
    let min_in_flight = config.min_in_flight;
    let max_heap_growth = config.max_heap_growth;
    let baseline = ALLOCATOR.allocated();
    let started = Instant::now();
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let history = runtime.block_on(make_history());
        let shared = Arc::new(Shared {
            config,
            history,
            letters: Arc::new(InMemoryDeadLetters::new()),
            retriever: StaticRetriever::numbered(5),
            probes: std::sync::Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let results = runtime.block_on(soak(Arc::clone(&shared)));
        // A task that just finished may still be counted until its worker releases it.
        let alive = runtime.block_on(async {
            for _ in 0..100 {
                if tokio::runtime::Handle::current()
                    .metrics()
                    .num_alive_tasks()
                    == 0
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
        });
        let peak = ALLOCATOR.allocated();

        let mut by_scenario: BTreeMap<Scenario, [usize; 3]> = BTreeMap::new();
        let (mut done, mut done_saved, mut failed, mut cancelled) = (0, 0, 0, 0);
        let mut failed_questions = HashSet::new();
        for (s, session_results) in results.iter().enumerate() {
            let session = session_id(s);
            let saved = runtime
                .block_on(shared.history.load(&session, 1_000))
                .unwrap();
            let expected: Vec<(TurnId, &str)> = session_results
                .iter()
                .filter_map(|(_, q, o)| match o {
                    Outcome::Done {
                        turn_id,
                        saved: true,
                    } => Some((*turn_id, q.as_str())),
                    _ => None,
                })
                .collect();
            let got: Vec<(TurnId, &str)> =
                saved.iter().map(|t| (t.id, t.question.as_str())).collect();
            assert_eq!(
                got, expected,
                "session {s}: exactly the saved turns, once each, in ask order"
            );
            for (scenario, question, outcome) in session_results {
                let counts = by_scenario.entry(*scenario).or_default();
                match outcome {
                    Outcome::Done { saved, .. } => {
                        done += 1;
                        counts[0] += 1;
                        if *saved {
                            done_saved += 1;
                        }
                    }
                    Outcome::Failed => {
                        failed += 1;
                        counts[1] += 1;
                        failed_questions.insert(question.clone());
                    }
                    Outcome::Cancelled => {
                        cancelled += 1;
                        counts[2] += 1;
                    }
                }
            }
        }
        let total_saved: usize = (0..sessions)
            .map(|s| {
                runtime
                    .block_on(shared.history.load(&session_id(s), 1_000))
                    .unwrap()
                    .len()
            })
            .sum();
        let letters = shared.letters.letters();
        let mut ask_letters = HashSet::new();
        let mut unsaved_letters = 0;
        for letter in &letters {
            match letter {
                DeadLetter::AskFailed { question, .. } => {
                    assert!(
                        ask_letters.insert(question.clone()),
                        "one letter per failed ask"
                    );
                }
                DeadLetter::TurnNotSaved { .. } => unsaved_letters += 1,
                other => panic!("unexpected letter {other:?}"),
            }
        }
        let probes = shared.probes.lock().unwrap();
        let open_streams: usize = probes.iter().map(|p| p.streams_open()).sum();
        let cancelled_streams: usize = probes.iter().map(|p| p.streams_dropped()).sum();

        println!(
            "soak ({label}): {asks} asks over {sessions} sessions in {:.1?}",
            started.elapsed()
        );
        println!(
            "  max in flight at once:        {}",
            shared.max_in_flight.load(Ordering::SeqCst)
        );
        println!(
            "  ended Done:                   {done} ({done_saved} saved, {} not saved)",
            done - done_saved
        );
        println!("  ended Error:                  {failed}");
        println!("  cancelled by the caller:      {cancelled}");
        println!("  turns in history:             {total_saved}");
        println!("  dead letters, failed asks:    {}", ask_letters.len());
        println!("  dead letters, unsaved turns:  {unsaved_letters}");
        println!("  model streams left open:      {open_streams} (dropped by cancel/timeout: {cancelled_streams})");
        println!("  tokio tasks alive at the end: {alive}");
        for (scenario, [d, f, c]) in &by_scenario {
            println!("    {scenario:?}: done {d}, error {f}, cancelled {c}");
        }

        assert_eq!(done + failed + cancelled, asks);
        assert!(
            shared.max_in_flight.load(Ordering::SeqCst) >= min_in_flight,
            "at least {min_in_flight} asks in flight at once"
        );
        assert_eq!(
            total_saved, done_saved,
            "turns saved == asks that ended Done and saved"
        );
        assert_eq!(
            unsaved_letters,
            done - done_saved,
            "every unsaved turn reached the dead-letter sink"
        );
        assert_eq!(
            ask_letters, failed_questions,
            "every failed ask reached the dead-letter sink"
        );
        assert_eq!(open_streams, 0, "no model stream left running");
        assert_eq!(alive, 0, "no task left running");
        for scenario in by_scenario.keys() {
            let [d, f, c] = by_scenario[scenario];
            match scenario {
                Scenario::RetrievalError
                | Scenario::RetrievalTimeout
                | Scenario::DeadModel
                | Scenario::MidStreamFailure
                | Scenario::Stalled => assert_eq!((d, c), (0, 0), "{scenario:?} always fails"),
                Scenario::CallerDrops => assert_eq!((d, f), (0, 0), "{scenario:?} always cancels"),
                _ => assert_eq!((f, c), (0, 0), "{scenario:?} always answers"),
            }
        }
        println!(
            "  heap: {:.1} MiB at start, {:.1} MiB at the end of the run",
            baseline as f64 / 1048576.0,
            peak as f64 / 1048576.0
        );
        drop(probes);
        drop(results);
        drop(shared);
        drop(runtime);
    }
    let end = ALLOCATOR.allocated();
    println!(
        "  heap after dropping everything: {:.2} MiB (started at {:.2} MiB)",
        end as f64 / 1048576.0,
        baseline as f64 / 1048576.0
    );
    assert!(
        end < baseline + max_heap_growth,
        "memory returns close to where it started: {baseline} -> {end} bytes"
    );
}
