//! The flow of one ask (DESIGN section 1), as a lazy stream of events.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};

use futures::{Stream, StreamExt};

use super::detach::FinishOnDrop;
use super::event::{DeadLetter, Dropped, Event, Failure, Summary, Timings, Warning};
use super::{Ask, HistoryFailurePolicy, Inner};
use crate::error::{Error, Result, Stage};
use crate::generator::ChunkStream;
use crate::prompt::{Prompt, PromptInput, TokenBudget};
use crate::types::{
    Chunk, Citation, GenerationParams, Passage, RetrievalRequest, Retrieved, SessionId, StopReason,
    Turn, TurnId, Usage,
};

pub(super) fn run(inner: Arc<Inner>, ask: Ask) -> impl Stream<Item = Event> + Send {
    async_stream::stream! {
        let started = Instant::now();
        // Taken before any await, so turns are ordered as they were asked even when answers
        // finish out of order.
        let turn_id = TurnId::new();
        let created_at = SystemTime::now();
        let mut timings = Timings::default();

        let (params, top_k) = match inner.check(&ask) {
            Ok(checked) => checked,
            Err(error) => {
                yield inner.fail(&ask, Stage::Input, error, String::new());
                return;
            }
        };

        // History and retrieval at the same time: the ask waits for the slower one only.
        let (history, retrieved) = futures::join!(
            timed(inner.load_history(&ask.session)),
            timed(inner.retrieve(&ask, top_k)),
        );
        timings.history = history.1;
        timings.retrieval = retrieved.1;
        let Retrieved { passages, warnings } = match retrieved.0 {
            Ok(retrieved) => retrieved,
            Err(error) => {
                yield inner.fail(&ask, Stage::Retrieval, error, String::new());
                return;
            }
        };
        let history = match history.0 {
            Ok(turns) => turns,
            Err(error) => match inner.settings.on_history_error {
                HistoryFailurePolicy::Fail => {
                    yield inner.fail(&ask, Stage::History, error, String::new());
                    return;
                }
                _ => {
                    yield Event::Warning(Warning::HistoryUnavailable(error));
                    Vec::new()
                }
            },
        };
        for warning in warnings {
            yield Event::Warning(warning);
        }

        let prompt_started = Instant::now();
        let budget = TokenBudget::new(inner.settings.context_window, params.max_tokens as usize, inner.settings.reserve);
        let input = PromptInput { question: &ask.question, passages: &passages, history: &history };
        let rendered = match inner.template.render(&input, &budget) {
            Ok(rendered) => rendered,
            Err(error) => {
                yield inner.fail(&ask, Stage::Prompt, error, String::new());
                return;
            }
        };
        timings.prompt = prompt_started.elapsed();
        let dropped = Dropped {
            passages: rendered.passages_dropped.iter().map(|&i| passages[i].id.clone()).collect(),
            turns: rendered.turns_dropped,
        };
        yield Event::Sources(citations(&passages, &rendered.passages_kept));

        let generation_started = Instant::now();
        let (mut chunks, prelude, attempts) = match inner.first_chunk(&rendered.prompt, &params).await {
            Ok(started) => started,
            Err(error) => {
                yield inner.fail(&ask, Stage::Generation, error, String::new());
                return;
            }
        };
        timings.first_token = started.elapsed();

        let mut answer = String::new();
        let mut usage: Option<Usage> = None;
        let mut stop_reason: Option<StopReason> = None;
        let mut idle = IdleTimer::new(inner.settings.timeouts.idle);
        let mut prelude = prelude.into_iter();
        loop {
            let next = match prelude.next() {
                Some(chunk) => chunk,
                None => match idle.next(&mut chunks).await {
                Ok(Some(Ok(chunk))) => chunk,
                Ok(None) => break,
                Ok(Some(Err(error))) | Err(error) => {
                    drop(chunks);
                    yield inner.fail(&ask, Stage::Generation, error, answer);
                    return;
                }
            }};
            match next {
                Chunk::Text(text) => {
                    if !text.is_empty() {
                        answer.push_str(&text);
                        yield Event::Token(text);
                    }
                }
                Chunk::Usage(update) => usage = Some(merge_usage(usage, update)),
                Chunk::Stop(reason) => stop_reason = Some(reason),
            }
        }
        drop(chunks);
        timings.generation = generation_started.elapsed();
        if let Some(usage) = usage {
            yield Event::Usage(usage);
        }

        let mut saved = false;
        if let Some(store) = inner.history.clone() {
            let save_started = Instant::now();
            let turn = Turn { id: turn_id, question: ask.question.clone(), answer: answer.clone(), created_at };
            // The answer is complete, so the turn is saved even if the caller stops listening
            // now: dropped midway, the save finishes in a tracked task.
            let save = save_turn(Arc::clone(&inner), store, ask.session.clone(), turn);
            match FinishOnDrop::new(save, inner.tasks.clone()).await {
                Ok(()) => saved = true,
                Err(error) => yield Event::Warning(Warning::TurnNotSaved(error)),
            }
            timings.save = save_started.elapsed();
        }
        timings.total = started.elapsed();
        yield Event::Done(Box::new(Summary { turn_id, answer, stop_reason, usage, timings, dropped, attempts, saved }));
    }
}

