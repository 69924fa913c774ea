//! Test doubles and conformance suites (feature `test-utils`).
//!
//! The doubles are real implementations of the traits with scripted behaviour: a generator
//! that streams given tokens with delays and failures, retrievers that return fixed passages,
//! fail or are slow, a history store that fails on demand, and a plain-text template. Adapter
//! crates run [`conformance`] against their own backends.

pub mod conformance;
mod generator;
mod retriever;
mod store;
mod template;

pub use generator::{GeneratorProbe, ScriptedGenerator};
pub use retriever::{FailingRetriever, StaticRetriever};
pub use store::{Delayed, FailingHistory};
pub use template::PlainTemplate;
