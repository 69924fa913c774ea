//! `rag`: streaming retrieval-augmented generation for Rust services on Amazon Bedrock.
//!
//! The facade of the workspace. It re-exports [`rag_core`] (the traits, types, prompt formats
//! and the streaming [`Pipeline`]) and, behind features, the adapters:
//!
//! | feature | module | what |
//! |---|---|---|
//! | `memory` (default) | [`memory`] | in-memory history, a local tantivy index, an offline extractive generator |
//! | `bedrock` | `bedrock` | `BedrockGenerator`: every Bedrock text family, streaming, and ConverseStream |
//! | `knowledge-bases` | `bedrock` | `KnowledgeBaseRetriever` over Bedrock Knowledge Bases |
//! | `kendra` | `kendra` | `KendraRetriever`: Retrieve/Query, filters, user context |
//! | `dynamodb` | `dynamodb` | `DynamoDbHistory`: one item per turn, conditional writes |
//! | `openai` | `openai` | `OpenAiCompatGenerator`: OpenAI-compatible servers (Ollama, vLLM, llama.cpp, LM Studio) |
//!
//! ```
//! use rag::memory::{ExtractiveGenerator, ExtractiveTemplate, InMemoryHistory, TantivyRetriever};
//! use rag::{Ask, Passage, Pipeline, SessionId};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> rag::Result<()> {
//! let index = TantivyRetriever::in_memory()?;
//! index.add_passages([Passage::new("scaling", "Lambda scales functions automatically.")
//!     .with_title("Scaling")])?;
//! let pipeline = Pipeline::builder()
//!     .with_retriever(index)
//!     .with_history(InMemoryHistory::new())
//!     .with_template(ExtractiveTemplate::new())
//!     .with_generator(ExtractiveGenerator::new())
//!     .build()?;
//! let answer = pipeline
//!     .ask(Ask::new(SessionId::new("demo")?, "How does Lambda scale functions?"))
//!     .text()
//!     .await?;
//! assert!(answer.contains("[1]"), "{answer}");
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs, rust_2018_idioms, unreachable_pub)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub use rag_core::*;

/// The embedded defaults (feature `memory`).
#[cfg(feature = "memory")]
pub use rag_memory as memory;

/// Amazon Bedrock: generators and the Knowledge Bases retriever (features `bedrock`,
/// `knowledge-bases`).
#[cfg(feature = "bedrock")]
pub use rag_bedrock as bedrock;

/// Amazon Kendra retriever (feature `kendra`).
#[cfg(feature = "kendra")]
pub use rag_kendra as kendra;

/// Amazon DynamoDB history (feature `dynamodb`).
#[cfg(feature = "dynamodb")]
pub use rag_dynamodb as dynamodb;

/// Apps of chained prompt steps (feature `app`; their Bedrock models with `full`).
#[cfg(feature = "app")]
pub use rag_app as app;

/// OpenAI-compatible chat completions servers: Ollama, vLLM, llama.cpp, LM Studio (feature
/// `openai`).
#[cfg(feature = "openai")]
pub use rag_openai as openai;

/// The README's examples, run as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