impl Inner {
    /// Everything checked before any backend is called.
    fn check(&self, ask: &Ask) -> Result<(GenerationParams, usize)> {
        if ask.question.trim().is_empty() {
            return Err(Error::invalid_input("question", "must not be empty"));
        }
        if ask.question.len() > self.settings.max_question_bytes {
            return Err(Error::invalid_input(
                "question",
                format!(
                    "is {} bytes, the limit is {}",
                    ask.question.len(),
                    self.settings.max_question_bytes
                ),
            ));
        }
        let top_k = ask.top_k.unwrap_or(self.settings.top_k);
        if !(1..=super::PipelineBuilder::MAX_TOP_K).contains(&top_k) {
            return Err(Error::invalid_input(
                "top_k",
                format!(
                    "{top_k} is outside 1..={}",
                    super::PipelineBuilder::MAX_TOP_K
                ),
            ));
        }
        let params = ask
            .params
            .clone()
            .unwrap_or_else(|| self.settings.params.clone());
        params.validate()?;
        if let Some(max) = self.settings.max_output_tokens {
            if params.max_tokens as usize > max {
                return Err(Error::invalid_input(
                    "params.max_tokens",
                    format!("{} exceeds the model's limit of {max}", params.max_tokens),
                ));
            }
        }
        let budget = TokenBudget::new(
            self.settings.context_window,
            params.max_tokens as usize,
            self.settings.reserve,
        );
        if budget.prompt_tokens() == 0 {
            return Err(Error::invalid_input(
                "params.max_tokens",
                format!(
                    "{} leaves no room for a prompt in a {}-token context window",
                    params.max_tokens, self.settings.context_window
                ),
            ));
        }
        Ok((params, top_k))
    }

    async fn load_history(&self, session: &SessionId) -> Result<Vec<crate::types::Turn>> {
        match &self.history {
            Some(store) if self.settings.history_turns > 0 => {
                within(
                    self.settings.timeouts.history,
                    Stage::History,
                    store.load(session, self.settings.history_turns),
                )
                .await
            }
            _ => Ok(Vec::new()),
        }
    }

    async fn retrieve(&self, ask: &Ask, top_k: usize) -> Result<Retrieved> {
        let Some(retriever) = &self.retriever else {
            return Ok(Retrieved::default());
        };
        let req = RetrievalRequest {
            query: ask.question.clone(),
            top_k,
            filter: ask.filter.clone(),
            user: ask.user.clone(),
        };
        let mut retrieved = within(
            self.settings.timeouts.retrieval,
            Stage::Retrieval,
            retriever.retrieve_with_warnings(&req),
        )
        .await?;
        retrieved.passages.truncate(top_k);
        Ok(retrieved)
    }

