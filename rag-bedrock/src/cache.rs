//! Prompt caching: which models take cache points, and where a prompt gets one.
//!
//! A prompt's stable prefix is its system text and the passages block that opens its first
//! message ([`Prompt::context_block_len`]); the history and the question come after it. With
//! caching on ([`crate::BedrockGeneratorBuilder::with_prompt_caching`]), a model of
//! [`PromptCacheSupport::for_model_id`] gets one cache point at the end of that prefix, when
//! the prefix reaches the model's minimum: a `cachePoint` block in ConverseStream, a
//! `cache_control` of type `ephemeral` in a Claude Messages body. Below the minimum Bedrock
//! would accept the point but cache nothing, so none is sent.
//!
//! The point after the passages splits the first message's text in two text blocks, the
//! passages and the rest, which the model reads as one text: the bytes the model reads are
//! the template's.

use aws_sdk_bedrockruntime::types::{
    CachePointBlock, CachePointType, ContentBlock, Message as SdkMessage, SystemContentBlock,
};
use rag_core::{Cl100kCounter, Error, Prompt, Result, TokenCounter};

use crate::converse::ConverseRequest;

/// What a model's prompt cache takes on Bedrock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PromptCacheSupport {
    /// The fewest tokens a prompt prefix must have for a cache point to cache it.
    pub min_tokens: usize,
    /// The most cache points one request may carry.
    pub max_cache_points: usize,
}

/// The models that take explicit cache points, by id prefix (after any cross-region profile
/// prefix), with their minimum prefix and the most points per request.
///
/// Sources: Bedrock's user guide, "Prompt caching for faster model inference" (supported
/// models: Claude 3.7 Sonnet 1,024 tokens, Claude 3.5 Haiku 2,048, Amazon Nova Micro, Lite and
/// Pro 1,000, each up to 4 checkpoints), and for the Claude 4 models, which take the same
/// `cache_control` on Bedrock, Anthropic's prompt caching guide ("Cache limitations": 1,024
/// tokens for Claude Sonnet 4 and 4.5 and Opus 4 and 4.1; 4,096 for Claude Haiku 4.5 and Opus
/// 4.5; at most 4 cache breakpoints). Models not listed (newer ones whose minimum is not
/// settled, Nova Premier, every other family) get no cache point.
const SUPPORT: &[(&str, usize)] = &[
    ("anthropic.claude-3-7-sonnet-", 1_024),
    ("anthropic.claude-3-5-haiku-", 2_048),
    ("anthropic.claude-sonnet-4-20", 1_024),
    ("anthropic.claude-sonnet-4-5-", 1_024),
    ("anthropic.claude-opus-4-20", 1_024),
    ("anthropic.claude-opus-4-1-", 1_024),
    ("anthropic.claude-opus-4-5-", 4_096),
    ("anthropic.claude-haiku-4-5-", 4_096),
    ("amazon.nova-micro-v1", 1_000),
    ("amazon.nova-lite-v1", 1_000),
    ("amazon.nova-pro-v1", 1_000),
];

impl PromptCacheSupport {
    /// What `model_id`'s prompt cache takes, or `None` when it takes no cache points (as far
    /// as this library knows).
    pub fn for_model_id(model_id: &str) -> Option<Self> {
        let base = rag_core::model::base_model_id(model_id);
        SUPPORT
            .iter()
            .find(|(prefix, _)| base.starts_with(prefix))
            .map(|&(_, min_tokens)| PromptCacheSupport {
                min_tokens,
                max_cache_points: 4,
            })
    }
}

/// Where a prompt's one cache point goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CachePoint {
    /// After the system text (the prompt has no passages block).
    AfterSystem,
    /// After the first `n` bytes of the first message: its passages block.
    AfterContext(usize),
}

/// The cache point for `prompt`, when its stable prefix reaches the model's minimum. The
/// prefix is counted with cl100k, which counts fewer tokens than Claude's tokenizer for
/// English text, so a point is not sent for a prefix the model counts below its minimum.
pub(crate) fn cache_point(support: PromptCacheSupport, prompt: &Prompt) -> Option<CachePoint> {
    let Prompt::Chat { system, messages } = prompt else {
        return None;
    };
    let system = system.as_deref().unwrap_or_default();
    match prompt.context_block_len() {
        Some(n) => reaches(&[system, &messages[0].content[..n]], support.min_tokens)
            .then_some(CachePoint::AfterContext(n)),
        None => (!system.is_empty() && reaches(&[system], support.min_tokens))
            .then_some(CachePoint::AfterSystem),
    }
}

