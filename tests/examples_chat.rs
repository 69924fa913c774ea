//! Runs the chat example with a broken AWS environment and checks that it says so plainly and
//! exits non-zero, without a panic: no credentials, no region, a region that is not one, and
//! credentials that Bedrock refuses (a loopback server answering as Bedrock does).
//!
//! The example's code is compiled into this test. Each case runs it in a child process (this
//! test binary again, running only `chat_in_child_process`), so that it sees an AWS
//! environment of the test's choosing and its exit code and standard error can be checked.

#[path = "../examples/chat.rs"]
#[allow(dead_code)]
mod chat_example;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Carries the example's arguments to the child process, separated by unit separators.
const ARGS_VAR: &str = "RAG_TEST_CHAT_ARGS";

/// Not a test of its own: the child process of the tests below runs the chat example here and
/// exits with its exit code.
#[tokio::test]
#[ignore = "runs only as the child process of the chat example tests"]
async fn chat_in_child_process() {
    let Ok(joined) = std::env::var(ARGS_VAR) else {
        return;
    };
    let argv = std::iter::once("chat").chain(joined.split('\u{1f}').filter(|a| !a.is_empty()));
    let code = match chat_example::Args::try_parse_from(argv) {
        Ok(args) => chat_example::chat(args).await,
        Err(e) => {
            eprintln!("{e}");
            64
        }
    };
    std::process::exit(i32::from(code));
}

/// The chat example in an AWS environment of nothing but `vars` (and empty config files).
fn chat(dir: &Path, args: &[&str], vars: &[(&str, &str)]) -> Output {
    let empty = dir.join("empty");
    std::fs::write(&empty, "").expect("an empty file");
    let mut command = Command::new(std::env::current_exe().expect("this test binary"));
    command
        .args([
            "--exact",
            "chat_in_child_process",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ARGS_VAR, args.join("\u{1f}"));
    for (key, _) in std::env::vars() {
        if key.starts_with("AWS_") {
            command.env_remove(key);
        }
    }
    command
        .env("AWS_CONFIG_FILE", &empty)
        .env("AWS_SHARED_CREDENTIALS_FILE", &empty)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("HOME", dir)
        .stdin(std::process::Stdio::null());
    for (key, value) in vars {
        command.env(key, value);
    }
    command.output().expect("the chat example runs")
}

fn check_plain_failure(output: &Output, code: i32, expected: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "stderr:\n{stderr}");
    assert!(
        stderr.contains(expected),
        "expected {expected:?} in:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.lines().any(|l| l.starts_with("error: ")),
        "an `error:` line: {stderr}"
    );
}

#[test]
fn no_credentials_is_said_plainly_with_exit_code_2() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let output = chat(
        dir.path(),
        &["What is Lambda?"],
        &[("AWS_REGION", "us-east-1")],
    );
    check_plain_failure(&output, 2, "no AWS credentials were found");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.lines().all(|l| l.trim().is_empty()
            || l.starts_with("running 1 test")
            || l.starts_with("test chat_in_child_process")),
        "nothing was answered (only the test harness spoke):\n{stdout}"
    );
}

#[test]
fn no_region_is_said_plainly_with_exit_code_2() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let output = chat(
        dir.path(),
        &["What is Lambda?"],
        &[
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
        ],
    );
    check_plain_failure(&output, 2, "no AWS region");
}

#[test]
fn a_region_that_is_not_one_is_said_plainly() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let output = chat(
        dir.path(),
        &["--region", "us-east", "What is Lambda?"],
        &[
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
        ],
    );
    check_plain_failure(&output, 2, "`us-east` is not an AWS region");
}

