//! [`DynamoDbHistory`]: the [`HistoryStore`] on a DynamoDB table.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, WriteRequest};
use aws_sdk_dynamodb::{Client, Config};
use rag_core::{Error, HistoryStore, Result, SessionId, SessionOwner, Turn};

use crate::builder::DynamoDbHistoryBuilder;
use crate::error::sdk_error;
use crate::item::{check_size, owner_value, AttributeNames};

/// Items per BatchWriteItem request: DynamoDB's limit.
const BATCH_LIMIT: usize = 25;
/// Attempts at writing a batch's unprocessed items before giving up.
const BATCH_ATTEMPTS: u32 = 8;

pub(crate) type Item = HashMap<String, AttributeValue>;

#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) table: String,
    pub(crate) names: AttributeNames,
    pub(crate) ttl_secs: Option<u64>,
    pub(crate) consistent_reads: bool,
    pub(crate) page_size: Option<i32>,
}

/// Conversation history in a DynamoDB table, one item per turn.
///
/// The partition key is the session id and the sort key the turn id (a UUID v7, whose text
/// sorts in creation order), so a session's turns are one item collection read newest first by
/// a single descending Query, and no item grows with the conversation. Appends are conditional
/// puts: appending a turn already stored (a retry after a lost response) changes nothing, and
/// the SDK does not retry them: the [`rag_core::Pipeline`]'s save policy does (its
/// `with_save_retry`), while loads keep the SDK client's retries, which the pipeline does not
/// repeat. With
/// a TTL, each item carries its expiry in epoch seconds and expired turns are never loaded,
/// even before DynamoDB gets round to deleting them.
///
/// Cheap to clone: clones share the SDK client and settings.
#[derive(Debug, Clone)]
pub struct DynamoDbHistory {
    pub(crate) client: Client,
    pub(crate) settings: Arc<Settings>,
}

impl DynamoDbHistory {
    /// A builder for a store on `table`; a client is required.
    pub fn builder(table: impl Into<String>) -> DynamoDbHistoryBuilder {
        DynamoDbHistoryBuilder::new(table)
    }

    /// A store on `table` with a client configured from the environment (region, credentials
    /// chain, profile) and the default settings.
    pub async fn from_env(table: impl Into<String>) -> Result<Self> {
        Self::builder(table).build_from_env().await
    }

    pub(crate) fn from_settings(client: Client, settings: Arc<Settings>) -> Self {
        DynamoDbHistory { client, settings }
    }

    /// The table's name.
    pub fn table_name(&self) -> &str {
        &self.settings.table
    }

    /// The attribute names of a turn item.
    pub fn attribute_names(&self) -> &AttributeNames {
        &self.settings.names
    }

    /// How long a turn is kept after its append, when a TTL is set.
    pub fn ttl(&self) -> Option<Duration> {
        self.settings.ttl_secs.map(Duration::from_secs)
    }

    /// The SDK client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// One page of a session's items, newest first.
    async fn query_page(
        &self,
        session: &SessionId,
        limit: Option<i32>,
        start: Option<Item>,
        keys_only: bool,
        now_secs: u64,
    ) -> Result<(Vec<Item>, Option<Item>)> {
        let s = &self.settings;
        let sent = start.clone();
        let mut names = HashMap::from([("#pk".to_owned(), s.names.session.clone())]);
        let mut values = HashMap::from([(
            ":pk".to_owned(),
            AttributeValue::S(session.as_str().to_owned()),
        )]);
        let mut query = self
            .client
            .query()
            .table_name(&s.table)
            .key_condition_expression("#pk = :pk")
            .scan_index_forward(false)
            .consistent_read(s.consistent_reads)
            .set_limit(limit)
            .set_exclusive_start_key(start);
        if keys_only {
            // Expired items too: `clear` deletes everything.
            names.insert("#sk".to_owned(), s.names.turn_id.clone());
            query = query.projection_expression("#pk, #sk");
        } else {
            // Expired items stay until DynamoDB deletes them (within days): never return them.
            names.insert("#ttl".to_owned(), s.names.expires_at.clone());
            values.insert(":now".to_owned(), AttributeValue::N(now_secs.to_string()));
            query = query.filter_expression("attribute_not_exists(#ttl) OR #ttl > :now");
        }
        let out = query
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await
            .map_err(|e| sdk_error("Query", &s.table, e))?;
        let next = out.last_evaluated_key.filter(|k| !k.is_empty());
        // A service that hands back the key it was sent would keep `load` and `clear` paging
        // without end.
        if next.is_some() && next == sent {
            return Err(Error::history(
                format!(
                    "Query on table `{}` returned the LastEvaluatedKey it was sent, so paging \
                     would never end",
                    s.table
                ),
                false,
            ));
        }
        Ok((out.items.unwrap_or_default(), next))
    }

