//! Prompt caching through the real SDK client against the loopback Bedrock: where the cache
//! point goes in a ConverseStream request and a Claude Messages body, when none goes, and the
//! cache token counts reaching `Usage` on both paths and the pipeline's summary.

mod support;

use futures::StreamExt;
use rag_bedrock::BedrockGenerator;
use rag_core::testing::StaticRetriever;
use rag_core::{
    Ask, ChatTemplate, ClaudeMessagesTemplate, Event, GenerationParams, Generator, Message,
    Passage, Pipeline, Prompt, SessionId, Usage,
};
use serde_json::{json, Value};
use support::families::merged_usage;
use support::{chunk, client, collect, Reply, TestServer};

/// A passages block of about 2,400 cl100k tokens, above every model's minimum but Claude
/// Haiku 4.5's, opening the first message as the chat templates lay it out.
fn long_context() -> String {
    let passage = "[1] AWS Lambda runs your code on high-availability compute infrastructure \
                   and performs all of the administration of the compute resources. ";
    format!("<documents>\n{}</documents>\n\n", passage.repeat(100))
}

/// A system text of over 1,000 cl100k tokens (above Nova's and Claude 3.7 Sonnet's minimum).
fn long_system() -> String {
    "You answer questions about AWS Lambda. ".repeat(150)
}

fn prompt(context: &str, question: &str) -> Prompt {
    Prompt::Chat {
        system: Some("Answer from the documents.".into()),
        messages: vec![Message::user(format!("{context}{question}"))],
    }
}

fn converse_reply(usage: Value) -> Reply {
    Reply::frames(support::converse_answer(
        &["Lambda runs code [1]."],
        "end_turn",
        json!({"usage": usage, "metrics": {"latencyMs": 90}}),
    ))
}

fn converse_usage() -> Value {
    json!({"inputTokens": 12, "outputTokens": 6, "totalTokens": 2418,
           "cacheReadInputTokens": 2400, "cacheWriteInputTokens": 0})
}

fn claude_reply() -> Reply {
    Reply::frames(
        [
            json!({"type": "message_start", "message": {"id": "m", "type": "message", "role": "assistant",
                "content": [], "usage": {"input_tokens": 12, "output_tokens": 1,
                "cache_creation_input_tokens": 2400, "cache_read_input_tokens": 0}}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Lambda runs code [1]."}}),
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 6}}),
            json!({"type": "message_stop", "amazon-bedrock-invocationMetrics": {"inputTokenCount": 12, "outputTokenCount": 6}}),
        ]
        .iter()
        .map(|c| chunk(&c.to_string())),
    )
}

fn converse(model_id: &str, server: &TestServer, caching: bool) -> BedrockGenerator {
    BedrockGenerator::converse(model_id)
        .with_client(client::runtime(&server.url()))
        .with_prompt_caching(caching)
        .build()
        .unwrap()
}

/// A native (InvokeModelWithResponseStream) generator with caching on.
fn native(model_id: &str, server: &TestServer) -> BedrockGenerator {
    BedrockGenerator::builder(model_id)
        .with_client(client::runtime(&server.url()))
        .with_prompt_caching(true)
        .build()
        .unwrap()
}

async fn send(generator: &BedrockGenerator, prompt: &Prompt) -> Vec<rag_core::Chunk> {
    let stream = generator
        .generate(prompt, &GenerationParams::default())
        .await
        .unwrap();
    let (chunks, error) = collect(stream).await;
    assert!(error.is_none(), "{error:?}");
    chunks
}

