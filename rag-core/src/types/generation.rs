use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Inference settings for one model call.
///
/// Every family on Bedrock takes temperature and top-p in `0.0..=1.0`; `top_k` is passed only to
/// the families that take it. [`GenerationParams::validate`] is run by the pipeline before any
/// backend is called.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationParams {
    /// Sampling temperature, `0.0..=1.0`.
    pub temperature: Option<f32>,
    /// Nucleus sampling, `0.0..=1.0`.
    pub top_p: Option<f32>,
    /// Sample from the k most likely tokens, `1..=500`.
    pub top_k: Option<u32>,
    /// The most tokens the answer may have, `1..=`[`GenerationParams::MAX_TOKENS_LIMIT`].
    pub max_tokens: u32,
    /// Sequences that end the answer (at most [`GenerationParams::MAX_STOP_SEQUENCES`], none empty).
    pub stop_sequences: Vec<String>,
}

impl GenerationParams {
    /// The highest `max_tokens` accepted.
    pub const MAX_TOKENS_LIMIT: u32 = 128_000;
    /// The most stop sequences accepted.
    pub const MAX_STOP_SEQUENCES: usize = 16;
    /// The highest `top_k` accepted.
    pub const MAX_TOP_K: u32 = 500;

    /// Sets the temperature.
    pub fn with_temperature(mut self, t: f32) -> Self {
        self.temperature = Some(t);
        self
    }

    /// Sets top-p.
    pub fn with_top_p(mut self, p: f32) -> Self {
        self.top_p = Some(p);
        self
    }

    /// Sets top-k.
    pub fn with_top_k(mut self, k: u32) -> Self {
        self.top_k = Some(k);
        self
    }

    /// Sets the answer length limit.
    pub fn with_max_tokens(mut self, n: u32) -> Self {
        self.max_tokens = n;
        self
    }

    /// Adds a stop sequence.
    pub fn with_stop_sequence(mut self, s: impl Into<String>) -> Self {
        self.stop_sequences.push(s.into());
        self
    }

    /// Checks every setting's range; the error names the field.
    pub fn validate(&self) -> Result<()> {
        fn unit(field: &'static str, v: Option<f32>) -> Result<()> {
            match v {
                Some(v) if !(0.0..=1.0).contains(&v) => Err(Error::invalid_input(
                    field,
                    format!("{v} is outside 0.0..=1.0"),
                )),
                _ => Ok(()),
            }
        }
        unit("params.temperature", self.temperature)?;
        unit("params.top_p", self.top_p)?;
        if let Some(k) = self.top_k {
            if !(1..=Self::MAX_TOP_K).contains(&k) {
                return Err(Error::invalid_input(
                    "params.top_k",
                    format!("{k} is outside 1..={}", Self::MAX_TOP_K),
                ));
            }
        }
        if !(1..=Self::MAX_TOKENS_LIMIT).contains(&self.max_tokens) {
            return Err(Error::invalid_input(
                "params.max_tokens",
                format!(
                    "{} is outside 1..={}",
                    self.max_tokens,
                    Self::MAX_TOKENS_LIMIT
                ),
            ));
        }
        if self.stop_sequences.len() > Self::MAX_STOP_SEQUENCES {
            return Err(Error::invalid_input(
                "params.stop_sequences",
                format!(
                    "{} given, at most {} accepted",
                    self.stop_sequences.len(),
                    Self::MAX_STOP_SEQUENCES
                ),
            ));
        }
        if self.stop_sequences.iter().any(String::is_empty) {
            return Err(Error::invalid_input(
                "params.stop_sequences",
                "a stop sequence is empty",
            ));
        }
        Ok(())
    }
}

impl Default for GenerationParams {
    /// No sampling overrides and a 1,024-token answer limit.
    fn default() -> Self {
        GenerationParams {
            temperature: None,
            top_p: None,
            top_k: None,
            max_tokens: 1024,
            stop_sequences: Vec::new(),
        }
    }
}

