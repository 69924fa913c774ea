//! `InMemoryHistory` against the core conformance suite, and its limits under load.

use std::sync::Arc;
use std::time::Duration;

use rag_core::testing::conformance;
use rag_core::{HistoryStore, SessionId, Turn, TurnId};
use rag_memory::InMemoryHistory;

#[tokio::test]
async fn passes_the_conformance_suite() {
    conformance::history_store(&InMemoryHistory::new()).await;
}

#[tokio::test]
async fn passes_the_conformance_suite_as_box_dyn() {
    let store: Box<dyn HistoryStore> = Box::new(InMemoryHistory::new());
    conformance::history_store(&store).await;
}

#[tokio::test]
async fn passes_the_conformance_suite_as_arc_dyn() {
    let store: Arc<dyn HistoryStore> = Arc::new(InMemoryHistory::new());
    conformance::history_store(&store).await;
}

#[tokio::test]
async fn passes_the_conformance_suite_with_tight_limits() {
    // The suite's largest session holds 50 turns and it uses a few dozen sessions.
    let store = InMemoryHistory::builder()
        .with_max_turns_per_session(50)
        .with_max_sessions(100)
        .with_ttl(Duration::from_secs(3600))
        .build()
        .unwrap();
    conformance::history_store(&store).await;
}

fn ids(turns: &[Turn]) -> Vec<TurnId> {
    turns.iter().map(|t| t.id).collect()
}

#[tokio::test]
async fn a_session_keeps_its_newest_turns() {
    let store = InMemoryHistory::builder()
        .with_max_turns_per_session(3)
        .build()
        .unwrap();
    let s = SessionId::new("bounded").unwrap();
    let all: Vec<Turn> = (0..8).map(|i| Turn::new(format!("q{i}"), "a")).collect();
    for (i, t) in all.iter().enumerate() {
        if i != 5 {
            store.append(&s, t).await.unwrap();
        }
    }
    assert_eq!(
        ids(&store.load(&s, 10).await.unwrap()),
        vec![all[4].id, all[6].id, all[7].id]
    );
    // A retried append of an evicted turn does not bring it back.
    store.append(&s, &all[0]).await.unwrap();
    assert_eq!(
        ids(&store.load(&s, 10).await.unwrap()),
        vec![all[4].id, all[6].id, all[7].id]
    );
    // A late append newer than the oldest kept turn takes its place in id order.
    store.append(&s, &all[5]).await.unwrap();
    assert_eq!(ids(&store.load(&s, 10).await.unwrap()), ids(&all[5..]));
}

#[tokio::test]
async fn sessions_beyond_the_limit_evict_the_least_recently_used() {
    let store = InMemoryHistory::builder()
        .with_max_sessions(10)
        .build()
        .unwrap();
    let sessions: Vec<SessionId> = (0..25)
        .map(|i| SessionId::new(format!("s{i}")).unwrap())
        .collect();
    for s in &sessions {
        store.append(s, &Turn::new("q", "a")).await.unwrap();
        assert!(store.session_count() <= 10);
    }
    assert_eq!(store.session_count(), 10);
    for (i, s) in sessions.iter().enumerate() {
        let kept = !store.load(s, 1).await.unwrap().is_empty();
        assert_eq!(kept, i >= 15, "session {i}");
    }
}

#[tokio::test]
async fn turns_expire_after_the_ttl() {
    let store = InMemoryHistory::builder()
        .with_ttl(Duration::from_millis(200))
        .build()
        .unwrap();
    let s = SessionId::new("ttl").unwrap();
    let old = Turn::new("old", "a");
    store.append(&s, &old).await.unwrap();
    assert_eq!(store.load(&s, 10).await.unwrap(), vec![old]);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let new = Turn::new("new", "a");
    store.append(&s, &new).await.unwrap();
    assert_eq!(store.load(&s, 10).await.unwrap(), vec![new]);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(store.load(&s, 10).await.unwrap().is_empty());
    assert_eq!(store.session_count(), 0);
}

/// 1,000 sessions x 10 turns, appended from 64 tasks on 4 worker threads, each task
/// interleaving many sessions and sending every session's turns in a shuffled order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_sessions_from_many_tasks_stay_complete_ordered_and_apart() {
    const SESSIONS: usize = 1_000;
    const TURNS: usize = 10;
    const TASKS: usize = 64;
    let store = Arc::new(InMemoryHistory::new());
    let plan: Vec<(SessionId, Vec<Turn>)> = (0..SESSIONS)
        .map(|i| {
            let s = SessionId::new(format!("load-{i}")).unwrap();
            let turns = (0..TURNS)
                .map(|j| Turn::new(format!("s{i} q{j}"), format!("s{i} a{j}")))
                .collect();
            (s, turns)
        })
        .collect();
    // Every (session, turn) pair once, spread over the tasks, later turns often first.
    let mut work: Vec<(usize, usize)> = (0..SESSIONS)
        .flat_map(|i| (0..TURNS).map(move |j| (i, j)))
        .collect();
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    for k in (1..work.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        work.swap(k, (seed % (k as u64 + 1)) as usize);
    }
    let plan = Arc::new(plan);
    let chunk = work.len().div_ceil(TASKS);
    let tasks: Vec<_> = work
        .chunks(chunk)
        .map(|part| {
            let part = part.to_vec();
            let store = Arc::clone(&store);
            let plan = Arc::clone(&plan);
            tokio::spawn(async move {
                for (n, (i, j)) in part.into_iter().enumerate() {
                    let (s, turns) = &plan[i];
                    store.append(s, &turns[j]).await.unwrap();
                    if n % 16 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(store.session_count(), SESSIONS);
    for (s, turns) in plan.iter() {
        let loaded = store.load(s, 100).await.unwrap();
        assert_eq!(&loaded, turns, "{s}: all turns, once, in order, its own");
    }
}

/// New sessions from many threads at once never leave more than `max_sessions` behind, and
/// the count agrees with what can be loaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_session_limit_holds_under_concurrent_creation() {
    const MAX: usize = 100;
    let store = Arc::new(
        InMemoryHistory::builder()
            .with_max_sessions(MAX)
            .build()
            .unwrap(),
    );
    let sessions: Arc<Vec<SessionId>> = Arc::new(
        (0..2_000)
            .map(|i| SessionId::new(format!("churn-{i}")).unwrap())
            .collect(),
    );
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let store = Arc::clone(&store);
            let sessions = Arc::clone(&sessions);
            tokio::spawn(async move {
                for s in sessions.iter().skip(t).step_by(16) {
                    store.append(s, &Turn::new("q", "a")).await.unwrap();
                    assert!(store.session_count() <= MAX + 16, "bounded while running");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(store.session_count(), MAX);
    let mut present = 0;
    for s in sessions.iter() {
        if !store.load(s, 1).await.unwrap().is_empty() {
            present += 1;
        }
    }
    assert_eq!(present, MAX);
}
