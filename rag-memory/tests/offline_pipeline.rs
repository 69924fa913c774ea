//! The three embedded defaults together in a `rag_core::Pipeline`: a folder of Markdown in,
//! a cited, streamed answer out, the turn saved.

use std::sync::Arc;

use futures::StreamExt;
use rag_core::{Ask, Event, HistoryStore, Pipeline, SessionId, StopReason};
use rag_memory::{ExtractiveGenerator, ExtractiveTemplate, InMemoryHistory, TantivyRetriever};

fn folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("timeouts.md"),
        "# Timeouts\n\nA function that runs longer than its timeout is stopped. \
         The default timeout is three seconds.\n\n## Raising it\n\n\
         You can raise the timeout to fifteen minutes in the function configuration.\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("memory.md"),
        "# Memory\n\nMemory can be set between 128 MB and 10,240 MB. \
         CPU power grows with the memory you configure.\n",
    )
    .unwrap();
    dir
}

async fn pipeline(history: Arc<InMemoryHistory>) -> (Pipeline, tempfile::TempDir) {
    let dir = folder();
    let index = TantivyRetriever::in_memory().unwrap();
    index.add_dir(dir.path()).unwrap();
    let pipeline = Pipeline::builder()
        .with_retriever(index)
        .with_history(history)
        .with_template(ExtractiveTemplate::new())
        .with_generator(ExtractiveGenerator::new())
        .with_top_k(3)
        .build()
        .unwrap();
    (pipeline, dir)
}

#[tokio::test]
async fn an_answer_is_quoted_cited_streamed_and_saved() {
    let history = Arc::new(InMemoryHistory::new());
    let (pipeline, _dir) = pipeline(Arc::clone(&history)).await;
    let session = SessionId::new("offline").unwrap();
    let events: Vec<Event> = pipeline
        .ask(Ask::new(
            session.clone(),
            "How far can I raise the timeout?",
        ))
        .collect()
        .await;

    let Some(Event::Sources(sources)) = events.first() else {
        panic!("sources first: {events:?}")
    };
    assert!(!sources.is_empty());
    let first = &sources[0];
    assert_eq!(first.index, 1);
    assert!(first.uri.as_deref().unwrap().ends_with("timeouts.md"));
    assert_eq!(first.title.as_deref(), Some("Timeouts"));

    let tokens: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::Token(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    assert!(tokens.len() > 5, "streamed word by word: {tokens:?}");
    let answer: String = tokens.concat();
    assert!(
        answer.starts_with(
            "You can raise the timeout to fifteen minutes in the function configuration. [1]"
        ),
        "{answer}"
    );
    // Every citation in the answer names a source of the prompt.
    for n in answer
        .split('[')
        .skip(1)
        .map(|s| s.split(']').next().unwrap())
    {
        let n: usize = n.parse().unwrap();
        assert!(
            (1..=sources.len()).contains(&n),
            "[{n}] of {}",
            sources.len()
        );
    }

    let Some(Event::Done(summary)) = events.last() else {
        panic!("done last: {events:?}")
    };
    assert_eq!(summary.answer, answer);
    assert_eq!(summary.stop_reason, Some(StopReason::EndTurn));
    assert!(summary.saved);
    let saved = history.load(&session, 10).await.unwrap();
    assert_eq!(saved.len(), 1);
    assert_eq!(saved[0].answer, answer);
    assert_eq!(saved[0].question, "How far can I raise the timeout?");
}

#[tokio::test]
async fn a_question_nothing_matches_gets_an_honest_answer() {
    let (pipeline, _dir) = pipeline(Arc::new(InMemoryHistory::new())).await;
    let answer = pipeline
        .ask(Ask::new(SessionId::new("none").unwrap(), "zebra giraffe?"))
        .text()
        .await
        .unwrap();
    assert_eq!(
        answer,
        "No source matched the question, so there is nothing to answer from."
    );
}