    /// Deletes `keys` (at most 25) in one BatchWriteItem, retrying unprocessed ones.
    async fn delete_batch(&self, keys: Vec<Item>) -> Result<()> {
        let table = &self.settings.table;
        let mut pending = keys
            .into_iter()
            .map(|key| {
                let delete = DeleteRequest::builder()
                    .set_key(Some(key))
                    .build()
                    .map_err(|e| {
                        Error::history(format!("BatchWriteItem request: {e}"), false).with_source(e)
                    })?;
                Ok(WriteRequest::builder().delete_request(delete).build())
            })
            .collect::<Result<Vec<_>>>()?;
        for attempt in 0..BATCH_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(backoff(attempt)).await;
            }
            let out = self
                .client
                .batch_write_item()
                .request_items(table, pending)
                .send()
                .await
                .map_err(|e| sdk_error("BatchWriteItem", table, e))?;
            pending = out
                .unprocessed_items
                .and_then(|mut items| items.remove(table))
                .unwrap_or_default();
            if pending.is_empty() {
                return Ok(());
            }
            tracing::debug!(
                table = %table,
                unprocessed = pending.len(),
                attempt,
                "BatchWriteItem left items unprocessed; retrying"
            );
        }
        Err(Error::history(
            format!(
                "BatchWriteItem on table `{table}`: {} deletes still unprocessed after {BATCH_ATTEMPTS} attempts (throttled)",
                pending.len()
            ),
            true,
        ))
    }
}

/// Exponential backoff with full jitter: up to 50 ms × 2^attempt, at most 2 s.
fn backoff(attempt: u32) -> Duration {
    let cap = Duration::from_millis(50)
        .saturating_mul(1 << attempt.min(10))
        .min(Duration::from_secs(2));
    cap.mul_f64(fastrand::f64())
}

fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TryFrom<(Client, String)> for DynamoDbHistory {
    type Error = Error;
    /// A store on the table with the default settings; the table name is checked.
    fn try_from((client, table): (Client, String)) -> Result<Self> {
        DynamoDbHistory::builder(table).with_client(client).build()
    }
}

impl TryFrom<(Client, &str)> for DynamoDbHistory {
    type Error = Error;
    /// A store on the table with the default settings; the table name is checked.
    fn try_from((client, table): (Client, &str)) -> Result<Self> {
        DynamoDbHistory::builder(table).with_client(client).build()
    }
}

#[async_trait]
impl HistoryStore for DynamoDbHistory {
    async fn load(&self, session: &SessionId, max_turns: usize) -> Result<Vec<Turn>> {
        let mut turns = Vec::with_capacity(max_turns.min(256));
        if max_turns == 0 {
            return Ok(turns);
        }
        let now = epoch_secs(SystemTime::now());
        let mut start = None;
        let mut first = true;
        // Limit counts items read before the TTL filter drops expired ones, so a page may
        // bring fewer turns than asked: keep paging until enough or the session's end.
        loop {
            // The first page starts with the claim item (it sorts last): one more.
            let wanted =
                i32::try_from((max_turns - turns.len()).saturating_add(usize::from(first)))
                    .unwrap_or(i32::MAX);
            let limit = self.settings.page_size.map_or(wanted, |p| p.min(wanted));
            let (items, next) = self
                .query_page(session, Some(limit), start, false, now)
                .await?;
            for (i, item) in items.iter().enumerate() {
                if self.settings.names.is_claim(item) {
                    // Checked before any turn is taken from the page.
                    let owner = self
                        .settings
                        .names
                        .claim_owner(&self.settings.table, item)?;
                    if !owner.admits(session) {
                        return Err(Error::forbidden(session));
                    }
                    continue;
                }
                if first && i == 0 {
                    // Turns without a claim were written before sessions had owners: they are
                    // anonymous.
                    if !SessionOwner::Anonymous.admits(session) {
                        return Err(Error::forbidden(session));
                    }
                }
                turns.push(self.settings.names.to_turn(&self.settings.table, item)?);
                if turns.len() == max_turns {
                    break;
                }
            }
            first = false;
            match next {
                Some(key) if turns.len() < max_turns => start = Some(key),
                _ => break,
            }
        }
        turns.reverse();
        Ok(turns)
    }

