//! The token budget holds in each model's own tokens: for random real passages, turns and
//! questions, every family's rendered prompt, counted by that family's reference counter, plus
//! `max_tokens` never exceeds the window. Exact counters are checked against the real
//! tokenizers too.
//!
//! References (installed by `scripts/test.sh`, see `tests/support/reference.rs`):
//! - Llama 3: Meta's own tokenizer (special tokens as one token each);
//! - Mistral: the real SentencePiece v1 model, counting `<s>`/`</s>` as text and as special
//!   tokens, whichever is more;
//! - Llama 2: the Llama 2 tokenizer, the same two ways;
//! - Claude legacy text: Anthropic's own legacy tokenizer;
//! - chat models behind Converse, as Llama 4: Meta's Llama 4 tokenizer over Meta's Llama 4
//!   chat format;
//! - Claude 3+ and Titan: their tokenizers are not public; the check is that the documented
//!   bound of the whole prompt (cl100k times the factor, plus the framing) stays in budget,
//!   which proves the packer's part-by-part accounting, not the factor.
//!
//! The passages come from `../shared/corpus/lambda-dg.jsonl`; without the corpus these tests
//! use generated text and say so.

#[path = "support/reference.rs"]
mod reference;

use std::sync::OnceLock;

use proptest::prelude::*;
use rag::tokens::{SentencePieceCounter, TokenCounter};
use rag::{
    template_for_profile, ModelFamily, ModelProfile, Passage, Prompt, PromptInput, TokenBudget,
    Turn,
};

const CORPUS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/corpus/lambda-dg.jsonl"
);

/// The corpus passages (or generated ones without it).
fn corpus() -> &'static [Passage] {
    static PASSAGES: OnceLock<Vec<Passage>> = OnceLock::new();
    PASSAGES.get_or_init(|| match std::fs::read_to_string(CORPUS) {
        Ok(text) => text
            .lines()
            .filter_map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).ok()?;
                Some(
                    Passage::new(v["id"].as_str()?, v["text"].as_str()?)
                        .with_title(v["title"].as_str()?)
                        .with_uri(v["uri"].as_str()?),
                )
            })
            .collect(),
        Err(e) => {
            eprintln!("{CORPUS}: {e}; using generated passages");
            (0..500)
                .map(|i| {
                    Passage::new(
                        format!("gen-{i}"),
                        format!("Generated passage {i}: functions scale with concurrency. ")
                            .repeat(1 + i % 7),
                    )
                })
                .collect()
        }
    })
}

fn cl100k(text: &str) -> usize {
    tiktoken_rs::cl100k_base_singleton()
        .encode_ordinary(text)
        .len()
}

/// The prompt's count by the family's reference, framing included.
fn reference_count(profile: &ModelProfile, prompt: &Prompt) -> usize {
    let texts = |tokenizer: &str, text: &str| reference::count(tokenizer, text);
    match (profile.family, prompt) {
        (ModelFamily::Llama3, Prompt::Text(t)) => texts("llama3", t),
        (ModelFamily::Mistral, Prompt::Text(t)) => {
            texts("mistral-v1", t).max(texts("mistral-v1-specials", t))
        }
        (ModelFamily::Llama2, Prompt::Text(t)) => {
            texts("llama2", t).max(texts("llama2-specials", t))
        }
        (ModelFamily::ClaudeText, Prompt::Text(t)) => texts("claude2", t),
        // No public tokenizer: the documented bound of the whole prompt.
        (ModelFamily::TitanText, Prompt::Text(t)) => {
            (cl100k(t) * profile.tokens.per_mille() as usize).div_ceil(1000)
        }
        (ModelFamily::Claude, Prompt::Chat { system, messages }) => {
            let scaled = |t: &str| (cl100k(t) * profile.tokens.per_mille() as usize).div_ceil(1000);
            system.as_deref().map_or(0, scaled)
                + messages.iter().map(|m| scaled(&m.content)).sum::<usize>()
                + profile
                    .framing
                    .tokens(messages.len() + usize::from(system.is_some()))
        }
        // Llama 4 behind Converse: Meta's Llama 4 chat format, counted by its tokenizer.
        (ModelFamily::Chat, Prompt::Chat { system, messages }) => {
            let mut text = String::from("<|begin_of_text|>");
            let mut message = |role: &str, content: &str| {
                text.push_str("<|header_start|>");
                text.push_str(role);
                text.push_str("<|header_end|>\n\n");
                text.push_str(content);
                text.push_str("<|eot|>");
            };
            if let Some(system) = system {
                message("system", system);
            }
            for m in messages {
                let role = match m.role {
                    rag::Role::User => "user",
                    rag::Role::Assistant => "assistant",
                };
                message(role, &m.content);
            }
            text.push_str("<|header_start|>assistant<|header_end|>\n\n");
            texts("llama4", &text)
        }
        (family, prompt) => panic!("{family} rendered an unexpected prompt: {prompt:?}"),
    }
}

