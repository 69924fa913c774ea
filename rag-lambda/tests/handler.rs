//! The `$default` function in process, through the real AWS SDK clients: the event JSON of
//! the route, PostToConnection against a loopback endpoint that records every frame, Bedrock
//! (ConverseStream and the knowledge base's Retrieve) on a loopback server speaking the wire
//! format, and DynamoDB and SQS on moto.

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use rag_bedrock::{BedrockGenerator, KnowledgeBaseRetriever};
use rag_core::testing::Delayed;
use rag_core::{
    template_for_profile, DeadLetterSink, HistoryStore, ModelProfile, Owner, Pipeline, SessionId,
};
use rag_dynamodb::DynamoDbHistory;
use rag_lambda::coalesce::FrameLimits;
use rag_lambda::handler::{AskHandler, HandlerLimits, Outcome};
use rag_lambda::post::Callbacks;
use rag_lambda::sqs::SqsDeadLetterSink;
use serde_json::{json, Value};

#[path = "../../rag-bedrock/tests/support/mod.rs"]
mod bedrock;
mod support;

use bedrock::{converse_answer, Part, Reply, TestServer};
use support::{message_event, question, Answer, Connections};

/// A model the library routes to ConverseStream.
const MODEL: &str = "amazon.nova-lite-v1:0";

/// The frame size the tests hold the handler to, and the interval between token frames.
const MAX_FRAME: usize = 32_000;
const INTERVAL: Duration = Duration::from_millis(150);

fn passages() -> Reply {
    Reply::ok_json(json!({"retrievalResults": [
        {
            "content": {"type": "TEXT", "text": "Lambda runs code without servers."},
            "location": {"type": "S3", "s3Location": {"uri": "s3://docs/lambda/welcome.md"}},
            "score": 0.91,
            "metadata": {"x-amz-bedrock-kb-source-uri": "s3://docs/lambda/welcome.md"}
        },
        {
            "content": {"type": "TEXT", "text": "API Gateway WebSocket APIs keep connections open."},
            "location": {"type": "S3", "s3Location": {"uri": "s3://docs/apigateway/ws.md"}},
            "score": 0.84,
            "metadata": {"x-amz-bedrock-kb-source-uri": "s3://docs/apigateway/ws.md"}
        }
    ]}))
}

fn usage() -> Value {
    json!({"usage": {"inputTokens": 120, "outputTokens": 48, "totalTokens": 168}, "metrics": {"latencyMs": 300}})
}

/// Everything one test runs against.
struct Rig {
    handler: AskHandler,
    connections: Connections,
    model: TestServer,
    kb: TestServer,
    history: DynamoDbHistory,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
}

/// The limits the tests hold the handler to.
fn limits() -> HandlerLimits {
    HandlerLimits {
        frames: FrameLimits {
            max_frame_bytes: MAX_FRAME,
            min_token_interval: INTERVAL,
        },
        ..HandlerLimits::default()
    }
}

impl Rig {
    async fn start(model: Vec<Reply>, kb: Vec<Reply>, answer: Answer) -> Rig {
        Rig::start_with(model, kb, answer, limits(), Duration::ZERO).await
    }

