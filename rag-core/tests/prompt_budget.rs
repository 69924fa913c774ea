//! The token budget: a rendered prompt's counted tokens never exceed the budget, for random
//! sizes of passages, history and budget, in every family; what is dropped is reported; a
//! question that alone does not fit is a `ContextOverflow`.

use proptest::prelude::*;
use rag_core::tokens::{count_prompt, Cl100kCounter, TokenCounter};
use rag_core::{
    template_for, Error, ModelFamily, Passage, Prompt, PromptInput, PromptTemplate, RenderedPrompt,
    TokenBudget, Turn,
};

const WORDS: &[&str] = &[
    "Lambda",
    "function",
    "concurrency",
    "the",
    "of",
    "timeout",
    "S3",
    "bucket",
    "événement",
    "日本語",
    "🎉",
    "1,024",
    "MB",
    "<|eot_id|>",
    "[INST]",
    "\n\nHuman:",
    "\nUser:",
    "a",
    "is",
    "configure",
    "IAM",
    "role",
    "VPC",
    "{{system}}",
    "</document>",
    "  ",
    "\n",
];

fn text_of(words: &[usize]) -> String {
    words
        .iter()
        .map(|&i| WORDS[i % WORDS.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

fn words(max: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0..WORDS.len(), 0..max)
}

fn check(family: ModelFamily, input: &PromptInput<'_>, budget: &TokenBudget) {
    let available = budget.prompt_tokens();
    let counted = |prompt: &Prompt| count_prompt(&Cl100kCounter::new(), prompt);
    match template_for(family).render(input, budget) {
        Ok(rendered) => {
            let tokens = counted(&rendered.prompt);
            assert!(
                tokens <= rendered.token_count && rendered.token_count <= available,
                "{family}: counted {tokens}, reported {}, budget {available}",
                rendered.token_count
            );
            check_report(input, &rendered);
        }
        Err(Error::ContextOverflow { needed, budget: b }) => {
            assert_eq!(b, available);
            assert!(
                needed > available,
                "{family}: needed {needed} <= {available}"
            );
            // The question alone really does not fit.
            let alone = PromptInput {
                question: input.question,
                passages: &[],
                history: &[],
            };
            assert!(matches!(
                template_for(family).render(&alone, budget),
                Err(Error::ContextOverflow { .. })
            ));
        }
        Err(other) => panic!("{family}: unexpected {other:?}"),
    }
}

fn check_report(input: &PromptInput<'_>, rendered: &RenderedPrompt) {
    let kept = rendered.passages_kept.len();
    assert_eq!(rendered.passages_kept, (0..kept).collect::<Vec<_>>());
    assert_eq!(
        rendered.passages_dropped,
        (kept..input.passages.len()).collect::<Vec<_>>()
    );
    assert_eq!(
        rendered.turns_kept + rendered.turns_dropped,
        input.history.len()
    );
}

proptest! {
    // 40 cases by default (fast); `PROPTEST_CASES=1000` for a longer search.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(40),
        ..ProptestConfig::default()
    })]

    #[test]
    fn rendered_prompts_never_exceed_the_budget(
        family in prop::sample::select(ModelFamily::ALL.to_vec()),
        question in words(40),
        passages in prop::collection::vec(words(160), 0..10),
        history in prop::collection::vec((words(40), words(80)), 0..8),
        window in 16usize..3_000,
        reserve in 0usize..64,
    ) {
        let question = format!("why {}", text_of(&question));
        let passages: Vec<Passage> = passages
            .iter()
            .enumerate()
            .map(|(i, w)| Passage::new(format!("p{i}"), text_of(w)).with_title(format!("Doc {i}")))
            .collect();
        let history: Vec<Turn> = history
            .iter()
            .map(|(q, a)| Turn::new(text_of(q), text_of(a)))
            .collect();
        let input = PromptInput { question: &question, passages: &passages, history: &history };
        check(family, &input, &TokenBudget::new(window, 0, reserve));
    }
}

/// Real documentation passages when the shared corpus is present.
fn corpus_passages(n: usize) -> Option<Vec<Passage>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/corpus/lambda-dg.jsonl"
    );
    let Ok(text) = std::fs::read_to_string(path) else {
        eprintln!("skipping the corpus part: {path} is absent");
        return None;
    };
    Some(
        text.lines()
            .take(n)
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                Passage::new(v["id"].as_str().unwrap(), v["text"].as_str().unwrap())
                    .with_title(v["title"].as_str().unwrap())
                    .with_uri(v["uri"].as_str().unwrap())
            })
            .collect(),
    )
}