/// The profile each family is checked with.
fn profile(family: ModelFamily, window: usize) -> ModelProfile {
    let id = match family {
        ModelFamily::Claude => "anthropic.claude-3-5-haiku-20241022-v1:0",
        ModelFamily::ClaudeText => "anthropic.claude-v2:1",
        ModelFamily::Llama2 => "meta.llama2-13b-chat-v1",
        ModelFamily::Llama3 => "meta.llama3-8b-instruct-v1:0",
        ModelFamily::TitanText => "amazon.titan-text-express-v1",
        ModelFamily::Mistral => "mistral.mixtral-8x7b-instruct-v0:1",
        _ => "meta.llama4-maverick-17b-instruct-v1:0",
    };
    let mut profile = ModelProfile::for_model_id(id).expect("a listed model");
    profile.context_window = window;
    profile
}

/// A random ask: passages from the corpus, turns made of corpus sentences, a question.
fn case() -> impl Strategy<Value = (Vec<usize>, Vec<(usize, usize)>, usize, usize, u32)> {
    let n = corpus().len();
    (
        prop::collection::vec(0..n, 0..40),
        prop::collection::vec((0..n, 0..n), 0..8),
        0..n,
        1_000usize..9_000,
        prop::sample::select(vec![64u32, 256, 512, 900]),
    )
}

fn check(family: ModelFamily, case: (Vec<usize>, Vec<(usize, usize)>, usize, usize, u32)) {
    let (picked, turns, question, window, max_tokens) = case;
    let all = corpus();
    let passages: Vec<Passage> = picked.iter().map(|&i| all[i].clone()).collect();
    let snippet = |i: usize| all[i].text.chars().take(300).collect::<String>();
    let history: Vec<Turn> = turns
        .iter()
        .map(|&(q, a)| Turn::new(snippet(q), snippet(a)))
        .collect();
    let question = format!(
        "{} What does this mean for my function?",
        all[question].text.chars().take(200).collect::<String>()
    );
    let profile = profile(family, window);
    let budget = TokenBudget::new(window, max_tokens as usize, profile.default_reserve());
    let template = template_for_profile(&profile);
    let input = PromptInput {
        question: &question,
        passages: &passages,
        history: &history,
    };
    let Ok(rendered) = template.render(&input, &budget) else {
        // The question alone does not fit this window: refused before any call, as it must be.
        return;
    };
    let reference = reference_count(&profile, &rendered.prompt);
    assert!(
        reference + max_tokens as usize <= window,
        "{family}: {reference} reference tokens + {max_tokens} > {window} (template counted {})",
        rendered.token_count
    );
    // The template's own count is an upper bound of the reference count.
    assert!(
        reference <= rendered.token_count,
        "{family}: the template counted {} but the reference {reference}",
        rendered.token_count
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn llama3_prompts_fit_in_llama3_tokens(case in case()) { check(ModelFamily::Llama3, case); }

    #[test]
    fn mistral_prompts_fit_in_mistral_tokens(case in case()) { check(ModelFamily::Mistral, case); }

    #[test]
    fn llama2_prompts_fit_in_llama2_tokens(case in case()) { check(ModelFamily::Llama2, case); }

    #[test]
    fn claude_text_prompts_fit_in_claude_2_tokens(case in case()) {
        check(ModelFamily::ClaudeText, case);
    }

    #[test]
    fn claude_prompts_fit_in_their_bound(case in case()) { check(ModelFamily::Claude, case); }

    #[test]
    fn titan_prompts_fit_in_their_bound(case in case()) { check(ModelFamily::TitanText, case); }

    #[test]
    fn converse_prompts_fit_in_llama4_tokens(case in case()) { check(ModelFamily::Chat, case); }
}

/// Random text of the kinds that tokenizers treat differently.
fn text() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        " ",
        "  ",
        "\n",
        "\n\n",
        "\t",
        "\r\n",
        "a",
        "Lambda",
        " function",
        "'s",
        "123",
        "4567",
        ".",
        ",",
        "()",
        "é",
        "ß",
        "世界",
        "🚀",
        "\u{2581}",
        "<s>",
        "[INST]",
        "<|eot_id|>",
        "\u{00A0}",
        "x",
        "URL: https://example.com/a?b=c",
    ]);
    prop::collection::vec(pieces, 0..24).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The shipped SentencePiece counter is the real SentencePiece v1 model's count.
    #[test]
    fn the_sentencepiece_counter_is_exact(texts in prop::collection::vec(text(), 1..16)) {
        let counter = SentencePieceCounter::mistral_v1();
        let reference = reference::counts("mistral-v1", &texts);
        for (text, want) in texts.iter().zip(reference) {
            prop_assert_eq!(counter.count(text), want, "{:?}", text);
        }
    }

    /// Llama 3 counts at most what cl100k (the Llama 3 template's counter) counts.
    #[test]
    fn cl100k_bounds_llama3(texts in prop::collection::vec(text(), 1..16)) {
        let reference = reference::counts("llama3", &texts);
        for (text, llama3) in texts.iter().zip(reference) {
            prop_assert!(llama3 <= rag::Cl100kCounter::new().count(text), "{:?}", text);
        }
    }
}