    /// A rig whose handler keeps `limits` and whose turn saves take `save_delay` longer.
    async fn start_with(
        model: Vec<Reply>,
        kb: Vec<Reply>,
        answer: Answer,
        limits: HandlerLimits,
        save_delay: Duration,
    ) -> Rig {
        let moto = support::sdk_config(&support::moto_endpoint());
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let table = format!("lambda-{suffix}");
        let history = DynamoDbHistory::builder(table.clone())
            .with_sdk_config(&moto)
            .build()
            .unwrap();
        history.create_table_if_missing().await.unwrap();
        let sqs = aws_sdk_sqs::Client::new(&moto);
        let queue_url = sqs
            .create_queue()
            .queue_name(format!("dead-letters-{suffix}"))
            .send()
            .await
            .expect("moto creates the queue")
            .queue_url
            .expect("a queue URL");
        let dead_letters: Arc<dyn DeadLetterSink> =
            Arc::new(SqsDeadLetterSink::new(sqs.clone(), queue_url.clone()));

        let model = TestServer::start(model).await;
        let kb = TestServer::start(kb).await;
        let profile = ModelProfile::for_model_id(MODEL).unwrap();
        let generator = BedrockGenerator::builder(MODEL)
            .with_profile(profile)
            .with_client(bedrock::client::runtime(&model.url()))
            .build()
            .unwrap();
        let retriever = KnowledgeBaseRetriever::builder("KB12345678")
            .with_client(bedrock::client::agent_runtime(&kb.url()))
            .build()
            .unwrap();
        let pipeline = Pipeline::builder()
            .with_model_profile(profile)
            .with_template(template_for_profile(&profile))
            .with_generator(generator)
            .with_retriever(retriever)
            .with_history(
                Delayed::new(
                    DynamoDbHistory::builder(table)
                        .with_sdk_config(&moto)
                        .build()
                        .unwrap(),
                    Duration::ZERO,
                )
                .with_write_delay(save_delay),
            )
            .with_dead_letters(Arc::clone(&dead_letters))
            .build()
            .unwrap();

        let connections = Connections::start(answer).await;
        let callbacks = Callbacks::new(&support::sdk_config(&connections.url()))
            .with_endpoint(connections.url());
        let handler = AskHandler::new(pipeline, callbacks, dead_letters)
            .with_limits(limits)
            .unwrap();
        Rig {
            handler,
            connections,
            model,
            kb,
            history,
            sqs,
            queue_url,
        }
    }

    /// Handles one `$default` event, failing the test if it takes longer than 30 s.
    async fn handle(&self, event: Value) -> Outcome {
        let event: ApiGatewayWebsocketProxyRequest =
            serde_json::from_value(event).expect("the event deserializes");
        tokio::time::timeout(Duration::from_secs(30), self.handler.handle(&event, None))
            .await
            .expect("the handler returns")
            .expect("the event is valid")
    }

    /// The turns saved for `session` of `owner`.
    async fn turns(&self, session: &str, owner: &str) -> Vec<rag_core::Turn> {
        let session = SessionId::new(session)
            .unwrap()
            .owned_by(Owner::new(owner).unwrap());
        self.history.load(&session, 100).await.unwrap()
    }

    /// The dead letters on the queue.
    async fn dead_letters(&self) -> Vec<Value> {
        let received = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .send()
            .await
            .unwrap();
        received
            .messages()
            .iter()
            .map(|m| {
                assert_eq!(
                    m.message_attributes()
                        .and_then(|a| a.get("kind"))
                        .and_then(|k| k.string_value()),
                    Some(
                        serde_json::from_str::<Value>(m.body().unwrap()).unwrap()["kind"]
                            .as_str()
                            .unwrap()
                    ),
                    "the kind attribute is the body's kind"
                );
                serde_json::from_str(m.body().unwrap()).unwrap()
            })
            .collect()
    }
}

fn types(frames: &[Value]) -> Vec<&str> {
    frames
        .iter()
        .map(|f| f["type"].as_str().expect("every frame has a type"))
        .collect()
}