#[test]
fn llama3_packs_real_passages_into_8k_minus_1k() {
    let passages = corpus_passages(60).unwrap_or_else(|| {
        (0..60)
            .map(|i| Passage::new(format!("p{i}"), "Lambda scales functions. ".repeat(40)))
            .collect()
    });
    let history: Vec<Turn> = (0..10)
        .map(|i| {
            Turn::new(
                format!("Question {i} about Lambda?"),
                "An answer. ".repeat(20),
            )
        })
        .collect();
    let input = PromptInput {
        question: "How do I raise the concurrency limit of a function?",
        passages: &passages,
        history: &history,
    };
    let budget = TokenBudget::new(8_192, 1_024, 0);
    let rendered = template_for(ModelFamily::Llama3)
        .render(&input, &budget)
        .unwrap();
    let tokens = count_prompt(&Cl100kCounter::new(), &rendered.prompt);
    assert!(tokens <= 7_168, "{tokens}");
    assert!(rendered.token_count >= tokens);
    // It packs well: the first passage it dropped would not have fit.
    assert!(!rendered.passages_dropped.is_empty());
    assert!(tokens > 7_168 - 600, "only {tokens} tokens used of 7168");
    check_report(&input, &rendered);
    // Passage n in the prompt is passages[n - 1].
    let Prompt::Text(text) = &rendered.prompt else {
        panic!()
    };
    for (n, &i) in rendered.passages_kept.iter().enumerate() {
        let tag = format!(
            "<document index=\"{}\">\n<source>{}</source>",
            n + 1,
            passages[i].uri.as_deref().unwrap_or(&passages[i].id)
        );
        assert!(text.contains(&tag), "{tag}");
    }
}

#[test]
fn a_question_that_alone_does_not_fit_is_context_overflow() {
    let question = "How many functions can run at once in one Region? ".repeat(50);
    for family in ModelFamily::ALL {
        let input = PromptInput {
            question: &question,
            passages: &[Passage::new("p", "text")],
            history: &[Turn::new("q", "a")],
        };
        let err = template_for(family)
            .render(&input, &TokenBudget::new(4_096, 3_900, 100))
            .unwrap_err();
        match err {
            Error::ContextOverflow { needed, budget } => {
                assert_eq!(budget, 96);
                assert!(needed > 96, "{family}: {needed}");
            }
            other => panic!("{family}: {other:?}"),
        }
    }
}

#[test]
fn newest_turns_are_kept_and_oldest_dropped() {
    let history: Vec<Turn> = (0..6)
        .map(|i| {
            Turn::new(
                format!("question number {i}"),
                format!("answer number {i} ").repeat(10),
            )
        })
        .collect();
    let input = PromptInput {
        question: "and now?",
        passages: &[],
        history: &history,
    };
    let counter = Cl100kCounter::new();
    let full = template_for(ModelFamily::Llama3)
        .render(&input, &TokenBudget::new(100_000, 0, 0))
        .unwrap();
    let full_tokens = counter.count(match &full.prompt {
        Prompt::Text(t) => t,
        _ => unreachable!(),
    });
    // A budget a bit smaller than everything: the oldest turns go first.
    let rendered = template_for(ModelFamily::Llama3)
        .render(&input, &TokenBudget::new(full_tokens - 60, 0, 0))
        .unwrap();
    assert!(
        rendered.turns_dropped >= 1 && rendered.turns_kept >= 1,
        "{rendered:?}"
    );
    let Prompt::Text(text) = &rendered.prompt else {
        panic!()
    };
    assert!(text.contains("question number 5"));
    assert!(!text.contains("question number 0"));
    for i in rendered.turns_dropped..6 {
        assert!(text.contains(&format!("question number {i}")), "turn {i}");
    }
}

/// A valid counter (never more tokens than bytes) that is wildly non-additive: one token for
/// any text without the Llama 3 start marker, its full length for any text with it.
#[derive(Debug)]
struct NonAdditive;

impl TokenCounter for NonAdditive {
    fn count(&self, text: &str) -> usize {
        if text.contains("<|begin_of_text|>") {
            text.len()
        } else {
            1.min(text.len())
        }
    }
}

