//! The `rag-lambda-ask` binary as Lambda runs it: started with the function's environment
//! (the template's variables, and `AWS_ENDPOINT_URL_<SERVICE>` pointing each AWS client at a
//! loopback server or moto), it takes one `$default` event from a loopback Lambda Runtime API
//! ("Using the Lambda runtime API for custom runtimes",
//! <https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html>), streams the answer to
//! the recording `@connections` endpoint, saves the turn in DynamoDB and reports its response.

use std::convert::Infallible;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rag_core::{HistoryStore, Owner, SessionId};
use rag_dynamodb::DynamoDbHistory;
use serde_json::{json, Value};
use tokio::net::TcpListener;

#[path = "../../rag-bedrock/tests/support/mod.rs"]
mod bedrock;
mod support;

use bedrock::{converse_answer, Reply, TestServer};
use support::{message_event, question, Answer, Connections};

/// What the loopback Runtime API saw.
#[derive(Default)]
struct Runtime {
    /// The event handed out, once.
    event: Option<Value>,
    /// The function's response to it.
    response: Option<Value>,
    /// An init or invocation error the function reported.
    error: Option<String>,
}

/// Serves `/2018-06-01/runtime/invocation/next` once (later polls wait forever, as Lambda's
/// do between events) and records the response or error.
async fn runtime_api(state: Arc<Mutex<Runtime>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let state = Arc::clone(&state);
                    async move {
                        let path = req.uri().path().to_string();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        if path == "/2018-06-01/runtime/invocation/next" {
                            let event = state.lock().unwrap().event.take();
                            let Some(event) = event else {
                                futures::future::pending::<()>().await;
                                unreachable!();
                            };
                            let deadline = SystemTime::now()
                                .duration_since(UNIX_EPOCH)
                                .unwrap()
                                .as_millis()
                                + 300_000;
                            return Ok::<_, Infallible>(
                                Response::builder()
                                    .header("lambda-runtime-aws-request-id", "invocation-1")
                                    .header("lambda-runtime-deadline-ms", deadline.to_string())
                                    .header(
                                        "lambda-runtime-invoked-function-arn",
                                        "arn:aws:lambda:us-east-1:123456789012:function:ask",
                                    )
                                    .header(
                                        "lambda-runtime-trace-id",
                                        "Root=1-5759e988-bd862e3fe1be46a994272793",
                                    )
                                    .body(Full::new(Bytes::from(event.to_string())))
                                    .unwrap(),
                            );
                        }
                        let text = String::from_utf8_lossy(&body).to_string();
                        let mut state = state.lock().unwrap();
                        if path.ends_with("/invocation-1/response") {
                            state.response = Some(serde_json::from_str(&text).unwrap());
                        } else {
                            state.error = Some(format!("{path}: {text}"));
                        }
                        Ok(Response::builder()
                            .status(202)
                            .body(Full::new(Bytes::from_static(b"{}")))
                            .unwrap())
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    addr.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ask_binary_answers_one_event_end_to_end() {
    let moto_url = support::moto_endpoint();
    let moto = support::sdk_config(&moto_url);
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let table = format!("lambda-bin-{suffix}");
    let history = DynamoDbHistory::builder(table.clone())
        .with_sdk_config(&moto)
        .build()
        .unwrap();
    history.create_table_if_missing().await.unwrap();
    let queue_url = aws_sdk_sqs::Client::new(&moto)
        .create_queue()
        .queue_name(format!("dead-letters-{suffix}"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();

    let model = TestServer::start([Reply::frames(converse_answer(
        &["Lambda", " runs", " code", " [1]."],
        "end_turn",
        json!({"usage": {"inputTokens": 90, "outputTokens": 5, "totalTokens": 95}, "metrics": {"latencyMs": 120}}),
    ))])
    .await;
    let kb = TestServer::start([Reply::ok_json(json!({"retrievalResults": [{
        "content": {"type": "TEXT", "text": "Lambda runs code without servers."},
        "location": {"type": "S3", "s3Location": {"uri": "s3://docs/lambda/welcome.md"}},
        "score": 0.9
    }]}))])
    .await;
    let connections = Connections::start(Answer::Accept).await;
    let state = Arc::new(Mutex::new(Runtime {
        event: Some(message_event(
            "bin-1=",
            &question("What is Lambda?", "q1"),
            "user-bin",
            "",
        )),
        ..Runtime::default()
    }));
    let runtime = runtime_api(Arc::clone(&state)).await;

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rag-lambda-ask"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_LAMBDA_RUNTIME_API", &runtime)
        .env("AWS_LAMBDA_FUNCTION_NAME", "ask")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "AKIDTEST")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", model.url())
        .env("AWS_ENDPOINT_URL_BEDROCK_AGENT_RUNTIME", kb.url())
        .env("AWS_ENDPOINT_URL_DYNAMODB", &moto_url)
        .env("AWS_ENDPOINT_URL_SQS", &moto_url)
        .env("RAG_MODEL_ID", "amazon.nova-lite-v1:0")
        .env("RAG_KNOWLEDGE_BASE_ID", "KB12345678")
        .env("RAG_TABLE_NAME", &table)
        .env("RAG_TTL_DAYS", "7")
        .env("RAG_DEAD_LETTER_QUEUE_URL", &queue_url)
        .env("RAG_CALLBACK_URL", connections.url())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the ask binary starts");

    let mut waited = Duration::ZERO;
    loop {
        {
            let state = state.lock().unwrap();
            assert!(
                state.error.is_none(),
                "the function failed: {:?}",
                state.error
            );
            if state.response.is_some() {
                break;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut stderr = String::new();
            if let Some(mut err) = child.stderr.take() {
                use tokio::io::AsyncReadExt;
                let _ = err.read_to_string(&mut stderr).await;
            }
            panic!("the function exited ({status}) before answering: {stderr}");
        }
        assert!(waited < Duration::from_secs(60), "no response within 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    }
    child.kill().await.ok();

    let response = state.lock().unwrap().response.clone().unwrap();
    assert_eq!(response["statusCode"], 200);
    let frames = connections.frames();
    let kinds: Vec<&str> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"session"));
    assert_eq!(kinds.get(1), Some(&"sources"));
    assert_eq!(kinds.last(), Some(&"done"));
    let text: String = frames
        .iter()
        .filter(|f| f["type"] == "token")
        .map(|f| f["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, "Lambda runs code [1].");
    let session = SessionId::new("bin-1=")
        .unwrap()
        .owned_by(Owner::new("user-bin").unwrap());
    let turns = history.load(&session, 10).await.unwrap();
    assert_eq!(turns.len(), 1);
    assert_eq!(turns[0].question, "What is Lambda?");
    // The request reached ConverseStream for the configured model.
    let request = &model.requests()[0];
    assert!(
        bedrock::decoded_path(request).contains("/model/amazon.nova-lite-v1:0/converse-stream"),
        "{}",
        request.path
    );
}
