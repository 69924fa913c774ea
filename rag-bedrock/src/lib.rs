#![doc = include_str!("../README.md")]
#![warn(missing_docs, rust_2018_idioms, unreachable_pub)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod converse;
mod count;
mod document;
mod error;
mod generator;
#[cfg(feature = "knowledge-bases")]
mod knowledge_base;
mod native;
mod stream;

pub use count::{BedrockTokenCounter, BedrockTokenCounterBuilder};
pub use generator::{BedrockGenerator, BedrockGeneratorBuilder};
#[cfg(feature = "knowledge-bases")]
pub use knowledge_base::{KnowledgeBaseRetriever, KnowledgeBaseRetrieverBuilder};

/// The AWS SDK crates this crate is built on, re-exported so callers build clients with the
/// same versions.
pub mod sdk {
    pub use aws_config;
    #[cfg(feature = "knowledge-bases")]
    pub use aws_sdk_bedrockagentruntime as bedrockagentruntime;
    pub use aws_sdk_bedrockruntime as bedrockruntime;
}
