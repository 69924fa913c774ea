#![doc = include_str!("../README.md")]
#![warn(missing_docs, rust_2018_idioms, unreachable_pub)]
#![forbid(unsafe_code)]

mod extractive;
mod history;
mod index;

pub use extractive::{ExtractiveGenerator, ExtractiveGeneratorBuilder, ExtractiveTemplate};
pub use history::{InMemoryHistory, InMemoryHistoryBuilder};
pub use index::chunk::estimate_tokens;
pub use index::{Added, TantivyRetriever, TantivyRetrieverBuilder};
