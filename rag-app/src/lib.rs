#![doc = include_str!("../README.md")]
#![warn(missing_docs, rust_2018_idioms, unreachable_pub)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

#[cfg(feature = "bedrock")]
mod bedrock;
pub mod doc;
mod load;
mod plan;
mod refs;
mod run;
mod secrets;
mod share;

#[cfg(feature = "bedrock")]
pub use bedrock::BedrockModels;
pub use doc::{AppDoc, FormatVersion, Node, Provenance, ValueKind};
pub use load::{Problem, Problems, MAX_APP_BYTES};
pub use plan::{validate, validate_json, BedrockCatalog, Catalog, ImageProblem, Plan, MAX_ID_LEN};
pub use refs::Reference;
pub use run::{
    Inputs, Models, NodeOutput, RagAnswerer, RunEvent, RunReport, RunStream, Runner, RunnerBuilder,
    MAX_PROMPT_BYTES, MAX_TOP_K,
};