fn token_text(frames: &[Value]) -> String {
    frames
        .iter()
        .filter(|f| f["type"] == "token")
        .map(|f| f["text"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_arrive_in_order_under_the_size_limit_with_one_terminal_frame_and_the_turn_saved_once(
) {
    // 400 small pieces, then one of 70 KB with characters JSON escapes: the frames must
    // gather the first and cut the second.
    let mut pieces: Vec<String> = (0..400).map(|i| format!(" w{i}")).collect();
    pieces.push("\"quoted\"\n\t".repeat(7_000));
    pieces.push(" [1]".into());
    let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
    let rig = Rig::start(
        vec![Reply::frames(converse_answer(&refs, "end_turn", usage()))],
        vec![passages()],
        Answer::Accept,
    )
    .await;

    let body = question("How do WebSocket answers reach the client?", "q1");
    let outcome = rig
        .handle(message_event("conn-1=", &body, "user-1", ""))
        .await;
    assert_eq!(outcome, Outcome::Answered { saved: true });

    let posts = rig.connections.posts();
    let frames = rig.connections.frames();
    let kinds = types(&frames);
    assert_eq!(kinds[..2], ["session", "sources"], "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"done"));
    assert!(
        kinds[2..kinds.len() - 1].iter().all(|k| *k == "token"),
        "{kinds:?}"
    );
    assert_eq!(
        kinds
            .iter()
            .filter(|k| matches!(**k, "done" | "error"))
            .count(),
        1,
        "one terminal frame"
    );
    for post in &posts {
        assert_eq!(post.connection, "conn-1=");
        assert!(
            post.body.len() <= MAX_FRAME,
            "a frame of {} bytes",
            post.body.len()
        );
    }
    for frame in &frames {
        assert_eq!(frame["id"], "q1");
        assert_eq!(frame["request_id"], "req-conn-1=");
    }
    assert_eq!(frames[0]["session_id"], "conn-1=");
    assert_eq!(frames[1]["sources"].as_array().unwrap().len(), 2);
    assert_eq!(token_text(&frames), pieces.concat(), "every byte, in order");
    let token_frames = kinds.iter().filter(|k| **k == "token").count();
    assert!(
        (3..=12).contains(&token_frames),
        "402 pieces gathered into {token_frames} frames"
    );
    // Token frames arrive at least the interval apart: it is counted from when the previous
    // post returned.
    let token_posts: Vec<_> = posts
        .iter()
        .zip(&frames)
        .filter(|(_, f)| f["type"] == "token")
        .map(|(p, _)| p.at)
        .collect();
    for pair in token_posts.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= INTERVAL, "token frames {gap:?} apart");
    }
    let done = frames.last().unwrap();
    assert_eq!(done["saved"], true);
    assert_eq!(done["usage"]["output_tokens"], 48);

    let turns = rig.turns("conn-1=", "user-1").await;
    assert_eq!(turns.len(), 1, "the turn is saved once");
    assert_eq!(turns[0].answer, pieces.concat());
    assert_eq!(done["turn_id"], json!(turns[0].id));
    assert!(rig.dead_letters().await.is_empty());

    // The user's groups reached the retriever with the question.
    let retrieve = rig.kb.requests()[0].json();
    assert_eq!(
        retrieve["retrievalQuery"]["text"],
        "How do WebSocket answers reach the client?"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_answer_stops_the_model_stream_and_nothing_is_saved() {
    // The model sends a few pieces, then keeps the stream open: only a cancelled ask ends it.
    let mut parts: Vec<Part> = converse_answer(&["Lambda", " runs", " code"], "end_turn", usage())
        .into_iter()
        .take(4)
        .map(Part::Bytes)
        .collect();
    parts.insert(2, Part::Pause(Duration::from_millis(300)));
    parts.push(Part::Stall);
    // session, sources and one token frame reach the client; then it is gone.
    let rig = Rig::start(
        vec![Reply::Stream(parts)],
        vec![passages()],
        Answer::GoneAfter(3),
    )
    .await;

    let body = question("What is Lambda?", "q2");
    let outcome = rig
        .handle(message_event("conn-2=", &body, "user-2", ""))
        .await;
    assert_eq!(outcome, Outcome::ClientLeft);
    assert_eq!(
        types(&rig.connections.frames()),
        ["session", "sources", "token"]
    );
    assert!(rig.connections.refused() >= 1, "the Gone post was made");
    // The model's stream was dropped: the loopback Bedrock stops sending.
    let mut waited = Duration::ZERO;
    while rig.model.open_streams() > 0 && waited < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += Duration::from_millis(20);
    }
    assert_eq!(rig.model.open_streams(), 0, "the model stream is closed");
    assert!(
        rig.turns("conn-2=", "user-2").await.is_empty(),
        "nothing saved"
    );
    assert!(
        rig.dead_letters().await.is_empty(),
        "a client that left is not a failure"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_ask_lands_in_the_queue_and_the_client_gets_plain_words() {
    let rig = Rig::start(
        vec![Reply::error(
            400,
            "ValidationException",
            "The provided model identifier is invalid for arn:aws:bedrock:us-east-1:123456789012:foundation-model/x",
        )],
        vec![passages()],
        Answer::Accept,
    )
    .await;

    let body = question("What is Lambda?", "q3");
    let outcome = rig
        .handle(message_event("conn-3=", &body, "user-3", ""))
        .await;
    assert_eq!(outcome, Outcome::Failed);
    let frames = rig.connections.frames();
    assert_eq!(types(&frames), ["session", "sources", "error"]);
    let error = &frames[2];
    assert_eq!(error["message"], "the model could not answer this question");
    assert_eq!(error["retryable"], false);
    assert!(!error.to_string().contains("123456789012"));

    let letters = rig.dead_letters().await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["kind"], "ask_failed");
    assert_eq!(letters[0]["question"], "What is Lambda?");
    assert_eq!(
        letters[0]["session"],
        json!({"id": "conn-3=", "owner": "user-3"})
    );
    assert!(letters[0]["error"]
        .as_str()
        .unwrap()
        .contains("ValidationException"));
    assert!(rig.turns("conn-3=", "user-3").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_that_cannot_be_posted_cancel_the_answer_and_dead_letter_it() {
    let mut parts: Vec<Part> = converse_answer(&["Lambda", " runs"], "end_turn", usage())
        .into_iter()
        .take(3)
        .map(Part::Bytes)
        .collect();
    parts.push(Part::Stall);
    let rig = Rig::start(
        vec![Reply::Stream(parts)],
        vec![passages()],
        Answer::ForbiddenAfter(2),
    )
    .await;

    let body = question("What is Lambda?", "q4");
    let outcome = rig
        .handle(message_event("conn-4=", &body, "user-4", ""))
        .await;
    assert_eq!(outcome, Outcome::Undeliverable);
    let letters = rig.dead_letters().await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["kind"], "ask_failed");
    assert_eq!(letters[0]["partial_answer"], "Lambda");
    assert!(letters[0]["error"]
        .as_str()
        .unwrap()
        .contains("could not be posted"));
    assert!(rig.turns("conn-4=", "user-4").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_invocation_deadline_stops_the_answer_tells_the_client_and_dead_letters_it() {
    let mut parts: Vec<Part> = converse_answer(&["Lambda"], "end_turn", usage())
        .into_iter()
        .take(2)
        .map(Part::Bytes)
        .collect();
    parts.push(Part::Stall);
    let margin = Duration::from_millis(500);
    let rig = Rig::start_with(
        vec![Reply::Stream(parts)],
        vec![passages()],
        Answer::Accept,
        HandlerLimits {
            deadline_margin: margin,
            ..limits()
        },
        Duration::ZERO,
    )
    .await;
    let event: ApiGatewayWebsocketProxyRequest = serde_json::from_value(message_event(
        "conn-5=",
        &question("What is Lambda?", "q5"),
        "user-5",
        "",
    ))
    .unwrap();
    // The answer is stopped 500 ms before the deadline, 2.5 s from now.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let outcome = rig.handler.handle(&event, Some(deadline)).await.unwrap();
    assert_eq!(outcome, Outcome::OutOfTime);
    let frames = rig.connections.frames();
    let kinds = types(&frames);
    assert_eq!(kinds, ["session", "sources", "token", "error"]);
    let last = frames.last().unwrap();
    assert_eq!(last["message"], "the answer took too long, try again");
    assert_eq!(last["retryable"], true);
    let letters = rig.dead_letters().await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["partial_answer"], "Lambda");
    assert!(rig.turns("conn-5=", "user-5").await.is_empty());
    assert_eq!(rig.model.open_streams(), 0, "the model stream is closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_that_comes_during_the_save_of_a_complete_answer_stops_nothing() {
    // No metadata, so no Usage event: the stream goes from the last token straight to the
    // save, which takes 1.5 s; the soft deadline (0.5 s from now) comes during it.
    let frames: Vec<_> = converse_answer(&["Lambda runs code."], "end_turn", usage())
        .into_iter()
        .take(4)
        .collect();
    let rig = Rig::start_with(
        vec![Reply::frames(frames)],
        vec![passages()],
        Answer::Accept,
        HandlerLimits {
            deadline_margin: Duration::from_millis(2_500),
            ..limits()
        },
        Duration::from_millis(1_500),
    )
    .await;
    let event: ApiGatewayWebsocketProxyRequest = serde_json::from_value(message_event(
        "conn-12=",
        &question("What is Lambda?", "q12"),
        "user-12",
        "",
    ))
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let outcome = rig.handler.handle(&event, Some(deadline)).await.unwrap();
    assert_eq!(outcome, Outcome::Answered { saved: true });
    let kinds = rig
        .connections
        .frames()
        .iter()
        .map(|f| f["type"].as_str().unwrap().to_string())
        .collect::<Vec<_>>();
    assert_eq!(kinds, ["session", "sources", "token", "done"]);
    assert_eq!(rig.turns("conn-12=", "user-12").await.len(), 1);
    assert!(
        rig.dead_letters().await.is_empty(),
        "a complete answer is not dead-lettered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_answer_whose_last_frame_is_refused_is_saved_once_and_not_dead_lettered() {
    // session, sources and the one token frame are accepted; `done` is refused.
    for answer in [Answer::ForbiddenAfter(3), Answer::GoneAfter(3)] {
        let rig = Rig::start(
            vec![Reply::frames(converse_answer(
                &["Lambda runs code."],
                "end_turn",
                usage(),
            ))],
            vec![passages()],
            answer,
        )
        .await;
        let outcome = rig
            .handle(message_event(
                "conn-9=",
                &question("What is Lambda?", "q9"),
                "user-9",
                "",
            ))
            .await;
        let expected = match answer {
            Answer::GoneAfter(_) => Outcome::ClientLeft,
            _ => Outcome::Undeliverable,
        };
        assert_eq!(outcome, expected, "{answer:?}");
        assert_eq!(
            types(&rig.connections.frames()),
            ["session", "sources", "token"]
        );
        assert_eq!(rig.connections.refused(), 1, "one refused post: done");
        let turns = rig.turns("conn-9=", "user-9").await;
        assert_eq!(
            turns.len(),
            1,
            "{answer:?}: the complete answer is saved once"
        );
        assert_eq!(turns[0].answer, "Lambda runs code.");
        assert!(
            rig.dead_letters().await.is_empty(),
            "{answer:?}: a saved answer is not dead-lettered"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_frame_that_cannot_be_posted_leaves_one_dead_letter() {
    // The pipeline dead-letters the failed ask; the refused error frame adds none.
    let rig = Rig::start(
        vec![Reply::error(400, "ValidationException", "bad request")],
        vec![passages()],
        Answer::ForbiddenAfter(2),
    )
    .await;
    let outcome = rig
        .handle(message_event(
            "conn-10=",
            &question("What is Lambda?", "q10"),
            "user-10",
            "",
        ))
        .await;
    assert_eq!(outcome, Outcome::Undeliverable);
    assert_eq!(types(&rig.connections.frames()), ["session", "sources"]);
    let letters = rig.dead_letters().await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert!(letters[0]["error"]
        .as_str()
        .unwrap()
        .contains("ValidationException"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_a_resumed_session_is_its_own_conversation() {
    // The request template leaves `$context.authorizer.session` as it is when the authorizer
    // did not set it: that is no session, not a session id.
    let rig = Rig::start(
        vec![Reply::frames(converse_answer(
            &["Hi."],
            "end_turn",
            usage(),
        ))],
        vec![passages()],
        Answer::Accept,
    )
    .await;
    let outcome = rig
        .handle(message_event(
            "conn-11=",
            &question("What is Lambda?", "q11"),
            "user-11",
            "$context.authorizer.session",
        ))
        .await;
    assert_eq!(outcome, Outcome::Answered { saved: true });
    assert_eq!(rig.connections.frames()[0]["session_id"], "conn-11=");
    assert_eq!(rig.turns("conn-11=", "user-11").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_get_an_error_frame_and_cost_no_backend_call() {
    let rig = Rig::start(vec![], vec![], Answer::Accept).await;
    let oversized = question(&"x".repeat(40_000), "big");
    for (body, expected) in [
        ("not json".to_string(), "malformed message"),
        (r#"{"message":"no data"}"#.to_string(), "malformed message"),
        (oversized, "the payload was too large"),
    ] {
        let outcome = rig
            .handle(message_event("conn-6=", &body, "user-6", ""))
            .await;
        assert_eq!(outcome, Outcome::Refused);
        let frames = rig.connections.frames();
        let last = frames.last().unwrap();
        assert_eq!(last["type"], "error");
        assert!(
            last["message"].as_str().unwrap().starts_with(expected),
            "{last}"
        );
    }
    // A message without the authorizer's user is refused: the handler fails closed.
    let outcome = rig
        .handle(message_event(
            "conn-6=",
            &question("Who am I?", "q"),
            "",
            "",
        ))
        .await;
    assert_eq!(outcome, Outcome::Refused);
    let frames = rig.connections.frames();
    assert_eq!(
        frames.last().unwrap()["message"],
        "this connection has no signed-in user"
    );
    // An empty question is refused by the pipeline before any backend is called.
    let outcome = rig
        .handle(message_event(
            "conn-6=",
            &question("  ", "q6"),
            "user-6",
            "",
        ))
        .await;
    assert_eq!(outcome, Outcome::Failed);
    assert_eq!(rig.model.hits() + rig.kb.hits(), 0);
    assert!(rig.turns("conn-6=", "user-6").await.is_empty());
    // The refused messages were never asked; the empty question is one failed ask.
    let letters = rig.dead_letters().await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["stage"], rag_core::Stage::Input.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_session_of_another_user_is_refused_and_gets_no_answer() {
    let rig = Rig::start(
        vec![Reply::frames(converse_answer(
            &["Lambda runs code."],
            "end_turn",
            usage(),
        ))],
        // History and retrieval run at once: the intruder's retrieval (with their own
        // groups) happens, its passages are never used.
        vec![passages(), passages()],
        Answer::Accept,
    )
    .await;
    // user-7 starts session "shared-7" (the authorizer passed it on from ?session=).
    let outcome = rig
        .handle(message_event(
            "conn-7=",
            &question("What is Lambda?", "a"),
            "user-7",
            "shared-7",
        ))
        .await;
    assert_eq!(outcome, Outcome::Answered { saved: true });
    assert_eq!(rig.turns("shared-7", "user-7").await.len(), 1);

    // Another user names the same session from another connection.
    let outcome = rig
        .handle(message_event(
            "conn-8=",
            &question("And what did they ask?", "b"),
            "intruder",
            "shared-7",
        ))
        .await;
    assert_eq!(outcome, Outcome::Failed);
    let frames = rig.connections.frames();
    let last = frames.last().unwrap();
    assert_eq!(last["message"], "this conversation belongs to another user");
    assert_eq!(rig.model.hits(), 1, "no model call for the intruder");
    assert_eq!(rig.turns("shared-7", "user-7").await.len(), 1);
}
