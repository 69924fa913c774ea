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

use std::sync::Arc;

pub use ask::Ask;
pub use builder::{HistoryFailurePolicy, PipelineBuilder, Timeouts};
pub use dead_letter::{DeadLetterSink, InMemoryDeadLetters, TracingDeadLetters};
pub use event::{DeadLetter, Dropped, Event, Failure, Summary, Timings, Warning};
pub use retry::RetryPolicy;
pub use stream::AnswerStream;

use crate::generator::Generator;
use crate::history::HistoryStore;
use crate::prompt::PromptTemplate;
use crate::retriever::Retriever;

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
    dead_letters: Arc<dyn DeadLetterSink>,
    settings: builder::Settings,
    tasks: tokio_util::task::TaskTracker,
}

impl Pipeline {
    /// A builder; a generator and a template are required.
    pub fn builder() -> PipelineBuilder {
        PipelineBuilder::default()
    }

    /// Answers one question. The returned stream is lazy: the ask starts when it is first
    /// polled, and dropping it cancels the ask.
    pub fn ask(&self, ask: Ask) -> AnswerStream {
        AnswerStream::new(Box::pin(flow::run(Arc::clone(&self.inner), ask)))
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
}