    async fn append(&self, session: &SessionId, turn: &Turn) -> Result<()> {
        let s = &self.settings;
        let expires_at = s
            .ttl_secs
            .map(|ttl| epoch_secs(SystemTime::now()).saturating_add(ttl));
        let item = s.names.to_item(session, turn, expires_at);
        check_size(&item, turn)?;
        self.claim(session, expires_at).await?;
        // The pipeline's save policy owns the retries of an append (a conditional put makes
        // them safe): the SDK's own are off for PutItem, or the two would multiply.
        let result = self
            .client
            .put_item()
            .table_name(&s.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#sk)")
            .expression_attribute_names("#sk", &s.names.turn_id)
            .customize()
            .config_override(Config::builder().retry_config(RetryConfig::disabled()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // The turn is there already (a retry after a lost response, or a duplicate
            // delivery): the append has happened, and the stored turn is never overwritten.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                tracing::debug!(table = %s.table, session = %session, turn = %turn.id, "turn already stored");
                Ok(())
            }
            Err(e) => Err(sdk_error("PutItem", &s.table, e)),
        }
    }

    async fn clear(&self, session: &SessionId) -> Result<()> {
        if !self.owner(session).await?.admits(session) {
            return Err(Error::forbidden(session));
        }
        let mut start = None;
        loop {
            let (keys, next) = self
                .query_page(session, self.settings.page_size, start, true, 0)
                .await?;
            let mut keys = keys.into_iter().peekable();
            while keys.peek().is_some() {
                let batch: Vec<Item> = keys.by_ref().take(BATCH_LIMIT).collect();
                self.delete_batch(batch).await?;
            }
            match next {
                Some(key) => start = Some(key),
                None => return Ok(()),
            }
        }
    }

    async fn owner(&self, session: &SessionId) -> Result<SessionOwner> {
        // The newest-first query's first live item is the claim, when there is one.
        let now = epoch_secs(SystemTime::now());
        let (items, _) = self.query_page(session, Some(1), None, false, now).await?;
        match items.first() {
            None => Ok(SessionOwner::Unclaimed),
            Some(item) if self.settings.names.is_claim(item) => {
                self.settings.names.claim_owner(&self.settings.table, item)
            }
            // Turns written before sessions had owners.
            Some(_) => Ok(SessionOwner::Anonymous),
        }
    }
}

impl DynamoDbHistory {
    /// Claims `session` for its owner, or confirms the claim: a conditional put of the claim
    /// item (refreshing its expiry), refused when another owner holds it.
    async fn claim(&self, session: &SessionId, expires_at: Option<u64>) -> Result<()> {
        let s = &self.settings;
        let now = epoch_secs(SystemTime::now());
        let mut request = self
            .client
            .put_item()
            .table_name(&s.table)
            .set_item(Some(s.names.to_claim(session, expires_at)))
            .expression_attribute_names("#sk", &s.names.turn_id)
            .expression_attribute_names("#owner", &s.names.owner)
            .expression_attribute_values(":owner", AttributeValue::S(owner_value(session)));
        // An expired claim that TTL has not deleted yet is no claim.
        request = if s.ttl_secs.is_some() {
            request
                .condition_expression(
                    "attribute_not_exists(#sk) OR #owner = :owner OR (attribute_exists(#ttl) AND #ttl <= :now)",
                )
                .expression_attribute_names("#ttl", &s.names.expires_at)
                .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
        } else {
            request.condition_expression("attribute_not_exists(#sk) OR #owner = :owner")
        };
        let result = request
            .customize()
            .config_override(Config::builder().retry_config(RetryConfig::disabled()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Err(Error::forbidden(session))
            }
            Err(e) => Err(sdk_error("PutItem", &s.table, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 0..20 {
            let cap = Duration::from_millis(50 << attempt.min(10)).min(Duration::from_secs(2));
            assert!(backoff(attempt) <= cap);
        }
    }
}
