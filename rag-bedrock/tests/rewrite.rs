//! A follow-up question rewritten by a small Bedrock model before retrieval, end to end through
//! the real SDK clients: the rewriter on ConverseStream, the knowledge base's Retrieve, and the
//! answering model, each on its own loopback server.

#![cfg(feature = "knowledge-bases")]

mod support;

use futures::StreamExt;
use rag_bedrock::{BedrockGenerator, KnowledgeBaseRetriever};
use rag_core::{Ask, ClaudeMessagesTemplate, Event, GeneratorRewriter, Pipeline, SessionId, Turn};
use serde_json::json;
use support::{client, OneConversation, Reply, TestServer};

/// A ConverseStream answer of `pieces`.
fn converse_answer(pieces: &[&str]) -> Reply {
    Reply::frames(support::converse_answer(
        pieces,
        "end_turn",
        json!({"usage": {"inputTokens": 20, "outputTokens": 5, "totalTokens": 25}, "metrics": {"latencyMs": 80}}),
    ))
}

#[tokio::test]
async fn a_follow_ups_retrieval_carries_the_rewritten_query_and_the_prompt_the_question() {
    const REWRITTEN: &str = "How do I create an AWS Lambda function with the AWS CDK?";
    let rewriter_server = TestServer::start([converse_answer(&[
        "How do I create an AWS Lambda ",
        "function with the AWS CDK?",
    ])])
    .await;
    let kb_server = TestServer::start([Reply::ok_json(json!({"retrievalResults": [{
        "content": {"text": "new lambda.Function(this, 'Fn', {...})"},
        "location": {"type": "S3", "s3Location": {"uri": "s3://docs/cdk/lambda.md"}},
        "score": 0.8
    }]}))])
    .await;
    let model_server =
        TestServer::start([converse_answer(&["Use ", "lambda.Function [1]."])]).await;

    let rewriter = GeneratorRewriter::new(
        BedrockGenerator::converse("amazon.nova-micro-v1:0")
            .with_client(client::runtime(&rewriter_server.url()))
            .build()
            .unwrap(),
    )
    .unwrap();
    let history = OneConversation::with_turns(vec![Turn::new(
        "How do I create a Lambda function?",
        "Open the Lambda console and choose Create function [1].",
    )]);
    let pipeline = Pipeline::builder()
        .with_generator(
            BedrockGenerator::converse("anthropic.claude-3-5-haiku-20241022-v1:0")
                .with_client(client::runtime(&model_server.url()))
                .build()
                .unwrap(),
        )
        .with_template(ClaudeMessagesTemplate::new())
        .with_retriever(
            KnowledgeBaseRetriever::builder("KB12345678")
                .with_client(client::agent_runtime(&kb_server.url()))
                .build()
                .unwrap(),
        )
        .with_history(history)
        .with_query_rewriter(rewriter)
        .build()
        .unwrap();

    let events: Vec<Event> = pipeline
        .ask(Ask::new(SessionId::new("s-1").unwrap(), "now do it in CDK"))
        .collect()
        .await;
    let Some(Event::Done(summary)) = events.last() else {
        panic!("the ask did not finish: {events:?}");
    };
    assert_eq!(summary.rewritten_query.as_deref(), Some(REWRITTEN));
    assert_eq!(summary.answer, "Use lambda.Function [1].");

    // The rewriter saw the earlier turn and the follow-up.
    let rewrite = rewriter_server.requests()[0].json();
    let said = rewrite["messages"][0]["content"][0]["text"]
        .as_str()
        .unwrap();
    assert!(
        said.contains("How do I create a Lambda function?"),
        "{said}"
    );
    assert!(
        said.ends_with("<question>now do it in CDK</question>"),
        "{said}"
    );
    // Retrieval was asked the rewritten query...
    let retrieve = kb_server.requests()[0].json();
    assert_eq!(retrieve["retrievalQuery"]["text"], REWRITTEN);
    // ...while the answering model's prompt holds the question as it was asked.
    let asked = model_server.requests()[0].json();
    let messages = asked["messages"].as_array().unwrap();
    let last = messages.last().unwrap()["content"][0]["text"]
        .as_str()
        .unwrap();
    assert!(last.contains("now do it in CDK"), "{last}");
    assert!(!asked.to_string().contains(REWRITTEN), "{asked}");
    assert!(
        messages[0]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("How do I create a Lambda function?"),
        "the history is in the prompt: {asked}"
    );
}
