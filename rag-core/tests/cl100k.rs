//! `Cl100kCounter` against the reference, tiktoken-rs's `encode_ordinary(text).len()`: on the
//! shared documentation corpus, on generated texts that mix everything the cl100k pattern
//! tells apart, and on edge cases; plus its limits, its clean splits and its worst case.

use std::path::Path;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use rag_core::tokens::{is_clean_split, Cl100kCounter, TokenCounter};

const CORPUS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/corpus/lambda-dg.jsonl"
);

/// A named way to count a text.
type Counter<'a> = (&'a str, &'a dyn Fn(&str) -> usize);

/// The reference count.
fn tiktoken(text: &str) -> usize {
    tiktoken_rs::cl100k_base_singleton()
        .encode_ordinary(text)
        .len()
}

#[track_caller]
fn assert_exact(text: &str) {
    let ours = Cl100kCounter::new().count(text);
    let reference = tiktoken(text);
    assert_eq!(ours, reference, "count of {text:?}");
    assert_eq!(Cl100kCounter::new().count_part(text), ours, "{text:?}");
}

#[test]
fn counts_every_passage_of_the_corpus_as_tiktoken_does() {
    if !Path::new(CORPUS).exists() {
        eprintln!("skipped: {CORPUS} is absent (the shared corpus sits beside the project)");
        return;
    }
    let corpus = std::fs::read_to_string(CORPUS).unwrap();
    let mut passages = 0;
    let mut tokens = 0;
    for line in corpus.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        let text = value["text"].as_str().unwrap();
        let ours = Cl100kCounter::new().count(text);
        assert_eq!(ours, tiktoken(text), "passage {}", value["id"]);
        passages += 1;
        tokens += ours;
    }
    assert!(passages > 2_000, "{passages} passages");
    assert!(tokens > 100_000, "{tokens} tokens");
}

#[test]
fn counts_edge_cases_as_tiktoken_does() {
    let mut texts: Vec<String> = [
        "",
        "a",
        "hello world",
        "Hello, World! It's 2024.",
        // Whitespace runs before letters, punctuation, digits, line breaks and the end.
        "a  b",
        "a   b",
        "a \t b",
        "a\t\tb",
        "a  .",
        "a   (x",
        "a  1",
        "a   ",
        "   ",
        " ",
        "\t",
        "a \n b",
        "a  \n\n  b",
        "a\r\n\r\nb",
        "a \r \n \t b",
        "x\n \n \n",
        "\n\n\n",
        " \n",
        "\u{b}\u{c}word",
        "end.\n",
        "end.\n\n  next",
        "!!!\r\n",
        // Contractions, any case, and apostrophes that are not contractions.
        "it's",
        "IT'S",
        "'S",
        "'ll",
        "'LL",
        "we'Ll",
        "they're",
        "they'RE",
        "I've",
        "I'm",
        "he'd",
        "don't",
        "'tis",
        "rock'n'roll",
        "''s",
        " 's",
        "' s",
        "'",
        "x'",
        "'x",
        "'lx",
        "'rex",
        "'vex 'llama 'sx 'Tx 'mx 'dx 'REx",
        // Punctuation before letters.
        ".com",
        "www.example.com",
        "((a",
        "((a))",
        " ((a",
        "a-b_c/d",
        "--flag=value",
        "https://docs.example.com/lambda/latest/dg/welcome.html",
        "{\"key\": [1, 2, 3]}",
        "<|endoftext|>",
        "<|eot_id|>[INST]<<SYS>>\n\nHuman:",
        // Numbers of 1 to 7 digits, next to letters and punctuation.
        "1",
        "12",
        "123",
        "1234",
        "12345",
        "123456",
        "1234567",
        "v1234567x",
        "3.14159",
        "1,024 MB",
        " 2024",
        // Non-ASCII text, alone and next to ASCII.
        "café au lait",
        "Straße",
        "naïve façade",
        "日本語のテキスト",
        "emoji 🎉🎉 and 👍🏽",
        "a\u{a0}b",
        "a \u{a0} b",
        "line\u{2028}separator",
        "next\u{85}line",
        "x\u{2003}\u{2003}y",
        "“quoted” – dash — dash",
        "é é é é",
        "é\né",
        "ascii then é",
        "é then ascii",
        "Лямбда функция",
        // Control bytes.
        "a\u{0}b",
        "a \u{1}b",
        "\u{1f}x",
        "x\u{7f}",
        "tab\u{1c}sep",
        "\u{0}\u{0}\u{0}",
        // Small cases that told wrong scanners and merges apart.
        "jjaaa",
        "  :",
        "\r ",
        "\r\r\n\n\n",
        " \trya",
        "\tB",
        "'Slp",
        "'LlA",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Runs of one class, alone and with something after them: 64 KiB of the classes that make
    // long chunks, 4 KiB of the others (tiktoken is slow on them in a debug build).
    let runs = [("a", 65_536), ("7", 65_536), ("!", 65_536), (" ", 65_536)];
    let short_runs = ["Z", "\t", "\n", "é", "ab", "a ", " a", "\r\n", ". "].map(|u| (u, 4_096));
    for (unit, bytes) in runs.into_iter().chain(short_runs) {
        let run = unit.repeat(bytes / unit.len());
        texts.push(format!("{run}x"));
        texts.push(format!("x {run}"));
        texts.push(run);
    }
    for text in &texts {
        assert_exact(text);
    }
}

#[test]
fn runs_without_whitespace_count_in_linear_time() {
    let counter = Cl100kCounter::new();
    counter.count("warm up: the vocabulary loads once");
    let runs: [String; 3] = [
        "a".repeat(65_536),
        "!".repeat(65_536),
        (0..65_536u32)
            .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
            .collect(),
    ];
    for run in &runs {
        // A bound, not a benchmark: about 15-60 ms in a debug build here, where tiktoken-rs's
        // quadratic merge takes about a second. The best of three tries, so that a busy machine
        // does not fail it.
        let fastest = (0..3)
            .map(|_| {
                let start = Instant::now();
                assert!(counter.count(run) > 1_000);
                start.elapsed()
            })
            .min()
            .unwrap();
        assert!(
            fastest < Duration::from_millis(250),
            "{fastest:?} for 64 KiB of {:?}",
            &run[..4]
        );
    }
}

/// Not a test: the throughput of the three counters on the corpus, for a release build:
/// `cargo test --release -p rag-core --test cl100k -- --ignored --nocapture throughput`.
#[test]
#[ignore = "a measurement, for release builds"]
fn throughput_on_the_corpus() {
    let Ok(corpus) = std::fs::read_to_string(CORPUS) else {
        eprintln!("skipped: {CORPUS} is absent (the shared corpus sits beside the project)");
        return;
    };
    let texts: Vec<String> = corpus
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let value: serde_json::Value = serde_json::from_str(l).unwrap();
            value["text"].as_str().unwrap().to_string()
        })
        .collect();
    let bytes: usize = texts.iter().map(String::len).sum();
    let tiktoken = tiktoken_rs::cl100k_base_singleton();
    let bpe = bpe_openai::cl100k_base();
    let ours = Cl100kCounter::new();
    let counters: [Counter<'_>; 3] = [
        ("tiktoken-rs count_ordinary", &|t| {
            tiktoken.count_ordinary(t)
        }),
        ("bpe-openai Tokenizer::count", &|t| bpe.count(t)),
        ("Cl100kCounter::count", &|t| ours.count(t)),
    ];
    let mut totals = vec![];
    for (name, count) in counters {
        // The best of a few passes: the machine may be busy.
        let mut best = Duration::MAX;
        let mut tokens = 0;
        for _ in 0..5 {
            let start = Instant::now();
            tokens = texts.iter().map(|t| count(t)).sum::<usize>();
            best = best.min(start.elapsed());
        }
        let speed = bytes as f64 / best.as_secs_f64() / 1e6;
        println!("{name:<28} {speed:>6.1} MB/s ({tokens} tokens, {bytes} bytes)");
        totals.push(tokens);
    }
    assert!(totals.windows(2).all(|w| w[0] == w[1]), "{totals:?}");
}

