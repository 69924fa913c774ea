//! The reference tokenizers are what we think they are: known strings get the counts the
//! real tokenizers give (computed once with them), special tokens count as the model counts
//! them, and over the Lambda corpus each reference relates to cl100k as measured. Run with
//! `--nocapture` to see the corpus ratios.
//!
//! Needs the references (`scripts/test.sh` installs them and sets
//! `RAG_TEST_REFERENCE_TOKENIZERS`); without them every test here fails.

#[path = "support/reference.rs"]
mod reference;

use reference::{count, counts};

fn cl100k(text: &str) -> usize {
    tiktoken_rs::cl100k_base_singleton()
        .encode_ordinary(text)
        .len()
}

const LLAMA3_CHAT: &str = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n\
    What is AWS Lambda?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n";
const LLAMA4_CHAT: &str = "<|begin_of_text|><|header_start|>user<|header_end|>\n\n\
    What is AWS Lambda?<|eot|><|header_start|>assistant<|header_end|>\n\n";
const MISTRAL_INST: &str = "<s>[INST] What is AWS Lambda? [/INST]";
const LLAMA2_INST: &str =
    "<s>[INST] <<SYS>>\nYou are helpful.\n<</SYS>>\n\nWhat is AWS Lambda? [/INST]";
const CLAUDE2_PROMPT: &str = "\n\nHuman: What is AWS Lambda?\n\nAssistant:";
const UNICODE: &str = "Grüße, 世界! 🚀";

#[test]
fn llama3_counts_special_tokens_as_one_and_words_as_cl100k() {
    assert_eq!(count("llama3", "<|begin_of_text|>"), 1);
    assert_eq!(count("llama3", "<|eot_id|>"), 1);
    assert_eq!(count("llama3", "hello world"), 2);
    // 6 special tokens, "user", "\n\n" twice, "What is AWS Lambda?" (5), "assistant".
    assert_eq!(count("llama3", LLAMA3_CHAT), 15);
    // The same text as plain cl100k text is much longer: the special tokens are text there.
    assert_eq!(cl100k(LLAMA3_CHAT), 46);
    // Llama 4's special tokens are text to Llama 3.
    assert_eq!(count("llama3", LLAMA4_CHAT), 36);
    assert_eq!(count("llama3", UNICODE), 9);
}

#[test]
fn llama4_counts_its_own_special_tokens_as_one() {
    assert_eq!(count("llama4", "<|begin_of_text|>"), 1);
    assert_eq!(count("llama4", "<|header_start|>user<|header_end|>"), 3);
    assert_eq!(count("llama4", "hello world"), 2);
    assert_eq!(count("llama4", LLAMA4_CHAT), 15);
    assert_eq!(count("llama4", LLAMA3_CHAT), 39);
    assert_eq!(count("llama4", UNICODE), 8);
}

#[test]
fn mistral_v1_is_sentencepiece_with_the_dummy_prefix() {
    // ▁Hello ▁world; ▁hell o ▁world.
    assert_eq!(count("mistral-v1", "Hello world"), 2);
    assert_eq!(count("mistral-v1", "hello world"), 3);
    assert_eq!(count("mistral-v1", ""), 0);
    // "<s>" as text: ▁< s >.
    assert_eq!(count("mistral-v1", "<s>"), 3);
    assert_eq!(count("mistral-v1", MISTRAL_INST), 16);
    assert_eq!(count("mistral-v1", CLAUDE2_PROMPT), 17);
    assert_eq!(count("mistral-v1", UNICODE), 10);
}

#[test]
fn mistral_v1_specials_counts_bos_and_eos_as_one() {
    assert_eq!(count("mistral-v1-specials", "<s>"), 1);
    assert_eq!(count("mistral-v1-specials", "</s><s>"), 2);
    // <s>, then "[INST] What is AWS Lambda? [/INST]" on its own (with its ▁ prefix): 1 + 13.
    assert_eq!(count("mistral-v1-specials", MISTRAL_INST), 14);
    assert_eq!(
        count("mistral-v1-specials", MISTRAL_INST),
        1 + count("mistral-v1", "[INST] What is AWS Lambda? [/INST]")
    );
    // Without <s> or </s>, the same as mistral-v1.
    assert_eq!(count("mistral-v1-specials", "Hello world"), 2);
}

