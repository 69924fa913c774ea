use futures::StreamExt;
use rag_core::{Passage, PromptInput, PromptTemplate, TokenBudget};

use super::*;
use crate::ExtractiveTemplate;

fn prompt(question: &str, passages: &[Passage]) -> Prompt {
    ExtractiveTemplate::new()
        .render(
            &PromptInput {
                question,
                passages,
                history: &[],
            },
            &TokenBudget::new(100_000, 1_000, 0),
        )
        .unwrap()
        .prompt
}

fn sources() -> Vec<Passage> {
    vec![
        Passage::new(
            "runtime",
            "## Runtime\nLambda runs your code without servers. It scales with the number of requests.",
        ),
        Passage::new(
            "billing",
            "You are billed per millisecond of duration. The free tier includes one million requests.",
        ),
    ]
}

async fn run(
    generator: &ExtractiveGenerator,
    prompt: &Prompt,
    params: &GenerationParams,
) -> Vec<Chunk> {
    generator
        .generate(prompt, params)
        .await
        .unwrap()
        .map(|c| c.unwrap())
        .collect()
        .await
}

fn text_of(chunks: &[Chunk]) -> String {
    chunks
        .iter()
        .filter_map(|c| match c {
            Chunk::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn quotes_the_best_matching_sentences_with_citations_word_by_word() {
    let g = ExtractiveGenerator::new();
    let p = prompt("How am I billed per millisecond?", &sources());
    let chunks = run(&g, &p, &GenerationParams::default()).await;
    let text = text_of(&chunks);
    assert_eq!(text, "You are billed per millisecond of duration. [2]");
    let words: Vec<&Chunk> = chunks
        .iter()
        .filter(|c| matches!(c, Chunk::Text(_)))
        .collect();
    assert_eq!(words.len(), 8, "one chunk per word, the citation its own");
    assert_eq!(words[1], &Chunk::Text(" are".into()));
    assert_eq!(words[7], &Chunk::Text(" [2]".into()));
    let n = chunks.len();
    assert_eq!(chunks[n - 1], Chunk::Stop(StopReason::EndTurn));
    match &chunks[n - 2] {
        Chunk::Usage(u) => {
            assert_eq!(u.output_tokens, 8);
            assert!(u.input_tokens > 20);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        run(&g, &p, &GenerationParams::default()).await,
        chunks,
        "deterministic"
    );
}

#[tokio::test]
async fn several_sentences_come_best_first_each_cited() {
    let g = ExtractiveGenerator::new();
    let p = prompt("How does Lambda scale with requests?", &sources());
    let text = text_of(&run(&g, &p, &GenerationParams::default()).await);
    assert_eq!(
        text,
        "It scales with the number of requests. [1] Lambda runs your code without servers. [1]",
        "the sentence with both rare words first; one with only the common word is below half"
    );
}

#[tokio::test]
async fn no_passage_gives_an_honest_message() {
    let g = ExtractiveGenerator::new();
    let chunks = run(&g, &prompt("anything?", &[]), &GenerationParams::default()).await;
    assert_eq!(text_of(&chunks), NO_SOURCE);
    assert_eq!(chunks.last(), Some(&Chunk::Stop(StopReason::EndTurn)));
}

#[tokio::test]
async fn no_shared_word_falls_back_to_the_lead_of_the_best_passage() {
    let g = ExtractiveGenerator::new();
    let p = prompt("zebra?", &sources());
    let text = text_of(&run(&g, &p, &GenerationParams::default()).await);
    assert_eq!(text, "Lambda runs your code without servers. [1]");
}

#[tokio::test]
async fn max_tokens_and_stop_sequences_end_the_answer() {
    let g = ExtractiveGenerator::new();
    let p = prompt("How am I billed per millisecond?", &sources());
    let chunks = run(&g, &p, &GenerationParams::default().with_max_tokens(3)).await;
    assert_eq!(text_of(&chunks), "You are billed");
    assert_eq!(chunks.last(), Some(&Chunk::Stop(StopReason::MaxTokens)));

    let params = GenerationParams::default().with_stop_sequence("millisecond");
    let chunks = run(&g, &p, &params).await;
    assert_eq!(text_of(&chunks), "You are billed per");
    assert_eq!(
        chunks.last(),
        Some(&Chunk::Stop(StopReason::StopSequence(Some(
            "millisecond".into()
        ))))
    );
}

#[tokio::test]
async fn reads_the_last_user_message_of_a_chat_prompt() {
    let Prompt::Text(text) = prompt("How am I billed per millisecond?", &sources()) else {
        panic!()
    };
    let chat = Prompt::Chat {
        system: None,
        messages: vec![Message::user(text)],
    };
    let chunks = run(
        &ExtractiveGenerator::new(),
        &chat,
        &GenerationParams::default(),
    )
    .await;
    assert!(text_of(&chunks).ends_with("[2]"));
}

#[tokio::test]
async fn other_prompts_and_bad_settings_are_rejected_before_streaming() {
    let g = ExtractiveGenerator::new();
    for bad in [
        Prompt::Text("Human: hi".into()),
        Prompt::Chat {
            system: None,
            messages: vec![],
        },
    ] {
        match g.generate(&bad, &GenerationParams::default()).await {
            Err(Error::InvalidInput { field, .. }) => assert_eq!(field, "prompt"),
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("accepted {bad:?}"),
        }
    }
    let p = prompt("q", &sources());
    assert!(matches!(
        g.generate(&p, &GenerationParams::default().with_temperature(2.0))
            .await,
        Err(Error::InvalidInput { .. })
    ));
    assert!(matches!(
        ExtractiveGenerator::builder().with_max_sentences(0).build(),
        Err(Error::Config { .. })
    ));
}

#[test]
fn words_keep_the_whitespace_before_them() {
    assert_eq!(words("a  b\nc"), vec!["a", "  b", "\nc"]);
    assert!(words("").is_empty());
}
