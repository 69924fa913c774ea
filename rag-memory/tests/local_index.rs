//! `TantivyRetriever` over files written here, and over the shared Lambda corpus.

use std::path::Path;
use std::sync::Arc;

use rag_core::{Error, Filter, Passage, RetrievalRequest, Retriever};
use rag_memory::{estimate_tokens, TantivyRetriever};

/// A paragraph of `words` short filler words (1.33 estimated tokens each) after a sentence
/// on `topic`.
fn paragraph(topic: &str, n: usize, words: usize) -> String {
    let mut out = format!("Paragraph {n} explains {topic}.");
    for i in 0..words {
        out.push_str(&format!(" w{i}"));
    }
    out.push('.');
    out
}

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// guide.md (headings, a long section), notes.txt, nested/deep.markdown (no `# ` title),
/// plus files that must be skipped.
fn docs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let install: Vec<String> = (0..4).map(|n| paragraph("install", n, 60)).collect();
    write(
        dir.path(),
        "guide.md",
        &format!(
            "# Lambda Guide\n\nWelcome to the guide about serverless functions.\n\n\
             ## Install\n\n{}\n\n## Configure memory\n\n\
             Memory settings decide the CPU share of a function.\n\n\
             ### Limits\n\nThe largest memory setting is ten gigabytes.\n",
            install.join("\n\n")
        ),
    );
    write(
        dir.path(),
        "notes.txt",
        "Timeouts stop a function that runs too long.\n\nRetries happen twice for events.",
    );
    write(
        dir.path(),
        "nested/deep.markdown",
        "Cold starts add latency to the first invocation.\n\n## Warm up\n\nProvisioned concurrency keeps instances warm.",
    );
    write(dir.path(), ".hidden.md", "# Hidden\n\nsecret memory text");
    write(dir.path(), "image.png", "not text memory");
    write(dir.path(), ".git/HEAD.md", "# Git\n\nmemory");
    dir
}

async fn ask(index: &TantivyRetriever, query: &str, k: usize) -> Vec<Passage> {
    index
        .retrieve(&RetrievalRequest::new(query, k))
        .await
        .unwrap()
}

fn headings(p: &Passage) -> Vec<String> {
    serde_json::from_value(p.attributes["headings"].clone()).unwrap()
}

#[tokio::test]
async fn a_folder_is_cut_along_headings_and_paragraphs_with_titles_and_paths() {
    let dir = docs();
    let index = TantivyRetriever::in_memory().unwrap();
    let added = index.add_dir(dir.path()).unwrap();
    assert_eq!(
        added.files, 3,
        "only .md, .markdown and .txt, no hidden files"
    );
    assert_eq!(index.passage_count(), added.passages as u64);

    let hit = &ask(&index, "CPU share", 1).await[0];
    assert_eq!(hit.title.as_deref(), Some("Lambda Guide"));
    let guide = dir.path().join("guide.md").to_string_lossy().into_owned();
    assert_eq!(hit.uri.as_deref(), Some(guide.as_str()));
    assert!(hit.id.starts_with(&format!("{guide}#")));
    assert_eq!(
        hit.text,
        "## Configure memory\n\nMemory settings decide the CPU share of a function."
    );
    assert_eq!(headings(hit), ["Lambda Guide", "Configure memory"]);
    assert!(hit.score.unwrap() > 0.0);

    let limits = &ask(&index, "largest gigabytes", 1).await[0];
    assert_eq!(
        headings(limits),
        ["Lambda Guide", "Configure memory", "Limits"]
    );
    assert!(
        !limits.text.contains("CPU share"),
        "a passage never spans two sections"
    );

    // The install section (4 paragraphs of ~85 tokens) is cut at paragraph boundaries into
    // passages within the 200-token limit.
    let install = ask(&index, "explains install", 50).await;
    assert_eq!(install.len(), 2, "{install:#?}");
    let mut paragraphs = 0;
    for p in &install {
        assert!(
            estimate_tokens(&p.text) <= 200,
            "{} tokens",
            estimate_tokens(&p.text)
        );
        assert_eq!(headings(p), ["Lambda Guide", "Install"]);
        for block in p.text.split("\n\n").filter(|b| !b.starts_with('#')) {
            assert!(
                block.starts_with("Paragraph ") && block.ends_with('.'),
                "{block}"
            );
            paragraphs += 1;
        }
    }
    assert_eq!(paragraphs, 4, "every paragraph whole, once");

    let note = &ask(&index, "timeouts", 1).await[0];
    assert_eq!(
        note.title.as_deref(),
        Some("notes"),
        "a text file's title is its name"
    );
    assert!(note.uri.as_deref().unwrap().ends_with("notes.txt"));
    assert!(headings(note).is_empty());

    let deep = &ask(&index, "provisioned concurrency", 1).await[0];
    assert_eq!(
        deep.title.as_deref(),
        Some("deep"),
        "no `# ` heading: the file name"
    );
    assert_eq!(headings(deep), ["Warm up"]);
    assert!(deep.uri.as_deref().unwrap().ends_with("deep.markdown"));

    assert!(
        ask(&index, "secret", 5).await.is_empty(),
        "hidden files skipped"
    );
}

