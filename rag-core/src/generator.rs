//! The [`Generator`] trait: a model that streams an answer.

use std::fmt::Debug;

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::error::Result;
use crate::forward::forward_async_trait;
use crate::prompt::Prompt;
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
}

forward_async_trait!(Generator {
    fn generate(&self, prompt: &Prompt, params: &GenerationParams) -> Result<ChunkStream>;
});
