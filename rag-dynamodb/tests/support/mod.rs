//! The DynamoDB endpoint under test and fresh tables on it.

use std::collections::HashMap;

use rag_core::{SessionId, TurnId};
use rag_dynamodb::aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use rag_dynamodb::aws_sdk_dynamodb::types::AttributeValue;
use rag_dynamodb::aws_sdk_dynamodb::{Client, Config};
use rag_dynamodb::{DynamoDbHistory, DynamoDbHistoryBuilder};

/// The variable naming the DynamoDB-compatible endpoint the tests run against.
pub(crate) const ENDPOINT_VAR: &str = "RAG_TEST_DYNAMODB_ENDPOINT";

/// The endpoint; a failure (never a silent skip) telling how to run the tests when unset.
pub(crate) fn endpoint() -> String {
    match std::env::var(ENDPOINT_VAR) {
        Ok(url) if !url.trim().is_empty() => url.trim().to_owned(),
        _ => panic!(
            "{ENDPOINT_VAR} is not set: the DynamoDB tests need moto's server on loopback. \
             Run the project's test command `scripts/test.sh`, or start one with \
             `scripts/moto.sh start` and run \
             `{ENDPOINT_VAR}=$(cat target/moto.endpoint) cargo test -p rag-dynamodb`"
        ),
    }
}

/// The real SDK client, pointed at the test endpoint with test credentials.
pub(crate) fn client() -> Client {
    client_for(&endpoint())
}

/// The real SDK client pointed at `url`.
pub(crate) fn client_for(url: &str) -> Client {
    let config = Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .endpoint_url(url)
        .build();
    Client::from_conf(config)
}

/// A table name no other test uses.
pub(crate) fn table_name(label: &str) -> String {
    format!("rag-test-{label}-{}", TurnId::new())
}

/// A session id no other test uses.
pub(crate) fn session(label: &str) -> SessionId {
    SessionId::new(format!("{label}-{}", TurnId::new())).expect("valid session id")
}

/// A builder on a new table of its own.
pub(crate) fn builder(label: &str) -> DynamoDbHistoryBuilder {
    DynamoDbHistory::builder(table_name(label)).with_client(client())
}

/// Builds the store and creates its table.
pub(crate) async fn create(builder: DynamoDbHistoryBuilder) -> DynamoDbHistory {
    let store = builder.build().expect("valid configuration");
    let created = store
        .create_table_if_missing()
        .await
        .unwrap_or_else(|e| panic!("create table {}: {e}", store.table_name()));
    assert!(created, "a fresh table name is created");
    store
}

/// Every item of `session` as stored, read with the SDK directly (expired ones included).
pub(crate) async fn raw_items(
    store: &DynamoDbHistory,
    session: &SessionId,
) -> Vec<HashMap<String, AttributeValue>> {
    let names = store.attribute_names();
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let out = store
            .client()
            .query()
            .table_name(store.table_name())
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", &names.session)
            .expression_attribute_values(":pk", AttributeValue::S(session.to_string()))
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("raw query");
        // Turn items only: the session's claim item (who owns it) is not a turn.
        items.extend(out.items.unwrap_or_default().into_iter().filter(|item| {
            !matches!(item.get(&names.turn_id), Some(AttributeValue::S(sk)) if sk == rag_dynamodb::CLAIM_SORT_KEY)
        }));
        match out.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return items,
        }
    }
}

/// Counts the Query operations a client sends (each page is one).
#[derive(Debug, Default, Clone)]
pub(crate) struct QueryCounter(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl QueryCounter {
    /// Queries sent so far.
    pub(crate) fn get(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl rag_dynamodb::aws_sdk_dynamodb::config::Intercept for QueryCounter {
    fn name(&self) -> &'static str {
        "QueryCounter"
    }

    fn read_before_execution(
        &self,
        context: &rag_dynamodb::aws_sdk_dynamodb::config::interceptors::BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut rag_dynamodb::aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), rag_dynamodb::aws_sdk_dynamodb::error::BoxError> {
        if context
            .input()
            .downcast_ref::<rag_dynamodb::aws_sdk_dynamodb::operation::query::QueryInput>()
            .is_some()
        {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(())
    }
}

/// A client on the test endpoint that counts its Query operations.
pub(crate) fn counting_client() -> (Client, QueryCounter) {
    let counter = QueryCounter::default();
    let config = Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .endpoint_url(endpoint())
        .interceptor(counter.clone())
        .build();
    (Client::from_conf(config), counter)
}

/// A loopback HTTP server answering every request with the next scripted `(status, body)`,
/// for service errors moto never sends (throttling, 5xx). Returns its endpoint.
pub(crate) fn scripted_server(responses: Vec<(u16, String)>) -> String {
    scripted_server_counted(responses).0
}

/// [`scripted_server`], with the number of requests it answered (each on its own connection).
pub(crate) fn scripted_server_counted(
    responses: Vec<(u16, String)>,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Read, Write};

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = answered.clone();
    std::thread::spawn(move || {
        for (status, body) in responses {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut reader = BufReader::new(stream);
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut request = vec![0; length];
            let _ = reader.read_exact(&mut request);
            let response = format!(
                "HTTP/1.1 {status} Scripted\r\nContent-Type: application/x-amz-json-1.0\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = reader.get_mut().write_all(response.as_bytes());
        }
    });
    (endpoint, answered)
}