/// Token counts of one model call.
///
/// The same meaning on every path (native bodies, Converse, OpenAI-compatible): the prompt's
/// tokens are split in three, as Bedrock and Anthropic bill them, and
/// [`Usage::prompt_tokens`] is their sum.
///
/// - `input_tokens`: the prompt's tokens that were neither read from nor written to a prompt
///   cache (all of them when no cache point was set);
/// - `cache_read_input_tokens`: tokens read from the cache (Converse `cacheReadInputTokens`,
///   Claude `cache_read_input_tokens`);
/// - `cache_write_input_tokens`: tokens written to the cache (Converse
///   `cacheWriteInputTokens`, Claude `cache_creation_input_tokens`).
///
/// A path whose service reports a total that includes cached tokens (OpenAI's
/// `prompt_tokens` with `prompt_tokens_details.cached_tokens`) subtracts them, so
/// `input_tokens` never counts a cached token twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens processed without the cache (see the type's documentation).
    pub input_tokens: u64,
    /// Tokens in the answer.
    pub output_tokens: u64,
    /// Prompt tokens read from the prompt cache.
    #[serde(default)]
    pub cache_read_input_tokens: u64,
    /// Prompt tokens written to the prompt cache.
    #[serde(default)]
    pub cache_write_input_tokens: u64,
}

impl Usage {
    /// Counts without any cache use.
    pub fn new(input_tokens: u64, output_tokens: u64) -> Self {
        Usage {
            input_tokens,
            output_tokens,
            ..Usage::default()
        }
    }

    /// Sets the cache counts.
    pub fn with_cache(mut self, read: u64, write: u64) -> Self {
        self.cache_read_input_tokens = read;
        self.cache_write_input_tokens = write;
        self
    }

    /// All of the prompt's tokens: processed, read from the cache and written to it.
    pub fn prompt_tokens(&self) -> u64 {
        self.input_tokens + self.cache_read_input_tokens + self.cache_write_input_tokens
    }
}

/// What a guardrail did when it stopped an answer ([`StopReason::GuardrailIntervened`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GuardrailIntervention {
    /// The text the guardrail put in place of the answer (its configured blocked message),
    /// when the service sent it.
    pub message: Option<String>,
    /// The guardrail's trace (its assessments), as the service sent it, when the trace was
    /// asked for.
    pub trace: Option<serde_json::Value>,
}

/// Why the model stopped, normalized across families.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum StopReason {
    /// The model finished its answer.
    EndTurn,
    /// The answer reached `max_tokens`.
    MaxTokens,
    /// A stop sequence was produced (which one, when the model says).
    StopSequence(Option<String>),
    /// A content filter stopped the answer.
    ContentFiltered,
    /// A guardrail stopped the answer (Bedrock `guardrail_intervened`, or
    /// `amazon-bedrock-guardrailAction: INTERVENED` in a native body). The pipeline saves the
    /// turn with the guardrail's message as its answer, never the text it stopped.
    GuardrailIntervened(Box<GuardrailIntervention>),
    /// A reason this library does not know, as the model gave it.
    Other(String),
}

/// One item of a model's answer stream.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Chunk {
    /// A piece of the answer text.
    Text(String),
    /// Token counts (may come once at the end, or in parts).
    Usage(Usage),
    /// Why the answer ended.
    Stop(StopReason),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        GenerationParams::default().validate().unwrap();
    }

    #[test]
    fn out_of_range_values_name_their_field() {
        let cases = [
            (
                GenerationParams::default().with_temperature(1.5),
                "params.temperature",
            ),
            (
                GenerationParams::default().with_temperature(f32::NAN),
                "params.temperature",
            ),
            (GenerationParams::default().with_top_p(-0.1), "params.top_p"),
            (GenerationParams::default().with_top_k(0), "params.top_k"),
            (
                GenerationParams::default().with_max_tokens(0),
                "params.max_tokens",
            ),
            (
                GenerationParams::default().with_stop_sequence(""),
                "params.stop_sequences",
            ),
        ];
        for (params, expected) in cases {
            match params.validate() {
                Err(Error::InvalidInput { field, .. }) => assert_eq!(field, expected),
                other => panic!("{params:?} gave {other:?}"),
            }
        }
    }
}
