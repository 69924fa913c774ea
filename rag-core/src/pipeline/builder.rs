use std::sync::Arc;
use std::time::Duration;

use super::dead_letter::{DeadLetterLimits, DeadLetterQueue, DeadLetterSink, TracingDeadLetters};
use super::retry::RetryPolicy;
use super::{Inner, Pipeline};
use crate::error::{Error, Result};
use crate::generator::{Generator, PromptCounter};
use crate::history::HistoryStore;
use crate::model::{default_reserve, ModelProfile};
use crate::prompt::{PromptKind, PromptTemplate};
use crate::retriever::Retriever;
use crate::screen::{QueryRewriter, QuestionScreen};
use crate::types::GenerationParams;

/// What to do when the history cannot be loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum HistoryFailurePolicy {
    /// Answer without history and emit a [`crate::Warning::HistoryUnavailable`] (the default:
    /// an answer without context beats no answer).
    #[default]
    Continue,
    /// End the ask with an error, before any model call.
    Fail,
}

/// Time limits of the stages of an ask; `None` means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Retrieval (default 10 s).
    pub retrieval: Option<Duration>,
    /// Loading the history (default 5 s).
    pub history: Option<Duration>,
    /// From the model call to its first token, per attempt (default 30 s).
    pub first_token: Option<Duration>,
    /// The longest gap between two chunks after the first token (default 30 s).
    pub idle: Option<Duration>,
    /// One attempt at saving the turn (default 5 s).
    pub save: Option<Duration>,
    /// Screening the question ([`PipelineBuilder::with_question_screen`]; default 5 s).
    pub screen: Option<Duration>,
    /// Rewriting a follow-up question ([`PipelineBuilder::with_query_rewriter`]; default 5 s):
    /// past it, retrieval uses the question as asked.
    pub rewrite: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            retrieval: Some(Duration::from_secs(10)),
            history: Some(Duration::from_secs(5)),
            first_token: Some(Duration::from_secs(30)),
            idle: Some(Duration::from_secs(30)),
            save: Some(Duration::from_secs(5)),
            screen: Some(Duration::from_secs(5)),
            rewrite: Some(Duration::from_secs(5)),
        }
    }
}

/// The settings of a pipeline, kept as the builder set them.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub(super) history_turns: usize,
    pub(super) top_k: usize,
    pub(super) params: GenerationParams,
    pub(super) context_window: usize,
    pub(super) max_output_tokens: Option<usize>,
    /// The safety margin; `None` for 1% of the window ([`default_reserve`]).
    pub(super) reserve: Option<usize>,
    pub(super) profile: Option<ModelProfile>,
    pub(super) dead_letters: DeadLetterLimits,
    pub(super) timeouts: Timeouts,
    pub(super) retry: RetryPolicy,
    pub(super) save_retry: RetryPolicy,
    pub(super) on_history_error: HistoryFailurePolicy,
    pub(super) max_question_bytes: usize,
}

impl Settings {
    /// The safety margin of every budget.
    pub(super) fn reserve(&self) -> usize {
        self.reserve
            .unwrap_or_else(|| default_reserve(self.context_window))
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            history_turns: 10,
            top_k: 10,
            params: GenerationParams::default(),
            context_window: 8_192,
            max_output_tokens: None,
            reserve: None,
            profile: None,
            dead_letters: DeadLetterLimits::default(),
            timeouts: Timeouts::default(),
            retry: RetryPolicy::default(),
            save_retry: RetryPolicy::attempts(3)
                .with_backoff(Duration::from_millis(50), Duration::from_secs(1)),
            on_history_error: HistoryFailurePolicy::default(),
            max_question_bytes: 16 * 1024,
        }
    }
}

/// Builds a [`Pipeline`]; configuration mistakes fail at [`PipelineBuilder::build`].
#[derive(Debug)]
#[must_use]
pub struct PipelineBuilder {
    generator: Option<Arc<dyn Generator>>,
    template: Option<Arc<dyn PromptTemplate>>,
    retriever: Option<Arc<dyn Retriever>>,
    history: Option<Arc<dyn HistoryStore>>,
    dead_letters: Arc<dyn DeadLetterSink>,
    prompt_counter: Option<Arc<dyn PromptCounter>>,
    screen: Option<Arc<dyn QuestionScreen>>,
    rewriter: Option<Arc<dyn QueryRewriter>>,
    settings: Settings,
}

impl Default for PipelineBuilder {
    fn default() -> Self {
        PipelineBuilder {
            generator: None,
            template: None,
            retriever: None,
            history: None,
            dead_letters: Arc::new(TracingDeadLetters),
            prompt_counter: None,
            screen: None,
            rewriter: None,
            settings: Settings::default(),
        }
    }
}

impl PipelineBuilder {
    /// The most passages an ask may request.
    pub const MAX_TOP_K: usize = 1_000;