/// Whether `texts` together reach `min` cl100k tokens. Counting stops at the minimum, so a
/// prompt of many passages costs no more to check than its first `min` tokens.
fn reaches(texts: &[&str], min: usize) -> bool {
    let counter = Cl100kCounter::new();
    let mut left = min;
    for text in texts {
        if left == 0 {
            return true;
        }
        match counter.count_till_limit(text, left - 1) {
            // Over `left - 1`: this text alone reaches what was left.
            None => return true,
            Some(n) => left -= n,
        }
    }
    left == 0
}

/// Adds the cache point to a ConverseStream request: a `CachePoint` system block after the
/// system text, or between the passages and the rest of the first message's text.
pub(crate) fn add_converse_cache_point(
    request: &mut ConverseRequest,
    point: CachePoint,
) -> Result<()> {
    let block = || {
        CachePointBlock::builder()
            .r#type(CachePointType::Default)
            .build()
            .map_err(|e| Error::invalid_input("prompt", e.to_string()))
    };
    match point {
        CachePoint::AfterSystem => {
            if let Some(system) = &mut request.system {
                system.push(SystemContentBlock::CachePoint(block()?));
            }
        }
        CachePoint::AfterContext(n) => {
            let Some(first) = request.messages.first_mut() else {
                return Ok(());
            };
            let mut content = first.content().to_vec();
            // The text follows the images; it is the last block.
            let Some(ContentBlock::Text(text)) = content.last() else {
                return Ok(());
            };
            if n == 0 || n >= text.len() || !text.is_char_boundary(n) {
                return Ok(());
            }
            let (context, rest) = text.split_at(n);
            let (context, rest) = (context.to_owned(), rest.to_owned());
            content.pop();
            content.push(ContentBlock::Text(context));
            content.push(ContentBlock::CachePoint(block()?));
            content.push(ContentBlock::Text(rest));
            *first = SdkMessage::builder()
                .role(first.role().clone())
                .set_content(Some(content))
                .build()
                .map_err(|e| Error::invalid_input("prompt", e.to_string()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rag_core::Message;

    #[test]
    fn the_table_knows_the_documented_models_by_their_base_id() {
        let min = |id: &str| PromptCacheSupport::for_model_id(id).map(|s| s.min_tokens);
        assert_eq!(
            min("us.anthropic.claude-3-7-sonnet-20250219-v1:0"),
            Some(1_024)
        );
        assert_eq!(min("anthropic.claude-3-5-haiku-20241022-v1:0"), Some(2_048));
        assert_eq!(min("eu.amazon.nova-lite-v1:0"), Some(1_000));
        assert_eq!(min("anthropic.claude-haiku-4-5-20251001-v1:0"), Some(4_096));
        assert_eq!(min("anthropic.claude-sonnet-4-20250514-v1:0"), Some(1_024));
        // Not documented here: no cache point.
        assert_eq!(min("anthropic.claude-3-haiku-20240307-v1:0"), None);
        assert_eq!(min("anthropic.claude-sonnet-4-6"), None);
        assert_eq!(min("meta.llama3-70b-instruct-v1:0"), None);
        assert_eq!(min("amazon.nova-premier-v1:0"), None);
    }

    fn prompt(system: &str, first: &str) -> Prompt {
        Prompt::Chat {
            system: Some(system.into()),
            messages: vec![Message::user(first)],
        }
    }

    #[test]
    fn the_point_ends_the_stable_prefix_only_past_the_minimum() {
        let support = PromptCacheSupport {
            min_tokens: 50,
            max_cache_points: 4,
        };
        let passages = "Lambda runs code without servers. ".repeat(20);
        let first = format!("<documents>\n{passages}</documents>\n\nWhat is Lambda?");
        let n = first.find("What is").unwrap();
        assert_eq!(
            cache_point(support, &prompt("Answer.", &first)),
            Some(CachePoint::AfterContext(n))
        );
        // Too short a prefix: no point.
        let short = "<documents>\nshort</documents>\n\nWhat is Lambda?";
        assert_eq!(cache_point(support, &prompt("Answer.", short)), None);
        // No passages: after a long enough system text only.
        assert_eq!(
            cache_point(support, &prompt(&passages, "What is Lambda?")),
            Some(CachePoint::AfterSystem)
        );
        assert_eq!(
            cache_point(support, &prompt("Answer.", "What is Lambda?")),
            None
        );
        assert_eq!(cache_point(support, &Prompt::Text(passages.clone())), None);
    }

    #[test]
    fn the_minimum_is_reached_across_the_system_text_and_the_passages() {
        let counter = Cl100kCounter::new();
        let (a, b) = ("Lambda runs code. ", "It scales by itself. ");
        let (na, nb) = (counter.count(a), counter.count(b));
        assert!(reaches(&[a, b], na + nb));
        assert!(!reaches(&[a, b], na + nb + 1));
        assert!(reaches(&[a], na));
        assert!(!reaches(&[a], na + 1));
        assert!(reaches(&["", b], nb));
        assert!(reaches(&[a, b], 1));
    }
}
