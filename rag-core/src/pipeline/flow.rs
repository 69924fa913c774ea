//! The flow of one ask (DESIGN section 1), as a lazy stream of events.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};

use futures::{FutureExt, Stream, StreamExt};
use tracing::Instrument;

use super::detach::FinishOnDrop;
use super::event::{DeadLetter, Dropped, Event, Failure, Summary, Timings, Warning};
use super::trace;
use super::{Ask, AskGuard, HistoryFailurePolicy, Inner};
use crate::error::{Error, Result, Stage};
use crate::generator::ChunkStream;
use crate::prompt::{Prompt, PromptInput, RenderedPrompt, TokenBudget};
use crate::screen::Screening;
use crate::types::{
    Chunk, Citation, GenerationParams, Passage, RetrievalRequest, Retrieved, SessionId, StopReason,
    Turn, TurnId, Usage,
};

/// How far a prompt the model refused as too long is shrunk when the model did not say by how
/// much: to 85% of its budget.
const SHRINK_PER_MILLE: usize = 850;

pub(super) fn run(
    inner: Arc<Inner>,
    ask: Ask,
    complete: Arc<std::sync::atomic::AtomicBool>,
) -> impl Stream<Item = Event> + Send {
    async_stream::stream! {
        let started = Instant::now();
        // Taken before any await, so turns are ordered as they were asked even when answers
        // finish out of order.
        let mut turn_id = TurnId::new();
        let created_at = SystemTime::now();
        let mut timings = Timings::default();
        let Some(_guard) = AskGuard::enter(&inner) else {
            yield inner.fail(&ask, Stage::Input, Error::ShuttingDown, String::new());
            return;
        };

        let (params, top_k) = match inner.check(&ask) {
            Ok(checked) => checked,
            Err(error) => {
                yield inner.fail(&ask, Stage::Input, error, String::new());
                return;
            }
        };

        // A screened-out question costs no retrieval and no model call.
        let blocked = match &inner.screen {
            None => None,
            Some(screen) => {
                let screened = timed(trace::screen(within(
                    inner.settings.timeouts.screen,
                    Stage::Screen,
                    caught(Stage::Screen, screen.screen(&ask.question)),
                )))
                .await;
                timings.screen = screened.1;
                match screened.0 {
                    Ok(Screening::Allowed) => None,
                    Ok(Screening::Blocked(intervention)) => Some(intervention),
                    Err(error) => {
                        yield inner.fail(&ask, Stage::Screen, error, String::new());
                        return;
                    }
                }
            }
        };

        let mut rewrite_warning = None;
        let mut rewritten_query = None;
        let (history, retrieved) = if blocked.is_some() {
            // Loaded still: it says whose conversation this is, and orders the turn.
            let history = timed(trace::history(inner.history.is_some(), inner.load_history(&ask.session))).await;
            (history, (Ok(Retrieved::default()), Duration::ZERO))
        } else if let Some(rewriter) = &inner.rewriter {
            // A follow-up is rewritten from the history, so retrieval waits for it.
            let history = timed(trace::history(inner.history.is_some(), inner.load_history(&ask.session))).await;
            let mut query = None;
            if let Ok(turns) = &history.0 {
                let keep = turns.len().min(inner.settings.history_turns);
                let turns = &turns[turns.len() - keep..];
                if !turns.is_empty() {
                    let rewritten = timed(trace::rewrite(inner.rewrite(rewriter.as_ref(), &ask.question, turns))).await;
                    timings.rewrite = rewritten.1;
                    match rewritten.0 {
                        Ok(rewritten) => query = Some(rewritten),
                        Err(error) => rewrite_warning = Some(Warning::QueryRewriteFailed(error)),
                    }
                }
            }
            // Another owner's conversation fails below: nothing is retrieved for it.
            let retrieved = if matches!(history.0, Err(Error::Forbidden { .. })) {
                (Ok(Retrieved::default()), Duration::ZERO)
            } else {
                timed(trace::retrieval(inner.retriever.is_some(), top_k, inner.retrieve(&ask, query.as_deref(), top_k))).await
            };
            rewritten_query = query;
            (history, retrieved)
        } else {
            // History and retrieval at the same time: the ask waits for the slower one only.
            futures::join!(
                timed(trace::history(inner.history.is_some(), inner.load_history(&ask.session))),
                timed(trace::retrieval(inner.retriever.is_some(), top_k, inner.retrieve(&ask, None, top_k))),
            )
        };
        timings.history = history.1;
        timings.retrieval = retrieved.1;
        let Retrieved { passages, warnings } = match retrieved.0 {
            Ok(retrieved) => retrieved,
            Err(error) => {
                yield inner.fail(&ask, Stage::Retrieval, error, String::new());
                return;
            }
        };
        let mut history = match history.0 {
            Ok(turns) => turns,
            // Another owner's conversation: never answered, whatever the policy (its turn
            // could not be saved either).
            Err(error @ Error::Forbidden { .. }) => {
                yield inner.fail(&ask, Stage::History, error, String::new());
                return;
            }
            Err(error) => match inner.settings.on_history_error {
                // Without history in the prompt, the read only orders the turn: it warns.
                HistoryFailurePolicy::Fail if inner.settings.history_turns > 0 => {
                    yield inner.fail(&ask, Stage::History, error, String::new());
                    return;
                }
                _ => {
                    yield Event::Warning(Warning::HistoryUnavailable(error));
                    Vec::new()
                }
            },
        };
        // The newest stored turn may come from a host whose clock runs ahead: this turn is
        // asked after it, so it sorts after it.
        if let Some(newest) = history.iter().map(|t| t.id).max() {
            turn_id = turn_id.after(newest);
        }
        let keep_turns = inner.settings.history_turns;
        if history.len() > keep_turns {
            history.drain(..history.len() - keep_turns);
        }
        if let Some(warning) = rewrite_warning {
            yield Event::Warning(warning);
        }
        for warning in warnings {
            yield Event::Warning(warning);
        }

        if let Some(intervention) = blocked {
            // The screen's message is the answer; the turn is saved with it. The save is armed
            // before anything is yielded, so a caller who leaves at the message still gets it.
            let answer = intervention.message.clone().unwrap_or_default();
            let turn = Turn { id: turn_id, question: ask.question.clone(), answer: answer.clone(), created_at };
            let save_started = Instant::now();
            let save = arm_save(&inner, &ask.session, turn);
            complete.store(true, std::sync::atomic::Ordering::Release);
            yield Event::Sources(Vec::new());
            if !answer.is_empty() {
                yield Event::Token(answer.clone());
            }
            let (saved, not_saved) = saved(save).await;
            if let Some(warning) = not_saved {
                yield Event::Warning(warning);
            }
            if inner.history.is_some() {
                timings.save = save_started.elapsed();
            }
            timings.total = started.elapsed();
            yield Event::Done(Box::new(Summary {
                turn_id,
                answer,
                stop_reason: Some(StopReason::GuardrailIntervened(Box::new(intervention))),
                usage: None,
                timings,
                dropped: Dropped::default(),
                attempts: 0,
                saved,
                prompt_tokens: 0,
                counted_prompt_tokens: None,
                rewritten_query: None,
            }));
            return;
        }

        let prompt_started = Instant::now();
        let input = PromptInput { question: &ask.question, passages: &passages, history: &history };
        let available = inner.budget(&params).prompt_tokens();
        let fitted = trace::prompt(inner.fit(&input, &params, available)).await;
        let (mut rendered, counted_prompt_tokens) = match fitted {
            Ok((rendered, counted, warning)) => {
                if let Some(warning) = warning {
                    yield Event::Warning(warning);
                }
                (rendered, counted)
            }
            Err(error) => {
                yield inner.fail(&ask, Stage::Prompt, error, String::new());
                return;
            }
        };
        timings.prompt = prompt_started.elapsed();
        yield Event::Sources(citations(&passages, &rendered.passages_kept));

        let generation_started = Instant::now();
        let generation = trace::generation(&*inner.generator, &rendered.prompt, &params);
        let mut started_call = inner
            .first_chunk(&rendered.prompt, &params)
            .instrument(generation.clone())
            .await;
        if let Err(Error::PromptTooLong { tokens, limit, .. }) = &started_call {
            // The model counts more than the template did: send a shorter prompt, once.
            let refusal = started_call.as_ref().err().cloned();
            match inner.shorter(&input, &rendered, available, *tokens, *limit) {
                Ok(Some(shorter)) => {
                    rendered = shorter;
                    if let Some(error) = refusal {
                        yield Event::Warning(Warning::PromptShortened {
                            error,
                            passages_kept: rendered.passages_kept.len(),
                            turns_kept: rendered.turns_kept,
                        });
                    }
                    started_call = inner
                        .first_chunk(&rendered.prompt, &params)
                        .instrument(generation.clone())
                        .await;
                }
                // Nothing left to drop: the question alone is too long for the model.
                Ok(None) => {}
                Err(error) => started_call = Err(error),
            }
        }
        let (mut chunks, prelude, attempts) = match started_call {
            Ok(started) => started,
            Err(error) => {
                trace::failed(&generation, &error);
                yield inner.fail(&ask, Stage::Generation, error, String::new());
                return;
            }
        };
        timings.first_token = started.elapsed();
        trace::first_chunk(&generation, generation_started.elapsed(), attempts);
        let dropped = Dropped {
            passages: passages
                .iter()
                .skip(rendered.passages_kept.len())
                .map(|p| p.id.clone())
                .collect(),
            turns: rendered.turns_dropped,
        };

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
                        trace::failed(&generation, &error);
                        yield inner.fail(&ask, Stage::Generation, error, answer);
                        return;
                    }
                },
            };
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
        trace::finished(generation, usage.as_ref(), stop_reason.as_ref());

        // The answer is complete: from here on the turn is saved (or dead-lettered) whatever
        // the caller does. The save is armed before anything else is yielded, so a caller who
        // leaves at the usage event still gets it finished in a tracked task.
        let save_started = Instant::now();
        // A guardrail's intervention is saved with the guardrail's message as the answer,
        // so the text it stopped never reaches a later prompt.
        let saved_answer = match &stop_reason {
            Some(StopReason::GuardrailIntervened(intervention)) => {
                intervention.message.clone().unwrap_or_default()
            }
            _ => answer.clone(),
        };
        let turn = Turn { id: turn_id, question: ask.question.clone(), answer: saved_answer, created_at };
        let save = arm_save(&inner, &ask.session, turn);
        // From here on, dropping the stream no longer cancels anything: the save finishes.
        complete.store(true, std::sync::atomic::Ordering::Release);
        if let Some(usage) = usage {
            yield Event::Usage(usage);
        }
        let armed = save.is_some();
        let (saved, not_saved) = saved(save).await;
        if let Some(warning) = not_saved {
            yield Event::Warning(warning);
        }
        if armed {
            timings.save = save_started.elapsed();
        }
        timings.total = started.elapsed();
        yield Event::Done(Box::new(Summary {
            turn_id,
            answer,
            stop_reason,
            usage,
            timings,
            dropped,
            attempts,
            saved,
            prompt_tokens: rendered.token_count,
            counted_prompt_tokens,
            rewritten_query,
        }));
    }
}

