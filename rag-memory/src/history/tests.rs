//! Unit tests with a clock the test moves.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rag_core::{Error, HistoryStore, SessionId, Turn};

use super::InMemoryHistory;

/// A clock that stands still until the test advances it.
#[derive(Clone)]
struct TestClock {
    start: Instant,
    elapsed_ms: Arc<AtomicU64>,
}

impl TestClock {
    fn new() -> Self {
        TestClock {
            start: Instant::now(),
            elapsed_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn advance(&self, d: Duration) {
        self.elapsed_ms
            .fetch_add(d.as_millis() as u64, Ordering::SeqCst);
    }

    fn now(&self) -> Instant {
        self.start + Duration::from_millis(self.elapsed_ms.load(Ordering::SeqCst))
    }
}

fn session(name: &str) -> SessionId {
    SessionId::new(name).unwrap()
}

#[tokio::test]
async fn expired_turns_are_never_returned_and_empty_sessions_go() {
    let clock = TestClock::new();
    let c = clock.clone();
    let store = InMemoryHistory::builder()
        .with_ttl(Duration::from_secs(10))
        .with_clock(move || c.now())
        .build()
        .unwrap();
    let s = session("ttl");
    let first = Turn::new("q1", "a1");
    let second = Turn::new("q2", "a2");
    store.append(&s, &first).await.unwrap();
    clock.advance(Duration::from_secs(6));
    store.append(&s, &second).await.unwrap();
    clock.advance(Duration::from_secs(3));
    assert_eq!(store.load(&s, 10).await.unwrap().len(), 2, "9 s: both kept");
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        store.load(&s, 10).await.unwrap(),
        vec![second],
        "10 s: the first expired"
    );
    assert_eq!(store.session_count(), 1);
    clock.advance(Duration::from_secs(6));
    assert!(store.load(&s, 10).await.unwrap().is_empty());
    assert_eq!(store.session_count(), 0, "a session left empty is removed");
}

#[tokio::test]
async fn purge_expired_frees_idle_sessions() {
    let clock = TestClock::new();
    let c = clock.clone();
    let store = InMemoryHistory::builder()
        .with_ttl(Duration::from_secs(60))
        .with_clock(move || c.now())
        .build()
        .unwrap();
    for i in 0..20 {
        store
            .append(&session(&format!("idle-{i}")), &Turn::new("q", "a"))
            .await
            .unwrap();
    }
    clock.advance(Duration::from_secs(30));
    let fresh = session("fresh");
    store.append(&fresh, &Turn::new("q", "a")).await.unwrap();
    store.purge_expired();
    assert_eq!(store.session_count(), 21, "nothing expired at 30 s");
    clock.advance(Duration::from_secs(30));
    store.purge_expired();
    assert_eq!(store.session_count(), 1, "only the fresh session is left");
    assert_eq!(store.load(&fresh, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn the_least_recently_used_session_is_evicted() {
    let store = InMemoryHistory::builder()
        .with_max_sessions(3)
        .build()
        .unwrap();
    let [a, b, c, d] = ["a", "b", "c", "d"].map(session);
    for s in [&a, &b, &c] {
        store.append(s, &Turn::new("q", "a")).await.unwrap();
    }
    // `a` is used again, so `b` is now the least recently used.
    assert_eq!(store.load(&a, 10).await.unwrap().len(), 1);
    store.append(&d, &Turn::new("q", "a")).await.unwrap();
    assert_eq!(store.session_count(), 3);
    assert!(store.load(&b, 10).await.unwrap().is_empty(), "b evicted");
    for s in [&a, &c, &d] {
        assert_eq!(store.load(s, 10).await.unwrap().len(), 1, "{s} kept");
    }
    // Appending to a kept session is use too, and does not evict anything.
    store.append(&c, &Turn::new("q2", "a2")).await.unwrap();
    assert_eq!(store.session_count(), 3);
}

#[tokio::test]
async fn clear_frees_the_session_slot() {
    let store = InMemoryHistory::builder()
        .with_max_sessions(2)
        .build()
        .unwrap();
    let [a, b, c] = ["a", "b", "c"].map(session);
    store.append(&a, &Turn::new("q", "a")).await.unwrap();
    store.append(&b, &Turn::new("q", "a")).await.unwrap();
    store.clear(&a).await.unwrap();
    assert_eq!(store.session_count(), 1);
    store.append(&c, &Turn::new("q", "a")).await.unwrap();
    assert_eq!(store.load(&b, 10).await.unwrap().len(), 1, "b not evicted");
    assert_eq!(store.session_count(), 2);
}

#[test]
fn zero_limits_are_config_errors() {
    for builder in [
        InMemoryHistory::builder().with_max_turns_per_session(0),
        InMemoryHistory::builder().with_max_sessions(0),
        InMemoryHistory::builder().with_ttl(Duration::ZERO),
    ] {
        match builder.clone().build() {
            Err(Error::Config { message }) => assert!(message.contains("InMemoryHistory")),
            other => panic!("{builder:?} gave {other:?}"),
        }
    }
    let store = InMemoryHistory::new();
    assert_eq!(store.max_turns_per_session(), 100);
    assert_eq!(store.max_sessions(), 100_000);
    assert_eq!(store.ttl(), None);
}
