//! The executor through the real `BedrockGenerator` on a loopback Bedrock.

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use rag_app::{BedrockModels, Inputs, Plan, RunEvent, RunReport, Runner};
use rag_core::testing::StaticRetriever;
use rag_core::{Passage, RetryPolicy};
use rag_memory::InMemoryHistory;
use serde_json::json;
use support::{Bedrock, Part, Recorded, Reply};
use tokio::sync::Barrier;

const HAIKU: &str = "anthropic.claude-3-haiku-20240307-v1:0";
const SONNET: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";

fn plan(app: serde_json::Value) -> Plan {
    Plan::from_json(&app.to_string()).unwrap_or_else(|e| panic!("{e}"))
}

fn runner(server: &Bedrock) -> rag_app::RunnerBuilder {
    Runner::builder(BedrockModels::new(server.client())).with_retry(
        RetryPolicy::attempts(3).with_backoff(Duration::from_millis(1), Duration::from_millis(2)),
    )
}

fn inputs(pairs: &[(&str, &str)]) -> Inputs {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Every event of a run, with a deadline so that a run that would wait forever fails.
async fn events(runner: &Runner, plan: &Plan, inputs: &Inputs) -> Vec<RunEvent> {
    let stream = runner.run(plan, inputs).expect("the run starts");
    tokio::time::timeout(Duration::from_secs(20), stream.collect::<Vec<_>>())
        .await
        .expect("the run finishes")
}

fn report(events: &[RunEvent]) -> &RunReport {
    let finished: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, RunEvent::Finished(_)))
        .collect();
    assert_eq!(finished.len(), 1, "exactly one terminal event");
    match events.last() {
        Some(RunEvent::Finished(report)) => report,
        other => panic!("the last event is {other:?}"),
    }
}

fn chain_app() -> serde_json::Value {
    json!({
        "format": "1.0", "id": "chain", "name": "Summarize, then translate",
        "nodes": {
            "topic": {"kind": "input", "default": "DynamoDB streams"},
            "summary": {"kind": "generate", "model": HAIKU,
                "prompt": "Summarize what you know about {{@topic}}.",
                "system": "You are terse.",
                "params": {"temperature": 0.2, "max_tokens": 300}},
            "french": {"kind": "generate", "model": SONNET,
                "prompt": "Translate into French:\n\n{{@summary}}",
                "params": {"temperature": 0.9, "top_p": 0.95, "max_tokens": 500, "stop": ["\n\nEND"]}}
        }
    })
}

#[tokio::test]
async fn a_node_receives_the_output_it_references_with_its_own_model_and_settings() {
    let server = Bedrock::start(|req: Recorded| {
        async move {
            if req.model() == HAIKU {
                Reply::claude("Streams record item changes in order.")
            } else {
                Reply::claude("Les flux enregistrent les changements.")
            }
        }
        .boxed()
    })
    .await;
    let runner = runner(&server).build().unwrap();
    let plan = plan(chain_app());
    let events = events(&runner, &plan, &inputs(&[("topic", "DynamoDB Streams")])).await;
    let report = report(&events);
    assert!(report.is_success(), "{report:?}");
    assert_eq!(
        report.outputs["french"].text,
        "Les flux enregistrent les changements."
    );

    let summary = server.requests_for(HAIKU);
    assert_eq!(summary.len(), 1);
    let body = summary[0].json();
    assert_eq!(body["system"], "You are terse.");
    assert_eq!(
        body["messages"][0]["content"][0]["text"],
        "Summarize what you know about DynamoDB Streams."
    );
    assert_eq!(body["temperature"], json!(0.2));
    assert_eq!(body["max_tokens"], 300);

    let french = server.requests_for(SONNET);
    assert_eq!(french.len(), 1);
    let body = french[0].json();
    assert_eq!(
        body["messages"][0]["content"][0]["text"],
        "Translate into French:\n\nStreams record item changes in order."
    );
    assert_eq!(body["temperature"], json!(0.9));
    assert_eq!(body["top_p"], json!(0.95));
    assert_eq!(body["max_tokens"], 500);
    assert_eq!(body["stop_sequences"], json!(["\n\nEND"]));

    // Deltas of a node come between its Started and its Done, and in order.
    let french_deltas: String = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::Delta { node, text } if node == "french" => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(french_deltas, "Les flux enregistrent les changements.");
    let position = |wanted: &dyn Fn(&RunEvent) -> bool| events.iter().position(wanted).unwrap();
    let summary_done = position(&|e| matches!(e, RunEvent::Done { node, .. } if node == "summary"));
    let french_started =
        position(&|e| matches!(e, RunEvent::Started { node, .. } if node == "french"));
    assert!(summary_done < french_started);
}