/// Pieces the generated texts are made of: every class of the cl100k pattern and the places
/// where the ASCII scanner hands over to the regex.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z]{1,8}",
        2 => "[A-Z][a-z]{0,6}",
        2 => "[A-Za-z]{1,12}",
        2 => "[0-9]{1,7}",
        3 => Just(" ".to_string()),
        2 => "[ \t\r\n]{1,6}",
        1 => "[ \u{b}\u{c}]{1,3}",
        2 => "[!-/:-@\\[-`{-~]{1,4}",
        2 => "'(s|t|re|ve|m|ll|d|S|T|RE|Re|rE|VE|M|LL|Ll|D|x|)",
        1 => prop::sample::select(vec![
            "é", "ß", "É", "ü", "日本", "語", "🎉", "👍🏽", "\u{a0}", "\u{2028}", "\u{85}",
            "\u{2003}", "\u{3000}", "–", "’", "٣", "Ⅻ", "\u{301}",
        ])
        .prop_map(str::to_string),
        1 => prop::sample::select(vec!["\u{0}", "\u{1}", "\u{1b}", "\u{1c}", "\u{1f}", "\u{7f}"])
            .prop_map(str::to_string),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(piece(), 0..48).prop_map(|pieces| pieces.concat())
}

/// Mostly ASCII words and spaces, the texts with the most clean splits.
fn prose() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            6 => "[A-Za-z]{1,9}",
            3 => Just(" ".to_string()),
            2 => "[.,;:()'\"-]{1,2}",
            2 => "[ \n]{1,3}",
            1 => "[0-9]{1,4}",
            1 => prop::sample::select(vec!["é", "日本", "🎉", "\u{a0}"]).prop_map(str::to_string),
        ],
        0..64,
    )
    .prop_map(|pieces| pieces.concat())
}

proptest! {
    // 256 cases by default; `PROPTEST_CASES=10000` for a longer search.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn generated_texts_count_as_tiktoken_does(text in text()) {
        let ours = Cl100kCounter::new().count(&text);
        prop_assert_eq!(ours, tiktoken(&text), "count of {:?}", text);
    }

    #[test]
    fn limits_stop_the_count_exactly(text in text(), limit in 0usize..80) {
        let counter = Cl100kCounter::new();
        let n = counter.count(&text);
        let expected = (n <= limit).then_some(n);
        prop_assert_eq!(counter.count_till_limit(&text, limit), expected);
        prop_assert_eq!(counter.count_part_till_limit(&text, limit), expected);
        prop_assert_eq!(counter.count_till_limit(&text, n), Some(n));
        if n > 0 {
            prop_assert_eq!(counter.count_till_limit(&text, n - 1), None);
        }
    }

    #[test]
    fn counts_add_up_across_clean_splits(text in prop_oneof![text(), prose()]) {
        let counter = Cl100kCounter::new();
        let whole = counter.count(&text);
        for at in (1..text.len()).filter(|&at| is_clean_split(&text, at)) {
            let (left, right) = text.split_at(at);
            prop_assert_eq!(
                counter.count(left) + counter.count_part(right),
                whole,
                "split of {:?} at {}", text, at
            );
        }
    }
}
