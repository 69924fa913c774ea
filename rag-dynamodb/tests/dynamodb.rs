//! `DynamoDbHistory` through the real SDK client against a DynamoDB-compatible server on
//! loopback (moto's, started by `scripts/moto.sh start`; see `support::endpoint`).

mod support;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::join_all;
use rag_core::testing::{conformance, PlainTemplate, ScriptedGenerator};
use rag_core::{Ask, Error, HistoryStore, Pipeline, Prompt, SessionId, Turn, TurnId};
use rag_dynamodb::aws_sdk_dynamodb::config::retry::RetryConfig;
use rag_dynamodb::aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use rag_dynamodb::aws_sdk_dynamodb::types::{AttributeValue, BillingMode, TimeToLiveStatus};
use rag_dynamodb::aws_sdk_dynamodb::{Client, Config};
use rag_dynamodb::{item_size, AttributeNames, DynamoDbHistory, MAX_ITEM_BYTES};
use support::{builder, create, raw_items, session};

fn numbered(n: usize, label: &str) -> Vec<Turn> {
    (0..n)
        .map(|i| {
            Turn::new(
                format!("{label} question {i}"),
                format!("{label} answer {i}"),
            )
        })
        .collect()
}

fn ids(turns: &[Turn]) -> Vec<TurnId> {
    turns.iter().map(|t| t.id).collect()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_history_store_conformance_suite() {
    let store = create(builder("conformance")).await;
    conformance::history_store(&store).await;
    let boxed: Box<dyn HistoryStore> = Box::new(store.clone());
    conformance::history_store(&boxed).await;
    conformance::history_store(boxed.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_suite_with_small_pages_and_a_ttl() {
    let store = create(
        builder("conformance-paged")
            .with_page_size(2)
            .with_ttl(Duration::from_secs(3600)),
    )
    .await;
    conformance::history_store(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_append_stays_one_turn_and_is_never_overwritten() {
    let store = create(builder("retry")).await;
    let s = session("retry");
    let turn = Turn::new("asked once", "answered once");
    store.append(&s, &turn).await.unwrap();
    // Retries after a lost response, some at the same moment.
    store.append(&s, &turn).await.unwrap();
    let retries = join_all((0..8).map(|_| store.append(&s, &turn))).await;
    assert!(retries.iter().all(Result::is_ok), "{retries:?}");
    let mut changed = turn.clone();
    changed.answer = "another answer under the same id".into();
    store.append(&s, &changed).await.unwrap();

    let items = raw_items(&store, &s).await;
    assert_eq!(items.len(), 1, "one item for one turn id");
    assert_eq!(
        items[0].get("answer"),
        Some(&AttributeValue::S("answered once".into())),
        "the first write is kept"
    );
    assert_eq!(store.load(&s, 10).await.unwrap(), vec![turn]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_appends_are_all_present_in_order() {
    let store = create(builder("concurrent")).await;
    let s = session("concurrent");
    let all = numbered(50, "concurrent");
    let mut shuffled = all.clone();
    fastrand::shuffle(&mut shuffled);
    let tasks: Vec<_> = shuffled
        .into_iter()
        .map(|turn| {
            let (store, s) = (store.clone(), s.clone());
            tokio::spawn(async move { store.append(&s, &turn).await })
        })
        .collect();
    for task in join_all(tasks).await {
        task.expect("task").expect("append");
    }
    let loaded = store.load(&s, 100).await.unwrap();
    assert_eq!(loaded, all, "every turn once, in ask order");
    assert_eq!(raw_items(&store, &s).await.len(), 50);
    assert_eq!(ids(&store.load(&s, 5).await.unwrap()), ids(&all[45..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_never_see_each_others_turns() {
    let store = create(builder("isolation")).await;
    // One id a prefix of the other: keys are compared whole.
    let a = session("iso");
    let b = SessionId::new(format!("{a}-1")).unwrap();
    let ta = numbered(4, "a");
    let tb = numbered(3, "b");
    for (x, y) in ta.iter().zip(tb.iter()) {
        store.append(&a, x).await.unwrap();
        store.append(&b, y).await.unwrap();
    }
    store.append(&a, &ta[3]).await.unwrap();
    assert_eq!(store.load(&a, 10).await.unwrap(), ta);
    assert_eq!(store.load(&b, 10).await.unwrap(), tb);

    // The same session id in another table is another conversation.
    let other = create(builder("isolation-other")).await;
    assert!(other.load(&a, 10).await.unwrap().is_empty());

    store.clear(&b).await.unwrap();
    assert_eq!(store.load(&a, 10).await.unwrap(), ta, "clear of b leaves a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_windows_are_right_across_pages() {
    let table = support::table_name("pages");
    let (client, queries) = support::counting_client();
    let store = create(
        DynamoDbHistory::builder(&table)
            .with_client(client)
            .with_page_size(3),
    )
    .await;
    let s = session("pages");
    let all = numbered(10, "pages");
    for turn in &all {
        store.append(&s, turn).await.unwrap();
    }
    for n in [1, 2, 3, 4, 6, 9, 10, 11, 100, usize::MAX] {
        let before = queries.get();
        let loaded = store.load(&s, n).await.unwrap();
        let expected = &all[10 - n.min(10)..];
        assert_eq!(
            loaded, expected,
            "load({n}) is the newest {n}, oldest first"
        );
        let pages = queries.get() - before;
        assert!(
            pages >= n.min(10).div_ceil(3),
            "load({n}) read {pages} pages of 3"
        );
    }
    assert!(store.load(&s, 0).await.unwrap().is_empty());

    // The default page size reads n items in one request.
    let single = DynamoDbHistory::builder(&table)
        .with_client(support::client())
        .build()
        .unwrap();
    assert_eq!(single.load(&s, 4).await.unwrap(), &all[6..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_turns_load_whole_across_response_pages() {
    // Five turns of ~300 KB: more than one 1 MB response page on DynamoDB.
    let store = create(builder("big")).await;
    let s = session("big");
    let all: Vec<Turn> = (0..5)
        .map(|i| {
            Turn::new(
                format!("q{i}"),
                char::from(b'a' + i as u8).to_string().repeat(300_000),
            )
        })
        .collect();
    for turn in &all {
        store.append(&s, turn).await.unwrap();
    }
    assert_eq!(store.load(&s, 5).await.unwrap(), all);
    assert_eq!(store.load(&s, 2).await.unwrap(), &all[3..]);
}

/// Writes `turn` straight through the SDK, expiring at `expires_at` (epoch seconds).
async fn put_raw(store: &DynamoDbHistory, s: &SessionId, turn: &Turn, expires_at: u64) {
    let millis = turn
        .created_at
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let item = HashMap::from([
        ("session_id".to_owned(), AttributeValue::S(s.to_string())),
        ("turn_id".to_owned(), AttributeValue::S(turn.id.to_string())),
        (
            "question".to_owned(),
            AttributeValue::S(turn.question.clone()),
        ),
        ("answer".to_owned(), AttributeValue::S(turn.answer.clone())),
        (
            "created_at".to_owned(),
            AttributeValue::N(millis.to_string()),
        ),
        (
            "expires_at".to_owned(),
            AttributeValue::N(expires_at.to_string()),
        ),
    ]);
    store
        .client()
        .put_item()
        .table_name(store.table_name())
        .set_item(Some(item))
        .send()
        .await
        .expect("raw put");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_turns_are_filtered_and_the_window_still_filled() {
    let table = support::table_name("expired");
    let store = create(
        DynamoDbHistory::builder(&table)
            .with_client(support::client())
            .with_page_size(2),
    )
    .await;
    let s = session("expired");
    let mut all = numbered(10, "expired");
    for turn in &mut all {
        // Whole milliseconds, as the raw writer stores them.
        let ms = turn
            .created_at
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        turn.created_at = UNIX_EPOCH + Duration::from_millis(ms);
    }
    let expired = [2, 5, 8, 9];
    for (i, turn) in all.iter().enumerate() {
        let at = if expired.contains(&i) {
            now_secs() - 60
        } else {
            now_secs() + 3600
        };
        put_raw(&store, &s, turn, at).await;
    }
    let live: Vec<Turn> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| !expired.contains(i))
        .map(|(_, t)| t.clone())
        .collect();
    assert_eq!(
        store.load(&s, 3).await.unwrap(),
        &live[3..],
        "newest 3 live"
    );
    assert_eq!(store.load(&s, 100).await.unwrap(), live);
    assert_eq!(store.load(&s, 1).await.unwrap(), &live[5..]);
    let one_page = DynamoDbHistory::builder(&table)
        .with_client(support::client())
        .build()
        .unwrap();
    assert_eq!(one_page.load(&s, 3).await.unwrap(), &live[3..]);

    store.clear(&s).await.unwrap();
    assert!(
        raw_items(&store, &s).await.is_empty(),
        "clear removes expired items too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_is_set_on_each_turn_and_enabled_on_the_table() {
    let store = create(builder("ttl").with_ttl(Duration::from_secs(3600))).await;
    let s = session("ttl");
    let before = now_secs();
    store.append(&s, &Turn::new("q", "a")).await.unwrap();
    let after = now_secs();
    let items = raw_items(&store, &s).await;
    let Some(AttributeValue::N(expires)) = items[0].get("expires_at") else {
        panic!("no expires_at in {:?}", items[0]);
    };
    let expires: u64 = expires.parse().unwrap();
    assert!(
        (before + 3600..=after + 3600).contains(&expires),
        "{expires} is an hour from {before}"
    );
    let ttl = store
        .client()
        .describe_time_to_live()
        .table_name(store.table_name())
        .send()
        .await
        .unwrap();
    let ttl = ttl.time_to_live_description().expect("ttl description");
    assert_eq!(ttl.attribute_name(), Some("expires_at"));
    assert!(matches!(
        ttl.time_to_live_status(),
        Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
    ));
    // Without a TTL no expiry is written.
    let plain = DynamoDbHistory::builder(store.table_name())
        .with_client(support::client())
        .build()
        .unwrap();
    let s2 = session("no-ttl");
    plain.append(&s2, &Turn::new("q", "a")).await.unwrap();
    assert!(!raw_items(&plain, &s2).await[0].contains_key("expires_at"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_deletes_every_turn_in_batches_and_pages() {
    let store = create(builder("clear").with_page_size(40)).await;
    let s = session("clear");
    let keep = session("keep");
    let all = numbered(60, "clear");
    let appends = join_all(all.iter().map(|t| store.append(&s, t))).await;
    assert!(appends.iter().all(Result::is_ok));
    for turn in numbered(3, "keep") {
        store.append(&keep, &turn).await.unwrap();
    }
    assert_eq!(raw_items(&store, &s).await.len(), 60);
    store.clear(&s).await.unwrap();
    assert!(
        raw_items(&store, &s).await.is_empty(),
        "60 turns: pages of 40, batches of 25"
    );
    assert!(store.load(&s, 100).await.unwrap().is_empty());
    assert_eq!(store.load(&keep, 10).await.unwrap().len(), 3);
    store.clear(&s).await.expect("clear of an empty session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_turn_is_an_error_and_nothing_is_written() {
    let store = create(builder("oversized")).await;
    let s = session("oversized");
    let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
    let mut small = Turn::new("the question", "a");
    small.created_at = at;
    store.append(&s, &small).await.unwrap();
    let stored = raw_items(&store, &s).await;
    let overhead = item_size(&stored[0]) - small.answer.len();

    // Near the limit: stored, and read back whole. (moto caps items at 405,000 bytes, a
    // little under DynamoDB's 409,600, so the exact boundary is checked by unit tests.)
    let mut fits = Turn::new(
        "the question",
        "y".repeat(MAX_ITEM_BYTES - overhead - 5_000),
    );
    fits.created_at = at;
    store
        .append(&s, &fits)
        .await
        .expect("a turn of 400 KB less 5,000 bytes");
    assert_eq!(store.load(&s, 1).await.unwrap(), vec![fits]);

    // One byte more: a clear error before the write.
    let mut too_big = Turn::new("the question", "z".repeat(MAX_ITEM_BYTES - overhead + 1));
    too_big.created_at = at;
    match store.append(&s, &too_big).await {
        Err(Error::InvalidInput { field, message }) => {
            assert_eq!(field, "turn");
            assert!(message.contains("409601 bytes"), "{message}");
        }
        other => panic!("expected an invalid turn, got {other:?}"),
    }
    let items = raw_items(&store, &s).await;
    assert_eq!(items.len(), 2, "nothing written for the oversized turn");
    assert!(store
        .load(&s, 10)
        .await
        .unwrap()
        .iter()
        .all(|t| t.id != too_big.id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_table_is_a_clear_permanent_error() {
    let store = builder("missing").build().unwrap();
    let s = session("missing");
    for err in [
        store.load(&s, 5).await.unwrap_err(),
        store.append(&s, &Turn::new("q", "a")).await.unwrap_err(),
        store.clear(&s).await.unwrap_err(),
    ] {
        assert!(matches!(err, Error::History { .. }), "{err:?}");
        assert!(!err.is_retryable(), "{err}");
        let text = err.to_string();
        assert!(text.contains(store.table_name()), "{text}");
        assert!(text.contains("ResourceNotFoundException"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_is_retryable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The listener is closed: nothing answers on that port.
    let config = Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .retry_config(RetryConfig::disabled())
        .build();
    let store = DynamoDbHistory::try_from((Client::from_conf(config), "unreachable")).unwrap();
    let err = store.load(&session("down"), 3).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(
        err.to_string().contains("could not reach DynamoDB"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_table_is_idempotent_and_checks_the_keys() {
    let store = create(builder("create")).await;
    assert!(
        !store.create_table_if_missing().await.unwrap(),
        "exists already"
    );
    let described = store
        .client()
        .describe_table()
        .table_name(store.table_name())
        .send()
        .await
        .unwrap();
    let billing = described
        .table()
        .and_then(|t| t.billing_mode_summary())
        .and_then(|b| b.billing_mode());
    assert_eq!(billing, Some(&BillingMode::PayPerRequest), "on-demand");
    let mismatched = DynamoDbHistory::builder(store.table_name())
        .with_client(support::client())
        .with_attribute_names(AttributeNames {
            session: "pk".into(),
            turn_id: "sk".into(),
            ..AttributeNames::default()
        })
        .build()
        .unwrap();
    match mismatched.create_table_if_missing().await {
        Err(Error::Config { message }) => assert!(message.contains("`pk`"), "{message}"),
        other => panic!("expected a config error, got {other:?}"),
    }

    // Custom names on a table of their own work end to end.
    let custom = create(builder("custom").with_attribute_names(AttributeNames {
        session: "pk".into(),
        turn_id: "sk".into(),
        question: "q".into(),
        answer: "a".into(),
        created_at: "t".into(),
        expires_at: "ttl".into(),
        owner: "o".into(),
    }))
    .await;
    let s = session("custom");
    let turn = Turn::new("question", "answer");
    custom.append(&s, &turn).await.unwrap();
    assert_eq!(custom.load(&s, 1).await.unwrap(), vec![turn]);
    assert!(raw_items(&custom, &s).await[0].contains_key("sk"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelines_second_prompt_holds_the_first_turn_read_back_from_dynamodb() {
    let store = create(builder("pipeline")).await;
    let s = session("pipeline");

    // Machine one answers the first question.
    let first = ScriptedGenerator::new(["Lambda ", "runs ", "code."]);
    let pipeline = Pipeline::builder()
        .with_generator(first.clone())
        .with_template(PlainTemplate::default())
        .with_history(store.clone())
        .build()
        .unwrap();
    let answer = pipeline
        .ask(Ask::new(s.clone(), "What is Lambda?"))
        .text()
        .await
        .unwrap();
    assert_eq!(answer, "Lambda runs code.");
    pipeline.flush().await;

    // Machine two, with its own store on the same table, answers the follow-up.
    let other = DynamoDbHistory::builder(store.table_name())
        .with_client(support::client())
        .build()
        .unwrap();
    let saved = other.load(&s, 10).await.unwrap();
    assert_eq!(saved.len(), 1);
    assert_eq!(saved[0].question, "What is Lambda?");
    assert_eq!(saved[0].answer, "Lambda runs code.");

    let second = ScriptedGenerator::new(["On ", "demand."]);
    let pipeline = Pipeline::builder()
        .with_generator(second.clone())
        .with_template(PlainTemplate::default())
        .with_history(other.clone())
        .build()
        .unwrap();
    pipeline
        .ask(Ask::new(s.clone(), "How does it scale?"))
        .text()
        .await
        .unwrap();
    pipeline.flush().await;
    let prompts = second.probe().prompts();
    let Some(Prompt::Text(prompt)) = prompts.first() else {
        panic!("expected a text prompt, got {prompts:?}");
    };
    assert!(
        prompt.contains("Q: What is Lambda?\nA: Lambda runs code.\n"),
        "the first turn is in the second prompt: {prompt:?}"
    );
    assert!(
        prompt.ends_with("Question: How does it scale?\n"),
        "{prompt:?}"
    );
    let history = store.load(&s, 10).await.unwrap();
    assert_eq!(
        history
            .iter()
            .map(|t| t.question.as_str())
            .collect::<Vec<_>>(),
        ["What is Lambda?", "How does it scale?"]
    );
}

#[tokio::test]
#[ignore = "requires AWS credentials"]
async fn live_dynamodb_passes_the_conformance_suite() {
    let table = std::env::var("RAG_LIVE_DYNAMODB_TABLE")
        .unwrap_or_else(|_| "rag-dynamodb-live-test".to_owned());
    let store = DynamoDbHistory::builder(table)
        .with_ttl(Duration::from_secs(3600))
        .build_from_env()
        .await
        .unwrap();
    store.create_table_if_missing().await.unwrap();
    conformance::history_store(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_errors_on_the_wire_are_classified() {
    let error = |code: &str, message: &str| {
        format!(r#"{{"__type":"com.amazonaws.dynamodb.v20120810#{code}","message":"{message}"}}"#)
    };
    let cases = [
        (400, error("ThrottlingException", "Rate exceeded"), true),
        (
            400,
            error(
                "ProvisionedThroughputExceededException",
                "The level of configured provisioned throughput for the table was exceeded",
            ),
            true,
        ),
        (
            400,
            error(
                "RequestLimitExceeded",
                "Throughput exceeds the account limit",
            ),
            true,
        ),
        (
            500,
            error("InternalServerError", "Internal server error"),
            true,
        ),
        (503, String::new(), true),
        (
            400,
            error(
                "ValidationException",
                "One or more parameter values were invalid",
            ),
            false,
        ),
        (
            400,
            error(
                "AccessDeniedException",
                "not authorized to perform: dynamodb:Query",
            ),
            false,
        ),
    ];
    let endpoint =
        support::scripted_server(cases.iter().map(|(s, b, _)| (*s, b.clone())).collect());
    let config = Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .endpoint_url(endpoint)
        .retry_config(RetryConfig::disabled())
        .build();
    let store = DynamoDbHistory::try_from((Client::from_conf(config), "scripted")).unwrap();
    let s = session("scripted");
    for (status, body, retryable) in &cases {
        let err = store.load(&s, 3).await.unwrap_err();
        assert_eq!(err.is_retryable(), *retryable, "{status} {body}: {err}");
        let text = err.to_string();
        if let Some(message) = body.split(r#""message":""#).nth(1) {
            let message = message.trim_end_matches("\"}");
            assert!(text.contains(message), "service message kept: {text}");
        }
    }
}

/// A turn id from a clock `offset` ahead of this host's.
fn id_from_a_clock_ahead_by(offset: Duration) -> TurnId {
    let at = SystemTime::now() + offset;
    let since = at.duration_since(SystemTime::UNIX_EPOCH).unwrap();
    let ts = uuid::Timestamp::from_unix(uuid::NoContext, since.as_secs(), since.subsec_nanos());
    TurnId::from(uuid::Uuid::new_v7(ts))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turns_asked_on_hosts_with_skewed_clocks_stay_in_the_order_they_were_asked() {
    let store = create(builder("skew")).await;
    let s = session("skew");
    // Host one, whose clock runs ten minutes ahead, saved the first turn.
    let first = Turn {
        id: id_from_a_clock_ahead_by(Duration::from_secs(600)),
        question: "What is Lambda?".into(),
        answer: "A compute service.".into(),
        created_at: SystemTime::now(),
    };
    store.append(&s, &first).await.unwrap();
    // Host two, with the right time, answers the follow-up through its own store.
    let other = DynamoDbHistory::builder(store.table_name())
        .with_client(support::client())
        .build()
        .unwrap();
    let pipeline = Pipeline::builder()
        .with_generator(ScriptedGenerator::new(["On ", "demand."]))
        .with_template(PlainTemplate::default())
        .with_history(other)
        .build()
        .unwrap();
    pipeline
        .ask(Ask::new(s.clone(), "How does it scale?"))
        .text()
        .await
        .unwrap();
    pipeline.flush().await;
    let turns = store.load(&s, 10).await.unwrap();
    let questions: Vec<&str> = turns.iter().map(|t| t.question.as_str()).collect();
    assert_eq!(questions, ["What is Lambda?", "How does it scale?"]);
    assert!(turns[1].id > first.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_is_sent_once_by_the_sdk_and_retried_by_the_pipeline() {
    let throttled = (
        400,
        r#"{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"Rate exceeded"}"#
            .to_owned(),
    );
    let (endpoint, answered) = support::scripted_server_counted(vec![throttled; 12]);
    // A client with the SDK's standard retries (3 attempts), as a service would build it.
    let config = Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .endpoint_url(endpoint)
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(1)),
        )
        .build();
    let store = DynamoDbHistory::try_from((Client::from_conf(config), "scripted")).unwrap();
    let err = store
        .append(&session("once"), &Turn::new("q", "a"))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(answered.load(std::sync::atomic::Ordering::SeqCst), 1);
    // Through a pipeline: its save policy's three attempts, not three times three.
    let pipeline = Pipeline::builder()
        .with_generator(ScriptedGenerator::new(["a"]))
        .with_template(PlainTemplate::default())
        .with_history(store)
        .with_save_retry(
            rag_core::RetryPolicy::attempts(3)
                .with_backoff(Duration::from_millis(1), Duration::from_millis(2)),
        )
        .with_history_turns(0)
        .build()
        .unwrap();
    let before = answered.load(std::sync::atomic::Ordering::SeqCst);
    let events: Vec<rag_core::Event> =
        futures::StreamExt::collect(pipeline.ask(Ask::new(session("once"), "q"))).await;
    assert!(
        events.iter().any(|e| matches!(
            e,
            rag_core::Event::Warning(rag_core::Warning::TurnNotSaved(_))
        )),
        "{events:?}"
    );
    pipeline.flush().await;
    // The load (the newest turn, for the order) is throttled too: three Query attempts by the
    // SDK, which owns the retries of reads; then three PutItems by the pipeline's save policy,
    // one SDK attempt each: 3 + 3, not 3 + 3 x 3.
    assert_eq!(
        answered.load(std::sync::atomic::Ordering::SeqCst) - before,
        6
    );
}
