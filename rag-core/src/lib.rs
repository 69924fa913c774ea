#![doc = include_str!("../README.md")]
#![warn(missing_docs, rust_2018_idioms, unreachable_pub)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub mod error;
mod forward;
pub mod generator;
pub mod history;
pub mod model;
pub mod pipeline;
pub mod prompt;
pub mod retriever;
pub mod screen;
#[cfg(any(test, feature = "test-utils"))]
pub mod testing;
pub mod tokens;
pub mod types;

pub use error::{BoxError, Error, Result, Stage};
pub use generator::{ChunkStream, Generator, ImageGenerator, ImageRequest, PromptCounter};
pub use history::HistoryStore;
pub use model::{
    Framing, ImageModelFamily, ImageModelProfile, ModelFamily, ModelProfile, Route, SamplingRule,
};
pub use pipeline::{
    AnswerStream, Ask, DeadLetter, DeadLetterLimits, DeadLetterSink, DeadLetterStats, Event,
    Failure, Pipeline, PipelineBuilder, RetryPolicy, ShutdownReport, Summary, Warning,
};
pub use prompt::{
    template_for, template_for_profile, ChatTemplate, ClaudeMessagesTemplate, ClaudeTextTemplate,
    Llama2Template, Llama3Template, Message, MistralTemplate, Prompt, PromptInput, PromptKind,
    PromptTemplate, RenderedPrompt, Role, TitanTextTemplate, TokenBudget,
};
pub use retriever::Retriever;
pub use screen::{GeneratorRewriter, QueryRewriter, QuestionScreen, Screening};
pub use tokens::{Cl100kCounter, TokenCounter, TokenScheme};
pub use types::{
    Chunk, Citation, Filter, GenerationParams, GuardrailIntervention, Image, ImageFormat, Owner,
    Passage, RetrievalRequest, Retrieved, SessionId, SessionOwner, StopReason, Turn, TurnId, Usage,
    UserContext,
};
