//! The [`Generator`] trait: a model that streams an answer; and [`PromptCounter`]: a model's
//! own count of a prompt.

use std::fmt::Debug;

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::error::Result;
use crate::forward::forward_async_trait;
use crate::prompt::{Prompt, PromptKind};
use crate::types::{Chunk, GenerationParams};

/// The answer stream of a model call. Errors during the stream are items; dropping the stream
/// cancels the call.
pub type ChunkStream = BoxStream<'static, Result<Chunk>>;

/// Streams a model's answer to a prompt.
#[async_trait]
pub trait Generator: Send + Sync + Debug {
    /// Starts the model call. A failure to start (throttled, invalid request, ...) is the
    /// outer error; failures after the stream started are error items of the stream.
    async fn generate(&self, prompt: &Prompt, params: &GenerationParams) -> Result<ChunkStream>;

    /// The kind of prompt it takes; the pipeline refuses a template that renders another kind
    /// (a family's raw text sent to a chat API would be templated twice). [`PromptKind::Any`]
    /// unless said otherwise.
    fn accepts(&self) -> PromptKind {
        PromptKind::Any
    }

    /// The model it calls, as the service names it (a Bedrock model id or inference profile,
    /// an OpenAI model name): the pipeline's `gen_ai.request.model` span field. `None` when
    /// unknown.
    fn model_id(&self) -> Option<&str> {
        None
    }

    /// Who serves the model, as OpenTelemetry's GenAI conventions name providers in
    /// `gen_ai.provider.name` (`aws.bedrock`, `openai`, ...). `None` when unknown.
    fn provider(&self) -> Option<&str> {
        None
    }
}

forward_async_trait!(Generator {
    fn generate(&self, prompt: &Prompt, params: &GenerationParams) -> Result<ChunkStream>;
} sync {
    fn accepts(&self) -> PromptKind;
    fn model_id(&self) -> Option<&str>;
    fn provider(&self) -> Option<&str>;
});

/// Counts a prompt's input tokens the way the model does (for example with Bedrock's
/// CountTokens API), for a pipeline that checks the template's count before it calls the
/// model ([`crate::PipelineBuilder::with_prompt_counter`]).
#[async_trait]
pub trait PromptCounter: Send + Sync + Debug {
    /// The input tokens the model would count for `prompt` sent with `params`.
    async fn count(&self, prompt: &Prompt, params: &GenerationParams) -> Result<usize>;
}

forward_async_trait!(PromptCounter {
    fn count(&self, prompt: &Prompt, params: &GenerationParams) -> Result<usize>;
});

/// What an image model is asked for: a text prompt and the picture's settings.
///
/// Which values a model takes (prompt length, sizes, guidance, seed) is the model's own; an
/// [`ImageGenerator`] checks them with [`ImageGenerator::check`] before any call.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRequest {
    /// What to draw.
    pub prompt: String,
    /// What not to draw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_prompt: Option<String>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// How closely the image follows the prompt (the models' `cfgScale`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cfg_scale: Option<f32>,
    /// The seed, for a repeatable image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u32>,
}

impl ImageRequest {
    /// A request for a `width` x `height` image of `prompt`.
    pub fn new(prompt: impl Into<String>, width: u32, height: u32) -> Self {
        ImageRequest {
            prompt: prompt.into(),
            negative_prompt: None,
            width,
            height,
            cfg_scale: None,
            seed: None,
        }
    }
}

/// Makes an image from a text prompt (Amazon Nova Canvas or Titan Image Generator on Bedrock,
/// for example). Not streamed: image models answer with the whole image.
#[async_trait]
pub trait ImageGenerator: Send + Sync + Debug {
    /// Checks `request` against what the model takes, before any call; the error names the
    /// field.
    fn check(&self, request: &ImageRequest) -> Result<()>;

    /// Makes the image.
    async fn generate_image(&self, request: &ImageRequest) -> Result<crate::types::Image>;
}

forward_async_trait!(ImageGenerator {
    fn generate_image(&self, request: &ImageRequest) -> Result<crate::types::Image>;
} sync {
    fn check(&self, request: &ImageRequest) -> Result<()>;
});
