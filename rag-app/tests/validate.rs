//! Validation reports every problem of a file at once, each at its JSON path.

use rag_app::{validate_json, AppDoc, Plan};
use serde_json::json;

const HAIKU: &str = "anthropic.claude-3-haiku-20240307-v1:0";
const OPUS_41: &str = "anthropic.claude-opus-4-1-20250805-v1:0";
const LLAMA3: &str = "meta.llama3-8b-instruct-v1:0";

fn problems(app: serde_json::Value) -> Vec<(String, String)> {
    validate_json(&app.to_string())
        .into_iter()
        .map(|p| (p.path, p.message))
        .collect()
}

fn has(problems: &[(String, String)], path: &str, words: &str) -> bool {
    problems.iter().any(|(p, m)| p == path && m.contains(words))
}

#[test]
fn one_file_with_many_problems_reports_them_all() {
    // Written as text: the duplicate id cannot be built with json!.
    let text = format!(
        r#"{{
  "format": "1.0", "id": "broken", "name": "Everything wrong",
  "nodes": {{
    "q": {{"kind": "input"}},
    "q": {{"kind": "input", "default": "again"}},
    "missing": {{"kind": "generate", "model": "{HAIKU}", "prompt": "Use {{{{@nowhere}}}}"}},
    "field": {{"kind": "generate", "model": "{HAIKU}", "prompt": "{{{{@q.citations}}}}"}},
    "a": {{"kind": "generate", "model": "{HAIKU}", "prompt": "{{{{@b}}}}"}},
    "b": {{"kind": "generate", "model": "{HAIKU}", "prompt": "{{{{@c}}}}"}},
    "c": {{"kind": "generate", "model": "{HAIKU}", "prompt": "{{{{@a}}}}"}},
    "hot": {{"kind": "generate", "model": "{HAIKU}", "prompt": "hi", "params": {{"temperature": 1.7, "max_tokens": 999999}}}},
    "both": {{"kind": "generate", "model": "{OPUS_41}", "prompt": "hi", "params": {{"temperature": 0.5, "top_p": 0.5}}}},
    "who": {{"kind": "generate", "model": "acme.unknown-model-v1", "prompt": "hi"}},
    "leak": {{"kind": "text", "text": "use key AKIAIOSFODNN7EXAMPLE"}},
    "typo": {{"kind": "generate", "model": "{HAIKU}", "prompt": "hi", "temprature": 0.3}},
    "bad ref": {{"kind": "generate", "model": "{HAIKU}", "prompt": "{{{{@ q}}}}"}},
    "chatty": {{"kind": "chat", "model": "{HAIKU}", "messages": [{{"role": "assistant", "content": "hello"}}]}}
  }},
  "layout": {{"ghost": {{"x": 1, "y": 2}}}}
}}"#
    );
    let found: Vec<(String, String)> = validate_json(&text)
        .into_iter()
        .map(|p| (p.path, p.message))
        .collect();
    let expect = [
        ("$.nodes.q", "used twice"),
        ("$.nodes.missing.prompt", "which no node has"),
        ("$.nodes.field.prompt", "has no field `citations`"),
        ("$.nodes.a", "a cycle of references: a → b → c → a"),
        ("$.nodes.hot.params.temperature", "outside 0.0..=1.0"),
        ("$.nodes.hot.params.max_tokens", "999999"),
        ("$.nodes.both.params.top_p", "not both"),
        ("$.nodes.who.model", "unknown Bedrock model id"),
        ("$.nodes.leak.text", "an AWS access key id"),
        ("$.nodes.typo.temprature", "unknown field"),
        ("$.nodes[\"bad ref\"]", "may hold only"),
        ("$.nodes[\"bad ref\"].prompt", "is not a reference"),
        (
            "$.nodes.chatty.messages[0].role",
            "first message is from the user",
        ),
        ("$.layout.ghost", "which no node has"),
    ];
    for (path, words) in expect {
        assert!(
            has(&found, path, words),
            "no `{words}` at {path} in {found:#?}"
        );
    }
    // The secret itself is not repeated in the report.
    assert!(found
        .iter()
        .all(|(_, m)| !m.contains("AKIAIOSFODNN7EXAMPLE")));
    // The cycle is reported once.
    assert_eq!(found.iter().filter(|(_, m)| m.contains("cycle")).count(), 1);
    assert!(Plan::from_json(&text).is_err());
}

