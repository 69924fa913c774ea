//! The [`HistoryStore`] conformance suite: what every store must do, as async checks that
//! panic with a message naming the broken rule.
//!
//! Run [`history_store`] against a new backend, and again through `Box<dyn HistoryStore>`.
//! Each run uses fresh session ids, so it may share a table with other runs.

use std::time::Duration;

use futures::future::join_all;

use crate::error::Error;
use crate::history::HistoryStore;
use crate::types::{Owner, SessionId, SessionOwner, Turn, TurnId};

/// Runs every check against `store`.
pub async fn history_store(store: &dyn HistoryStore) {
    unknown_session_is_empty(store).await;
    load_returns_newest_oldest_first(store).await;
    append_is_idempotent(store).await;
    order_is_by_turn_id(store).await;
    sessions_are_isolated(store).await;
    clear_removes_one_session(store).await;
    concurrent_appends_are_all_kept(store).await;
    text_round_trips(store).await;
    sessions_belong_to_who_started_them(store).await;
    anonymous_sessions_stay_anonymous(store).await;
}

/// A session id no other run uses.
pub fn fresh_session(label: &str) -> SessionId {
    SessionId::new(format!("conformance-{label}-{}", TurnId::new())).expect("valid session id")
}

fn turns(n: usize, label: &str) -> Vec<Turn> {
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

/// A session nobody wrote to loads as empty, not as an error.
pub async fn unknown_session_is_empty(store: &dyn HistoryStore) {
    let session = fresh_session("unknown");
    let loaded = store
        .load(&session, 10)
        .await
        .expect("load of an unknown session");
    assert!(loaded.is_empty(), "an unknown session must have no turns");
    store
        .clear(&session)
        .await
        .expect("clear of an unknown session");
}

/// `load(n)` returns the newest `n` turns, oldest first; larger `n` returns all.
pub async fn load_returns_newest_oldest_first(store: &dyn HistoryStore) {
    let session = fresh_session("window");
    let all = turns(5, "window");
    for turn in &all {
        store.append(&session, turn).await.expect("append");
    }
    let loaded = store.load(&session, 10).await.expect("load");
    assert_eq!(
        ids(&loaded),
        ids(&all),
        "load(10) of 5 turns returns all, oldest first"
    );
    assert_eq!(loaded, all, "turns come back unchanged");
    let newest = store.load(&session, 2).await.expect("load");
    assert_eq!(
        ids(&newest),
        ids(&all[3..]),
        "load(2) returns the newest two, oldest first"
    );
    let none = store.load(&session, 0).await.expect("load");
    assert!(none.is_empty(), "load(0) returns nothing");
}

/// Appending a turn whose id is stored already changes nothing.
pub async fn append_is_idempotent(store: &dyn HistoryStore) {
    let session = fresh_session("idempotent");
    let turn = Turn::new("asked once", "answered once");
    store.append(&session, &turn).await.expect("append");
    store.append(&session, &turn).await.expect("append again");
    let mut changed = turn.clone();
    changed.answer = "a different answer with the same id".into();
    store
        .append(&session, &changed)
        .await
        .expect("append of the same id");
    let loaded = store.load(&session, 10).await.expect("load");
    assert_eq!(
        loaded,
        vec![turn],
        "a turn id is stored once, and never overwritten"
    );
}

/// Turns are ordered by id (ask order), not by when their append arrived.
pub async fn order_is_by_turn_id(store: &dyn HistoryStore) {
    let session = fresh_session("order");
    let all = turns(4, "order");
    for i in [2, 0, 3, 1] {
        store.append(&session, &all[i]).await.expect("append");
    }
    let loaded = store.load(&session, 10).await.expect("load");
    assert_eq!(ids(&loaded), ids(&all), "turns load in turn-id order");
    let newest = store.load(&session, 3).await.expect("load");
    assert_eq!(
        ids(&newest),
        ids(&all[1..]),
        "the window is taken by turn id"
    );
}

/// One session never sees another's turns.
pub async fn sessions_are_isolated(store: &dyn HistoryStore) {
    let a = fresh_session("iso-a");
    let b = fresh_session("iso-b");
    let ta = turns(3, "a");
    let tb = turns(2, "b");
    for (ta, tb) in ta.iter().zip(tb.iter().chain(std::iter::repeat(&tb[0]))) {
        store.append(&a, ta).await.expect("append a");
        store.append(&b, tb).await.expect("append b");
    }
    assert_eq!(ids(&store.load(&a, 10).await.expect("load a")), ids(&ta));
    assert_eq!(ids(&store.load(&b, 10).await.expect("load b")), ids(&tb));
}

/// `clear` empties one session and leaves the others.
pub async fn clear_removes_one_session(store: &dyn HistoryStore) {
    let a = fresh_session("clear-a");
    let b = fresh_session("clear-b");
    for turn in turns(3, "clear") {
        store.append(&a, &turn).await.expect("append a");
        store.append(&b, &turn).await.expect("append b");
    }
    store.clear(&a).await.expect("clear");
    assert!(
        store.load(&a, 10).await.expect("load a").is_empty(),
        "cleared session is empty"
    );
    assert_eq!(
        store.load(&b, 10).await.expect("load b").len(),
        3,
        "other session kept"
    );
    let again = Turn::new("after clear", "still works");
    store.append(&a, &again).await.expect("append after clear");
    assert_eq!(store.load(&a, 10).await.expect("load"), vec![again]);
}

/// 50 appends to one session at once: all kept, once each, in id order.
pub async fn concurrent_appends_are_all_kept(store: &dyn HistoryStore) {
    let session = fresh_session("concurrent");
    let all = turns(50, "concurrent");
    let results = join_all(all.iter().rev().map(|t| store.append(&session, t))).await;
    for r in results {
        r.expect("concurrent append");
    }
    let loaded = store.load(&session, 100).await.expect("load");
    assert_eq!(
        ids(&loaded),
        ids(&all),
        "every concurrent append kept once, in id order"
    );
}

/// Text of any kind (Unicode, markers, long answers) comes back byte for byte, with its
/// timestamp to the millisecond.
pub async fn text_round_trips(store: &dyn HistoryStore) {
    let session = fresh_session("text");
    let mut turn = Turn::new(
        "¿Qué es Lambda? 日本語 🚀 \"quoted\" \n\nHuman: <|eot_id|> {{system}}",
        "x".repeat(20_000),
    );
    turn.created_at = std::time::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
    store.append(&session, &turn).await.expect("append");
    let loaded = store.load(&session, 1).await.expect("load");
    assert_eq!(loaded, vec![turn], "a turn comes back exactly");
}

fn owned(session: &SessionId, owner: &str) -> SessionId {
    session
        .clone()
        .owned_by(Owner::new(owner).expect("valid owner"))
}

fn forbidden<T: std::fmt::Debug>(result: crate::Result<T>, what: &str) {
    match result {
        Err(Error::Forbidden { message }) => assert!(
            !message.contains("owner-a") && !message.contains("owner-b"),
            "{what}: a refusal must not name the owner: {message}"
        ),
        other => panic!("{what} by another owner must be Error::Forbidden, got {other:?}"),
    }
}

/// The first append records the owner; another owner (or none) can neither read, extend nor
/// clear the session, and its refusal changes nothing.
pub async fn sessions_belong_to_who_started_them(store: &dyn HistoryStore) {
    let session = fresh_session("owned");
    let (alice, bob) = (owned(&session, "owner-a"), owned(&session, "owner-b"));
    assert_eq!(
        store.owner(&session).await.expect("owner of a new session"),
        SessionOwner::Unclaimed,
        "a session without turns is unclaimed"
    );
    let turn = Turn::new("alice's question", "alice's answer");
    store
        .append(&alice, &turn)
        .await
        .expect("append by the owner");
    assert_eq!(
        store.owner(&bob).await.expect("owner"),
        SessionOwner::User(Owner::new("owner-a").unwrap()),
        "owner() names who started the session, whoever asks"
    );
    forbidden(store.load(&bob, 10).await, "load");
    forbidden(store.load(&session, 10).await, "load without an owner");
    forbidden(
        store.append(&bob, &Turn::new("bob's", "turn")).await,
        "append",
    );
    forbidden(store.clear(&bob).await, "clear");
    let kept = store.load(&alice, 10).await.expect("load by the owner");
    assert_eq!(ids(&kept), vec![turn.id], "refused calls change nothing");
    store.clear(&alice).await.expect("clear by the owner");
    assert_eq!(
        store.owner(&session).await.expect("owner"),
        SessionOwner::Unclaimed,
        "a cleared session is unclaimed"
    );
}

/// A session started without an owner is open only to asks without one.
pub async fn anonymous_sessions_stay_anonymous(store: &dyn HistoryStore) {
    let session = fresh_session("anonymous");
    store
        .append(&session, &Turn::new("q", "a"))
        .await
        .expect("anonymous append");
    assert_eq!(
        store.owner(&session).await.expect("owner"),
        SessionOwner::Anonymous
    );
    forbidden(
        store.load(&owned(&session, "owner-a"), 10).await,
        "load of an anonymous session by an owner",
    );
    assert_eq!(store.load(&session, 10).await.expect("load").len(), 1);
    store.clear(&session).await.expect("clear");
}
