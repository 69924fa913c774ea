//! Runs the quickstart example, offline, and checks what it writes: an answer streamed piece
//! by piece with citations, then a list of sources from the project's own documentation.
//!
//! The example's code is compiled into this test (its `run` takes the input and output), so
//! the test always runs the current source.

#[path = "../examples/quickstart.rs"]
#[allow(dead_code)]
mod quickstart;

use std::io::Write;
use std::path::Path;

use clap::Parser;

/// Keeps every write separately, to see that the answer arrived in pieces.
#[derive(Default)]
struct Recorder {
    writes: Vec<String>,
}

impl Write for Recorder {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writes.push(String::from_utf8_lossy(buf).into_owned());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Recorder {
    fn text(&self) -> String {
        self.writes.concat()
    }
}

async fn run(argv: &[&str], input: &str) -> (Result<(), String>, Recorder) {
    let args =
        quickstart::Args::try_parse_from(std::iter::once("quickstart").chain(argv.iter().copied()))
            .expect("valid arguments");
    let mut out = Recorder::default();
    let result = quickstart::run(args, input.as_bytes(), &mut out).await;
    (result, out)
}

/// The answer (before `Sources:`) and the source lines.
fn split(output: &str) -> (String, Vec<String>) {
    let (answer, sources) = output
        .split_once("Sources:\n")
        .unwrap_or_else(|| panic!("no `Sources:` list in:\n{output}"));
    let sources = sources
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    (answer.trim().to_string(), sources)
}

/// The file of a source line `[n] Title (path#i)`.
fn source_file(line: &str) -> &str {
    let place = line
        .rsplit_once('(')
        .and_then(|(_, p)| p.strip_suffix(')'))
        .unwrap_or_else(|| panic!("a source with a place: {line:?}"));
    place.split_once('#').map_or(place, |(file, _)| file)
}

#[tokio::test]
async fn answers_from_the_project_docs_streaming_then_lists_sources() {
    let (result, out) = run(&["How does the pipeline stream an answer?"], "").await;
    let output = out.text();
    result.unwrap_or_else(|e| panic!("the quickstart failed: {e}\n{output}"));

    let (answer, sources) = split(&output);
    assert!(
        answer.split_whitespace().count() >= 8,
        "a real answer, not a stub: {answer:?}"
    );
    assert!(answer.contains("[1]"), "the answer cites [1]: {answer:?}");
    let lower = answer.to_lowercase();
    assert!(
        lower.contains("stream") || lower.contains("token"),
        "the answer is about streaming: {answer:?}"
    );
    // Streamed: the answer reached the output in many writes (one per token), not at once.
    let answer_writes = out
        .writes
        .iter()
        .take_while(|w| !w.starts_with("Sources:"))
        .filter(|w| !w.trim().is_empty())
        .count();
    assert!(
        answer_writes >= answer.split_whitespace().count(),
        "{answer_writes} writes for {} words",
        answer.split_whitespace().count()
    );

    assert!(!sources.is_empty(), "at least one source:\n{output}");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for line in &sources {
        assert!(line.starts_with('['), "a numbered source: {line:?}");
        let file = source_file(line);
        assert!(
            file.ends_with(".md") && root.join(file).is_file(),
            "the source is a file of the project's docs: {line:?}"
        );
    }
    assert_eq!(
        source_file(&sources[0]),
        "docs/pipeline.md",
        "the best source is the pipeline page: {sources:?}"
    );
    // Every citation in the answer names a listed source.
    for n in 1..=9 {
        if answer.contains(&format!("[{n}]")) {
            assert!(
                sources.iter().any(|s| s.starts_with(&format!("[{n}]"))),
                "[{n}] is cited but not listed: {sources:?}"
            );
        }
    }
}

#[tokio::test]
async fn indexes_a_folder_given_with_docs() {
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::write(
        dir.path().join("tides.md"),
        "# Tides\n\nThe moon's gravity pulls the oceans, which makes the tides rise and fall twice a day.\n",
    )
    .expect("write a doc");
    let folder = dir.path().to_str().expect("a UTF-8 temp path");
    let (result, out) = run(&["--docs", folder, "What makes the tides rise?"], "").await;
    let output = out.text();
    result.unwrap_or_else(|e| panic!("{e}\n{output}"));
    let (answer, sources) = split(&output);
    assert_eq!(
        answer,
        "The moon's gravity pulls the oceans, which makes the tides rise and fall twice a day. [1]"
    );
    assert_eq!(sources.len(), 1, "{sources:?}");
    assert!(sources[0].starts_with("[1] Tides ("), "{sources:?}");
    assert!(
        source_file(&sources[0]).ends_with("tides.md"),
        "{sources:?}"
    );
}

#[tokio::test]
async fn keeps_the_conversation_in_interactive_mode() {
    let questions = "How is the history saved?\nWhat is the local index?\n/history\n\nnot asked\n";
    let (result, out) = run(&[], questions).await;
    let output = out.text();
    result.unwrap_or_else(|e| panic!("{e}\n{output}"));
    assert_eq!(
        output.matches("Sources:").count(),
        2,
        "two answers:\n{output}"
    );
    let history = output
        .split_once("1. Q: ")
        .map(|(_, h)| h)
        .unwrap_or_else(|| panic!("the history is listed:\n{output}"));
    assert!(
        history.starts_with("How is the history saved?\n   A: ")
            && history.contains("\n2. Q: What is the local index?\n   A: "),
        "both turns are in the history, in order, with their answers:\n{output}"
    );
    assert!(
        !output.contains("not asked"),
        "an empty line ends the session"
    );
}

#[tokio::test]
async fn a_missing_folder_is_a_plain_error() {
    let (result, out) = run(&["--docs", "/nonexistent/folder", "anything?"], "").await;
    let error = result.expect_err("a missing folder fails");
    assert!(
        error.starts_with("cannot index /nonexistent/folder"),
        "{error}"
    );
    assert!(out.text().is_empty());
}

/// A model on an OpenAI-compatible server, played by a loopback HTTP/1.1 server that reads
/// one chat completions request and streams an answer as server-sent events.
#[cfg(feature = "openai")]
mod local_model {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// The answer's pieces, as the model streams them.
    pub(super) const PIECES: [&str; 4] = [
        "The pipeline ",
        "streams tokens ",
        "as they arrive",
        " [1].",
    ];

