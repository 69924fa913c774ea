//! W1 of the design's shared workloads: prompt assembly.
//!
//! 60 passages of about 200 tokens (real Lambda documentation from
//! `../shared/corpus/lambda-dg.jsonl` when present, generated text otherwise), 10 earlier
//! turns and a question:
//!
//! - (a) the Claude 3 Messages request body, everything in it, serialized to JSON;
//! - (b) a Llama 3 prompt packed into 8,192 - 1,024 tokens.
//!
//! Each group has a baseline: (a) serializing an already rendered prompt, (b) one cl100k
//! count of the packed prompt, the floor of any packer that checks its result by counting.
//! (b) runs with the templates' default counter, whose process-wide cache remembers the
//! counts of passages and turns seen before (the steady state of a service), and with a
//! plain cl100k counter that counts everything again at every render (a cold start).
//!
//! `cargo bench --bench prompt_assembly -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use rag_core::prompt::{ClaudeMessagesTemplate, Llama3Template};
use rag_core::tokens::{count_prompt, Cl100kCounter, TokenCounter};
use rag_core::{
    Message, ModelProfile, Passage, Prompt, PromptInput, PromptTemplate, Role, TokenBudget, Turn,
};
use serde::Serialize;

const CORPUS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/corpus/lambda-dg.jsonl"
);
const QUESTION: &str = "How do I raise the reserved concurrency of a function, and what happens \
to requests above it?";

/// 60 passages of about 200 cl100k tokens.
fn passages() -> Vec<Passage> {
    let counter = Cl100kCounter::new();
    if let Ok(corpus) = std::fs::read_to_string(CORPUS) {
        let passages: Vec<Passage> = corpus
            .lines()
            .filter_map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).ok()?;
                Some(
                    Passage::new(v["id"].as_str()?, v["text"].as_str()?)
                        .with_title(v["title"].as_str()?)
                        .with_uri(v["uri"].as_str()?),
                )
            })
            .filter(|p| (170..=230).contains(&counter.count(&p.text)))
            .take(60)
            .collect();
        if passages.len() == 60 {
            return passages;
        }
    }
    eprintln!("{CORPUS} is absent: using generated passages");
    (0..60)
        .map(|i| {
            let text = (0..20)
                .map(|j| format!("Sentence {j} of passage {i} explains how Lambda scales."))
                .collect::<Vec<_>>()
                .join(" ");
            Passage::new(format!("gen-{i}"), text)
                .with_title(format!("Generated {i}"))
                .with_uri(format!("https://example.com/{i}"))
        })
        .collect()
}

fn history() -> Vec<Turn> {
    (0..10)
        .map(|i| {
            Turn::new(
                format!("Follow-up question {i}: what about cold starts in a VPC?"),
                "Cold starts depend on the runtime, the package size and the memory setting; \
                 provisioned concurrency keeps environments initialized [1]. "
                    .repeat(2),
            )
        })
        .collect()
}

/// The body of a Bedrock `InvokeModel` request to a Claude 3 model.
#[derive(Serialize)]
struct ClaudeBody<'a> {
    anthropic_version: &'static str,
    max_tokens: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<&'a str>,
    messages: Vec<ClaudeMessage<'a>>,
}

#[derive(Serialize)]
struct ClaudeMessage<'a> {
    role: Role,
    content: [TextBlock<'a>; 1],
}

#[derive(Serialize)]
struct TextBlock<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

fn claude_body(prompt: &Prompt, max_tokens: usize) -> Vec<u8> {
    let Prompt::Chat { system, messages } = prompt else {
        panic!("Claude Messages renders a chat prompt")
    };
    let body = ClaudeBody {
        anthropic_version: "bedrock-2023-05-31",
        max_tokens,
        system: system.as_deref(),
        messages: messages
            .iter()
            .map(|m: &Message| ClaudeMessage {
                role: m.role,
                content: [TextBlock {
                    kind: "text",
                    text: &m.content,
                }],
            })
            .collect(),
    };
    // Sized for the text plus escapes and framing, so the buffer never grows.
    let text_bytes = system.as_ref().map_or(0, String::len)
        + messages.iter().map(|m| m.content.len() + 64).sum::<usize>();
    let mut out = Vec::with_capacity(text_bytes + text_bytes / 8 + 256);
    serde_json::to_writer(&mut out, &body).expect("serializable");
    out
}

fn bench_prompt_assembly(c: &mut Criterion) {
    let passages = passages();
    let history = history();
    let input = PromptInput {
        question: QUESTION,
        passages: &passages,
        history: &history,
    };
    let counter = Cl100kCounter::new();

    // (a) Claude 3 Messages, everything fits.
    let profile = ModelProfile::for_model_id("anthropic.claude-3-haiku-20240307-v1:0").unwrap();
    let claude_budget = TokenBudget::new(profile.context_window, profile.max_output_tokens, 0);
    let claude = ClaudeMessagesTemplate::new();
    let rendered = claude.render(&input, &claude_budget).unwrap();
    assert_eq!(rendered.passages_kept.len(), 60);
    assert_eq!(rendered.turns_kept, 10);
    let body = claude_body(&rendered.prompt, profile.max_output_tokens);
    eprintln!("(a) Claude request body: {} bytes", body.len());

    let mut group = c.benchmark_group("w1a_claude3_messages_body");
    group.bench_function("render_and_serialize", |b| {
        b.iter(|| {
            let rendered = claude.render(black_box(&input), &claude_budget).unwrap();
            black_box(claude_body(&rendered.prompt, profile.max_output_tokens))
        })
    });
    group.bench_function("baseline_serialize_only", |b| {
        b.iter(|| black_box(claude_body(black_box(&rendered.prompt), 4_096)))
    });
    group.finish();

    // (b) Llama 3 packed into 8,192 - 1,024 tokens.
    let llama_budget = TokenBudget::new(8_192, 1_024, 0);
    let llama = Llama3Template::new();
    let packed = llama.render(&input, &llama_budget).unwrap();
    let tokens = count_prompt(&counter, &packed.prompt);
    assert!(
        tokens <= llama_budget.prompt_tokens(),
        "over budget: {tokens}"
    );
    eprintln!(
        "(b) Llama 3: {tokens} counted tokens of {} ({} reported), {} passages and {} turns kept",
        llama_budget.prompt_tokens(),
        packed.token_count,
        packed.passages_kept.len(),
        packed.turns_kept
    );

    // Every count done again at every render: what the first ask of a session pays.
    let uncached = Llama3Template::builder()
        .with_counter(Cl100kCounter::new())
        .build()
        .unwrap();
    assert_eq!(uncached.render(&input, &llama_budget).unwrap(), packed);

    let mut group = c.benchmark_group("w1b_llama3_packed_8k");
    group.bench_function("render_in_budget", |b| {
        b.iter(|| black_box(llama.render(black_box(&input), &llama_budget).unwrap()))
    });
    group.bench_function("render_in_budget_uncached_counts", |b| {
        b.iter(|| black_box(uncached.render(black_box(&input), &llama_budget).unwrap()))
    });
    group.bench_function("baseline_count_packed_prompt", |b| {
        b.iter(|| black_box(count_prompt(&counter, black_box(&packed.prompt))))
    });
    group.finish();
}

criterion_group!(benches, bench_prompt_assembly);
criterion_main!(benches);