    /// The model (required).
    pub fn with_generator(mut self, generator: impl Generator + 'static) -> Self {
        self.generator = Some(Arc::new(generator));
        self
    }

    /// The prompt format (required).
    pub fn with_template(mut self, template: impl PromptTemplate + 'static) -> Self {
        self.template = Some(Arc::new(template));
        self
    }

    /// The passage source; without one the pipeline is a plain ask-the-model bot.
    pub fn with_retriever(mut self, retriever: impl Retriever + 'static) -> Self {
        self.retriever = Some(Arc::new(retriever));
        self
    }

    /// The conversation store; without one every ask stands alone and nothing is saved.
    pub fn with_history(mut self, history: impl HistoryStore + 'static) -> Self {
        self.history = Some(Arc::new(history));
        self
    }

    /// Where failed asks and unsaved turns go (default: logged with `tracing`).
    pub fn with_dead_letters(mut self, sink: impl DeadLetterSink + 'static) -> Self {
        self.dead_letters = Arc::new(sink);
        self
    }

    /// Bounds on dead-letter delivery (default: 1,024 queued, 4 at once, 30 s each).
    pub fn with_dead_letter_limits(mut self, limits: DeadLetterLimits) -> Self {
        self.settings.dead_letters = limits;
        self
    }

    /// Checks every prompt with the model's own count before the call (for example
    /// `rag_bedrock::BedrockTokenCounter`, on Bedrock's CountTokens API): a prompt the model
    /// counts over the budget is rendered again smaller, and one that it counts well under the
    /// budget while the template left passages or turns out is rendered again larger, at most
    /// twice in all. When the count fails, the template's count (an upper bound) is used and a
    /// [`crate::Warning::CountUnavailable`] says so.
    pub fn with_prompt_counter(mut self, counter: impl PromptCounter + 'static) -> Self {
        self.prompt_counter = Some(Arc::new(counter));
        self
    }

    /// Screens every question before anything else is spent on it (for example
    /// `rag_bedrock::BedrockGuardrailScreen`, on Bedrock's ApplyGuardrail API). A blocked
    /// question gets no retrieval and no model call: its answer is the screen's message, ended
    /// by [`crate::StopReason::GuardrailIntervened`], and its turn is saved with that message.
    /// A screen that fails (or exceeds [`Timeouts::screen`]) fails the ask at
    /// [`crate::Stage::Screen`]: an unscreened question is never answered.
    pub fn with_question_screen(mut self, screen: impl QuestionScreen + 'static) -> Self {
        self.screen = Some(Arc::new(screen));
        self
    }

    /// Rewrites a follow-up question into a standalone query before retrieval (for example
    /// [`crate::screen::GeneratorRewriter`] on a small, fast model). Retrieval then waits for
    /// the history instead of running beside it, so the rewriter runs only when the
    /// conversation has earlier turns; the prompt keeps the question as asked. When it fails
    /// (or exceeds [`Timeouts::rewrite`]), retrieval uses the question as asked and a
    /// [`crate::Warning::QueryRewriteFailed`] says so. The query used is in
    /// [`crate::Summary::rewritten_query`].
    pub fn with_query_rewriter(mut self, rewriter: impl QueryRewriter + 'static) -> Self {
        self.rewriter = Some(Arc::new(rewriter));
        self
    }

    /// How many earlier turns go into the prompt (default 10; 0 puts none). With a history
    /// store, the newest turn is read even at 0, so that a new turn is ordered after it (see
    /// [`crate::TurnId::after`]); a failure to read it then only warns.
    pub fn with_history_turns(mut self, turns: usize) -> Self {
        self.settings.history_turns = turns;
        self
    }

    /// How many passages to retrieve per ask (default 10).
    pub fn with_top_k(mut self, top_k: usize) -> Self {
        self.settings.top_k = top_k;
        self
    }

    /// Default inference settings, which an [`crate::Ask`] may override.
    pub fn with_params(mut self, params: GenerationParams) -> Self {
        self.settings.params = params;
        self
    }

    /// The model's context window and a safety reserve, in tokens (default 8,192, and 1% of
    /// the window, at least 16). The prompt budget of an ask is
    /// `context_window - max_tokens - reserve`.
    pub fn with_context_window(mut self, context_window: usize, reserve: usize) -> Self {
        self.settings.context_window = context_window;
        self.settings.reserve = Some(reserve);
        self
    }

    /// The model's limits from its profile: the context window (with 1% of it as the
    /// reserve), the longest answer it may give and its sampling rules (asks that break them
    /// fail with [`Error::InvalidInput`] before any call). Without a template set, the family's
    /// template counted as the profile says ([`crate::template_for_profile`]) is used.
    pub fn with_model_profile(mut self, profile: ModelProfile) -> Self {
        self.settings.context_window = profile.context_window;
        self.settings.reserve = None;
        self.settings.max_output_tokens = Some(profile.max_output_tokens);
        self.settings.profile = Some(profile);
        if self.template.is_none() {
            self.template = Some(Arc::from(crate::prompt::template_for_profile(&profile)));
        }
        self
    }