    /// Serves one request on 127.0.0.1; returns the base URL and the request's JSON body.
    pub(super) async fn serve_one() -> (String, tokio::task::JoinHandle<serde_json::Value>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut received = Vec::new();
            let mut buf = [0u8; 4096];
            let (head_end, length) = loop {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "the request ended early");
                received.extend_from_slice(&buf[..n]);
                if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
                    assert!(head.starts_with("post /v1/chat/completions "), "{head}");
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map(|v| v.trim().parse::<usize>().unwrap())
                        .expect("a content-length");
                    break (end + 4, length);
                }
            };
            while received.len() < head_end + length {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "the body ended early");
                received.extend_from_slice(&buf[..n]);
            }
            let body: serde_json::Value =
                serde_json::from_slice(&received[head_end..head_end + length]).unwrap();
            let mut reply = String::from(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n",
            );
            for piece in PIECES {
                let chunk = serde_json::json!({"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": null}]});
                reply.push_str(&format!("data: {chunk}\n\n"));
            }
            reply.push_str(
                "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
            );
            reply.push_str("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":900,\"completion_tokens\":9}}\n\n");
            reply.push_str("data: [DONE]\n\n");
            socket.write_all(reply.as_bytes()).await.unwrap();
            socket.shutdown().await.unwrap();
            body
        });
        (url, task)
    }
}

#[cfg(feature = "openai")]
#[tokio::test]
async fn with_openai_url_a_local_model_answers_over_the_local_index() {
    let (url, server) = local_model::serve_one().await;
    let question = "How does the pipeline stream an answer?";
    let (result, out) = run(
        &[
            "--openai-url",
            &url,
            "--model",
            "tiny-chat",
            "--context-window",
            "4096",
            "--max-tokens",
            "200",
            question,
        ],
        "",
    )
    .await;
    let output = out.text();
    result.unwrap_or_else(|e| panic!("the quickstart failed: {e}\n{output}"));
    let (answer, sources) = split(&output);
    assert_eq!(answer, local_model::PIECES.concat().trim());
    assert!(
        !sources.is_empty(),
        "the local index's sources are listed:\n{output}"
    );

    let body = server.await.unwrap();
    assert_eq!(body["model"], "tiny-chat");
    assert_eq!(body["stream"], true);
    assert_eq!(body["max_tokens"], 200);
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages[0]["role"], "system", "{body}");
    let last = messages.last().unwrap();
    assert_eq!(last["role"], "user");
    // The passages of the local index went to the model with the question.
    let sent = body["messages"].to_string();
    assert!(sent.contains(question), "{sent}");
    assert!(
        sent.contains("<document"),
        "the passages are in the prompt: {sent}"
    );
}
