//! Shared helpers for the workspace's integration tests.
#![allow(dead_code, unreachable_pub)]

use futures::StreamExt;
use rag::{AnswerStream, Ask, Event, Failure, SessionId, Summary};

/// A valid session id.
pub fn session(id: &str) -> SessionId {
    SessionId::new(id).expect("valid session id")
}

/// An ask in session `id`.
pub fn ask(id: &str, question: &str) -> Ask {
    Ask::new(session(id), question)
}

/// Every event of the stream, checking the stream's contract on the way: exactly one terminal
/// event, last; `Sources` before any `Token`; at most one `Usage`.
pub async fn events(stream: AnswerStream) -> Vec<Event> {
    let events: Vec<Event> = stream.collect().await;
    let terminals = events.iter().filter(|e| e.is_terminal()).count();
    assert_eq!(terminals, 1, "exactly one terminal event: {events:?}");
    assert!(
        events.last().unwrap().is_terminal(),
        "the terminal event is last"
    );
    let first_token = events.iter().position(|e| matches!(e, Event::Token(_)));
    let sources = events.iter().position(|e| matches!(e, Event::Sources(_)));
    if let Some(t) = first_token {
        assert!(
            sources.is_some_and(|s| s < t),
            "Sources before the first Token"
        );
    }
    assert!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Usage(_)))
            .count()
            <= 1
    );
    events
}

/// The summary of a stream that must end `Done`.
pub fn done(events: &[Event]) -> &Summary {
    match events.last() {
        Some(Event::Done(summary)) => summary,
        other => panic!("expected Done, got {other:?}"),
    }
}

/// The failure of a stream that must end `Error`.
pub fn failed(events: &[Event]) -> &Failure {
    match events.last() {
        Some(Event::Error(failure)) => failure,
        other => panic!("expected Error, got {other:?}"),
    }
}

/// The answer text assembled from the `Token` events.
pub fn tokens(events: &[Event]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Token(t) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}