    /// Starts the model call and waits for its first text, retrying failures that are
    /// retryable. Returns the stream, the chunks read from it up to and including the first
    /// text, and the attempts made.
    async fn first_chunk(
        &self,
        prompt: &Prompt,
        params: &GenerationParams,
    ) -> Result<(ChunkStream, Vec<Chunk>, u32)> {
        let mut attempt = 1;
        loop {
            let started = within(
                self.settings.timeouts.first_token,
                Stage::Generation,
                async {
                    let mut chunks = self.generator.generate(prompt, params).await?;
                    // Usage or a stop reason may come before any text; a failure then is still a
                    // failure before the first token, so keep reading up to the first text.
                    let mut prelude = Vec::new();
                    while let Some(chunk) = chunks.next().await {
                        let is_text = matches!(chunk, Ok(Chunk::Text(_)));
                        prelude.push(chunk?);
                        if is_text {
                            break;
                        }
                    }
                    Ok((chunks, prelude))
                },
            )
            .await;
            match started {
                Ok((chunks, prelude)) => return Ok((chunks, prelude, attempt)),
                Err(error)
                    if error.is_retryable() && attempt < self.settings.retry.max_attempts =>
                {
                    tracing::debug!(attempt, %error, "model call failed before its first token; retrying");
                    tokio::time::sleep(self.settings.retry.backoff(attempt - 1)).await;
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// The terminal error event; the dead-letter sink gets the ask in the background.
    fn fail(&self, ask: &Ask, stage: Stage, error: Error, partial_answer: String) -> Event {
        let failure = Failure {
            error,
            stage,
            partial_answer,
        };
        let letter = DeadLetter::AskFailed {
            session: ask.session.clone(),
            question: ask.question.clone(),
            failure: failure.clone(),
        };
        let sink = Arc::clone(&self.dead_letters);
        self.tasks.spawn(async move { sink.send(letter).await });
        Event::Error(Box::new(failure))
    }
}

/// Appends the turn, retrying per the save policy; what still fails goes to the dead-letter
/// sink with the turn, so it can be replayed.
async fn save_turn(
    inner: Arc<Inner>,
    store: Arc<dyn crate::HistoryStore>,
    session: SessionId,
    turn: Turn,
) -> Result<()> {
    let mut attempt = 1;
    loop {
        match within(
            inner.settings.timeouts.save,
            Stage::Save,
            store.append(&session, &turn),
        )
        .await
        {
            Ok(()) => return Ok(()),
            // Appends are idempotent by turn id, so retrying after an unclear failure (a
            // timeout) cannot duplicate the turn.
            Err(error)
                if error.is_retryable() && attempt < inner.settings.save_retry.max_attempts =>
            {
                tokio::time::sleep(inner.settings.save_retry.backoff(attempt - 1)).await;
                attempt += 1;
            }
            Err(error) => {
                inner
                    .dead_letters
                    .send(DeadLetter::TurnNotSaved {
                        session,
                        turn,
                        error: error.clone(),
                    })
                    .await;
                return Err(error);
            }
        }
    }
}

/// `fut`, failing with [`Error::Timeout`] for `stage` after `limit`.
async fn within<T>(
    limit: Option<Duration>,
    stage: Stage,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    match limit {
        Some(after) => tokio::time::timeout(after, fut)
            .await
            .unwrap_or(Err(Error::Timeout { stage, after })),
        None => fut.await,
    }
}

/// The idle limit between two chunks of a model stream. The timer is armed only when the
/// stream is not ready at once, so a fast stream pays no timer work per chunk.
struct IdleTimer {
    limit: Option<Duration>,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl IdleTimer {
    fn new(limit: Option<Duration>) -> Self {
        IdleTimer {
            limit,
            sleep: Box::pin(tokio::time::sleep(limit.unwrap_or_default())),
        }
    }

    /// The stream's next item, or [`Error::Timeout`] after `limit` of silence.
    async fn next(&mut self, chunks: &mut ChunkStream) -> Result<Option<Result<Chunk>>> {
        let mut armed = false;
        futures::future::poll_fn(|cx| {
            if let Poll::Ready(item) = chunks.poll_next_unpin(cx) {
                return Poll::Ready(Ok(item));
            }
            let Some(after) = self.limit else {
                return Poll::Pending;
            };
            if !armed {
                self.sleep
                    .as_mut()
                    .reset(tokio::time::Instant::now() + after);
                armed = true;
            }
            self.sleep.as_mut().poll(cx).map(|()| {
                Err(Error::Timeout {
                    stage: Stage::Generation,
                    after,
                })
            })
        })
        .await
    }
}

/// `fut`'s output and how long it took.
async fn timed<T>(fut: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let out = fut.await;
    (out, started.elapsed())
}

fn citations(passages: &[Passage], kept: &[usize]) -> Vec<Citation> {
    kept.iter()
        .enumerate()
        .map(|(n, &i)| Citation::new(n + 1, &passages[i]))
        .collect()
}

/// Usage chunks are running totals per field; a zero field is one the chunk did not report.
fn merge_usage(current: Option<Usage>, update: Usage) -> Usage {
    let current = current.unwrap_or_default();
    Usage {
        input_tokens: if update.input_tokens > 0 {
            update.input_tokens
        } else {
            current.input_tokens
        },
        output_tokens: if update.output_tokens > 0 {
            update.output_tokens
        } else {
            current.output_tokens
        },
    }
}
