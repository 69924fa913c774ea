//! [`DynamoDbHistoryBuilder`]: configuration checked at `build()`.

use std::sync::Arc;
use std::time::Duration;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_dynamodb::Client;
use rag_core::{Error, Result};

use crate::item::AttributeNames;
use crate::store::{DynamoDbHistory, Settings};

/// Builds a [`DynamoDbHistory`]; configuration mistakes fail at [`build`](Self::build).
#[derive(Debug, Clone)]
#[must_use]
pub struct DynamoDbHistoryBuilder {
    table: String,
    client: Option<Client>,
    ttl: Option<Duration>,
    names: AttributeNames,
    consistent_reads: bool,
    page_size: Option<usize>,
}

impl DynamoDbHistoryBuilder {
    pub(crate) fn new(table: impl Into<String>) -> Self {
        DynamoDbHistoryBuilder {
            table: table.into(),
            client: None,
            ttl: None,
            names: AttributeNames::default(),
            consistent_reads: true,
            page_size: None,
        }
    }

    /// The SDK client to use (required, or [`with_sdk_config`](Self::with_sdk_config)).
    pub fn with_client(mut self, client: impl Into<Client>) -> Self {
        self.client = Some(client.into());
        self
    }

    /// A client made from shared AWS configuration (region, credentials, endpoint).
    pub fn with_sdk_config(self, config: &SdkConfig) -> Self {
        self.with_client(Client::new(config))
    }

    /// Sets each turn's TTL attribute to the time of its append plus `ttl`, so DynamoDB
    /// deletes old conversations by itself (enable TTL on the table for that:
    /// [`DynamoDbHistory::create_table_if_missing`] does). At least one second.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Attribute names other than the defaults, to fit an existing table.
    pub fn with_attribute_names(mut self, names: AttributeNames) -> Self {
        self.names = names;
        self
    }

    /// Whether `load` and `clear` read with strong consistency (default `true`, so a turn is
    /// visible to the very next ask, on whatever machine it runs).
    pub fn with_consistent_reads(mut self, consistent: bool) -> Self {
        self.consistent_reads = consistent;
        self
    }

    /// The most items one Query request asks for (default: as many as still wanted). Smaller
    /// pages mean more requests; mostly useful to exercise paging.
    pub fn with_page_size(mut self, items: usize) -> Self {
        self.page_size = Some(items);
        self
    }

    /// Checks the configuration and builds the store. No request is sent.
    pub fn build(self) -> Result<DynamoDbHistory> {
        validate_table_name(&self.table)?;
        let client = self.client.ok_or_else(|| {
            Error::config(
                "a DynamoDB client is required: with_client(..), with_sdk_config(..) or \
                 DynamoDbHistory::from_env(..)",
            )
        })?;
        self.names.validate()?;
        let ttl = match self.ttl {
            Some(ttl) if ttl < Duration::from_secs(1) => {
                return Err(Error::config(format!(
                    "ttl must be at least one second, got {ttl:?}"
                )));
            }
            Some(ttl) => Some(ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)),
            None => None,
        };
        let page_size = match self.page_size {
            Some(0) => return Err(Error::config("page size must be at least 1")),
            Some(n) => Some(i32::try_from(n).unwrap_or(i32::MAX)),
            None => None,
        };
        Ok(DynamoDbHistory::from_settings(
            client,
            Arc::new(Settings {
                table: self.table,
                names: self.names,
                ttl_secs: ttl,
                consistent_reads: self.consistent_reads,
                page_size,
            }),
        ))
    }

    /// Loads AWS configuration from the environment (region, credentials chain, profile) and
    /// builds the store with a client made from it.
    pub async fn build_from_env(self) -> Result<DynamoDbHistory> {
        let config = aws_config::defaults(BehaviorVersion::latest()).load().await;
        self.with_sdk_config(&config).build()
    }
}

/// DynamoDB's rule: 3 to 255 characters of `a-z A-Z 0-9 _ - .`.
fn validate_table_name(table: &str) -> Result<()> {
    if !(3..=255).contains(&table.len()) {
        return Err(Error::config(format!(
            "table name must be 3 to 255 characters, got {} ({table:?})",
            table.len()
        )));
    }
    if let Some(bad) = table
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_-.".contains(*c)))
    {
        return Err(Error::config(format!(
            "table name {table:?} contains {bad:?}; allowed are ASCII letters, digits and _ - ."
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};

    use super::*;

    fn client() -> Client {
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "test"))
            .endpoint_url("http://127.0.0.1:9")
            .build();
        Client::from_conf(config)
    }

    fn config_error(builder: DynamoDbHistoryBuilder) -> String {
        match builder.build() {
            Err(Error::Config { message }) => message,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn builds_with_a_client() {
        let store = DynamoDbHistory::builder("chat-history")
            .with_client(client())
            .with_ttl(Duration::from_millis(1500))
            .build()
            .unwrap();
        assert_eq!(store.table_name(), "chat-history");
        assert_eq!(store.ttl(), Some(Duration::from_secs(2)));
    }

    #[test]
    fn config_mistakes_fail_at_build() {
        assert!(config_error(DynamoDbHistory::builder("chat")).contains("client is required"));
        assert!(
            config_error(DynamoDbHistory::builder("ab").with_client(client())).contains("3 to 255")
        );
        assert!(
            config_error(DynamoDbHistory::builder("chat history").with_client(client()))
                .contains("' '")
        );
        assert!(config_error(
            DynamoDbHistory::builder("chat")
                .with_client(client())
                .with_ttl(Duration::from_millis(10))
        )
        .contains("at least one second"));
        assert!(config_error(
            DynamoDbHistory::builder("chat")
                .with_client(client())
                .with_page_size(0)
        )
        .contains("page size"));
        assert!(config_error(
            DynamoDbHistory::builder("chat")
                .with_client(client())
                .with_attribute_names(AttributeNames {
                    turn_id: "session_id".into(),
                    ..AttributeNames::default()
                })
        )
        .contains("both session and turn_id"));
    }
}
