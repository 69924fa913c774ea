//! `rag`: streaming retrieval-augmented generation for Rust services.
//!
//! The facade of the workspace: it re-exports [`rag_core`] (traits, types, prompt formats,
//! the streaming [`Pipeline`]) and, behind features, the adapters. `memory` (on by default)
//! brings the in-memory history store.
#![warn(missing_docs, rust_2018_idioms, unreachable_pub)]
#![forbid(unsafe_code)]

pub use rag_core::*;

/// The embedded defaults: in-memory history (feature `memory`).
#[cfg(feature = "memory")]
pub use rag_memory as memory;
