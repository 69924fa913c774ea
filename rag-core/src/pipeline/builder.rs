use std::sync::Arc;
use std::time::Duration;

use super::dead_letter::{DeadLetterSink, TracingDeadLetters};
use super::retry::RetryPolicy;
use super::{Inner, Pipeline};
use crate::error::{Error, Result};
use crate::generator::Generator;
use crate::history::HistoryStore;
use crate::model::ModelProfile;
use crate::prompt::PromptTemplate;
use crate::retriever::Retriever;
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
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            retrieval: Some(Duration::from_secs(10)),
            history: Some(Duration::from_secs(5)),
            first_token: Some(Duration::from_secs(30)),
            idle: Some(Duration::from_secs(30)),
            save: Some(Duration::from_secs(5)),
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
    pub(super) reserve: usize,
    pub(super) timeouts: Timeouts,
    pub(super) retry: RetryPolicy,
    pub(super) save_retry: RetryPolicy,
    pub(super) on_history_error: HistoryFailurePolicy,
    pub(super) max_question_bytes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            history_turns: 10,
            top_k: 10,
            params: GenerationParams::default(),
            context_window: 8_192,
            max_output_tokens: None,
            reserve: 64,
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

    /// How many earlier turns to load per ask (default 10; 0 loads none).
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

    /// The model's context window and a safety reserve, in tokens (default 8,192 and 64). The
    /// prompt budget of an ask is `context_window - max_tokens - reserve`.
    pub fn with_context_window(mut self, context_window: usize, reserve: usize) -> Self {
        self.settings.context_window = context_window;
        self.settings.reserve = reserve;
        self
    }

    /// The model's limits from its profile: the context window, and the longest answer it may
    /// give (asks whose `max_tokens` exceed it fail with [`Error::InvalidInput`] before any
    /// call). Without a template set, the family's default template is used.
    pub fn with_model_profile(mut self, profile: ModelProfile) -> Self {
        self.settings.context_window = profile.context_window;
        self.settings.max_output_tokens = Some(profile.max_output_tokens);
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
        let budget = crate::prompt::TokenBudget::new(settings.context_window, 0, settings.reserve);
        if budget.prompt_tokens() <= settings.params.max_tokens as usize {
            return Err(Error::config(format!(
                "context window {} leaves no room for a prompt after max_tokens {} and reserve {}",
                settings.context_window, settings.params.max_tokens, settings.reserve
            )));
        }
        Ok(Pipeline {
            inner: Arc::new(Inner {
                generator,
                template,
                retriever: self.retriever,
                history: self.history,
                dead_letters: self.dead_letters,
                settings,
                tasks: tokio_util::task::TaskTracker::new(),
            }),
        })
    }
}