#[test]
fn flags_that_need_another_flag_are_refused_before_aws_is_asked() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let output = chat(dir.path(), &["--retriever", "kendra", "question"], &[]);
    check_plain_failure(&output, 2, "--retriever kendra needs --kendra-index ID");
    let output = chat(dir.path(), &["--history", "dynamodb", "question"], &[]);
    check_plain_failure(&output, 2, "--history dynamodb needs --table NAME");
    let output = chat(
        dir.path(),
        &["--model", "acme.unknown-model-v1", "question"],
        &[
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
        ],
    );
    check_plain_failure(
        &output,
        2,
        "unknown Bedrock model id `acme.unknown-model-v1`",
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("pass --context-window N"), "{stderr}");
    // A window that leaves no room for the answer (--max-tokens is 1024 by default) is refused
    // before the AWS environment is even read.
    let output = chat(
        dir.path(),
        &[
            "--model",
            "acme.unknown-model-v1",
            "--context-window",
            "1000",
            "question",
        ],
        &[],
    );
    check_plain_failure(
        &output,
        2,
        "--context-window 1000 leaves no room for a prompt",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_model_with_a_context_window_is_called_through_converse_stream() {
    let (endpoint, requests) = refusing_bedrock().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let dir_path = dir.path().to_path_buf();
    let output = tokio::task::spawn_blocking(move || {
        chat(
            &dir_path,
            &[
                "--model",
                "acme.unknown-model-v1",
                "--context-window",
                "32000",
                "--retriever",
                "none",
                "What is Lambda?",
            ],
            &[
                ("AWS_REGION", "us-east-1"),
                ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
                (
                    "AWS_SECRET_ACCESS_KEY",
                    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                ),
                ("AWS_ENDPOINT_URL", &endpoint),
            ],
        )
    })
    .await
    .expect("the example ran");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("unknown Bedrock model id"), "{stderr}");
    assert!(
        stderr.contains(
            "Using no retriever, in-memory history, Bedrock acme.unknown-model-v1 through \
             ConverseStream (context window 32000 tokens) in us-east-1."
        ),
        "the pipeline was built as a chat model with the window given:\n{stderr}"
    );
    // The loopback refuses the credentials: the answer fails, the configuration did not.
    check_plain_failure(
        &output,
        1,
        "The security token included in the request is invalid.",
    );
    let requests = requests.lock().expect("the request log").clone();
    assert!(!requests.is_empty(), "Bedrock was called");
    for request in &requests {
        assert!(
            request.starts_with("POST /model/acme.unknown-model-v1/converse-stream "),
            "ConverseStream was called: {requests:?}"
        );
    }
}

/// Answers every request as Bedrock does for credentials it does not know, and keeps the
/// request lines (`POST /model/ID/invoke-with-response-stream HTTP/1.1`).
async fn refusing_bedrock() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let requests = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&requests);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // Read the head, then as much body as it announces.
                let head_end = loop {
                    let n = socket.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&request[..head_end]).into_owned();
                let request_line = head.lines().next().unwrap_or_default().to_string();
                let head = head.to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while request.len() < head_end + length {
                    let n = socket.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buf[..n]);
                }
                log.lock().expect("the request log").push(request_line);
                let body =
                    r#"{"message":"The security token included in the request is invalid."}"#;
                let response = format!(
                    "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\n\
                     x-amzn-errortype: UnrecognizedClientException\r\n\
                     x-amzn-requestid: 00000000-0000-0000-0000-000000000000\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (format!("http://{addr}"), requests)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_that_bedrock_refuses_are_said_plainly() {
    let (endpoint, requests) = refusing_bedrock().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let dir_path = dir.path().to_path_buf();
    let output = tokio::task::spawn_blocking(move || {
        chat(
            &dir_path,
            &["--retriever", "none", "What is Lambda?"],
            &[
                ("AWS_REGION", "us-east-1"),
                ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
                (
                    "AWS_SECRET_ACCESS_KEY",
                    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                ),
                ("AWS_ENDPOINT_URL", &endpoint),
            ],
        )
    })
    .await
    .expect("the example ran");
    check_plain_failure(
        &output,
        1,
        "The security token included in the request is invalid.",
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("generation failed"), "{stderr}");
    assert!(
        stderr.contains("hint: AWS refused the credentials"),
        "{stderr}"
    );
    assert!(
        !requests.lock().expect("the request log").is_empty(),
        "Bedrock was called"
    );
}

#[test]
fn an_openai_url_needs_no_aws_and_names_an_unreachable_server() {
    let dir = tempfile::tempdir().expect("a temp dir");
    // Not the default Bedrock model: a model on the server must be named.
    let output = chat(
        dir.path(),
        &["--openai-url", "http://127.0.0.1:9/v1", "question"],
        &[],
    );
    check_plain_failure(&output, 2, "--openai-url needs --model NAME");
    // No AWS environment at all, and no credentials asked for: the answer fails only because
    // nothing listens on the port, which the error names (exit code 1: the answer failed).
    let output = chat(
        dir.path(),
        &[
            "--openai-url",
            "http://127.0.0.1:9/v1",
            "--model",
            "llama3.2",
            "What is Lambda?",
        ],
        &[],
    );
    check_plain_failure(&output, 1, "127.0.0.1:9/v1/chat/completions");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("llama3.2 at http://127.0.0.1:9/v1/chat/completions"),
        "{stderr}"
    );
    assert!(!stderr.contains("AWS"), "no AWS was needed: {stderr}");
}