#[tokio::test]
async fn results_are_ranked_by_bm25_and_top_k_is_honored() {
    let index = TantivyRetriever::in_memory().unwrap();
    index
        .add_passages([
            Passage::new(
                "once",
                "A layer can hold a runtime. Other words fill this text up.",
            ),
            Passage::new("twice", "A layer holds libraries; each layer is versioned."),
            Passage::new("none", "Nothing relevant is written here at all."),
            Passage::new("title", "Unrelated body text.").with_title("Layer"),
        ])
        .unwrap();
    let hits = ask(&index, "layer", 10).await;
    let ids: Vec<&str> = hits.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids.len(), 3, "only passages that contain the word");
    assert!(!ids.contains(&"none"));
    assert_eq!(ids[0], "title", "a title match counts double");
    assert!(
        ids.iter().position(|i| *i == "twice") < ids.iter().position(|i| *i == "once"),
        "two occurrences in a short text rank above one in a longer one: {ids:?}"
    );
    let scores: Vec<f32> = hits.iter().map(|p| p.score.unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert_eq!(ask(&index, "layer", 2).await.len(), 2);
    assert!(ask(&index, "layer", 0).await.is_empty());
    assert_eq!(ask(&index, "layer", usize::MAX).await.len(), 3);
}

#[tokio::test]
async fn the_index_persists_in_a_folder_and_grows() {
    let docs = docs();
    let store = tempfile::tempdir().unwrap();
    let index_dir = store.path().join("index");
    let first = {
        let index = TantivyRetriever::open_or_create(&index_dir).unwrap();
        assert_eq!(index.dir(), Some(index_dir.as_path()));
        index.add_dir(docs.path()).unwrap().passages as u64
    };
    let index = TantivyRetriever::open_or_create(&index_dir).unwrap();
    assert_eq!(index.passage_count(), first, "reopened with every passage");
    assert_eq!(
        ask(&index, "CPU share", 1).await[0].title.as_deref(),
        Some("Lambda Guide")
    );

    // Add a new file to the existing index.
    let extra = docs.path().join("extra.md");
    std::fs::write(&extra, "# Extra\n\nSnapStart restores a snapshot.").unwrap();
    let added = index.add_file(&extra).unwrap();
    assert_eq!((added.files, added.passages), (1, 1));
    assert_eq!(index.passage_count(), first + 1);
    assert_eq!(
        ask(&index, "snapshot", 1).await[0].title.as_deref(),
        Some("Extra")
    );

    // Adding the same file again replaces its passages instead of duplicating them.
    std::fs::write(&extra, "# Extra\n\nSnapStart restores a cached snapshot.").unwrap();
    index.add_file(&extra).unwrap();
    assert_eq!(index.passage_count(), first + 1);
    let hits = ask(&index, "snapshot", 10).await;
    assert_eq!(hits.len(), 1);
    assert!(hits[0].text.contains("cached"));
    drop(index);
    let reopened = TantivyRetriever::open_or_create(&index_dir).unwrap();
    assert_eq!(reopened.passage_count(), first + 1);
}

#[tokio::test]
async fn query_syntax_in_questions_never_errors() {
    let dir = docs();
    let index = TantivyRetriever::in_memory().unwrap();
    index.add_dir(dir.path()).unwrap();
    for query in [
        "memory AND (cpu",
        "title:memory",
        "\"unclosed memory",
        "memory OR",
        "NOT memory",
        "memory^2 cpu~1",
        "*",
        "-memory +cpu",
        "[1 TO 2] {a TO b}",
        "a\\b/c memory:",
        "IN [memory cpu]",
        ")(",
        "\u{1F680} mémoire 日本語",
    ] {
        let result = index.retrieve(&RetrievalRequest::new(query, 5)).await;
        assert!(result.is_ok(), "{query:?}: {result:?}");
    }
    let hits = ask(&index, "memory AND (cpu", 1).await;
    assert!(hits[0].text.contains("CPU share"), "the words still count");
    assert!(
        ask(&index, "", 5).await.is_empty(),
        "an empty question finds nothing"
    );
    assert!(ask(&index, "  ?! ", 5).await.is_empty());
}