#[test]
fn an_image_where_text_is_expected_is_a_problem() {
    let found = problems(json!({
        "format": "1.0", "id": "img", "name": "Images",
        "nodes": {
            "pic": {"kind": "image", "model": "amazon.nova-canvas-v1:0", "prompt": "a lighthouse", "width": 1024, "height": 1024},
            "query": {"kind": "rag", "retriever": "docs", "query": "about {{@pic}}", "model": HAIKU},
            "sys": {"kind": "generate", "model": HAIKU, "prompt": "describe", "system": "{{@pic}}"},
            "llama": {"kind": "generate", "model": LLAMA3, "prompt": "describe {{@pic}}"},
            "redraw": {"kind": "image", "model": "amazon.nova-canvas-v1:0", "prompt": "like {{@pic}}", "width": 1024, "height": 1024},
            "fine": {"kind": "generate", "model": HAIKU, "prompt": "describe {{@pic}}"}
        }
    }));
    assert!(
        has(
            &found,
            "$.nodes.query.query",
            "image where text is expected"
        ),
        "{found:#?}"
    );
    assert!(
        has(&found, "$.nodes.sys.system", "image where text is expected"),
        "{found:#?}"
    );
    assert!(
        has(&found, "$.nodes.llama.prompt", "does not take images"),
        "{found:#?}"
    );
    assert!(
        has(
            &found,
            "$.nodes.redraw.prompt",
            "image where text is expected"
        ),
        "{found:#?}"
    );
    assert!(
        !found.iter().any(|(p, _)| p.starts_with("$.nodes.fine")),
        "{found:#?}"
    );
}

#[test]
fn image_settings_are_checked_against_the_model() {
    let found = problems(json!({
        "format": "1.0", "id": "img", "name": "Images",
        "nodes": {
            "odd": {"kind": "image", "model": "amazon.nova-canvas-v1:0", "prompt": "x", "width": 1000, "height": 1024},
            "wrong": {"kind": "image", "model": HAIKU, "prompt": "x", "width": 1024, "height": 1024},
            "text": {"kind": "generate", "model": "amazon.nova-canvas-v1:0", "prompt": "x"}
        }
    }));
    assert!(has(&found, "$.nodes.odd.width", ""), "{found:#?}");
    assert!(
        has(&found, "$.nodes.wrong.model", "not an image model"),
        "{found:#?}"
    );
    assert!(
        has(&found, "$.nodes.text.model", "is an image model"),
        "{found:#?}"
    );
}

#[test]
fn secrets_anywhere_are_refused() {
    let found = problems(json!({
        "format": "1.0", "id": "s", "name": "Secrets",
        "description": "token: Bearer abcdefghijklmnopqrstuvwxyz0123",
        "nodes": {
            "q": {"kind": "input", "default": "postgres://admin:hunter22@db.internal/app"},
            "r": {"kind": "rag", "retriever": "docs", "query": "{{@q}} password=supersecret99", "model": HAIKU}
        }
    }));
    assert!(has(&found, "$.description", "a bearer token"), "{found:#?}");
    assert!(
        has(&found, "$.nodes.q.default", "a password in a URL"),
        "{found:#?}"
    );
    assert!(
        has(&found, "$.nodes.r.query", "a password or key assignment"),
        "{found:#?}"
    );
}