/// Every `cachePoint` and `cache_control` in a request body, as JSON paths.
fn cache_marks(value: &Value, path: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                if key == "cachePoint" || key == "cache_control" {
                    out.push(format!("{path}.{key}"));
                }
                cache_marks(value, &format!("{path}.{key}"), out);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                cache_marks(item, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn marks(body: &Value) -> Vec<String> {
    let mut out = Vec::new();
    cache_marks(body, "", &mut out);
    out
}

#[tokio::test]
async fn converse_puts_a_cache_point_after_the_passages_and_counts_the_cache() {
    let context = long_context();
    let server = TestServer::start([converse_reply(converse_usage())]).await;
    let generator = converse("us.amazon.nova-lite-v1:0", &server, true);
    assert_eq!(generator.prompt_cache().map(|s| s.min_tokens), Some(1_000));
    let chunks = send(&generator, &prompt(&context, "What is Lambda?")).await;

    let body = server.requests()[0].json();
    assert_eq!(
        body["messages"][0]["content"],
        json!([
            {"text": context},
            {"cachePoint": {"type": "default"}},
            {"text": "What is Lambda?"}
        ])
    );
    assert_eq!(
        body["system"],
        json!([{"text": "Answer from the documents."}])
    );
    assert_eq!(marks(&body), [".messages[0].content[1].cachePoint"]);
    assert_eq!(
        merged_usage(&chunks),
        Some(Usage::new(12, 6).with_cache(2_400, 0))
    );
}

#[tokio::test]
async fn no_cache_point_below_the_minimum_for_other_models_or_when_off() {
    let short = "<documents>\n[1] Lambda runs code.\n</documents>\n\n";
    let cases = [
        // Below Nova's 1,000 tokens.
        ("amazon.nova-pro-v1:0", short.to_owned(), true),
        // Below Claude Haiku 4.5's 4,096.
        (
            "anthropic.claude-haiku-4-5-20251001-v1:0",
            long_context(),
            true,
        ),
        // A model without explicit cache points.
        (
            "anthropic.claude-3-haiku-20240307-v1:0",
            long_context(),
            true,
        ),
        ("cohere.command-r-plus-v1:0", long_context(), true),
        // Caching off.
        ("amazon.nova-lite-v1:0", long_context(), false),
    ];
    for (model_id, context, caching) in cases {
        let server = TestServer::start([converse_reply(converse_usage())]).await;
        let generator = converse(model_id, &server, caching);
        send(&generator, &prompt(&context, "What is Lambda?")).await;
        let body = server.requests()[0].json();
        assert!(marks(&body).is_empty(), "{model_id}: {body}");
        assert_eq!(
            body["messages"][0]["content"],
            json!([{"text": format!("{context}What is Lambda?")}]),
            "{model_id}"
        );
    }
}

#[tokio::test]
async fn a_long_system_text_without_passages_gets_the_point_after_it() {
    let system = long_system();
    let server = TestServer::start([converse_reply(converse_usage())]).await;
    let generator = converse("amazon.nova-micro-v1:0", &server, true);
    let prompt = Prompt::Chat {
        system: Some(system.clone()),
        messages: vec![Message::user("What is Lambda?")],
    };
    send(&generator, &prompt).await;
    let body = server.requests()[0].json();
    assert_eq!(
        body["system"],
        json!([{"text": system}, {"cachePoint": {"type": "default"}}])
    );
    assert_eq!(marks(&body), [".system[1].cachePoint"]);
}

#[tokio::test]
async fn a_claude_messages_body_marks_the_passages_with_cache_control() {
    let context = long_context();
    let server = TestServer::start([claude_reply()]).await;
    let generator = native("us.anthropic.claude-3-7-sonnet-20250219-v1:0", &server);
    let chunks = send(&generator, &prompt(&context, "What is Lambda?")).await;
    let body = server.requests()[0].json();
    assert_eq!(
        body["messages"][0]["content"],
        json!([
            {"type": "text", "text": context, "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "What is Lambda?"}
        ])
    );
    // The system text stays a string: the point is after the passages.
    assert_eq!(body["system"], "Answer from the documents.");
    assert_eq!(marks(&body), [".messages[0].content[0].cache_control"]);
    assert_eq!(
        merged_usage(&chunks),
        Some(Usage::new(12, 6).with_cache(0, 2_400))
    );

    // Without passages, a long system text becomes one block with the mark.
    let system = long_system();
    let server = TestServer::start([claude_reply()]).await;
    let generator = native("anthropic.claude-3-7-sonnet-20250219-v1:0", &server);
    let prompt = Prompt::Chat {
        system: Some(system.clone()),
        messages: vec![Message::user("What is Lambda?")],
    };
    send(&generator, &prompt).await;
    let body = server.requests()[0].json();
    assert_eq!(
        body["system"],
        json!([{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}])
    );
}

/// Passages long enough that the templates' passages block passes every minimum.
fn passages() -> Vec<Passage> {
    (0..12)
        .map(|i| {
            Passage::new(
                format!("p{i}"),
                "AWS Lambda runs your code on high-availability compute infrastructure and \
                 performs all of the administration of the compute resources. "
                    .repeat(8),
            )
        })
        .collect()
}

#[tokio::test]
async fn through_the_pipeline_the_templates_prefix_is_cached_and_the_summary_counts_it() {
    for (model_id, converse_api) in [
        ("anthropic.claude-3-7-sonnet-20250219-v1:0", false),
        ("amazon.nova-pro-v1:0", true),
    ] {
        let reply = if converse_api {
            converse_reply(converse_usage())
        } else {
            claude_reply()
        };
        let server = TestServer::start([reply]).await;
        let builder = if converse_api {
            BedrockGenerator::converse(model_id)
        } else {
            BedrockGenerator::builder(model_id)
        };
        let generator = builder
            .with_client(client::runtime(&server.url()))
            .with_prompt_caching(true)
            .build()
            .unwrap();
        let builder = Pipeline::builder()
            .with_generator(generator)
            .with_retriever(StaticRetriever::new(passages()))
            .with_top_k(12)
            .with_context_window(200_000, 1_000);
        let pipeline = if converse_api {
            builder.with_template(ChatTemplate::new())
        } else {
            builder.with_template(ClaudeMessagesTemplate::new())
        }
        .build()
        .unwrap();
        let events: Vec<Event> = pipeline
            .ask(Ask::new(SessionId::new("s-1").unwrap(), "What is Lambda?"))
            .collect()
            .await;
        let Some(Event::Done(summary)) = events.last() else {
            panic!("{model_id}: {events:?}");
        };
        let usage = summary.usage.expect("usage");
        assert_eq!(
            usage.cache_read_input_tokens + usage.cache_write_input_tokens,
            2_400,
            "{model_id}"
        );
        assert_eq!(usage.prompt_tokens(), 2_412, "{model_id}");
        let body = server.requests()[0].json();
        let found = marks(&body);
        assert_eq!(found.len(), 1, "{model_id}: {body}");
        // The mark ends the passages block: the text after it is the question.
        let content = &body["messages"][0]["content"];
        let after = content.as_array().unwrap().last().unwrap();
        assert_eq!(after["text"], "What is Lambda?", "{model_id}: {body}");
    }
}