#[tokio::test]
async fn an_empty_index_finds_nothing() {
    let index = TantivyRetriever::in_memory().unwrap();
    assert_eq!(index.passage_count(), 0);
    assert!(ask(&index, "anything at all", 5).await.is_empty());
}

#[tokio::test]
async fn a_very_long_query_is_cut_with_a_warning() {
    let index = TantivyRetriever::in_memory().unwrap();
    index
        .add_passages([Passage::new("p", "word0 appears here")])
        .unwrap();
    let query: String = (0..400).map(|i| format!("word{i} ")).collect();
    let r = index
        .retrieve_with_warnings(&RetrievalRequest::new(query, 5))
        .await
        .unwrap();
    assert_eq!(r.passages.len(), 1);
    assert!(matches!(
        r.warnings.as_slice(),
        [rag_core::Warning::QueryTruncated { original_chars, sent_chars }]
            if *original_chars > *sent_chars
    ));
}

async fn filtered(index: &dyn Retriever, query: &str, filter: Filter) -> Vec<String> {
    let mut req = RetrievalRequest::new(query, 10);
    req.filter = Some(filter);
    let mut ids: Vec<String> = index
        .retrieve(&req)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    ids.sort();
    ids
}

fn eq(key: &str, value: serde_json::Value) -> Filter {
    Filter::Equals {
        key: key.into(),
        value,
    }
}

