//! The model behind `--openai-url URL --model NAME`: a chat model on an OpenAI-compatible
//! server (Ollama, vLLM, llama.cpp, LM Studio), which applies the model's own chat template, so
//! the pipeline renders a chat prompt (`ChatTemplate`) inside the window the flags give.

// Shared by several examples; each uses part of it.
#![allow(dead_code)]

use rag::model::default_reserve;
use rag::{ModelFamily, ModelProfile, PipelineBuilder};

/// The context window assumed without `--context-window`: the pipeline's default. Servers set
/// their own (Ollama's `num_ctx`, vLLM's `--max-model-len`, llama.cpp's `-c`); a prompt longer
/// than theirs is refused, and the pipeline then sends a shorter one.
pub(crate) const DEFAULT_CONTEXT_WINDOW: usize = 8_192;

/// The flags of an OpenAI-compatible model.
#[derive(Debug, Clone)]
pub(crate) struct LocalModel {
    /// The server's base URL, such as `http://127.0.0.1:11434/v1`.
    pub(crate) url: String,
    /// The model's name on the server.
    pub(crate) model: String,
    /// The Bearer key, for servers that ask for one.
    pub(crate) api_key: Option<String>,
    /// The model's profile: a chat model with the window of the flags.
    pub(crate) profile: ModelProfile,
    /// The longest answer, in tokens.
    pub(crate) max_tokens: u32,
}

impl LocalModel {
    /// Checks the flags: the window must leave room for the answer (the pipeline's own rule,
    /// said in flags before anything loads).
    pub(crate) fn new(
        url: &str,
        model: &str,
        api_key: Option<&str>,
        context_window: Option<usize>,
        max_tokens: u32,
    ) -> Result<Self, String> {
        let window = context_window.unwrap_or(DEFAULT_CONTEXT_WINDOW);
        let reserve = default_reserve(window);
        if window <= max_tokens as usize + reserve {
            return Err(format!(
                "--context-window {window} leaves no room for a prompt: it must be more than \
                 --max-tokens {max_tokens} plus a reserve of {reserve} tokens (1% of the \
                 window, at least 16)"
            ));
        }
        Ok(LocalModel {
            url: url.to_owned(),
            model: model.to_owned(),
            api_key: api_key.filter(|k| !k.is_empty()).map(str::to_owned),
            profile: ModelProfile::custom(ModelFamily::Chat, window, max_tokens as usize),
            max_tokens,
        })
    }

    /// `builder` with this model as its generator, its chat template, limits and answer
    /// length; and what it is, for the user.
    #[cfg(feature = "openai")]
    pub(crate) fn configure(
        &self,
        builder: PipelineBuilder,
    ) -> Result<(PipelineBuilder, String), String> {
        let mut generator = rag::openai::OpenAiCompatGenerator::builder(&self.url, &self.model);
        if let Some(key) = &self.api_key {
            generator = generator.with_api_key(key);
        }
        let generator = generator.build().map_err(|e| e.to_string())?;
        let what = format!(
            "{} at {} (chat template, context window {} tokens)",
            self.model,
            generator.endpoint(),
            self.profile.context_window
        );
        let builder = builder
            .with_model_profile(self.profile)
            .with_template(rag::template_for_profile(&self.profile))
            .with_generator(generator)
            .with_params(rag::GenerationParams::default().with_max_tokens(self.max_tokens));
        Ok((builder, what))
    }

    /// Built without the `openai` feature: refused with the way to enable it.
    #[cfg(not(feature = "openai"))]
    pub(crate) fn configure(
        &self,
        _builder: PipelineBuilder,
    ) -> Result<(PipelineBuilder, String), String> {
        Err(
            "this example was built without the `openai` feature; build it with \
             `--features openai` (or `--features full`) to use --openai-url"
                .into(),
        )
    }
}
