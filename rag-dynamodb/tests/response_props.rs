//! Property tests of DynamoDB's responses: whatever a Query or PutItem answer holds (random
//! bytes, random JSON, Query pages of random items in DynamoDB's JSON, error statuses), read by
//! the real SDK client from a loopback server, `load` and `append` return turns or a typed
//! history error, never a panic or a hang.

#[allow(dead_code)]
mod support;

use std::time::Duration;

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rag_core::{Error, HistoryStore, SessionId, Turn};
use rag_dynamodb::aws_sdk_dynamodb::config::retry::RetryConfig;
use rag_dynamodb::aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use rag_dynamodb::aws_sdk_dynamodb::{Client, Config};
use rag_dynamodb::DynamoDbHistory;
use serde_json::{json, Map, Value};

/// Cases per property: each is a request or a few to a loopback server.
const CASES: u32 = 64;
/// Longer than any case may take: reaching it is a hang.
const CASE_LIMIT: Duration = Duration::from_secs(10);
/// Turns a case asks `load` for.
const MAX_TURNS: usize = 5;

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            btree_map("[A-Za-z_]{0,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Text of a DynamoDB Number, valid or not.
fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "-?[0-9]{1,16}(\\.[0-9]{1,6})?",
        1 => "[0-9eE+.-]{0,12}",
    ]
}

/// An attribute value in DynamoDB's JSON: `{"S": ..}`, `{"N": ..}`, sets, lists, maps.
fn attribute_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<String>().prop_map(|s| json!({ "S": s })),
        number_text().prop_map(|n| json!({ "N": n })),
        "[A-Za-z0-9+/]{0,12}={0,2}".prop_map(|b| json!({ "B": b })),
        any::<bool>().prop_map(|b| json!({ "BOOL": b })),
        Just(json!({ "NULL": true })),
        vec(any::<String>(), 0..3).prop_map(|v| json!({ "SS": v })),
        vec(number_text(), 0..3).prop_map(|v| json!({ "NS": v })),
        any_json(),
    ];
    leaf.prop_recursive(2, 12, 3, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..3).prop_map(|v| json!({ "L": v })),
            btree_map("[a-z_]{0,8}", inner, 0..3)
                .prop_map(|m| json!({ "M": Value::Object(m.into_iter().collect()) })),
        ]
    })
}

/// The hyphenated text of the UUID whose bits are `n`.
fn uuid_text(n: u128) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        n >> 96,
        (n >> 80) & 0xffff,
        (n >> 64) & 0xffff,
        (n >> 48) & 0xffff,
        n & 0xffff_ffff_ffff
    )
}

/// A stored turn as a Query page item: each attribute mostly of the right kind.
fn item() -> impl Strategy<Value = Value> {
    let mostly = |right: BoxedStrategy<Value>| -> BoxedStrategy<Value> {
        prop_oneof![9 => right, 1 => attribute_value()].boxed()
    };
    let text = || mostly(any::<String>().prop_map(|s| json!({ "S": s })).boxed());
    (
        text(),
        mostly(
            any::<u128>()
                .prop_map(|n| json!({ "S": uuid_text(n) }))
                .boxed(),
        ),
        text(),
        text(),
        mostly(number_text().prop_map(|n| json!({ "N": n })).boxed()),
        proptest::option::of(attribute_value()),
    )
        .prop_map(
            |(session, turn_id, question, answer, created_at, expires)| {
                let mut item = Map::new();
                item.insert("session_id".into(), session);
                item.insert("turn_id".into(), turn_id);
                item.insert("question".into(), question);
                item.insert("answer".into(), answer);
                item.insert("created_at".into(), created_at);
                if let Some(expires) = expires {
                    item.insert("expires_at".into(), expires);
                }
                Value::Object(item)
            },
        )
}

/// A Query response page.
fn query_page() -> impl Strategy<Value = Value> {
    (
        vec(item(), 0..8),
        proptest::option::weighted(0.2, item()),
        0i64..20,
    )
        .prop_map(|(items, last_key, scanned)| {
            let mut page = json!({
                "Items": items,
                "Count": items.len(),
                "ScannedCount": scanned,
            });
            if let Some(key) = last_key {
                page["LastEvaluatedKey"] = key;
            }
            page
        })
}

/// An error body as DynamoDB sends it, with a known or unknown type.
fn error_body() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            proptest::sample::select(vec![
                "ProvisionedThroughputExceededException",
                "ThrottlingException",
                "ResourceNotFoundException",
                "ConditionalCheckFailedException",
                "ValidationException",
                "InternalServerError",
                "RequestLimitExceeded",
            ])
            .prop_map(String::from),
            "[A-Za-z]{0,16}",
        ],
        any::<String>(),
    )
        .prop_map(|(kind, message)| {
            let kind = format!("com.amazonaws.dynamodb.v20120810#{kind}");
            json!({ "__type": kind, "message": message }).to_string()
        })
}

