#![doc = include_str!("../README.md")]
#![warn(missing_docs, rust_2018_idioms, unreachable_pub)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod cache;
mod converse;
mod count;
mod document;
mod error;
mod generator;
mod guardrail;
mod image;
#[cfg(feature = "knowledge-bases")]
mod knowledge_base;
mod native;
mod screen;
mod stream;

pub use cache::PromptCacheSupport;
pub use count::{BedrockTokenCounter, BedrockTokenCounterBuilder};
pub use generator::{BedrockGenerator, BedrockGeneratorBuilder};
pub use guardrail::{Guardrail, GuardrailStreamProcessing, GuardrailTrace};
pub use image::{BedrockImageGenerator, BedrockImageGeneratorBuilder};
#[cfg(feature = "knowledge-bases")]
pub use knowledge_base::{KnowledgeBaseRetriever, KnowledgeBaseRetrieverBuilder};
pub use screen::{BedrockGuardrailScreen, BedrockGuardrailScreenBuilder};

/// The AWS configuration of the environment (region, profile and credentials as `aws-config`
/// resolves them), refused without a region: every Bedrock call needs one.
async fn env_config() -> rag_core::Result<aws_config::SdkConfig> {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    if config.region().is_none() {
        return Err(rag_core::Error::config(
            "no AWS region: set AWS_REGION or a region in the AWS profile",
        ));
    }
    Ok(config)
}

/// The AWS SDK crates this crate is built on, re-exported so callers build clients with the
/// same versions.
pub mod sdk {
    pub use aws_config;
    #[cfg(feature = "knowledge-bases")]
    pub use aws_sdk_bedrockagentruntime as bedrockagentruntime;
    pub use aws_sdk_bedrockruntime as bedrockruntime;
}