#[test]
fn a_close_estimate_is_checked_by_counting_the_whole_prompt() {
    let template = rag_core::Llama3Template::builder()
        .with_counter(NonAdditive)
        .build()
        .unwrap();
    let passages: Vec<Passage> = (0..200)
        .map(|i| Passage::new(format!("p{i}"), "x".repeat(50)))
        .collect();
    let input = PromptInput {
        question: "q?",
        passages: &passages,
        history: &[],
    };
    let alone = template
        .render(
            &PromptInput {
                passages: &[],
                ..input
            },
            &TokenBudget::new(100_000, 0, 0),
        )
        .unwrap();
    let base = alone.token_count;
    let available = base + 300;
    let rendered = template
        .render(&input, &TokenBudget::new(available, 0, 0))
        .unwrap();
    // The blocks alone "cost" one token each, so the packer kept ~150 of them and came close
    // to the budget; counting the whole prompt showed it far over, and passages were dropped
    // from the end until the counted prompt fit.
    let Prompt::Text(text) = &rendered.prompt else {
        panic!()
    };
    let counted = NonAdditive.count(text.as_str());
    assert!(counted <= available, "{counted} > {available}");
    assert!(rendered.token_count <= available);
    assert!(!rendered.passages_kept.is_empty());
    assert!(
        rendered.passages_kept.len() < 10,
        "{}",
        rendered.passages_kept.len()
    );
    check_report(&input, &rendered);
}

#[test]
fn real_passages_never_exceed_the_budget_in_any_family() {
    let passages = corpus_passages(60).unwrap_or_else(|| {
        (0..60)
            .map(|i| {
                Passage::new(
                    format!("p{i}"),
                    format!("Passage {i}: ") + &"Lambda runs code. ".repeat(30),
                )
            })
            .collect()
    });
    let history: Vec<Turn> = (0..10)
        .map(|i| {
            Turn::new(
                format!("Follow-up {i}?"),
                "It depends on the memory setting [2]. ".repeat(3),
            )
        })
        .collect();
    let input = PromptInput {
        question: "Which settings change the cold start time?",
        passages: &passages,
        history: &history,
    };
    for family in ModelFamily::ALL {
        for window in [700, 1_500, 3_000, 7_168] {
            check(family, &input, &TokenBudget::new(window, 0, 0));
        }
    }
}

/// A 64 KiB run without whitespace, in a passage or in the question, is counted in linear time:
/// rendering it cannot stall a Tokio worker. The bound is generous (a debug build on a busy
/// machine); the quadratic BPE of tiktoken-rs took seconds for 1 MiB runs.
#[test]
fn a_64_kib_run_without_whitespace_renders_without_stalling() {
    use rag_core::prompt::{Llama3Template, MistralTemplate};
    use rag_core::tokens::SentencePieceCounter;

    let run: String = (0..64 * 1024)
        .map(|i| (b'a' + (i * 7 % 26) as u8) as char)
        .collect();
    let passages = [Passage::new("long", run.clone())];
    let templates: [Box<dyn PromptTemplate>; 2] = [
        Box::new(
            Llama3Template::builder()
                .with_counter(Cl100kCounter::new())
                .build()
                .unwrap(),
        ),
        Box::new(
            MistralTemplate::builder()
                .with_counter(SentencePieceCounter::mistral_v1())
                .build()
                .unwrap(),
        ),
    ];
    for template in &templates {
        // In a passage, with a budget that makes the packer count it.
        let started = std::time::Instant::now();
        let input = PromptInput {
            question: "What does it say?",
            passages: &passages,
            history: &[],
        };
        let rendered = template
            .render(&input, &TokenBudget::new(60_000, 1_000, 0))
            .unwrap();
        assert_eq!(rendered.passages_kept, [0]);
        let input = PromptInput {
            question: "What does it say?",
            passages: &passages,
            history: &[],
        };
        let rendered = template
            .render(&input, &TokenBudget::new(4_000, 1_000, 0))
            .unwrap();
        assert!(rendered.passages_kept.is_empty());
        // As the question, which alone does not fit.
        let input = PromptInput {
            question: &run,
            passages: &[],
            history: &[],
        };
        assert!(matches!(
            template.render(&input, &TokenBudget::new(4_000, 1_000, 0)),
            Err(rag_core::Error::ContextOverflow { .. })
        ));
        let elapsed = started.elapsed();
        assert!(
            elapsed < std::time::Duration::from_secs(3),
            "{template:?}: {elapsed:?}"
        );
    }
}

mod own_counts {
    //! The packer's reported count is never below what the template's own counter counts for
    //! the whole prompt (plus the framing, for chat prompts), whatever the counter: exact ones,
    //! and the scaled bounds whose rounding the joints must not undo.

    use proptest::prelude::*;
    use rag_core::prompt::{
        ChatTemplate, ClaudeMessagesTemplate, ClaudeTextTemplate, Llama2Template, Llama3Template,
        MistralTemplate, TitanTextTemplate,
    };
    use rag_core::tokens::{count_prompt, TokenCounter, TokenScheme};
    use rag_core::{
        Framing, Passage, Prompt, PromptInput, PromptTemplate, RenderedPrompt, TokenBudget, Turn,
    };

