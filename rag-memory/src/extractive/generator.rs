//! [`ExtractiveGenerator`]: answers by quoting, with citations, and no model.

use std::collections::HashMap;

use async_trait::async_trait;
use futures::stream;
use rag_core::{
    Chunk, ChunkStream, Error, GenerationParams, Generator, Message, Prompt, Result, Role,
    StopReason, Usage,
};

use super::template::{parse, Parsed};
use super::text::{sentences, terms};
use crate::index::chunk::estimate_tokens;

/// What the generator says when the prompt holds no passage.
pub(crate) const NO_SOURCE: &str =
    "No source matched the question, so there is nothing to answer from.";

/// A [`Generator`] that needs no model: it answers with the sentences of the prompt's
/// passages that best match the question, each followed by its passage's `[n]` citation.
///
/// It reads prompts rendered by [`super::ExtractiveTemplate`] (as [`Prompt::Text`], or as
/// the last user message of a [`Prompt::Chat`]); any other prompt is an
/// [`Error::InvalidInput`]. Of the first `max_passages` passages (best first), every
/// sentence is scored by the question's content words it contains, rarer words counting
/// more; the best `max_sentences` (and only those scoring at least half of the best) are
/// streamed, best first. When no sentence shares a word with the question, the first sentence
/// of the first passage is given; with no passage at all, a short message says that no
/// source matched.
///
/// The answer streams word by word as [`Chunk::Text`] (a citation is a chunk of its own),
/// then one [`Chunk::Usage`] (input: the prompt's estimated tokens; output: the chunks
/// streamed) and [`Chunk::Stop`]. `max_tokens` caps the number of text chunks
/// ([`StopReason::MaxTokens`]) and a stop sequence ends the answer before it
/// ([`StopReason::StopSequence`]). The same prompt always gives the same answer.
#[derive(Debug, Clone)]
pub struct ExtractiveGenerator {
    max_sentences: usize,
    max_passages: usize,
}

/// Configures an [`ExtractiveGenerator`]; [`ExtractiveGeneratorBuilder::build`] checks it.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until build() is called"]
pub struct ExtractiveGeneratorBuilder {
    max_sentences: usize,
    max_passages: usize,
}

impl Default for ExtractiveGeneratorBuilder {
    fn default() -> Self {
        ExtractiveGeneratorBuilder {
            max_sentences: 3,
            max_passages: 3,
        }
    }
}

impl ExtractiveGeneratorBuilder {
    /// The most sentences in an answer (default 3).
    pub fn with_max_sentences(mut self, n: usize) -> Self {
        self.max_sentences = n;
        self
    }

    /// How many of the prompt's passages, best first, sentences are taken from (default 3).
    pub fn with_max_passages(mut self, n: usize) -> Self {
        self.max_passages = n;
        self
    }

    /// The generator, or [`Error::Config`] when a limit is zero.
    pub fn build(self) -> Result<ExtractiveGenerator> {
        if self.max_sentences == 0 || self.max_passages == 0 {
            return Err(Error::config(
                "ExtractiveGenerator: max_sentences and max_passages must be at least 1",
            ));
        }
        Ok(ExtractiveGenerator {
            max_sentences: self.max_sentences,
            max_passages: self.max_passages,
        })
    }
}

impl Default for ExtractiveGenerator {
    fn default() -> Self {
        ExtractiveGenerator::new()
    }
}

/// A candidate sentence: where it is and how well it matches.
struct Candidate {
    passage: usize,
    position: usize,
    text: String,
    score: f64,
}

impl ExtractiveGenerator {
    /// A generator giving up to 3 sentences from the best 3 passages.
    pub fn new() -> Self {
        ExtractiveGeneratorBuilder::default()
            .build()
            .expect("the defaults are valid")
    }

    /// A builder to set the limits.
    pub fn builder() -> ExtractiveGeneratorBuilder {
        ExtractiveGeneratorBuilder::default()
    }

