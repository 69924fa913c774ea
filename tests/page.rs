//! The WebSocket example's page (`examples/websocket/page.html`) in headless Chromium, against
//! the example's router on 127.0.0.1 with an offline pipeline whose answers stream slowly.
//!
//! It asks two questions, the second while the first answer streams, and checks what a person
//! would see: two answers that do not mix, rendered Markdown, `[n]` citations linked to the
//! answer's own sources list (only the cited sources, in the order first cited), no server file
//! path anywhere, and finished blocks rendered once (a MutationObserver watches them).
//!
//! It fails, never skips, when Chromium or chromedriver cannot start (see `support/browser.rs`).

#[path = "../examples/websocket/app.rs"]
#[allow(dead_code, unused_imports)] // the page uses the shared-token mode only
mod app;
#[path = "support/browser.rs"]
mod browser;

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fantoccini::{Client, Locator};
use futures::FutureExt;
use rag::memory::InMemoryHistory;
use rag::testing::{PlainTemplate, ScriptedGenerator, StaticRetriever};
use rag::{ChunkStream, GenerationParams, Generator, Passage, Pipeline, Prompt};
use serde_json::Value;

use browser::Browser;

const FIRST: &str = "What is Lambda?";
const SECOND: &str = "How is it priced?";

/// The first answer: every block kind the page renders, citing [2] before [1].
const FIRST_ANSWER: &str = "## Lambda in short\n\n\
    Lambda runs your code **without servers** [2]. You pay only for *what you use* [1].\n\n\
    - scales automatically\n\
    - bills per `millisecond`\n\n\
    ```sh\naws lambda invoke --function-name hello out.json\n```\n\n\
    See [the developer guide](https://docs.aws.amazon.com/lambda/) for more [2].";

/// The second answer: a numbered list, citing only [1].
const SECOND_ANSWER: &str = "Pricing is **per request** and per duration [1]:\n\n\
    1. the number of requests\n\
    2. the compute time";

/// Where the documents live on the server: none of it may reach the page.
const SERVER_PATHS: &[&str] = &["/srv/rag", "srv/rag/docs", "C:\\rag", "rag\\docs"];

/// How long the page gets for anything it should do.
const WAIT: Duration = Duration::from_secs(30);

fn passages() -> Vec<Passage> {
    vec![
        Passage::new("p1", "Lambda runs code without servers.")
            .with_title("What is Lambda?")
            .with_uri("/srv/rag/docs/lambda.md"),
        Passage::new("p2", "You pay for the compute time you use.")
            .with_title("Pricing")
            .with_uri("https://aws.amazon.com/lambda/pricing/"),
        Passage::new("p3", "Functions run up to 15 minutes.")
            .with_title("C:\\rag\\docs\\limits.md")
            .with_uri("file:///srv/rag/docs/limits.md"),
    ]
}

/// Streams `answer` in three-character pieces (so markers like `**` and `[2]` arrive split),
/// one every 20 ms.
fn slow(answer: &str) -> ScriptedGenerator {
    let chars: Vec<char> = answer.chars().collect();
    ScriptedGenerator::new(chars.chunks(3).map(|c| c.iter().collect::<String>()))
        .with_first_token_delay(Duration::from_millis(200))
        .with_delay(Duration::from_millis(20))
}