/// The prompt budget after a model refused a prompt of `estimate` tokens (by the template's
/// count) within `available` as too long: scaled by what the model reported it counted
/// against what it takes, or cut to [`SHRINK_PER_MILLE`] when it did not say.
fn shrunk_budget(
    available: usize,
    estimate: usize,
    tokens: Option<usize>,
    limit: Option<usize>,
) -> usize {
    // What the model reported it takes may be its whole window, the answer's room included;
    // the prompt may have no more than the budget.
    let limit = limit.map(|l| l.min(available));
    let shrunk = match (tokens, limit) {
        (Some(tokens), Some(limit)) if tokens > limit && tokens > 0 => {
            // The model's tokens per template token, applied to what the model takes; one
            // percent lower still, for the rounding of the ratio.
            let estimate = estimate.max(1) as u128;
            (limit as u128 * estimate / tokens as u128) as usize * 99 / 100
        }
        _ => available * SHRINK_PER_MILLE / 1_000,
    };
    shrunk.min(available * SHRINK_PER_MILLE / 1_000).max(1)
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
        // The user the retriever filters for and the owner the history is kept for are one.
        if let (Some(owner), Some(user)) = (
            ask.session.owner(),
            ask.user.as_ref().and_then(|u| u.user_id.as_deref()),
        ) {
            if owner.as_str() != user {
                return Err(Error::invalid_input(
                    "user.user_id",
                    "differs from the session's owner: the history and the documents must be those of one user",
                ));
            }
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
        if let Some(profile) = &self.settings.profile {
            profile.check_params("the model", &params)?;
        }
        if self.budget(&params).prompt_tokens() == 0 {
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

    fn budget(&self, params: &GenerationParams) -> TokenBudget {
        TokenBudget::new(
            self.settings.context_window,
            params.max_tokens as usize,
            self.settings.reserve(),
        )
    }

    /// Renders, catching a panic of the template.
    fn render(&self, input: &PromptInput<'_>, budget: &TokenBudget) -> Result<RenderedPrompt> {
        std::panic::catch_unwind(AssertUnwindSafe(|| self.template.render(input, budget)))
            .unwrap_or_else(|panic| Err(Error::panicked(Stage::Prompt, &*panic)))
    }

    /// A shorter prompt than `refused`, which the model refused as too long (having counted
    /// `tokens` where it takes `limit`, when it said): rendered in a budget shrunk by that
    /// ratio, or to 85%, and again from the new prompt's count until it holds fewer passages
    /// or turns (the refused prompt's count may be a length bound, far above the real one).
    /// `None` when no shorter prompt exists.
    fn shorter(
        &self,
        input: &PromptInput<'_>,
        refused: &RenderedPrompt,
        available: usize,
        tokens: Option<usize>,
        limit: Option<usize>,
    ) -> Result<Option<RenderedPrompt>> {
        let fewer = |p: &RenderedPrompt| {
            p.passages_kept.len() < refused.passages_kept.len() || p.turns_kept < refused.turns_kept
        };
        let (mut budget, mut estimate) = (available, refused.token_count);
        for _ in 0..4 {
            let target = shrunk_budget(budget, estimate, tokens, limit);
            if target >= budget {
                break;
            }
            let next = self.render(input, &TokenBudget::new(target, 0, 0))?;
            if fewer(&next) {
                return Ok(Some(next));
            }
            (budget, estimate) = (target, next.token_count);
        }
        Ok(None)
    }

    /// Renders the prompt within `available` tokens and, with a prompt counter, checks it with
    /// the model's own count: over the budget, it is rendered again smaller; well under it
    /// with passages or turns left out, again larger (at most two renders more). Returns the
    /// prompt, the model's count of it, and a warning when the count failed.
    async fn fit(
        &self,
        input: &PromptInput<'_>,
        params: &GenerationParams,
        available: usize,
    ) -> Result<(RenderedPrompt, Option<usize>, Option<Warning>)> {
        let mut rendered = self.render(input, &TokenBudget::new(available, 0, 0))?;
        let Some(counter) = &self.prompt_counter else {
            return Ok((rendered, None, None));
        };
        let count = |prompt: &Prompt| {
            let prompt = prompt.clone();
            let params = params.clone();
            let counter = Arc::clone(counter);
            async move {
                AssertUnwindSafe(counter.count(&prompt, &params))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|panic| Err(Error::panicked(Stage::Prompt, &*panic)))
            }
        };
        let mut counted = match count(&rendered.prompt).await {
            Ok(n) => n,
            Err(error) => return Ok((rendered, None, Some(Warning::CountUnavailable(error)))),
        };
        let mut best: Option<(RenderedPrompt, usize)> = None;
        for _ in 0..2 {
            let left_out = !rendered.passages_dropped.is_empty() || rendered.turns_dropped > 0;
            if counted <= available {
                let roomy = counted < available * 9 / 10 && left_out;
                best = Some((rendered.clone(), counted));
                if !roomy {
                    break;
                }
            }
            // Scale the template's budget by how the model's count compares with its own.
            let target = (rendered.token_count.max(1) as u128 * available as u128
                / counted.max(1) as u128) as usize;
            let target = if counted > available {
                target * 99 / 100
            } else {
                target
            };
            let next = self.render(input, &TokenBudget::new(target.max(1), 0, 0))?;
            if next.prompt == rendered.prompt {
                break;
            }
            rendered = next;
            counted = match count(&rendered.prompt).await {
                Ok(n) => n,
                Err(error) => {
                    return Ok(match best {
                        Some((best, n)) => (best, Some(n), Some(Warning::CountUnavailable(error))),
                        None => (rendered, None, Some(Warning::CountUnavailable(error))),
                    });
                }
            };
        }
        if counted <= available && best.as_ref().is_none_or(|(_, n)| counted > *n) {
            best = Some((rendered, counted));
        }
        match best {
            Some((rendered, counted)) => Ok((rendered, Some(counted), None)),
            None => Err(Error::ContextOverflow {
                needed: counted,
                budget: available,
            }),
        }
    }

    /// The history window, plus one turn when none is wanted in the prompt: the newest stored
    /// turn orders this one after it.
    async fn load_history(&self, session: &SessionId) -> Result<Vec<Turn>> {
        match &self.history {
            Some(store) => {
                let turns = self.settings.history_turns.max(1);
                within(
                    self.settings.timeouts.history,
                    Stage::History,
                    caught(Stage::History, store.load(session, turns)),
                )
                .await
            }
            None => Ok(Vec::new()),
        }
    }

    /// Retrieves for `query`, or for the question as asked.
    async fn retrieve(&self, ask: &Ask, query: Option<&str>, top_k: usize) -> Result<Retrieved> {
        let Some(retriever) = &self.retriever else {
            return Ok(Retrieved::default());
        };
        let req = RetrievalRequest {
            query: query.unwrap_or(&ask.question).to_owned(),
            top_k,
            filter: ask.filter.clone(),
            user: ask.user.clone(),
        };
        let mut retrieved = within(
            self.settings.timeouts.retrieval,
            Stage::Retrieval,
            caught(Stage::Retrieval, retriever.retrieve_with_warnings(&req)),
        )
        .await?;
        retrieved.passages.truncate(top_k);
        Ok(retrieved)
    }

    /// The rewriter's standalone query for a follow-up, checked like a question is: not empty
    /// and within the question limit.
    async fn rewrite(
        &self,
        rewriter: &dyn crate::QueryRewriter,
        question: &str,
        history: &[Turn],
    ) -> Result<String> {
        let query = within(
            self.settings.timeouts.rewrite,
            Stage::Rewrite,
            caught(Stage::Rewrite, rewriter.rewrite(question, history)),
        )
        .await?;
        let query = query.trim();
        if query.is_empty() {
            return Err(Error::generation(
                "the rewriter returned an empty query",
                false,
            ));
        }
        if query.len() > self.settings.max_question_bytes {
            return Err(Error::generation(
                format!(
                    "the rewriter returned a {}-byte query, over the {}-byte question limit",
                    query.len(),
                    self.settings.max_question_bytes
                ),
                false,
            ));
        }
        Ok(query.to_owned())
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
                    let chunks =
                        caught(Stage::Generation, self.generator.generate(prompt, params)).await?;
                    let mut chunks = chunks;
                    // Usage or a stop reason may come before any text; a failure then is still a
                    // failure before the first token, so keep reading up to the first text.
                    let mut prelude = Vec::new();
                    while let Some(chunk) =
                        futures::future::poll_fn(|cx| poll_caught(&mut chunks, cx)).await
                    {
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

    /// The terminal error event; the dead-letter queue gets the ask.
    fn fail(&self, ask: &Ask, stage: Stage, error: Error, partial_answer: String) -> Event {
        let failure = Failure {
            error,
            stage,
            partial_answer,
        };
        self.dead_letters.push(
            DeadLetter::AskFailed {
                session: ask.session.clone(),
                question: ask.question.clone(),
                failure: failure.clone(),
            },
            &self.tasks,
        );
        Event::Error(Box::new(failure))
    }
}

/// Starts saving `turn` (in a tracked task if the caller leaves before it ends), inside the
/// ask's span; `None` without a history store.
fn arm_save(
    inner: &Arc<Inner>,
    session: &SessionId,
    turn: Turn,
) -> Option<FinishOnDrop<impl Future<Output = Result<()>> + Send + 'static>> {
    let store = inner.history.clone()?;
    let turn_id = turn.id;
    Some(FinishOnDrop::new(
        trace::save(
            turn_id,
            save_turn(Arc::clone(inner), store, session.clone(), turn),
        ),
        inner.tasks.clone(),
    ))
}

/// Waits for an armed save: whether the turn was saved, and the warning when it was not.
async fn saved(save: Option<impl Future<Output = Result<()>>>) -> (bool, Option<Warning>) {
    match save {
        None => (false, None),
        Some(save) => match save.await {
            Ok(()) => (true, None),
            Err(error) => (false, Some(Warning::TurnNotSaved(error))),
        },
    }
}

/// Appends the turn, retrying per the save policy; what still fails goes to the dead-letter
/// queue with the turn, so it can be replayed.
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
            caught(Stage::Save, store.append(&session, &turn)),
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
                inner.dead_letters.push(
                    DeadLetter::TurnNotSaved {
                        session,
                        turn,
                        error: error.clone(),
                    },
                    &inner.tasks,
                );
                return Err(error);
            }
        }
    }
}