#[test]
fn the_sentencepiece_counter_is_exact_on_the_corpus() {
    let texts: Vec<String> = corpus().iter().map(|p| p.text.clone()).collect();
    let reference = reference::counts("mistral-v1", &texts);
    let counter = SentencePieceCounter::mistral_v1();
    let wrong: Vec<&String> = texts
        .iter()
        .zip(&reference)
        .filter(|(t, want)| counter.count(t) != **want)
        .map(|(t, _)| t)
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} differ: {:?}",
        wrong.len(),
        texts.len(),
        wrong.first()
    );
    // A part's count is what it adds after a line feed (a clean split).
    let sample: Vec<String> = texts
        .iter()
        .take(200)
        .map(|t| format!("x\n{}", t.trim()))
        .collect();
    let joined = reference::counts("mistral-v1", &sample);
    let x = reference::count("mistral-v1", "x\n");
    for (text, n) in texts.iter().take(200).zip(joined) {
        assert_eq!(counter.count_part(text.trim()), n - x, "{text:?}");
    }
}

/// Why cl100k bounds Llama 3: Meta's Llama 3 rank file holds every cl100k token with the same
/// rank, and adds tokens above them (the pre-tokenizer pattern is the same, so Llama 3 can
/// only merge further). Read from the rank file the test command installs.
#[test]
fn llama3_holds_every_cl100k_token_with_the_same_rank() {
    use base64::Engine as _;
    let dir = std::env::var(reference::ENV).unwrap_or_else(|_| {
        panic!(
            "{} is not set: run scripts/test.sh, which installs the reference tokenizers",
            reference::ENV
        )
    });
    let path = std::path::Path::new(&dir).join("models/llama3/tokenizer.model");
    let file = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut llama3: std::collections::HashMap<Vec<u8>, u32> = std::collections::HashMap::new();
    for line in file.lines().filter(|l| !l.is_empty()) {
        let (token, rank) = line.split_once(' ').expect("`base64 rank` lines");
        let token = base64::engine::general_purpose::STANDARD
            .decode(token)
            .expect("base64");
        llama3.insert(token, rank.parse().expect("a rank"));
    }
    let cl100k = &bpe_openai::cl100k_base().bpe;
    assert_eq!(cl100k.num_tokens(), 100_256);
    assert_eq!(llama3.len(), 128_000);
    for id in 0..cl100k.num_tokens() as u32 {
        assert_eq!(
            llama3.get(cl100k.token_bytes(id)),
            Some(&id),
            "cl100k token {id} has another rank in Llama 3"
        );
    }
    assert!(llama3.values().all(|&rank| rank < 128_000));
}