    /// All stage time limits at once.
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.settings.timeouts = timeouts;
        self
    }

    /// Retries of model calls that fail before their first token.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.settings.retry = retry;
        self
    }

    /// Retries of saving a finished turn (default 3 attempts, 50 ms to 1 s backoff).
    pub fn with_save_retry(mut self, retry: RetryPolicy) -> Self {
        self.settings.save_retry = retry;
        self
    }

    /// What to do when the history cannot be loaded.
    pub fn on_history_error(mut self, policy: HistoryFailurePolicy) -> Self {
        self.settings.on_history_error = policy;
        self
    }

    /// The longest question accepted, in bytes (default 16 KiB).
    pub fn with_max_question_bytes(mut self, bytes: usize) -> Self {
        self.settings.max_question_bytes = bytes;
        self
    }

    /// Checks the configuration and builds the pipeline.
    pub fn build(self) -> Result<Pipeline> {
        let generator = self
            .generator
            .ok_or_else(|| Error::config("a generator is required (with_generator)"))?;
        let template = self
            .template
            .ok_or_else(|| Error::config("a prompt template is required (with_template)"))?;
        let settings = self.settings;
        let (renders, takes) = (template.kind(), generator.accepts());
        if !renders.fits(takes) {
            let advice = match takes {
                PromptKind::Chat => {
                    "a chat template: ClaudeMessagesTemplate for Claude, ChatTemplate for other \
                     chat models, or template_for_profile(&profile)"
                        .to_owned()
                }
                PromptKind::Text(family) => {
                    format!("the {family} template: template_for(ModelFamily::{family:?})")
                }
                PromptKind::Any => String::new(),
            };
            let fix = match renders {
                PromptKind::Text(family) => format!(
                    "; or call the model natively in its family ({family}), e.g. \
                     BedrockGenerator::builder(model_id)"
                ),
                _ => String::new(),
            };
            return Err(Error::config(format!(
                "the template renders {renders} but the generator takes {takes}: use {advice}{fix}"
            )));
        }
        if let Some(profile) = settings.profile {
            if !profile.streams {
                return Err(Error::config(
                    "this model does not stream on Bedrock (its profile says streams: false), and \
                     the pipeline answers by streaming",
                ));
            }
        }
        if self.retriever.is_some() && !(1..=Self::MAX_TOP_K).contains(&settings.top_k) {
            return Err(Error::config(format!(
                "top_k {} is outside 1..={}",
                settings.top_k,
                Self::MAX_TOP_K
            )));
        }
        if settings.max_question_bytes == 0 {
            return Err(Error::config("max_question_bytes must be at least 1"));
        }
        settings
            .params
            .validate()
            .map_err(|e| Error::config(format!("default params: {e}")))?;
        if let Some(max) = settings.max_output_tokens {
            if settings.params.max_tokens as usize > max {
                return Err(Error::config(format!(
                    "default params: max_tokens {} exceeds the model's {max}",
                    settings.params.max_tokens
                )));
            }
        }
        if let Some(profile) = settings.profile {
            profile
                .check_params("the model", &settings.params)
                .map_err(|e| Error::config(format!("default params: {e}")))?;
        }
        let limits = settings.dead_letters;
        if limits.max_queued == 0 || limits.max_concurrent == 0 || limits.timeout.is_zero() {
            return Err(Error::config(
                "dead-letter limits must allow at least one letter, one delivery and some time",
            ));
        }
        settings.retry.validate()?;
        settings.save_retry.validate()?;
        let t = settings.timeouts;
        for (name, limit) in [
            ("retrieval", t.retrieval),
            ("history", t.history),
            ("first_token", t.first_token),
            ("idle", t.idle),
            ("save", t.save),
        ] {
            if limit == Some(Duration::ZERO) {
                return Err(Error::config(format!(
                    "the {name} timeout must not be zero"
                )));
            }
        }
        let budget =
            crate::prompt::TokenBudget::new(settings.context_window, 0, settings.reserve());
        if budget.prompt_tokens() <= settings.params.max_tokens as usize {
            return Err(Error::config(format!(
                "context window {} leaves no room for a prompt after max_tokens {} and reserve {}",
                settings.context_window,
                settings.params.max_tokens,
                settings.reserve()
            )));
        }
        Ok(Pipeline {
            inner: Arc::new(Inner {
                generator,
                template,
                retriever: self.retriever,
                history: self.history,
                dead_letters: DeadLetterQueue::new(self.dead_letters, settings.dead_letters),
                prompt_counter: self.prompt_counter,
                screen: self.screen,
                rewriter: self.rewriter,
                settings,
                tasks: tokio_util::task::TaskTracker::new(),
                in_flight: super::InFlight::default(),
            }),
        })
    }
}
