//! Runs the quickstart example, offline, and checks what it prints: a streamed answer with
//! citations, then a list of sources from the project's own documentation.
//!
//! The example binary is built by `cargo test --all-targets` (the project's test command) next
//! to this test's own binary.

use std::path::Path;
use std::process::{Command, Output};

mod support;

use support::example_binary;

fn run_quickstart(args: &[&str]) -> Output {
    Command::new(example_binary("quickstart"))
        .args(args)
        .output()
        .expect("the quickstart runs")
}

/// The answer (between the blank line after the start and `Sources:`) and the source lines.
fn split(stdout: &str) -> (String, Vec<String>) {
    let (answer, sources) = stdout
        .split_once("Sources:\n")
        .unwrap_or_else(|| panic!("no `Sources:` list in:\n{stdout}"));
    let sources = sources
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    (answer.trim().to_string(), sources)
}

#[test]
fn answers_from_the_project_docs_with_sources() {
    let output = run_quickstart(&["How does the pipeline stream an answer?"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "quickstart failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert!(
        stderr.contains("Indexed "),
        "it says what it indexed: {stderr}"
    );

    let (answer, sources) = split(&stdout);
    assert!(
        answer.split_whitespace().count() >= 8,
        "a real answer, not a stub: {answer:?}"
    );
    assert!(answer.contains("[1]"), "the answer cites [1]: {answer:?}");
    // The question is about streaming: the extractive answer quotes the docs about it.
    assert!(
        answer.to_lowercase().contains("stream") || answer.to_lowercase().contains("token"),
        "the answer is about streaming: {answer:?}"
    );

    assert!(!sources.is_empty(), "at least one source:\n{stdout}");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for line in &sources {
        assert!(line.starts_with('['), "a numbered source: {line:?}");
        let path = line
            .rsplit_once('(')
            .and_then(|(_, p)| p.strip_suffix(')'))
            .unwrap_or_else(|| panic!("a source with a path: {line:?}"));
        assert!(
            path.ends_with(".md") && root.join(path).is_file(),
            "the source is a file of the project's docs: {line:?}"
        );
    }
    assert!(
        sources[0].contains("docs/pipeline.md"),
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

#[test]
fn indexes_a_folder_given_with_docs() {
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::write(
        dir.path().join("tides.md"),
        "# Tides\n\nThe moon's gravity pulls the oceans, which makes the tides rise and fall twice a day.\n",
    )
    .expect("write a doc");
    let folder = dir.path().to_str().expect("a UTF-8 temp path");
    let output = run_quickstart(&["--docs", folder, "What makes the tides rise?"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let (answer, sources) = split(&stdout);
    assert!(answer.contains("moon's gravity"), "{answer:?}");
    assert_eq!(sources.len(), 1, "{sources:?}");
    assert!(sources[0].contains("tides.md"), "{sources:?}");
}

#[test]
fn keeps_the_conversation_in_interactive_mode() {
    use std::io::Write;
    use std::process::Stdio;

    let mut child = Command::new(example_binary("quickstart"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the quickstart starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"How is the history saved?\nWhat is the local index?\n/history\n\n")
        .expect("questions written");
    let output = child.wait_with_output().expect("the quickstart ends");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert_eq!(stdout.matches("Sources:").count(), 2, "two answers:\n{stdout}");
    assert!(
        stdout.contains("1. Q: How is the history saved?")
            && stdout.contains("2. Q: What is the local index?"),
        "both turns are in the history, in order:\n{stdout}"
    );
}

#[test]
fn a_missing_folder_is_a_plain_error() {
    let output = run_quickstart(&["--docs", "/nonexistent/folder", "anything?"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("error: cannot index /nonexistent/folder"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