/// `fut`, with a panic inside it turned into [`Error::Panicked`] for `stage`.
async fn caught<T>(stage: Stage, fut: impl Future<Output = Result<T>>) -> Result<T> {
    AssertUnwindSafe(fut)
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| Err(Error::panicked(stage, &*panic)))
}

/// The next item of `chunks`, or an [`Error::Panicked`] if polling it panics (the caller then
/// stops polling: an error ends the answer). Caught at the poll rather than by wrapping the
/// stream, so a token costs no extra layer.
fn poll_caught(
    chunks: &mut ChunkStream,
    cx: &mut std::task::Context<'_>,
) -> Poll<Option<Result<Chunk>>> {
    std::panic::catch_unwind(AssertUnwindSafe(|| chunks.poll_next_unpin(cx)))
        .unwrap_or_else(|panic| Poll::Ready(Some(Err(Error::panicked(Stage::Generation, &*panic)))))
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
            if let Poll::Ready(item) = poll_caught(chunks, cx) {
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
    let pick = |new: u64, old: u64| if new > 0 { new } else { old };
    Usage {
        input_tokens: pick(update.input_tokens, current.input_tokens),
        output_tokens: pick(update.output_tokens, current.output_tokens),
        cache_read_input_tokens: pick(
            update.cache_read_input_tokens,
            current.cache_read_input_tokens,
        ),
        cache_write_input_tokens: pick(
            update.cache_write_input_tokens,
            current.cache_write_input_tokens,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_prompt_shrinks_by_what_the_model_reported() {
        // The model counted 9,000 where it takes 8,000 (its window: the budget, 7,900, is what
        // the prompt may have); the template had counted 7,500.
        let shrunk = shrunk_budget(7_900, 7_500, Some(9_000), Some(8_000));
        assert_eq!(shrunk, 6_517); // 7,900 * 7,500 / 9,000 = 6,583, less 1%
                                   // Without sizes: 85%.
        assert_eq!(shrunk_budget(10_000, 9_000, None, None), 8_500);
        // Never more than 85% of what was refused, never zero.
        assert_eq!(
            shrunk_budget(10_000, 9_900, Some(10_001), Some(10_000)),
            8_500
        );
        assert_eq!(shrunk_budget(1, 1, None, None), 1);
    }
}
