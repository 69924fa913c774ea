//! The streaming [`Pipeline`]: history and retrieval at once, a prompt in budget, the answer
//! streamed as it arrives, and the turn saved once the answer is complete.

mod ask;
mod builder;
mod dead_letter;
mod detach;
mod event;
mod flow;
mod retry;
mod stream;
mod trace;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use ask::Ask;
pub use builder::{HistoryFailurePolicy, PipelineBuilder, Timeouts};
pub use dead_letter::{
    DeadLetterLimits, DeadLetterSink, DeadLetterStats, InMemoryDeadLetters, TracingDeadLetters,
};
pub use event::{DeadLetter, Dropped, Event, Failure, Summary, Timings, Warning};
pub use retry::RetryPolicy;
pub use stream::AnswerStream;

use crate::generator::{Generator, PromptCounter};
use crate::history::HistoryStore;
use crate::prompt::PromptTemplate;
use crate::retriever::Retriever;
use crate::screen::{QueryRewriter, QuestionScreen};

/// Answers questions for conversations: the whole flow of one ask, as a stream of [`Event`]s.
///
/// Cheap to clone (one `Arc`); share one per service. It needs a Tokio runtime with the time
/// driver, since stages have time limits and saves run as background tasks.
///
/// ```
/// # #[cfg(feature = "test-utils")] {
/// # use rag_core::testing::{ScriptedGenerator, StaticRetriever, PlainTemplate};
/// use futures::StreamExt;
/// use rag_core::{Ask, Event, Passage, Pipeline, SessionId};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let pipeline = Pipeline::builder()
///     .with_generator(ScriptedGenerator::new(["Lambda ", "runs ", "code [1]."]))
///     .with_template(PlainTemplate::default())
///     .with_retriever(StaticRetriever::new(vec![Passage::new("p1", "Lambda runs code.")]))
///     .build()?;
///
/// let mut events = pipeline.ask(Ask::new(SessionId::new("s-1")?, "What is Lambda?"));
/// while let Some(event) = events.next().await {
///     match event {
///         Event::Sources(sources) => assert_eq!(sources[0].passage_id, "p1"),
///         Event::Token(token) => print!("{token}"),
///         Event::Done(summary) => assert_eq!(summary.answer, "Lambda runs code [1]."),
///         Event::Error(failure) => return Err(failure.error),
///         _ => {}
///     }
/// }
/// # Ok::<(), rag_core::Error>(())
/// # }).unwrap();
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Pipeline {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    generator: Arc<dyn Generator>,
    template: Arc<dyn PromptTemplate>,
    retriever: Option<Arc<dyn Retriever>>,
    history: Option<Arc<dyn HistoryStore>>,
    dead_letters: dead_letter::DeadLetterQueue,
    prompt_counter: Option<Arc<dyn PromptCounter>>,
    screen: Option<Arc<dyn QuestionScreen>>,
    rewriter: Option<Arc<dyn QueryRewriter>>,
    settings: builder::Settings,
    tasks: tokio_util::task::TaskTracker,
    in_flight: InFlight,
}

/// The asks being answered, and whether the pipeline takes new ones.
#[derive(Debug, Default)]
struct InFlight {
    count: AtomicUsize,
    closing: AtomicBool,
    idle: tokio::sync::Notify,
}

/// Counts one ask in flight until dropped.
#[derive(Debug)]
struct AskGuard(Arc<Inner>);

impl AskGuard {
    /// Counts an ask in, unless the pipeline is shutting down.
    fn enter(inner: &Arc<Inner>) -> Option<AskGuard> {
        // Counted in before the check: a shutdown that sets `closing` and then reads the count
        // either sees this ask, or this ask sees `closing` (both sequentially consistent).
        inner.in_flight.count.fetch_add(1, Ordering::SeqCst);
        let guard = AskGuard(Arc::clone(inner));
        if inner.in_flight.closing.load(Ordering::SeqCst) {
            return None; // the guard counts the ask out again, and wakes the shutdown
        }
        Some(guard)
    }
}

impl Drop for AskGuard {
    fn drop(&mut self) {
        let in_flight = &self.0.in_flight;
        if in_flight.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            in_flight.idle.notify_waiters();
        }
    }
}

/// What [`Pipeline::shutdown`] finished before its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct ShutdownReport {
    /// Whether every ask in flight ended and every background task (saves, dead letters)
    /// finished before the deadline.
    pub completed: bool,
    /// Asks still answering at the deadline.
    pub asks_left: usize,
    /// Background tasks still running at the deadline.
    pub tasks_left: usize,
}

impl Pipeline {
    /// A builder; a generator and a template are required.
    pub fn builder() -> PipelineBuilder {
        PipelineBuilder::default()
    }

    /// Answers one question. The returned stream is lazy: the ask starts when it is first
    /// polled, and dropping it cancels the ask.
    pub fn ask(&self, ask: Ask) -> AnswerStream {
        let span = trace::ask(&ask);
        let complete = Arc::default();
        let flow = flow::run(Arc::clone(&self.inner), ask, Arc::clone(&complete));
        AnswerStream::new(Box::pin(flow), complete, span)
    }

    /// Waits until the background work started so far (turn saves whose stream was dropped
    /// after the answer completed, dead-letter deliveries) has finished. Call it before a
    /// service exits.
    pub async fn flush(&self) {
        let tasks = &self.inner.tasks;
        tasks.close();
        tasks.wait().await;
        tasks.reopen();
    }

    /// How many background tasks (turn saves, dead-letter deliveries) are running.
    pub fn background_tasks(&self) -> usize {
        self.inner.tasks.len()
    }

    /// How many asks are being answered (streams polled and not yet ended or dropped).
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.count.load(Ordering::SeqCst)
    }

    /// What became of the dead letters so far, for a service's metrics.
    pub fn dead_letter_stats(&self) -> DeadLetterStats {
        self.inner.dead_letters.stats()
    }

    /// Stops taking new asks (they fail at once with [`crate::Error::ShuttingDown`], which is
    /// retryable: another instance may take them), then waits up to `deadline` for the asks in
    /// flight to end and the background work to finish. Call it when a service stops
    /// gracefully, before its runtime shuts down.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let inner = &self.inner;
        inner.in_flight.closing.store(true, Ordering::SeqCst);
        let wait = async {
            loop {
                let idle = inner.in_flight.idle.notified();
                if inner.in_flight.count.load(Ordering::SeqCst) == 0 {
                    break;
                }
                idle.await;
            }
            self.flush().await;
        };
        let completed = tokio::time::timeout(deadline, wait).await.is_ok();
        ShutdownReport {
            completed,
            asks_left: self.in_flight(),
            tasks_left: self.background_tasks(),
        }
    }
}