/// A status: mostly 200, else an error status.
fn status() -> impl Strategy<Value = u16> {
    prop_oneof![4 => Just(200u16), 1 => 400u16..600, 1 => Just(400u16)]
}

/// A body: a Query page, an error body, random JSON or random text.
fn body() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => query_page().prop_map(|v| v.to_string()),
        2 => error_body(),
        1 => any_json().prop_map(|v| v.to_string()),
        1 => any::<String>(),
    ]
}

/// One answer: mostly a 200 Query page, else any status with any body.
fn answer() -> impl Strategy<Value = (u16, String)> {
    prop_oneof![
        3 => query_page().prop_map(|page| (200, page.to_string())),
        2 => (status(), body()),
    ]
}

fn store(endpoint: &str) -> DynamoDbHistory {
    let config = Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .endpoint_url(endpoint)
        .retry_config(RetryConfig::disabled())
        .build();
    DynamoDbHistory::try_from((Client::from_conf(config), "scripted")).unwrap()
}

fn typed(result: &Result<(), Error>) -> Result<(), TestCaseError> {
    match result {
        Ok(()) => Ok(()),
        Err(Error::History { message, .. }) => {
            prop_assert!(!message.is_empty());
            Ok(())
        }
        // The claim's conditional put refused: the session is someone else's.
        Err(Error::Forbidden { message }) => {
            prop_assert!(!message.is_empty());
            Ok(())
        }
        Err(other) => Err(TestCaseError::fail(format!(
            "not a history error: {other:?}"
        ))),
    }
}

fn run<T>(call: impl std::future::Future<Output = T>) -> Result<T, TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        tokio::time::timeout(CASE_LIMIT, call)
            .await
            .map_err(|_| TestCaseError::fail(format!("no answer within {CASE_LIMIT:?}")))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn any_query_answer_loads_turns_or_a_typed_error(
        pages in vec(answer(), 1..4),
    ) {
        // Paging past the scripted pages reaches a closed server: a typed error too.
        let endpoint = support::scripted_server(pages);
        let store = store(&endpoint);
        let session = SessionId::new("s").unwrap();
        let result = run(store.load(&session, MAX_TURNS))?;
        match result {
            Ok(turns) => {
                prop_assert!(turns.len() <= MAX_TURNS);
            }
            Err(err) => typed(&Err(err))?,
        }
    }

    #[test]
    fn any_put_answer_appends_or_gives_a_typed_error(status in status(), body in body()) {
        let endpoint = support::scripted_server(vec![(status, body.clone())]);
        let store = store(&endpoint);
        let session = SessionId::new("s").unwrap();
        let result = run(store.append(&session, &Turn::new("q", "a")))?;
        if status != 200 {
            // A failed write never reads as written, except the "already stored" answer.
            let already = body.contains("ConditionalCheckFailedException");
            prop_assert!(result.is_err() || already, "{} {}: {:?}", status, body, result);
        }
        typed(&result)?;
    }
}

#[test]
fn a_well_formed_page_loads_its_turns() {
    // The same path the properties take, with a known answer: the harness itself is sound.
    let id = uuid_text(0x0190_0000_0000_7000_8000_0000_0000_0001);
    let page = json!({"Items": [{
        "session_id": {"S": "s"}, "turn_id": {"S": id}, "question": {"S": "q"},
        "answer": {"S": "a"}, "created_at": {"N": "1700000000123"}
    }], "Count": 1, "ScannedCount": 1});
    let endpoint = support::scripted_server(vec![(200, page.to_string())]);
    let turns = run(store(&endpoint).load(&SessionId::new("s").unwrap(), MAX_TURNS))
        .unwrap()
        .unwrap();
    assert_eq!(turns.len(), 1);
    assert_eq!(turns[0].id.to_string(), id);
    assert_eq!(
        (turns[0].question.as_str(), turns[0].answer.as_str()),
        ("q", "a")
    );
}

#[test]
fn a_service_repeating_its_last_evaluated_key_ends_paging_with_an_error() {
    // Found while writing `any_query_answer_loads_turns_or_a_typed_error`: empty pages that
    // hand back the key they were sent kept `load` paging for as long as the service answered.
    let key = json!({"session_id": {"S": "s"}, "turn_id": {"S": uuid_text(7)}});
    let page = json!({"Items": [], "Count": 0, "ScannedCount": 3, "LastEvaluatedKey": key});
    let endpoint = support::scripted_server(vec![(200, page.to_string()); 50]);
    let err = run(store(&endpoint).load(&SessionId::new("s").unwrap(), MAX_TURNS))
        .unwrap()
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(err.to_string().contains("LastEvaluatedKey"), "{err}");
}
