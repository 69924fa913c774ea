//! The app example: `validate`, `fork`, and `run` offline and through the real Bedrock client
//! on a loopback Bedrock.

#[path = "../examples/app.rs"]
#[allow(dead_code)]
mod app_example;

#[path = "../rag-app/tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use futures::FutureExt;
use rag::app::{BedrockModels, Inputs, Plan, Runner};
use support::{Bedrock, Recorded, Reply};

fn apps() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/apps")
}

async fn example(argv: &[&str]) -> (ExitCode, String) {
    let args =
        app_example::Args::try_parse_from(std::iter::once("app").chain(argv.iter().copied()))
            .expect("the arguments parse");
    let mut out = Vec::new();
    let code = app_example::run(args, &mut out)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (code, String::from_utf8(out).unwrap())
}

#[tokio::test]
async fn every_shipped_app_validates() {
    let mut seen = 0;
    for entry in std::fs::read_dir(apps()).unwrap() {
        let path = entry.unwrap().path();
        let (code, out) = example(&["validate", path.to_str().unwrap()]).await;
        assert_eq!(code, ExitCode::SUCCESS, "{out}");
        assert!(out.contains("no problems"), "{out}");
        seen += 1;
    }
    assert!(seen >= 4);
}

#[tokio::test]
async fn validate_prints_every_problem_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.json");
    std::fs::write(
        &file,
        r#"{"format": "1.0", "id": "b", "name": "Broken", "nodes": {
            "a": {"kind": "generate", "model": "acme.nothing-v1", "prompt": "{{@missing}}"},
            "b": {"kind": "generate", "model": "anthropic.claude-3-haiku-20240307-v1:0", "prompt": "x", "params": {"top_p": 2}}
        }}"#,
    )
    .unwrap();
    let (code, out) = example(&["validate", file.to_str().unwrap()]).await;
    assert_eq!(code, ExitCode::from(2));
    assert!(
        out.contains("$.nodes.a.model: unknown Bedrock model id"),
        "{out}"
    );
    assert!(
        out.contains("$.nodes.a.prompt: {{@missing}} names `missing`"),
        "{out}"
    );
    assert!(
        out.contains("$.nodes.b.params.top_p: 2 is outside"),
        "{out}"
    );
    assert!(out.contains("3 problem(s)"), "{out}");
}

#[tokio::test]
async fn fork_prints_the_app_with_its_provenance() {
    let file = apps().join("image.json");
    let (code, out) = example(&["fork", file.to_str().unwrap()]).await;
    assert_eq!(code, ExitCode::SUCCESS);
    let fork = rag::app::AppDoc::from_json(&out).unwrap();
    let original = rag::app::AppDoc::from_json(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_ne!(fork.id, original.id);
    assert_eq!(fork.forked_from.unwrap().digest, original.digest());
}

#[tokio::test]
async fn offline_rag_nodes_run_on_the_local_index() {
    let file = apps().join("docs-answer.json");
    let (code, out) = example(&[
        "run",
        file.to_str().unwrap(),
        "--input",
        "question=How are model calls retried?",
    ])
    .await;
    assert_eq!(code, ExitCode::SUCCESS, "{out}");
    assert!(out.contains("[answer] "), "{out}");
    assert!(out.contains("[history] "), "{out}");
    assert!(out.contains("answer citations:\n  [1] "), "{out}");
    assert!(out.contains("== 3 node(s) done"), "{out}");
}

#[tokio::test]
async fn offline_model_nodes_are_refused_with_what_to_do() {
    let file = apps().join("two-models.json");
    let args = app_example::Args::try_parse_from(["app", "run", file.to_str().unwrap()]).unwrap();
    let error = app_example::run(args, &mut Vec::new()).await.unwrap_err();
    assert!(error.contains("--bedrock"), "{error}");
    assert!(error.contains("node `essay`"), "{error}");
}

#[tokio::test]
async fn run_streams_each_node_prefixed_by_its_id() {
    let server = Bedrock::start(|req: Recorded| {
        async move {
            let text = req.prompt_text();
            let reply = if text.contains("advantages") {
                "Scales to zero.\nPays per use."
            } else if text.contains("drawbacks") {
                "Cold starts."
            } else {
                "On balance, worth it."
            };
            Reply::claude(reply)
        }
        .boxed()
    })
    .await;
    let plan =
        Plan::from_json(&std::fs::read_to_string(apps().join("two-models.json")).unwrap()).unwrap();
    let runner = Runner::builder(BedrockModels::new(server.client()))
        .build()
        .unwrap();
    let mut out = Vec::new();
    let code = app_example::run_app(&runner, &plan, &Inputs::new(), &mut out)
        .await
        .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_eq!(code, ExitCode::SUCCESS, "{out}");
    for line in [
        "[pros] Scales to zero.",
        "[pros] Pays per use.",
        "[cons] Cold starts.",
        "[essay] On balance, worth it.",
    ] {
        assert!(out.lines().any(|l| l == line), "no line `{line}` in\n{out}");
    }
    assert!(out.contains("essay: On balance, worth it."), "{out}");
    assert_eq!(server.requests().len(), 3);
}