    /// The answer text for a parsed prompt, citations included.
    fn answer(&self, parsed: &Parsed) -> String {
        if parsed.passages.is_empty() {
            return NO_SOURCE.to_string();
        }
        let question = terms(&parsed.question);
        let mut candidates: Vec<(Candidate, Vec<String>)> = Vec::new();
        for (p, text) in parsed.passages.iter().take(self.max_passages).enumerate() {
            for (position, sentence) in sentences(text).into_iter().enumerate() {
                let matched: Vec<String> = terms(&sentence)
                    .into_iter()
                    .filter(|t| question.contains(t))
                    .collect();
                candidates.push((
                    Candidate {
                        passage: p,
                        position,
                        text: sentence,
                        score: 0.0,
                    },
                    matched,
                ));
            }
        }
        // Rarer words say more: weight a word by how few candidate sentences hold it.
        let mut df: HashMap<&str, usize> = HashMap::new();
        for (_, matched) in &candidates {
            for t in matched {
                *df.entry(t.as_str()).or_default() += 1;
            }
        }
        let n = candidates.len() as f64;
        let mut scored: Vec<Candidate> = candidates
            .iter()
            .map(|(c, matched)| Candidate {
                passage: c.passage,
                position: c.position,
                text: c.text.clone(),
                score: matched
                    .iter()
                    .map(|t| (1.0 + n / df[t.as_str()] as f64).ln())
                    .sum(),
            })
            .collect();
        scored.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then(a.passage.cmp(&b.passage))
                .then(a.position.cmp(&b.position))
        });
        let best = scored.first().map_or(0.0, |c| c.score);
        let picked: Vec<&Candidate> = if best > 0.0 {
            scored
                .iter()
                .take_while(|c| c.score >= best / 2.0)
                .take(self.max_sentences)
                .collect()
        } else {
            // Nothing shares a word with the question: lead with the best passage.
            scored
                .iter()
                .filter(|c| c.passage == 0)
                .min_by_key(|c| c.position)
                .into_iter()
                .collect()
        };
        if picked.is_empty() {
            return NO_SOURCE.to_string();
        }
        picked
            .iter()
            .map(|c| format!("{} [{}]", c.text, c.passage + 1))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The text of the prompt the template wrote, wherever the prompt shape puts it.
fn prompt_text(prompt: &Prompt) -> Option<&str> {
    match prompt {
        Prompt::Text(text) => Some(text),
        Prompt::Chat { messages, .. } => messages
            .iter()
            .rev()
            .find(|m: &&Message| m.role == Role::User)
            .map(|m| m.content.as_str()),
    }
}

/// `text` cut before the earliest stop sequence, and the sequence.
fn cut_at_stop<'a>(text: &'a str, stops: &[String]) -> (&'a str, Option<String>) {
    stops
        .iter()
        .filter_map(|s| text.find(s.as_str()).map(|at| (at, s)))
        .min_by_key(|(at, _)| *at)
        .map_or((text, None), |(at, s)| (&text[..at], Some(s.clone())))
}

/// `text` as chunks of one word each, with the whitespace before it.
fn words(text: &str) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut in_word = false;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() && in_word {
            chunks.push(text[start..i].to_string());
            start = i;
        }
        in_word = !c.is_whitespace();
    }
    if start < text.len() && !text[start..].trim().is_empty() {
        chunks.push(text[start..].to_string());
    }
    chunks
}

#[async_trait]
impl Generator for ExtractiveGenerator {
    async fn generate(&self, prompt: &Prompt, params: &GenerationParams) -> Result<ChunkStream> {
        params.validate()?;
        let text = prompt_text(prompt)
            .ok_or_else(|| Error::invalid_input("prompt", "the chat prompt has no user message"))?;
        let parsed = parse(text).ok_or_else(|| {
            Error::invalid_input(
                "prompt",
                "ExtractiveGenerator reads prompts rendered by ExtractiveTemplate",
            )
        })?;
        let answer = self.answer(&parsed);
        let (answer, stop_sequence) = cut_at_stop(&answer, &params.stop_sequences);
        let mut chunks = words(answer);
        let limit = params.max_tokens as usize;
        let stop = if chunks.len() > limit {
            chunks.truncate(limit);
            StopReason::MaxTokens
        } else if let Some(seq) = stop_sequence {
            StopReason::StopSequence(Some(seq))
        } else {
            StopReason::EndTurn
        };
        let usage = Usage::new(estimate_tokens(text) as u64, chunks.len() as u64);
        let items: Vec<Result<Chunk>> = chunks
            .into_iter()
            .map(Chunk::Text)
            .chain([Chunk::Usage(usage), Chunk::Stop(stop)])
            .map(Ok)
            .collect();
        Ok(Box::pin(stream::iter(items)))
    }
}

#[cfg(test)]
mod tests;