#[tokio::test]
async fn independent_nodes_are_in_flight_at_the_same_time() {
    // Each reply waits until both requests have arrived: run one after the other, the first
    // would wait forever (and the run's deadline fails the test).
    let barrier = Arc::new(Barrier::new(2));
    let server = Bedrock::start(move |req: Recorded| {
        let barrier = barrier.clone();
        async move {
            barrier.wait().await;
            Reply::claude(&format!("answer from {}", req.model()))
        }
        .boxed()
    })
    .await;
    let app = json!({
        "format": "1.0", "id": "fan", "name": "Two at once",
        "nodes": {
            "q": {"kind": "input"},
            "a": {"kind": "generate", "model": HAIKU, "prompt": "Pros of {{@q}}"},
            "b": {"kind": "generate", "model": SONNET, "prompt": "Cons of {{@q}}"},
            "both": {"kind": "text", "text": "unreferenced static text"}
        }
    });
    let runner = runner(&server).with_concurrency(2).build().unwrap();
    let events = events(&runner, &plan(app), &inputs(&[("q", "serverless")])).await;
    let report = report(&events);
    assert!(report.is_success(), "{report:?}");
    assert_eq!(report.outputs["a"].text, format!("answer from {HAIKU}"));
    assert_eq!(report.outputs["b"].text, format!("answer from {SONNET}"));
}

