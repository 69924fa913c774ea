#![doc = include_str!("../README.md")]
#![warn(missing_docs, rust_2018_idioms, unreachable_pub)]
#![forbid(unsafe_code)]

mod builder;
mod error;
mod item;
mod store;
mod table;

pub use builder::DynamoDbHistoryBuilder;
pub use item::{item_size, AttributeNames, CLAIM_SORT_KEY, MAX_ITEM_BYTES};
pub use store::DynamoDbHistory;

/// The AWS SDK for DynamoDB this crate is built on, to make clients for
/// [`DynamoDbHistoryBuilder::with_client`].
pub use aws_sdk_dynamodb;