#[tokio::test]
async fn filters_select_by_fields_and_attributes() {
    let mut tagged = Passage::new("c", "memory tuning guide").with_uri("c.md");
    tagged
        .attributes
        .insert("tags".into(), serde_json::json!(["perf", "cost"]));
    tagged.attributes.insert("version".into(), 2.into());
    let index = TantivyRetriever::in_memory().unwrap();
    index
        .add_passages([
            Passage::new("a", "memory settings")
                .with_uri("a.md")
                .with_title("A"),
            Passage::new("b", "memory limits")
                .with_uri("b.md")
                .with_title("B"),
            tagged,
        ])
        .unwrap();
    let plain = index.search("memory", 10).unwrap().passages;
    let only_a = index
        .search_filtered("memory", 10, Some(&eq("uri", "a.md".into())))
        .unwrap()
        .passages;
    let score_a = plain.iter().find(|p| p.id == "a").unwrap().score;
    assert_eq!(only_a[0].score, score_a, "a filter does not change scores");
    let index: Arc<dyn Retriever> = Arc::new(index);
    let index = index.as_ref();
    assert_eq!(
        filtered(index, "memory", eq("uri", "a.md".into())).await,
        ["a"]
    );
    assert_eq!(
        filtered(index, "memory", eq("title", "B".into())).await,
        ["b"]
    );
    assert_eq!(
        filtered(index, "memory", eq("tags", "cost".into())).await,
        ["c"]
    );
    assert_eq!(
        filtered(index, "memory", eq("version", 2.0.into())).await,
        ["c"]
    );
    assert!(filtered(index, "memory", eq("version", 3.into()))
        .await
        .is_empty());
    let in_ab = Filter::In {
        key: "id".into(),
        values: vec!["a".into(), "b".into()],
    };
    assert_eq!(filtered(index, "memory", in_ab.clone()).await, ["a", "b"]);
    assert_eq!(
        filtered(index, "memory", Filter::Not(Box::new(in_ab.clone()))).await,
        ["c"]
    );
    assert_eq!(
        filtered(
            index,
            "memory",
            Filter::And(vec![
                in_ab.clone(),
                Filter::Not(Box::new(eq("uri", "a.md".into())))
            ])
        )
        .await,
        ["b"]
    );
    assert_eq!(
        filtered(
            index,
            "memory",
            Filter::Or(vec![eq("id", "a".into()), eq("tags", "perf".into())])
        )
        .await,
        ["a", "c"]
    );
    assert!(
        filtered(index, "settings", eq("uri", "b.md".into()))
            .await
            .is_empty(),
        "the filter narrows the words' matches, it does not replace them"
    );

    // Filters that cannot be applied are refused, not ignored.
    for bad in [
        Filter::Raw(serde_json::json!({"term": {"uri": "a.md"}})),
        eq("tags", serde_json::json!(["perf"])),
        eq("uri", serde_json::Value::Null),
    ] {
        let mut req = RetrievalRequest::new("memory", 5);
        req.filter = Some(bad.clone());
        match index.retrieve(&req).await {
            Err(Error::InvalidInput { field, .. }) => assert_eq!(field, "filter"),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
}

#[test]
fn bad_configuration_and_bad_input_are_typed_errors() {
    assert!(matches!(
        TantivyRetriever::builder()
            .with_max_passage_tokens(4)
            .build(),
        Err(Error::Config { .. })
    ));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    assert!(matches!(
        TantivyRetriever::open_or_create(&file),
        Err(Error::Config { .. })
    ));
    let index = TantivyRetriever::in_memory().unwrap();
    for bad in [dir.path().join("missing.md"), file.clone()] {
        match index.add_file(&bad) {
            Err(Error::InvalidInput { field, .. }) => assert_eq!(field, "path"),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    assert!(matches!(
        index.add_dir(dir.path().join("missing")),
        Err(Error::InvalidInput { .. })
    ));
    assert!(matches!(
        index.add_passages([Passage::new("ok", "fine"), Passage::new("", "no id")]),
        Err(Error::InvalidInput {
            field: "passage.id",
            ..
        })
    ));
    assert_eq!(index.passage_count(), 0, "a failed add adds nothing");
    // Passages with the same id replace each other; empty text is skipped.
    let added = index
        .add_passages([
            Passage::new("a", "first version"),
            Passage::new("a", "second version"),
            Passage::new("b", "  "),
        ])
        .unwrap();
    assert_eq!(added.passages, 2);
    assert_eq!(index.passage_count(), 1);
}

#[tokio::test]
async fn jsonl_lines_are_passages_and_a_bad_line_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.jsonl");
    std::fs::write(
        &good,
        "{\"id\":\"1\",\"title\":\"Quotas\",\"uri\":\"u1\",\"text\":\"Concurrency quota is per Region.\"}\n\n\
         {\"id\":\"2\",\"text\":\"Layers share code.\",\"attributes\":{\"headings\":[\"Layers\"]},\"extra\":1}\n",
    )
    .unwrap();
    let index = TantivyRetriever::in_memory().unwrap();
    let added = index.add_jsonl(&good).unwrap();
    assert_eq!((added.files, added.passages), (1, 2));
    let hit = &ask(&index, "quota", 1).await[0];
    assert_eq!((hit.id.as_str(), hit.uri.as_deref()), ("1", Some("u1")));
    assert_eq!(
        ask(&index, "layers", 1).await[0].attributes["headings"],
        serde_json::json!(["Layers"])
    );

    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"id\":\"3\",\"text\":\"ok\"}\n{\"id\":\"4\"}\n").unwrap();
    match index.add_jsonl(&bad) {
        Err(Error::InvalidInput { field, message }) => {
            assert_eq!(field, "jsonl");
            assert!(message.contains("line 2"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        index.passage_count(),
        2,
        "nothing of the bad file was added"
    );
}

const CORPUS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/corpus/lambda-dg.jsonl"
);

/// Questions written from page titles of the Lambda Developer Guide, and the page that
/// answers each.
const QUESTIONS: &[(&str, &str)] = &[
    (
        "How do I create an alias for a Lambda function?",
        "configuration-aliases.html",
    ),
    (
        "How do I use the context object in a Node.js function?",
        "nodejs-context.html",
    ),
    (
        "How do Lambda event source mappings work?",
        "invocation-eventsourcemapping.html",
    ),
    (
        "How do I configure an interface VPC endpoint for Lambda?",
        "configuration-vpc-endpoints.html",
    ),
    (
        "How are Lambda function URLs authenticated and secured?",
        "urls-auth.html",
    ),
    (
        "How do I write a schedule expression with rate or cron?",
        "services-cloudwatchevents-expressions.html",
    ),
    (
        "How do I deploy a Ruby function as a container image?",
        "ruby-image.html",
    ),
    (
        "How do I log from a Java Lambda function?",
        "java-logging.html",
    ),
];

#[tokio::test]
async fn finds_the_right_page_of_the_lambda_guide() {
    if !Path::new(CORPUS).exists() {
        eprintln!("skipped: {CORPUS} is absent (the shared corpus sits beside the project)");
        return;
    }
    let index = TantivyRetriever::in_memory().unwrap();
    let added = index.add_jsonl(CORPUS).unwrap();
    assert!(added.passages > 2_000, "{added:?}");
    let mut misses = Vec::new();
    for (question, page) in QUESTIONS {
        let hits = ask(&index, question, 5).await;
        assert_eq!(hits.len(), 5);
        let uris: Vec<&str> = hits.iter().filter_map(|p| p.uri.as_deref()).collect();
        if !uris.iter().any(|u| u.ends_with(page)) {
            misses.push(format!("{question} -> {uris:?}"));
        }
    }
    assert!(
        misses.is_empty(),
        "right page not in the top 5:\n{}",
        misses.join("\n")
    );
}
