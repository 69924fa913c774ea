//! End to end: a pipeline with the Kendra retriever (against the loopback Kendra) and a
//! scripted generator.

mod support;

use futures::StreamExt;
use rag_core::testing::{PlainTemplate, ScriptedGenerator};
use rag_core::{Ask, Event, Pipeline, SessionId, UserContext, Warning};
use serde_json::json;
use support::{retrieve_item, retrieve_response, FakeKendra, Reply, INDEX};

#[tokio::test]
async fn the_answer_cites_the_indexs_passages_for_the_asking_user() {
    let fake = FakeKendra::always(Reply::Ok(retrieve_response(vec![
        retrieve_item(
            "lambda-scaling",
            "Lambda scales each function per request.",
            "VERY_HIGH",
        ),
        retrieve_item(
            "lambda-quotas",
            "The default concurrency quota is 1,000.",
            "HIGH",
        ),
    ])))
    .await;
    let retriever = fake.retriever().with_language_code("en").build().unwrap();
    let generator = ScriptedGenerator::new(["Functions ", "scale ", "per request [1]."]);
    let probe = generator.probe();
    let pipeline = Pipeline::builder()
        .with_generator(generator)
        .with_template(PlainTemplate::default())
        .with_retriever(retriever)
        .with_top_k(4)
        .build()
        .unwrap();

    let ask =
        Ask::new(SessionId::new("s-1").unwrap(), "How does Lambda scale?").with_user(UserContext {
            token: None,
            user_id: Some("bob".into()),
            groups: vec!["support".into()],
        });
    let events: Vec<Event> = pipeline.ask(ask).collect().await;

    let sources = events
        .iter()
        .find_map(|e| match e {
            Event::Sources(s) => Some(s.clone()),
            _ => None,
        })
        .expect("a Sources event");
    let cited: Vec<_> = sources
        .iter()
        .map(|c| (c.index, c.passage_id.as_str(), c.title.as_deref(), c.score))
        .collect();
    assert_eq!(
        cited,
        [
            (1, "lambda-scaling", Some("Title lambda-scaling"), Some(1.0)),
            (2, "lambda-quotas", Some("Title lambda-quotas"), Some(0.75)),
        ]
    );
    let answer = events
        .iter()
        .find_map(|e| match e {
            Event::Done(summary) => Some(summary.answer.clone()),
            _ => None,
        })
        .expect("a Done event");
    assert_eq!(answer, "Functions scale per request [1].");
    // The passages went into the prompt.
    let prompt = format!("{:?}", probe.prompts());
    assert!(
        prompt.contains("Lambda scales each function per request."),
        "{prompt}"
    );

    // The ask's user and the pipeline's top_k reached Kendra.
    let sent = &fake.requests()[0].body;
    assert_eq!(sent["IndexId"], INDEX);
    assert_eq!(sent["QueryText"], "How does Lambda scale?");
    assert_eq!(sent["PageSize"], 4);
    assert_eq!(
        sent["UserContext"],
        json!({"UserId": "bob", "Groups": ["support"]})
    );
    assert_eq!(
        sent["AttributeFilter"],
        json!({"EqualsTo": {"Key": "_language_code", "Value": {"StringValue": "en"}}})
    );
}

#[tokio::test]
async fn a_shortened_query_reaches_the_caller_as_a_warning() {
    let fake = FakeKendra::always(Reply::Ok(retrieve_response(vec![retrieve_item(
        "p", "text", "HIGH",
    )])))
    .await;
    let pipeline = Pipeline::builder()
        .with_generator(ScriptedGenerator::new(["ok"]))
        .with_template(PlainTemplate::default())
        .with_retriever(fake.retriever().with_max_query_chars(30).build().unwrap())
        .build()
        .unwrap();
    let question = "why does my function time out after three seconds every time";
    let events: Vec<Event> = pipeline
        .ask(Ask::new(SessionId::new("s-2").unwrap(), question))
        .collect()
        .await;
    let warning = events
        .iter()
        .find_map(|e| match e {
            Event::Warning(w @ Warning::QueryTruncated { .. }) => Some(w.clone()),
            _ => None,
        })
        .expect("a QueryTruncated warning");
    assert!(
        matches!(
            warning,
            Warning::QueryTruncated {
                original_chars: 60,
                sent_chars: 29
            }
        ),
        "{warning:?}"
    );
    assert_eq!(
        fake.requests()[0].body["QueryText"],
        "why does my function time out"
    );
    assert!(events.iter().any(|e| matches!(e, Event::Done(_))));
}

#[tokio::test]
async fn an_unknown_index_fails_the_ask_without_retries() {
    let fake = FakeKendra::always(Reply::error(
        400,
        "ResourceNotFoundException",
        "Index not found",
    ))
    .await;
    let pipeline = Pipeline::builder()
        .with_generator(ScriptedGenerator::new(["never"]))
        .with_template(PlainTemplate::default())
        .with_retriever(fake.retriever().build().unwrap())
        .build()
        .unwrap();
    let events: Vec<Event> = pipeline
        .ask(Ask::new(SessionId::new("s-3").unwrap(), "anything"))
        .collect()
        .await;
    match events.last() {
        Some(Event::Error(failure)) => {
            assert!(!failure.is_retryable());
            assert!(
                failure.error.to_string().contains(INDEX),
                "{}",
                failure.error
            );
        }
        other => panic!("expected an Error event, got {other:?}"),
    }
    assert_eq!(fake.requests().len(), 1);
}
