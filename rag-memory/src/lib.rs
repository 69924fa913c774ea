#![doc = include_str!("../README.md")]
#![warn(missing_docs, rust_2018_idioms, unreachable_pub)]
#![forbid(unsafe_code)]

mod history;

pub use history::{InMemoryHistory, InMemoryHistoryBuilder};
