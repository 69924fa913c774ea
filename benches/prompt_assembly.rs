//! W1 of the design's shared workloads: prompt assembly, and the worst case of counting.
//!
//! 60 passages of about 200 tokens (real Lambda documentation from
//! `../shared/corpus/lambda-dg.jsonl` when present, generated text otherwise), 10 earlier
//! turns and a question:
//!
//! - (a) the Claude 3 Messages request body, everything in it, rendered by the family template
//!   (counted as the model's profile says) and serialized by `rag-bedrock` exactly as it is
//!   sent; baseline: serializing the already rendered prompt;
//! - (b) a Llama 3 prompt packed into 8,192 - 1,024 tokens, with the templates' shared count
//!   cache (the steady state of a service: passages and turns recur) and with nothing cached
//!   (a plain cl100k counter that counts every part again at every render); baselines: one
//!   count of the packed prompt, by this library's cl100k counter and by tiktoken-rs;
//! - (c) a 64 KiB passage without whitespace, packed by Llama 3 (cl100k) and Mistral
//!   (SentencePiece) with nothing cached: linear counting keeps it from stalling a worker;
//!   baseline: tiktoken-rs counting the same run.
//!
//! `cargo bench --features bedrock --bench prompt_assembly -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use rag::bedrock::sdk::bedrockruntime::config::{BehaviorVersion, Credentials, Region};
use rag::bedrock::sdk::bedrockruntime::{Client, Config};
use rag::bedrock::BedrockGenerator;
use rag::prompt::{Llama3Template, MistralTemplate};
use rag::tokens::{count_prompt, Cl100kCounter, SentencePieceCounter, TokenCounter};
use rag::{
    template_for_profile, GenerationParams, ModelProfile, Passage, PromptInput, PromptTemplate,
    TokenBudget, Turn,
};

const CORPUS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/corpus/lambda-dg.jsonl"
);
const QUESTION: &str = "How do I raise the reserved concurrency of a function, and what happens \
to requests above it?";
const CLAUDE: &str = "anthropic.claude-3-haiku-20240307-v1:0";

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

/// A generator for the request body only: it is never called.
fn claude_generator() -> BedrockGenerator {
    let config = Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::for_tests())
        .endpoint_url("http://127.0.0.1:9")
        .build();
    BedrockGenerator::builder(CLAUDE)
        .with_client(Client::from_conf(config))
        .build()
        .expect("a valid generator")
}

fn bench_prompt_assembly(c: &mut Criterion) {
    let passages = passages();
    let history = history();
    let input = PromptInput {
        question: QUESTION,
        passages: &passages,
        history: &history,
    };

    // (a) Claude 3 Messages, everything fits.
    let profile = ModelProfile::for_model_id(CLAUDE).unwrap();
    let claude_budget = TokenBudget::new(
        profile.context_window,
        profile.max_output_tokens,
        profile.default_reserve(),
    );
    let claude = template_for_profile(&profile);
    let generator = claude_generator();
    let params = GenerationParams::default().with_max_tokens(profile.max_output_tokens as u32);
    let rendered = claude.render(&input, &claude_budget).unwrap();
    assert_eq!(rendered.passages_kept.len(), 60);
    assert_eq!(rendered.turns_kept, 10);
    let body = generator.request_body(&rendered.prompt, &params).unwrap();
    eprintln!("(a) Claude request body: {} bytes", body.len());

    let mut group = c.benchmark_group("w1a_claude3_messages_body");
    group.bench_function("render_and_serialize", |b| {
        b.iter(|| {
            let rendered = claude.render(black_box(&input), &claude_budget).unwrap();
            black_box(generator.request_body(&rendered.prompt, &params).unwrap())
        })
    });
    group.bench_function("baseline_serialize_only", |b| {
        b.iter(|| black_box(generator.request_body(black_box(&rendered.prompt), &params)))
    });
    group.finish();

    // (b) Llama 3 packed into 8,192 - 1,024 tokens.
    let counter = Cl100kCounter::new();
    let llama_budget = TokenBudget::new(8_192, 1_024, 0);
    let llama = Llama3Template::new();
    let packed = llama.render(&input, &llama_budget).unwrap();
    let tokens = count_prompt(&counter, &packed.prompt);
    assert!(
        tokens <= llama_budget.prompt_tokens(),
        "over budget: {tokens}"
    );
    // Counted part by part, the packer's total is the exact count of the whole prompt.
    assert_eq!(packed.token_count, tokens);
    eprintln!(
        "(b) Llama 3: {tokens} tokens of {}, {} passages and {} turns kept",
        llama_budget.prompt_tokens(),
        packed.passages_kept.len(),
        packed.turns_kept
    );

    // Every count done again at every render: what the first ask of a session pays.
    let uncached = Llama3Template::builder()
        .with_counter(Cl100kCounter::new())
        .build()
        .unwrap();
    assert_eq!(uncached.render(&input, &llama_budget).unwrap(), packed);
    let rag::Prompt::Text(packed_text) = &packed.prompt else {
        panic!("Llama 3 renders text")
    };
    let tiktoken = tiktoken_rs::cl100k_base_singleton();
    assert_eq!(tiktoken.encode_ordinary(packed_text).len(), tokens);

    let mut group = c.benchmark_group("w1b_llama3_packed_8k");
    group.bench_function("render_in_budget", |b| {
        b.iter(|| black_box(llama.render(black_box(&input), &llama_budget).unwrap()))
    });
    group.bench_function("render_in_budget_uncached_counts", |b| {
        b.iter(|| black_box(uncached.render(black_box(&input), &llama_budget).unwrap()))
    });
    group.bench_function("baseline_count_packed_prompt", |b| {
        b.iter(|| black_box(counter.count(black_box(packed_text))))
    });
    group.bench_function("baseline_count_packed_prompt_tiktoken_rs", |b| {
        b.iter(|| black_box(tiktoken.encode_ordinary(black_box(packed_text)).len()))
    });
    group.finish();

    // (c) One passage that is a 64 KiB run without whitespace.
    let run: String = (0..64 * 1024)
        .map(|i| (b'a' + (i * 7 % 26) as u8) as char)
        .collect();
    let long = [Passage::new("long", run.clone())];
    let input = PromptInput {
        question: QUESTION,
        passages: &long,
        history: &[],
    };
    let budget = TokenBudget::new(32_000, 1_024, 0);
    let mistral = MistralTemplate::builder()
        .with_counter(SentencePieceCounter::mistral_v1())
        .build()
        .unwrap();
    let mut group = c.benchmark_group("w1c_64k_run_without_whitespace");
    group.bench_function("llama3_render_uncached", |b| {
        b.iter(|| black_box(uncached.render(black_box(&input), &budget).unwrap()))
    });
    group.bench_function("mistral_render_uncached", |b| {
        b.iter(|| black_box(mistral.render(black_box(&input), &budget).unwrap()))
    });
    group.bench_function("baseline_tiktoken_rs_count", |b| {
        b.iter(|| black_box(tiktoken.encode_ordinary(black_box(&run)).len()))
    });
    group.finish();
}

criterion_group!(benches, bench_prompt_assembly);
criterion_main!(benches);
