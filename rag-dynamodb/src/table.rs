//! Creating the history table, for development and tests.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::error::BuildError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    TableDescription, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};
use rag_core::{Error, Result};

use crate::error::sdk_error;
use crate::store::DynamoDbHistory;

/// How long [`DynamoDbHistory::create_table_if_missing`] waits for the table to be active.
const ACTIVE_WAIT: Duration = Duration::from_secs(120);

fn build_error(e: BuildError) -> Error {
    Error::history(format!("request could not be built: {e}"), false).with_source(e)
}

impl DynamoDbHistory {
    /// Creates the table if it does not exist (on-demand billing, the session as partition
    /// key and the turn id as sort key, both strings), waits until it is active, and enables
    /// TTL on the expiry attribute when a TTL is configured. Returns whether it created the
    /// table.
    ///
    /// For development and tests: production tables belong in infrastructure code. An
    /// existing table whose keys do not match this store's is an [`Error::Config`].
    pub async fn create_table_if_missing(&self) -> Result<bool> {
        let created = match self.describe().await? {
            Some(table) => {
                self.check_keys(&table)?;
                false
            }
            None => self.create().await?,
        };
        self.wait_active().await?;
        if self.settings.ttl_secs.is_some() {
            self.enable_ttl().await?;
        }
        Ok(created)
    }

    async fn describe(&self) -> Result<Option<TableDescription>> {
        let table = &self.settings.table;
        match self.client.describe_table().table_name(table).send().await {
            Ok(out) => Ok(out.table),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(sdk_error("DescribeTable", table, e)),
        }
    }

    async fn create(&self) -> Result<bool> {
        let s = &self.settings;
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(build_error)
        };
        let string = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(build_error)
        };
        let result = self
            .client
            .create_table()
            .table_name(&s.table)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key(&s.names.session, KeyType::Hash)?)
            .key_schema(key(&s.names.turn_id, KeyType::Range)?)
            .attribute_definitions(string(&s.names.session)?)
            .attribute_definitions(string(&s.names.turn_id)?)
            .send()
            .await;
        match result {
            Ok(_) => {
                tracing::info!(table = %s.table, "created the history table");
                Ok(true)
            }
            // Created by someone else meanwhile: fine, if its keys are ours.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_in_use_exception()) =>
            {
                match self.describe().await? {
                    Some(table) => self.check_keys(&table).map(|()| false),
                    None => Err(sdk_error("CreateTable", &s.table, e)),
                }
            }
            Err(e) => Err(sdk_error("CreateTable", &s.table, e)),
        }
    }

    fn check_keys(&self, table: &TableDescription) -> Result<()> {
        let names = &self.settings.names;
        let key_of = |kind: KeyType| {
            table
                .key_schema()
                .iter()
                .find(|k| *k.key_type() == kind)
                .map(|k| k.attribute_name().to_owned())
        };
        let (hash, range) = (key_of(KeyType::Hash), key_of(KeyType::Range));
        if hash.as_deref() != Some(names.session.as_str())
            || range.as_deref() != Some(names.turn_id.as_str())
        {
            return Err(Error::config(format!(
                "table `{}` has partition key {hash:?} and sort key {range:?}; this store needs \
                 `{}` and `{}` (see with_attribute_names)",
                self.settings.table, names.session, names.turn_id
            )));
        }
        Ok(())
    }

    async fn wait_active(&self) -> Result<()> {
        let deadline = Instant::now() + ACTIVE_WAIT;
        let mut pause = Duration::from_millis(100);
        loop {
            let status = self
                .describe()
                .await?
                .and_then(|t| t.table_status().cloned());
            if status == Some(TableStatus::Active) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::history(
                    format!(
                        "table `{}` not active after {ACTIVE_WAIT:?} (status {status:?})",
                        self.settings.table
                    ),
                    true,
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    async fn enable_ttl(&self) -> Result<()> {
        let s = &self.settings;
        let current = self
            .client
            .describe_time_to_live()
            .table_name(&s.table)
            .send()
            .await
            .map_err(|e| sdk_error("DescribeTimeToLive", &s.table, e))?;
        if let Some(ttl) = current.time_to_live_description() {
            let status = ttl.time_to_live_status();
            if matches!(
                status,
                Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
            ) {
                if ttl.attribute_name() != Some(s.names.expires_at.as_str()) {
                    tracing::warn!(
                        table = %s.table,
                        enabled_on = ?ttl.attribute_name(),
                        configured = %s.names.expires_at,
                        "TTL is enabled on another attribute; expired turns are still filtered out on load"
                    );
                }
                return Ok(());
            }
        }
        let spec = TimeToLiveSpecification::builder()
            .enabled(true)
            .attribute_name(&s.names.expires_at)
            .build()
            .map_err(build_error)?;
        self.client
            .update_time_to_live()
            .table_name(&s.table)
            .time_to_live_specification(spec)
            .send()
            .await
            .map_err(|e| sdk_error("UpdateTimeToLive", &s.table, e))?;
        tracing::info!(table = %s.table, attribute = %s.names.expires_at, "enabled TTL");
        Ok(())
    }
}
