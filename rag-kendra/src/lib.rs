#![doc = include_str!("../README.md")]
#![warn(missing_docs, rust_2018_idioms, unreachable_pub)]
#![forbid(unsafe_code)]

mod error;
mod filter;
mod mapping;
mod query;
mod retriever;

pub use aws_sdk_kendra;
pub use filter::{AttributeFilter, AttributeValue, MAX_FILTER_DEPTH, MAX_FILTER_LIST_LEN};
pub use mapping::{
    Confidence, CONFIDENCE_ATTRIBUTE, DOCUMENT_ID_ATTRIBUTE, QUESTION_ATTRIBUTE,
    RESULT_TYPE_ATTRIBUTE,
};
pub use query::MAX_QUERY_CHARS;
pub use retriever::{KendraApi, KendraRetriever, KendraRetrieverBuilder, MAX_PAGE_SIZE};