#[test]
fn llama2_is_sentencepiece_without_bos() {
    assert_eq!(count("llama2", "Hello world"), 2);
    assert_eq!(count("llama2", "hello world"), 2);
    assert_eq!(count("llama2", ""), 0);
    assert_eq!(count("llama2", "<s>"), 3);
    assert_eq!(count("llama2", LLAMA2_INST), 32);
    // Byte fallback for 世, 界 and 🚀 (3 + 3 + 4 bytes).
    assert_eq!(count("llama2", UNICODE), 13);
    assert_eq!(count("llama2-specials", "</s><s>"), 2);
    assert_eq!(count("llama2-specials", LLAMA2_INST), 31);
    assert_eq!(count("llama2-specials", "a<s>b"), 3);
}

#[test]
fn claude2_counts_the_legacy_prompt() {
    assert_eq!(count("claude2", "hello world"), 2);
    assert_eq!(count("claude2", CLAUDE2_PROMPT), 13);
    assert_eq!(count("claude2", UNICODE), 12);
    assert_eq!(count("claude2", ""), 0);
}

#[test]
fn a_batch_counts_each_text() {
    let texts: Vec<String> = ["hello world", "", LLAMA3_CHAT, "hello world"]
        .map(String::from)
        .to_vec();
    assert_eq!(counts("llama3", &texts), [2, 0, 15, 2]);
    assert_eq!(counts("claude2", &texts), [2, 0, 60, 2]);
    assert_eq!(counts("llama2", &[]), Vec::<usize>::new());
}

#[test]
#[should_panic(expected = "unknown reference tokenizer \"gpt-2\"")]
fn an_unknown_tokenizer_panics() {
    count("gpt-2", "hello");
}

/// Measured on `lambda-dg.jsonl` (2,897 passages): the total over the corpus and the worst
/// passage, each as a ratio to cl100k.
const MEASURED: &[(&str, f64, f64)] = &[
    ("llama3", 0.9999, 1.0),
    ("llama4", 0.989, 1.155),
    ("mistral-v1", 1.22, 1.78),
    ("llama2", 1.218, 1.776),
    ("claude2", 1.078, 1.355),
];

#[test]
fn over_the_corpus_each_reference_is_as_measured_and_llama3_never_exceeds_cl100k() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/corpus/lambda-dg.jsonl"
    );
    let Ok(corpus) = std::fs::read_to_string(path) else {
        eprintln!("skipped: the corpus {path} is absent");
        return;
    };
    let passages: Vec<(String, String)> = corpus
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            (
                v["id"].as_str().expect("an id").to_owned(),
                v["text"].as_str().expect("a text").to_owned(),
            )
        })
        .collect();
    let texts: Vec<String> = passages.iter().map(|(_, t)| t.clone()).collect();
    let base: Vec<usize> = texts.iter().map(|t| cl100k(t)).collect();
    let base_total: usize = base.iter().sum();
    eprintln!(
        "{} passages, {base_total} cl100k tokens; each reference as a ratio to cl100k:",
        texts.len()
    );
    for &(name, total_ratio, worst_ratio) in MEASURED {
        let counts = counts(name, &texts);
        let total: usize = counts.iter().sum();
        let ratio = total as f64 / base_total as f64;
        let (worst, worst_at) = counts
            .iter()
            .zip(&base)
            .enumerate()
            .filter(|(_, (_, &b))| b > 0)
            .map(|(i, (&c, &b))| (c as f64 / b as f64, i))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .expect("passages");
        eprintln!(
            "  {name:<11} {ratio:.4}x overall ({total} tokens), worst passage {worst:.4}x \
             ({} vs {} cl100k, {})",
            counts[worst_at], base[worst_at], passages[worst_at].0
        );
        if name == "llama3" {
            // Llama 3's vocabulary holds cl100k's with the same ranks, and the same
            // pre-tokenizer pattern: it can merge more, never less.
            for (i, (&c, &b)) in counts.iter().zip(&base).enumerate() {
                assert!(
                    c <= b,
                    "llama3 counts {c} > cl100k {b} on {}",
                    passages[i].0
                );
            }
        }
        // Within 2% of what was measured: a broken reference is far off.
        assert!(
            (ratio / total_ratio - 1.0).abs() < 0.02,
            "{name}: {ratio:.4}x cl100k overall, measured {total_ratio}x"
        );
        assert!(
            (worst / worst_ratio - 1.0).abs() < 0.02,
            "{name}: worst passage {worst:.4}x cl100k, measured {worst_ratio}x"
        );
    }
}
