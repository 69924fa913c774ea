//! Soak against `DynamoDbHistory` on moto's DynamoDB server: 1,000 asks over 100 sessions, at
//! least 50 in flight at once, the same faults and invariants as the in-memory soak
//! (`support/soak.rs`), every turn written and read back through the real SDK client.
//!
//! The endpoint comes from `RAG_TEST_DYNAMODB_ENDPOINT`, which `scripts/test.sh` sets after
//! starting moto with `scripts/moto.sh`; without it the test fails and says how to run it.

#[path = "support/soak.rs"]
mod soak;

use std::sync::Arc;
use std::time::Duration;

use rag::dynamodb::aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use rag::dynamodb::aws_sdk_dynamodb::{Client, Config};
use rag::dynamodb::DynamoDbHistory;
use rag::pipeline::Timeouts;
use rag::{HistoryStore, TurnId};
use soak::SoakConfig;

const ENDPOINT_VAR: &str = "RAG_TEST_DYNAMODB_ENDPOINT";

/// The endpoint; a failure (never a silent skip) telling how to run the test when unset.
fn endpoint() -> String {
    match std::env::var(ENDPOINT_VAR) {
        Ok(url) if !url.trim().is_empty() => url.trim().to_owned(),
        _ => panic!(
            "{ENDPOINT_VAR} is not set: the DynamoDB soak needs moto's server on loopback. \
             Run the project's test command `scripts/test.sh`, or start one with \
             `scripts/moto.sh start` and run \
             `{ENDPOINT_VAR}=$(cat target/moto.endpoint) cargo test --features dynamodb --test soak_dynamodb`"
        ),
    }
}

/// The real SDK client on the test endpoint, with test credentials and a fixed region.
fn client(url: &str) -> Client {
    let config = Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .endpoint_url(url)
        .build();
    Client::from_conf(config)
}

#[test]
fn soak_1k_asks_on_dynamodb_with_faults_keeps_every_invariant() {
    let url = endpoint();
    let mut config = SoakConfig::new("DynamoDbHistory on moto", 100, 10);
    config.min_in_flight = 50;
    // moto answers in milliseconds to tens of milliseconds under this load: the history
    // limits leave room for it, so a save is never counted unsaved after moto stored it.
    config.timeouts = Timeouts {
        history: Some(Duration::from_secs(10)),
        save: Some(Duration::from_secs(10)),
        ..config.timeouts
    };
    soak::run(config, || async move {
        let table = format!("rag-soak-{}", TurnId::new());
        let store = DynamoDbHistory::builder(table)
            .with_client(client(&url))
            .build()
            .expect("valid configuration");
        let created = store
            .create_table_if_missing()
            .await
            .unwrap_or_else(|e| panic!("create table {}: {e}", store.table_name()));
        assert!(created, "a fresh table is created for each run");
        Arc::new(store) as Arc<dyn HistoryStore>
    });
}
