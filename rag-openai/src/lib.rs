#![doc = include_str!("../README.md")]
#![warn(missing_docs, rust_2018_idioms, unreachable_pub)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod error;
mod generator;
mod stream;

pub use generator::{OpenAiCompatGenerator, OpenAiCompatGeneratorBuilder};
pub use stream::chunk_stream;