#[test]
fn format_versions() {
    let newer = r#"{"format": "1.4", "id": "n", "name": "Newer", "nodes": {"t": {"kind": "text", "text": "hi", "colour": "red"}}, "theme": "dark"}"#;
    let plan = Plan::from_json(newer).expect("a newer minor loads");
    let mut warnings: Vec<&str> = plan.warnings().iter().map(|w| w.path.as_str()).collect();
    warnings.sort();
    assert_eq!(warnings, ["$.format", "$.nodes.t.colour", "$.theme"]);
    let current = newer.replace("1.4", "1.0");
    let found = validate_json(&current);
    assert_eq!(found.len(), 2, "{found:#?}");
    let major = validate_json(r#"{"format": "2.0", "id": "n", "name": "N", "nodes": {}}"#);
    assert_eq!(major.len(), 1);
    assert!(major[0].message.contains("not supported"), "{major:?}");
}

#[test]
fn a_valid_app_round_trips_and_forks() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/apps/two-models.json"
    ))
    .unwrap();
    let doc = AppDoc::from_json(&text).unwrap_or_else(|e| panic!("{e}"));
    let back = AppDoc::from_json(&doc.to_json_pretty()).unwrap();
    assert_eq!(back, doc);
    assert_eq!(back.digest(), doc.digest());

    // Key order, whitespace and layout do not change the digest; a prompt does.
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value["layout"] = json!({});
    let compact = serde_json::to_string(&value).unwrap();
    assert_eq!(AppDoc::from_json(&compact).unwrap().digest(), doc.digest());
    let mut edited = doc.clone();
    if let Some(rag_app::Node::Generate(g)) = edited
        .nodes
        .values_mut()
        .find(|n| matches!(n, rag_app::Node::Generate(_)))
    {
        g.prompt.push('!');
    }
    assert_ne!(edited.digest(), doc.digest());

    let fork = doc.fork();
    assert_ne!(fork.id, doc.id);
    let provenance = fork.forked_from.as_ref().unwrap();
    assert_eq!(provenance.id, doc.id);
    assert_eq!(provenance.digest, doc.digest());
    assert_eq!(fork.nodes, doc.nodes);
    assert!(rag_app::validate(&fork).is_empty());
}

#[test]
fn every_settings_problem_of_one_node_is_reported() {
    // `GenerationParams::validate` and `check_params` stop at their first problem; a node
    // with several must still show them all.
    let stops: Vec<String> = (0..17).map(|i| format!("s{i}")).collect();
    let found = problems(json!({
        "format": "1.0", "id": "p", "name": "Params",
        "nodes": {
            "many": {"kind": "generate", "model": HAIKU, "prompt": "hi",
                "params": {"temperature": 1.5, "top_k": 0, "stop": stops}},
            "both": {"kind": "generate", "model": OPUS_41, "prompt": "hi",
                "params": {"temperature": 0.5, "top_p": 0.5, "max_tokens": 999999}}
        }
    }));
    for (path, words) in [
        ("$.nodes.many.params.temperature", "outside 0.0..=1.0"),
        ("$.nodes.many.params.top_k", "outside"),
        ("$.nodes.many.params.stop", "at most"),
        ("$.nodes.both.params.max_tokens", "999999"),
        ("$.nodes.both.params.top_p", "not both"),
    ] {
        assert!(
            has(&found, path, words),
            "no `{words}` at {path} in {found:#?}"
        );
    }
}

#[test]
fn every_image_settings_problem_is_reported() {
    // `ImageModelProfile::check` stops at its first problem; the negative prompt, the guidance
    // and the seed of one node must all be reported, and a literal negative prompt checked.
    let found = problems(json!({
        "format": "1.0", "id": "img", "name": "Images",
        "nodes": {
            "pic": {"kind": "image", "model": "amazon.titan-image-generator-v2:0", "prompt": "a lighthouse",
                "negative_prompt": "x".repeat(600), "width": 1024, "height": 1024,
                "cfg_scale": 42.0, "seed": 4000000000u32}
        }
    }));
    for path in [
        "$.nodes.pic.negative_prompt",
        "$.nodes.pic.cfg_scale",
        "$.nodes.pic.seed",
    ] {
        assert!(has(&found, path, ""), "nothing at {path} in {found:#?}");
    }
}
