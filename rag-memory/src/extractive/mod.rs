//! An offline answer: [`ExtractiveGenerator`] quotes the sentences of the retrieved passages
//! that best match the question, from prompts rendered by [`ExtractiveTemplate`].

mod generator;
mod template;
mod text;

pub use generator::{ExtractiveGenerator, ExtractiveGeneratorBuilder};
pub use template::ExtractiveTemplate;
