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
}

forward_async_trait!(Generator {
    fn generate(&self, prompt: &Prompt, params: &GenerationParams) -> Result<ChunkStream>;
} sync {
    fn accepts(&self) -> PromptKind;
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