/// Answers each question with its own script.
#[derive(Debug)]
struct ByQuestion(Vec<(&'static str, ScriptedGenerator)>);

#[async_trait]
impl Generator for ByQuestion {
    async fn generate(
        &self,
        prompt: &Prompt,
        params: &GenerationParams,
    ) -> rag::Result<ChunkStream> {
        let Prompt::Text(text) = prompt else {
            return Err(rag::Error::generation("PlainTemplate renders text", false));
        };
        // The prompt ends with the question; earlier questions are in its history.
        for (question, generator) in &self.0 {
            if text.ends_with(&format!("Question: {question}\n")) {
                return generator.generate(prompt, params).await;
            }
        }
        Err(rag::Error::generation(
            format!("no script for {text:?}"),
            false,
        ))
    }
}

/// The shared token the server wants: the page must send it as a subprotocol.
const TOKEN: &str = "page-test-token";

/// Serves the example's router on a free loopback port, guarded by [`TOKEN`].
async fn serve() -> SocketAddr {
    let history: Arc<InMemoryHistory> = Arc::new(InMemoryHistory::new());
    let pipeline = Pipeline::builder()
        .with_retriever(StaticRetriever::new(passages()))
        .with_history(history.clone())
        .with_template(PlainTemplate::default())
        .with_generator(ByQuestion(vec![
            (FIRST, slow(FIRST_ANSWER)),
            (SECOND, slow(SECOND_ANSWER)),
        ]))
        .build()
        .expect("a valid pipeline");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    // The page test never stops the server, so the `Shutdown` handle is not needed.
    let (_shutdown, signal) = app::Shutdown::new();
    let mut state = app::AppState::new(pipeline, history, signal);
    state.auth = app::auth::Auth::Shared(TOKEN.to_owned());
    // The local index read `/srv/rag/docs`: sources under it are shown relative to it.
    state.sources = app::access::SourceRoots(vec!["/srv/rag/docs".into()]);
    let router = app::router(state).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// Runs `script` in the page and returns what it returns.
async fn js(client: &Client, script: &str) -> Value {
    client
        .execute(script, vec![])
        .await
        .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
}

/// Polls `script` until it returns `true`.
async fn wait_until(client: &Client, what: &str, script: &str) {
    let started = Instant::now();
    loop {
        if js(client, script).await == Value::Bool(true) {
            return;
        }
        if started.elapsed() > WAIT {
            let status = js(
                client,
                "return document.getElementById('status').textContent",
            )
            .await;
            let log = js(client, "return document.getElementById('log').innerText").await;
            panic!("timed out waiting until {what}; status: {status}; page:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn ask(client: &Client, question: &str) {
    let input = client
        .find(Locator::Id("question"))
        .await
        .expect("the question box");
    input.send_keys(question).await.expect("typed");
    client
        .find(Locator::Id("send"))
        .await
        .expect("the Ask button")
        .click()
        .await
        .expect("clicked");
}

/// Records, for every block the page marks finished (`data-block="done"`), whether its answer
/// was still streaming when it appeared; and counts every later change to such a block
/// (removed, replaced, its text or attributes edited).
const WATCH_BLOCKS: &str = r#"
window.__blocks = [];
window.__touched = [];
new MutationObserver((records) => {
  for (const r of records) {
    const target = r.target.nodeType === 1 ? r.target : r.target.parentElement;
    if (target && target.closest('[data-block="done"]')) window.__touched.push(r.type + " in " + target.tagName);
    for (const n of r.removedNodes) {
      if (n.nodeType === 1 && (n.matches('[data-block="done"]') || n.querySelector('[data-block="done"]'))) {
        window.__touched.push("removed " + n.tagName);
      }
    }
    for (const n of r.addedNodes) {
      if (n.nodeType === 1 && n.matches('[data-block="done"]')) {
        const box = n.closest(".answer");
        window.__blocks.push({ answer: box.id, node: n, streaming: box.dataset.state === "streaming" });
      }
    }
  }
}).observe(document.getElementById("log"), { childList: true, subtree: true, characterData: true, attributes: true });
return true;
"#;

/// What the page shows, per answer.
const SNAPSHOT: &str = r#"
const answers = {};
for (const box of document.querySelectorAll(".answer")) {
  const body = box.querySelector(".a");
  const first = window.__blocks.find((b) => b.answer === box.id);
  answers[box.id] = {
    id: box.dataset.id,
    state: box.dataset.state,
    text: body.innerText,
    tags: Object.fromEntries(["h3", "h4", "p", "strong", "em", "ul", "ol", "li", "pre", "code", "a"]
      .map((t) => [t, body.querySelectorAll(t).length])),
    links: Array.from(body.querySelectorAll("a:not(.cite)"), (a) => a.href),
    cites: Array.from(body.querySelectorAll("a.cite"), (a) => {
      const target = document.getElementById(a.getAttribute("href").slice(1));
      return {
        text: a.textContent,
        href: a.getAttribute("href"),
        target_in_own_sources: !!target && box.querySelector(".sources ul.cited")?.contains(target) === true,
      };
    }),
    cited: Array.from(box.querySelectorAll(".sources ul.cited > li"), (li) => ({ id: li.id, text: li.textContent })),
    cited_links: Array.from(box.querySelectorAll(".sources ul.cited a"), (a) => a.href),
    not_cited: Array.from(box.querySelectorAll(".sources details.not-cited li"), (li) => li.textContent),
    not_cited_open: box.querySelector(".sources details.not-cited")?.open ?? null,
    blocks_while_streaming: window.__blocks.filter((b) => b.answer === box.id && b.streaming).length,
    blocks_detached: window.__blocks.filter((b) => b.answer === box.id && !b.node.isConnected).length,
    first_block_kept: !!first && body.firstElementChild === first.node,
    live_left: body.querySelectorAll(".live").length,
  };
}
return { answers, touched: window.__touched, html: document.documentElement.outerHTML };
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_streams_two_answers_with_linked_citations() {
    let addr = serve().await;
    let browser = Browser::start().await;
    let outcome = AssertUnwindSafe(drive(&browser.client, addr))
        .catch_unwind()
        .await;
    browser.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn drive(client: &Client, addr: SocketAddr) {
    client
        .goto(&format!("http://{addr}/"))
        .await
        .expect("the page loads");
    // Without the token the server refuses the upgrade, and the page says so.
    wait_until(
        client,
        "the page reports the refused connection",
        "return document.getElementById('status').textContent.startsWith('connection refused')",
    )
    .await;
    client
        .find(Locator::Id("token"))
        .await
        .expect("the token field")
        .send_keys(TOKEN)
        .await
        .expect("type the token");
    client
        .find(Locator::Id("connect"))
        .await
        .expect("the connect button")
        .click()
        .await
        .expect("click connect");
    wait_until(
        client,
        "the page is connected",
        "return document.getElementById('status').textContent.startsWith('connected')",
    )
    .await;
    // The token went as the subprotocol `bearer.<token>` beside `rag.v1`, which the server
    // selected; it never went into the URL.
    let protocol = js(client, "return document.body.dataset.protocol ?? null").await;
    assert_eq!(protocol, "rag.v1", "the page's WebSocket subprotocol");
    js(client, WATCH_BLOCKS).await;

    ask(client, FIRST).await;
    // The second question goes out once the first answer has finished blocks on the page and
    // is still streaming.
    wait_until(
        client,
        "the first answer has a finished block",
        r#"return window.__blocks.some((b) => b.answer === "answer-1")"#,
    )
    .await;
    let state = js(
        client,
        "return document.getElementById('answer-1').dataset.state",
    )
    .await;
    assert_eq!(
        state, "streaming",
        "the answer streams slowly enough to ask again meanwhile"
    );
    ask(client, SECOND).await;
    wait_until(
        client,
        "both answers are complete",
        r#"const boxes = document.querySelectorAll(".answer");
           return boxes.length === 2 && Array.from(boxes).every((b) => b.dataset.state !== "waiting" && b.dataset.state !== "streaming");"#,
    )
    .await;

    let page = js(client, SNAPSHOT).await;
    let first = &page["answers"]["answer-1"];
    let second = &page["answers"]["answer-2"];
    assert_eq!(first["state"], "done", "{first:#}");
    assert_eq!(second["state"], "done", "{second:#}");
    assert_ne!(first["id"], second["id"], "each question has its own id");

    // Two answers, each with its own text.
    let (one, two) = (text(first), text(second));
    assert!(one.contains("Lambda in short"), "{one}");
    assert!(
        one.contains("Lambda runs your code without servers"),
        "{one}"
    );
    assert!(
        one.contains("aws lambda invoke --function-name hello out.json"),
        "{one}"
    );
    assert!(one.contains("for more"), "{one}");
    assert!(
        !one.contains("Pricing is"),
        "the second answer leaked into the first: {one}"
    );
    assert!(
        two.contains("Pricing is per request and per duration"),
        "{two}"
    );
    assert!(two.contains("the compute time"), "{two}");
    assert!(
        !two.contains("Lambda"),
        "the first answer leaked into the second: {two}"
    );

    // Rendered Markdown, not the raw text.
    let tags = &first["tags"];
    for (tag, at_least) in [
        ("h4", 1),
        ("strong", 1),
        ("em", 1),
        ("ul", 1),
        ("li", 2),
        ("pre", 1),
        ("code", 2),
    ] {
        assert!(
            tags[tag].as_u64().unwrap_or(0) >= at_least,
            "the first answer has at least {at_least} <{tag}>: {tags}"
        );
    }
    assert!(
        !one.contains("**") && !one.contains("```") && !one.contains("## "),
        "{one}"
    );
    assert_eq!(
        first["links"],
        serde_json::json!(["https://docs.aws.amazon.com/lambda/"])
    );
    assert_eq!(second["tags"]["ol"], 1, "{second:#}");
    assert_eq!(second["tags"]["li"], 2, "{second:#}");
    assert_eq!(second["tags"]["strong"], 1, "{second:#}");

    // [n] links to the answer's own sources list.
    let hrefs = |answer: &Value| -> Vec<String> {
        answer["cites"]
            .as_array()
            .expect("cites")
            .iter()
            .map(|c| {
                assert_eq!(c["target_in_own_sources"], true, "{c}");
                c["href"].as_str().expect("href").to_string()
            })
            .collect()
    };
    assert_eq!(hrefs(first), ["#src-1-2", "#src-1-1", "#src-1-2"]);
    assert_eq!(hrefs(second), ["#src-2-1"]);

    // The sources list: only the cited ones, in the order first cited; the rest folded away.
    let cited = |answer: &Value| -> Vec<(String, String)> {
        answer["cited"]
            .as_array()
            .expect("cited")
            .iter()
            .map(|c| {
                (
                    c["id"].as_str().unwrap().into(),
                    c["text"].as_str().unwrap().into(),
                )
            })
            .collect()
    };
    let first_cited = cited(first);
    assert_eq!(
        first_cited
            .iter()
            .map(|(id, _)| id.as_str())
            .collect::<Vec<_>>(),
        ["src-1-2", "src-1-1"],
        "{first_cited:?}"
    );
    assert!(first_cited[0].1.contains("Pricing"), "{first_cited:?}");
    assert!(
        first_cited[1].1.contains("What is Lambda?"),
        "{first_cited:?}"
    );
    assert!(
        first_cited[1].1.contains("lambda.md"),
        "a file on the server is shown by its name: {first_cited:?}"
    );
    assert_eq!(
        first["cited_links"],
        serde_json::json!(["https://aws.amazon.com/lambda/pricing/"])
    );
    assert_eq!(
        first["not_cited"].as_array().map(Vec::len),
        Some(1),
        "{first:#}"
    );
    assert!(
        first["not_cited"][0]
            .as_str()
            .unwrap_or("")
            .contains("limits.md"),
        "{first:#}"
    );
    assert_eq!(first["not_cited_open"], false, "uncited sources are folded");
    let second_cited = cited(second);
    assert_eq!(second_cited.len(), 1, "{second_cited:?}");
    assert_eq!(second_cited[0].0, "src-2-1");
    assert_eq!(
        second["not_cited"].as_array().map(Vec::len),
        Some(2),
        "{second:#}"
    );

    // No server file path anywhere in the page.
    let html = page["html"].as_str().expect("the page's HTML");
    for path in SERVER_PATHS {
        assert!(
            !html.contains(path),
            "the page shows the server path {path:?}"
        );
    }

    // Incremental rendering: blocks were finished while the answer streamed, and none was
    // touched again; the first block on the page is the very node made for it.
    let touched = page["touched"].as_array().expect("touched");
    assert!(
        touched.is_empty(),
        "finished blocks were changed {} times after they were rendered, first: {:?}",
        touched.len(),
        &touched[..touched.len().min(5)]
    );
    // The first answer's heading, paragraph, list and code block end before its last
    // paragraph; the second's paragraph before its list.
    for (answer, ended_early) in [(first, 4), (second, 1)] {
        assert!(
            answer["blocks_while_streaming"].as_u64().unwrap_or(0) >= ended_early,
            "blocks were finished while the answer streamed: {answer:#}"
        );
        assert_eq!(answer["blocks_detached"], 0, "{answer:#}");
        assert_eq!(answer["first_block_kept"], true, "{answer:#}");
        assert_eq!(answer["live_left"], 0, "{answer:#}");
    }

    // A citation link takes the reader to its source.
    client
        .find(Locator::Css("#answer-1 a.cite"))
        .await
        .expect("a citation")
        .click()
        .await
        .expect("clicked");
    let target = js(
        client,
        "return document.querySelector(':target')?.id ?? null",
    )
    .await;
    assert_eq!(target, "src-1-2");
}

fn text(answer: &Value) -> String {
    answer["text"]
        .as_str()
        .expect("the answer's text")
        .to_string()
}