#[tokio::test]
async fn the_concurrency_limit_holds() {
    let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (now, peak) = (in_flight.clone(), most.clone());
    let server = Bedrock::start(move |_req: Recorded| {
        let (now, peak) = (now.clone(), peak.clone());
        async move {
            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(n, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(30)).await;
            now.fetch_sub(1, Ordering::SeqCst);
            Reply::claude("ok")
        }
        .boxed()
    })
    .await;
    let nodes: serde_json::Map<String, serde_json::Value> = (0..6)
        .map(|i| {
            (
                format!("n{i}"),
                json!({"kind": "generate", "model": HAIKU, "prompt": format!("question {i}")}),
            )
        })
        .collect();
    let app = json!({"format": "1.0", "id": "wide", "name": "Wide", "nodes": nodes});
    let runner = runner(&server).with_concurrency(2).build().unwrap();
    let events = events(&runner, &plan(app), &Inputs::new()).await;
    assert!(report(&events).is_success());
    assert_eq!(server.requests().len(), 6);
    assert!(most.load(Ordering::SeqCst) <= 2, "{most:?}");
    assert_eq!(most.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_failing_node_skips_its_dependents_while_independent_nodes_finish() {
    let server = Bedrock::start(|req: Recorded| {
        async move {
            if req.model() == HAIKU {
                Reply::error(400, "ValidationException", "malformed input request")
            } else {
                Reply::claude("independent answer")
            }
        }
        .boxed()
    })
    .await;
    let app = json!({
        "format": "1.0", "id": "fail", "name": "Failure",
        "nodes": {
            "bad": {"kind": "generate", "model": HAIKU, "prompt": "will fail"},
            "next": {"kind": "generate", "model": SONNET, "prompt": "uses {{@bad}}"},
            "after": {"kind": "generate", "model": SONNET, "prompt": "uses {{@next}}"},
            "fine": {"kind": "generate", "model": SONNET, "prompt": "independent"}
        }
    });
    let runner = runner(&server).build().unwrap();
    let events = events(&runner, &plan(app), &Inputs::new()).await;
    let report = report(&events);
    assert!(report.failed.contains_key("bad"));
    assert!(!report.failed["bad"].is_retryable());
    assert_eq!(
        report.skipped.iter().cloned().collect::<Vec<_>>(),
        ["after", "next"]
    );
    assert_eq!(report.outputs["fine"].text, "independent answer");
    let skipped: Vec<(String, String)> = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::Skipped { node, because } => Some((node.clone(), because.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        skipped,
        [
            ("next".into(), "bad".into()),
            ("after".into(), "next".into())
        ]
    );
    // The failed node was called once (not retryable); its dependents never.
    assert_eq!(server.requests_for(HAIKU).len(), 1);
    assert_eq!(server.requests_for(SONNET).len(), 1);
}

#[tokio::test]
async fn a_throttled_call_is_retried_before_its_first_token() {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = calls.clone();
    let server = Bedrock::start(move |_req: Recorded| {
        let n = seen.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                Reply::error(429, "ThrottlingException", "Too many requests")
            } else {
                Reply::claude("after the retry")
            }
        }
        .boxed()
    })
    .await;
    let app = json!({"format": "1.0", "id": "retry", "name": "Retry",
        "nodes": {"g": {"kind": "generate", "model": HAIKU, "prompt": "hello"}}});
    let runner = runner(&server).build().unwrap();
    let events = events(&runner, &plan(app), &Inputs::new()).await;
    let report = report(&events);
    assert_eq!(report.outputs["g"].text, "after the retry");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert!(events
        .iter()
        .any(|e| matches!(e, RunEvent::Warning { node, .. } if node == "g")));
}

#[tokio::test]
async fn dropping_the_stream_cancels_the_model_calls() {
    let server = Bedrock::start(|_req: Recorded| {
        async move {
            let mut parts: Vec<Part> = support::claude_frames("first words arrive")
                .into_iter()
                .take(3)
                .map(Part::Bytes)
                .collect();
            parts.push(Part::Stall);
            Reply::Stream(parts)
        }
        .boxed()
    })
    .await;
    let app = json!({"format": "1.0", "id": "cancel", "name": "Cancel",
        "nodes": {"slow": {"kind": "generate", "model": HAIKU, "prompt": "a long answer"},
                  "later": {"kind": "generate", "model": HAIKU, "prompt": "after {{@slow}}"}}});
    let runner = runner(&server).build().unwrap();
    let mut stream = runner.run(&plan(app), &Inputs::new()).unwrap();
    // Wait for the first delta, then walk away.
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("a delta arrives")
            .expect("the stream goes on");
        if matches!(event, RunEvent::Delta { .. }) {
            break;
        }
    }
    assert!(!server.cancelled.load(Ordering::SeqCst));
    drop(stream);
    tokio::time::timeout(Duration::from_secs(10), async {
        while !server.cancelled.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the model stream is dropped: the connection closes");
    assert_eq!(server.requests().len(), 1, "the dependent never started");
}

#[tokio::test]
async fn an_edited_input_re_runs_only_its_downstream_nodes() {
    let server = Bedrock::start(|req: Recorded| {
        async move { Reply::claude(&format!("on {}", req.prompt_text())) }.boxed()
    })
    .await;
    let app = json!({
        "format": "1.0", "id": "cache", "name": "Cache",
        "nodes": {
            "left": {"kind": "input"},
            "right": {"kind": "input"},
            "l1": {"kind": "generate", "model": HAIKU, "prompt": "L {{@left}}"},
            "l2": {"kind": "generate", "model": HAIKU, "prompt": "L2 {{@l1}}"},
            "r1": {"kind": "generate", "model": HAIKU, "prompt": "R {{@right}}"},
            "join": {"kind": "generate", "model": SONNET, "prompt": "{{@l2}} and {{@r1}}"}
        }
    });
    let plan = plan(app);
    assert_eq!(
        plan.downstream("right").into_iter().collect::<Vec<_>>(),
        ["join", "r1"]
    );
    let runner = runner(&server).build().unwrap();
    let first = events(&runner, &plan, &inputs(&[("left", "a"), ("right", "b")])).await;
    assert!(report(&first).is_success());
    assert_eq!(server.requests().len(), 4);

    // The same inputs again: every model node comes from the cache.
    let again = events(&runner, &plan, &inputs(&[("left", "a"), ("right", "b")])).await;
    assert_eq!(server.requests().len(), 4);
    assert_eq!(report(&again).cached.len(), 4);

    // Edit one input: only what is downstream of it calls a model again.
    let edited = events(&runner, &plan, &inputs(&[("left", "a"), ("right", "c")])).await;
    let report = report(&edited);
    assert_eq!(
        server.requests().len(),
        6,
        "r1 and join re-ran, l1 and l2 did not"
    );
    assert_eq!(
        report.cached.iter().cloned().collect::<Vec<_>>(),
        ["l1", "l2"]
    );
    assert_eq!(report.outputs["r1"].text, "on R c");
    assert!(report.outputs["join"].text.contains("R c"));
    let cached_started: Vec<&str> = edited
        .iter()
        .filter_map(|e| match e {
            RunEvent::Started { node, cached: true } => Some(node.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(cached_started, ["l1", "l2"]);
}

#[tokio::test]
async fn a_rag_node_carries_its_citations_to_the_node_that_quotes_them() {
    let server = Bedrock::start(|req: Recorded| {
        async move {
            if req.model() == HAIKU {
                Reply::claude("Use a GSI for that access pattern [1].")
            } else {
                Reply::claude(&format!("Quoted: {}", req.prompt_text()))
            }
        }
        .boxed()
    })
    .await;
    let retriever = StaticRetriever::new(vec![
        Passage::new(
            "ddb-gsi",
            "A global secondary index has a partition key ...",
        )
        .with_title("Global secondary indexes")
        .with_uri("https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/GSI.html"),
        Passage::new("ddb-lsi", "A local secondary index ...")
            .with_title("Local secondary indexes"),
    ]);
    let app = json!({
        "format": "1.0", "id": "rag", "name": "Answer with sources",
        "nodes": {
            "question": {"kind": "input"},
            "answer": {"kind": "rag", "retriever": "docs", "query": "{{@question}}", "top_k": 2,
                "model": HAIKU, "params": {"temperature": 0.1}},
            "cite": {"kind": "generate", "model": SONNET,
                "prompt": "Answer: {{@answer}}\nSources:\n{{@answer.citations}}"}
        }
    });
    let runner = runner(&server)
        .with_retriever("docs", retriever)
        .with_history(InMemoryHistory::new())
        .build()
        .unwrap();
    let events = events(
        &runner,
        &plan(app),
        &inputs(&[("question", "How do I query by another key?")]),
    )
    .await;
    let report = report(&events);
    assert!(report.is_success(), "{report:?}");
    let answer = &report.outputs["answer"];
    assert_eq!(answer.text, "Use a GSI for that access pattern [1].");
    assert_eq!(answer.citations.len(), 2);
    assert!(events.iter().any(
        |e| matches!(e, RunEvent::Citations { node, citations } if node == "answer" && citations.len() == 2)
    ));
    // The rag node's own prompt held the passages and the question.
    let rag_prompt = server.requests_for(HAIKU)[0].json().to_string();
    assert!(rag_prompt.contains("A global secondary index has a partition key"));
    assert!(rag_prompt.contains("How do I query by another key?"));
    // The quoting node's prompt holds the answer and the numbered sources.
    let quoted = server.requests_for(SONNET)[0].prompt_text();
    assert_eq!(
        quoted,
        "Answer: Use a GSI for that access pattern [1].\nSources:\n[1] Global secondary indexes (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/GSI.html)\n[2] Local secondary indexes"
    );
}

#[tokio::test]
async fn a_chat_node_answers_its_seed_and_can_be_continued() {
    let server = Bedrock::start(|req: Recorded| {
        async move {
            let turns = req.json()["messages"].as_array().map_or(0, Vec::len);
            Reply::claude(&format!("reply to {turns} messages"))
        }
        .boxed()
    })
    .await;
    let app = json!({
        "format": "1.0", "id": "chat", "name": "Chat",
        "nodes": {
            "topic": {"kind": "input", "default": "CDK"},
            "talk": {"kind": "chat", "model": HAIKU, "system": "Teach {{@topic}}.",
                "messages": [
                    {"role": "user", "content": "What is {{@topic}}?"},
                    {"role": "assistant", "content": "A framework."},
                    {"role": "user", "content": "Show me a stack."}
                ]}
        }
    });
    let plan = plan(app);
    let runner = runner(&server).build().unwrap();
    let events = events(&runner, &plan, &Inputs::new()).await;
    let report = report(&events).clone();
    assert_eq!(report.outputs["talk"].text, "reply to 3 messages");
    assert_eq!(report.outputs["talk"].conversation.len(), 4);
    let body = server.requests()[0].json();
    assert_eq!(body["system"], "Teach CDK.");
    assert_eq!(body["messages"][0]["content"][0]["text"], "What is CDK?");

    let more: Vec<RunEvent> = runner
        .continue_chat(&plan, &report, "talk", "Now in Python.")
        .unwrap()
        .collect()
        .await;
    let RunEvent::Finished(after) = more.last().unwrap() else {
        panic!("{more:?}")
    };
    assert_eq!(after.outputs["talk"].text, "reply to 5 messages");
    assert_eq!(after.outputs["talk"].conversation.len(), 6);
    let body = server.requests()[1].json();
    assert_eq!(body["messages"][4]["content"][0]["text"], "Now in Python.");
}

#[tokio::test]
async fn problems_before_the_run_call_nothing() {
    let server = Bedrock::start(|_req: Recorded| async move { Reply::claude("no") }.boxed()).await;
    let app = json!({
        "format": "1.0", "id": "pre", "name": "Pre",
        "nodes": {
            "q": {"kind": "input"},
            "r": {"kind": "rag", "retriever": "nowhere", "query": "{{@q}}", "model": HAIKU}
        }
    });
    let runner = runner(&server).build().unwrap();
    let plan = plan(app);
    let Err(error) = runner.run(&plan, &Inputs::new()) else {
        panic!("the run started")
    };
    let message = error.to_string();
    assert!(message.contains("input `q` has no value"), "{message}");
    assert!(
        message.contains("no retriever is bound to `nowhere`"),
        "{message}"
    );
    assert!(message.contains("need a history store"), "{message}");
    assert!(runner.run(&plan, &inputs(&[("nope", "x")])).is_err());
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn an_image_node_reaches_the_next_model_as_an_image_part() {
    use base64::Engine as _;
    let png = rag_core::testing::TINY_PNG;
    let server = Bedrock::start(move |req: Recorded| {
        async move {
            if req.path.ends_with("/invoke") {
                Reply::ok_json(json!({
                    "images": [base64::engine::general_purpose::STANDARD.encode(png)],
                    "error": null
                }))
            } else {
                Reply::claude("A lighthouse glowing at dusk.")
            }
        }
        .boxed()
    })
    .await;
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/apps/image.json"
    ))
    .unwrap();
    let plan = Plan::from_json(&text).unwrap_or_else(|e| panic!("{e}"));
    let runner = runner(&server).build().unwrap();
    let events = events(&runner, &plan, &inputs(&[("subject", "a lighthouse")])).await;
    let report = report(&events);
    assert!(report.is_success(), "{report:?}");
    let image = report.outputs["poster"].image.as_ref().expect("an image");
    assert_eq!(image.bytes(), png);

    // The image model was asked as its reference spells it.
    let drawn = server.requests_for("amazon.nova-canvas-v1:0");
    assert_eq!(drawn.len(), 1);
    let body = drawn[0].json();
    assert_eq!(body["taskType"], "TEXT_IMAGE");
    assert_eq!(
        body["textToImageParams"]["text"],
        "A travel poster of a lighthouse, bold flat colours"
    );
    assert_eq!(body["textToImageParams"]["negativeText"], "text, watermark");
    assert_eq!(body["imageGenerationConfig"]["width"], 1024);
    assert_eq!(body["imageGenerationConfig"]["seed"], 42);

    // The next model received it as an image block, before the text.
    let captioned = server.requests_for("anthropic.claude-3-5-sonnet-20240620-v1:0");
    assert_eq!(captioned.len(), 1);
    let content = &captioned[0].json()["messages"][0]["content"];
    assert_eq!(content[0]["type"], "image");
    assert_eq!(content[0]["source"]["type"], "base64");
    assert_eq!(content[0]["source"]["media_type"], "image/png");
    assert_eq!(
        content[0]["source"]["data"],
        base64::engine::general_purpose::STANDARD.encode(png)
    );
    assert_eq!(content[1]["type"], "text");
    assert_eq!(
        content[1]["text"],
        "Write a one-line caption for this poster of a lighthouse. Mention one detail you can see."
    );
    assert_eq!(
        report.outputs["caption"].text,
        "A lighthouse glowing at dusk."
    );
}