    /// A template, its counter and its framing.
    type Case = (
        Box<dyn PromptTemplate>,
        std::sync::Arc<dyn TokenCounter>,
        Framing,
    );

    fn cases() -> Vec<Case> {
        macro_rules! case {
            ($t:expr) => {{
                let t = $t;
                let (counter, framing) = (t.counter().clone(), t.framing());
                (Box::new(t) as Box<dyn PromptTemplate>, counter, framing)
            }};
        }
        vec![
            case!(ClaudeMessagesTemplate::new()),
            case!(ClaudeTextTemplate::new()),
            case!(Llama2Template::new()),
            case!(Llama3Template::new()),
            case!(TitanTextTemplate::new()),
            case!(MistralTemplate::new()),
            case!(ChatTemplate::new()),
            case!(ChatTemplate::builder()
                .with_tokens(TokenScheme::MistralV1)
                .build()
                .unwrap()),
            case!(ChatTemplate::builder()
                .with_tokens(TokenScheme::MistralV1)
                .with_system("")
                .build()
                .unwrap()),
            case!(MistralTemplate::builder().with_system("").build().unwrap()),
        ]
    }

    fn own_count(prompt: &Prompt, counter: &dyn TokenCounter, framing: Framing) -> usize {
        let messages = match prompt {
            Prompt::Chat { system, messages } => messages.len() + usize::from(system.is_some()),
            Prompt::Text(_) => 0,
        };
        count_prompt(counter, prompt) + framing.tokens(messages)
    }

    fn check(
        rendered: &RenderedPrompt,
        counter: &dyn TokenCounter,
        framing: Framing,
        available: usize,
    ) {
        let own = own_count(&rendered.prompt, counter, framing);
        assert!(
            own <= rendered.token_count && rendered.token_count <= available,
            "{counter:?}: counted {own}, reported {}, budget {available}: {:?}",
            rendered.token_count,
            rendered.prompt
        );
    }

    #[test]
    fn many_short_turns_do_not_under_count() {
        // Twenty short exchanges: one token lost per joint used to add up past the budget.
        let history: Vec<Turn> = (0..20).map(|_| Turn::new("42", "a b")).collect();
        for (template, counter, framing) in cases() {
            for available in [200, 260, 340, 400] {
                let input = PromptInput {
                    question: "Hi",
                    passages: &[],
                    history: &history,
                };
                if let Ok(rendered) = template.render(&input, &TokenBudget::new(available, 0, 0)) {
                    check(&rendered, &*counter, framing, available);
                }
            }
        }
    }

    #[test]
    fn messages_that_each_add_a_start_token_do_not_under_count() {
        // SentencePiece puts a `▁` before each message's first character: "🫠" is 4 bytes and 5
        // tokens, so a bound on the bytes of all messages together is too low.
        let history: Vec<Turn> = (0..6).map(|_| Turn::new("🫠", "🫠")).collect();
        for (template, counter, framing) in cases() {
            for available in 40..400 {
                let input = PromptInput {
                    question: "🫠",
                    passages: &[],
                    history: &history,
                };
                if let Ok(rendered) = template.render(&input, &TokenBudget::new(available, 0, 0)) {
                    check(&rendered, &*counter, framing, available);
                }
            }
        }
    }

    fn text() -> impl Strategy<Value = String> {
        let pieces = prop::sample::select(vec![
            "a",
            "b c",
            " ",
            "  ",
            "\n",
            "\n\n",
            "\t",
            "42",
            "'s",
            ".",
            "🫠",
            "é",
            "世",
            "\u{2581}",
            "x y z",
            "Lambda",
            " function",
        ]);
        prop::collection::vec(pieces, 1..10).prop_map(|p| p.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn the_reported_count_bounds_the_own_count(
            passages in prop::collection::vec(text(), 0..12),
            turns in prop::collection::vec((text(), text()), 0..12),
            question in text(),
            available in 30usize..600,
        ) {
            let passages: Vec<Passage> = passages
                .iter()
                .enumerate()
                .map(|(i, t)| Passage::new(format!("p{i}"), t.clone()))
                .collect();
            let history: Vec<Turn> = turns.iter().map(|(q, a)| Turn::new(q.clone(), a.clone())).collect();
            let question = if question.trim().is_empty() { "q".to_owned() } else { question };
            for (template, counter, framing) in cases() {
                let input = PromptInput { question: &question, passages: &passages, history: &history };
                if let Ok(rendered) = template.render(&input, &TokenBudget::new(available, 0, 0)) {
                    check(&rendered, &*counter, framing, available);
                }
            }
        }
    }
}
