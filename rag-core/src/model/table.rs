//! The model table: Bedrock model-id prefixes and what the library knows of each model.
//!
//! Sources, per group below: Amazon Bedrock's model cards and inference-parameter pages
//! (`docs.aws.amazon.com/bedrock/latest/userguide/model-card-*.html`,
//! `model-parameters-*.html`), the model ids of the AWS CDK's `BedrockFoundationModel`, and the
//! vendors' own model pages where Bedrock's pages give no figure (said so at the entry). The
//! first matching prefix wins, so specific entries come before general ones.

use super::{ModelFamily, ModelProfile, Route, SamplingRule};
use crate::tokens::TokenScheme;

/// Claude 3 to Claude 4.6 over cl100k: Anthropic's "~15-20% on typical text, much more on
/// code", a published +30% on Python, and a margin.
pub(super) const CLAUDE_3_PER_MILLE: u32 = 1_350;

/// Claude Opus 4.7 and later, Sonnet 5 and Fable 5 use "a newer tokenizer" that makes
/// "approximately 30 percent more tokens" (Anthropic's token-counting page); independent
/// count_tokens measurements found up to 1.47x on English. 1.35 x 1.48.
const CLAUDE_NEW_TOKENIZER_PER_MILLE: u32 = 2_000;

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub(super) struct Entry {
    pub(super) prefix: &'static str,
    pub(super) family: ModelFamily,
    pub(super) route: Route,
    pub(super) context_window: usize,
    pub(super) max_output_tokens: usize,
    pub(super) tokens: TokenScheme,
    pub(super) sampling: SamplingRule,
    pub(super) streams: bool,
    pub(super) images: bool,
}

impl Entry {
    pub(super) fn profile(&self) -> ModelProfile {
        ModelProfile {
            family: self.family,
            route: self.route,
            context_window: self.context_window,
            max_output_tokens: self.max_output_tokens,
            system_prompt: self.family.takes_system_prompt(),
            tokens: self.tokens,
            framing: self.family.default_framing(),
            sampling: self.sampling,
            streams: self.streams,
            images: self.images,
        }
    }
}

/// Models the table does not list (or lists for their native API) that take images through
/// Converse: "Yes" in the Vision column of Bedrock's Converse feature table for Amazon Nova
/// Premier; Meta's Llama 3.2 11B and 90B Vision and Mistral's Pixtral Large are vision models
/// by their vendors' model cards.
pub(super) const CONVERSE_VISION: [&str; 4] = [
    "amazon.nova-premier-",
    "meta.llama3-2-11b-",
    "meta.llama3-2-90b-",
    "mistral.pixtral-large-",
];

/// The first entry whose prefix starts `base_id` (an id without its geography prefix).
pub(super) fn lookup(base_id: &str) -> Option<&'static Entry> {
    TABLE.iter().find(|e| base_id.starts_with(e.prefix))
}

/// A natively called model of `family` with the family's token counting.
const fn native(
    prefix: &'static str,
    family: ModelFamily,
    context_window: usize,
    max_output_tokens: usize,
    tokens: TokenScheme,
) -> Entry {
    Entry {
        prefix,
        family,
        route: Route::Native,
        context_window,
        max_output_tokens,
        tokens,
        sampling: SamplingRule::Any,
        streams: true,
        images: false,
    }
}

/// A Claude Messages model.
const fn claude(
    prefix: &'static str,
    context_window: usize,
    max_output_tokens: usize,
    per_mille: u32,
    sampling: SamplingRule,
) -> Entry {
    // Every Claude Messages model (Claude 3 and later) takes images: Bedrock's Claude Messages
    // page, "Multimodal prompts".
    Entry {
        sampling,
        images: true,
        ..native(
            prefix,
            ModelFamily::Claude,
            context_window,
            max_output_tokens,
            TokenScheme::Cl100kTimes(per_mille),
        )
    }
}

/// A chat model called through ConverseStream.
const fn converse(
    prefix: &'static str,
    context_window: usize,
    max_output_tokens: usize,
    tokens: TokenScheme,
) -> Entry {
    Entry {
        route: Route::Converse,
        ..native(
            prefix,
            ModelFamily::Chat,
            context_window,
            max_output_tokens,
            tokens,
        )
    }
}

const ANY: SamplingRule = SamplingRule::Any;
const ONE_OF: SamplingRule = SamplingRule::TemperatureOrTopP;
const C3: u32 = CLAUDE_3_PER_MILLE;
const CNEW: u32 = CLAUDE_NEW_TOKENIZER_PER_MILLE;
const CLAUDE_TEXT: TokenScheme = TokenScheme::Cl100kTimes(1_400);
const LLAMA2: TokenScheme = TokenScheme::MistralV1Times(1_200);
const TITAN: TokenScheme = TokenScheme::Cl100kTimes(1_500);
const GENERIC: TokenScheme = TokenScheme::Cl100kTimes(1_500);

static TABLE: &[Entry] = &[
    // Anthropic. Legacy text completion: Claude Instant 1.2, Claude 2 (100K) and 2.1 (200K).
    native(
        "anthropic.claude-instant-v1",
        ModelFamily::ClaudeText,
        100_000,
        4_096,
        CLAUDE_TEXT,
    ),
    native(
        "anthropic.claude-v2:1",
        ModelFamily::ClaudeText,
        200_000,
        4_096,
        CLAUDE_TEXT,
    ),
    native(
        "anthropic.claude-v2",
        ModelFamily::ClaudeText,
        100_000,
        4_096,
        CLAUDE_TEXT,
    ),
    // Claude 3 family: 200K windows (Anthropic's model pages); 3.5 answers up to 8,192 tokens,
    // 3.7 Sonnet up to 64K, the first Claude 3 models up to 4,096. Claude 3.5 Haiku takes no
    // images on Bedrock: "No" in the Vision column of Bedrock's Converse feature table
    // (<https://docs.aws.amazon.com/bedrock/latest/userguide/conversation-inference-supported-models-features.html>).
    Entry {
        images: false,
        ..claude("anthropic.claude-3-5-haiku", 200_000, 8_192, C3, ANY)
    },
    claude("anthropic.claude-3-5-", 200_000, 8_192, C3, ANY),
    claude("anthropic.claude-3-7-", 200_000, 64_000, C3, ANY),
    claude("anthropic.claude-3-", 200_000, 4_096, C3, ANY),
    // Claude 4. Sonnet 4.5 and Haiku 4.5 take temperature or top_p, not both (Bedrock's Claude
    // Messages reference); Opus 4.1 and the later models refuse both with the same error.
    // Haiku 4.5: 200K / 64K (Bedrock model card); Opus 4.6: 1M / 128K (Bedrock model card);
    // Sonnet 4.5 200K / 64K and Sonnet 4.6 1M / 128K (Anthropic's model pages).
    claude("anthropic.claude-sonnet-4-5", 200_000, 64_000, C3, ONE_OF),
    claude("anthropic.claude-haiku-4-5", 200_000, 64_000, C3, ONE_OF),
    claude(
        "anthropic.claude-sonnet-4-6",
        1_000_000,
        128_000,
        C3,
        ONE_OF,
    ),
    claude("anthropic.claude-opus-4-1", 200_000, 32_000, C3, ONE_OF),
    claude("anthropic.claude-opus-4-5", 200_000, 64_000, C3, ONE_OF),
    claude("anthropic.claude-opus-4-6", 1_000_000, 128_000, C3, ONE_OF),
    // Opus 4.7 (1M / 128K, Bedrock model card) and later Opus 4.x use the newer tokenizer.
    claude(
        "anthropic.claude-opus-4-7",
        1_000_000,
        128_000,
        CNEW,
        ONE_OF,
    ),
    claude(
        "anthropic.claude-opus-4-8",
        1_000_000,
        128_000,
        CNEW,
        ONE_OF,
    ),
    // Sonnet 4 (200K / 64K) and Opus 4 (200K / 32K) take both settings.
    claude("anthropic.claude-sonnet-4", 200_000, 64_000, C3, ANY),
    claude("anthropic.claude-opus-4", 200_000, 32_000, C3, ANY),
    // Claude 5 and Fable 5: 1M / 128K, the newer tokenizer.
    claude(
        "anthropic.claude-sonnet-5",
        1_000_000,
        128_000,
        CNEW,
        ONE_OF,
    ),
    claude("anthropic.claude-opus-5", 1_000_000, 128_000, CNEW, ONE_OF),
    claude("anthropic.claude-fable-5", 1_000_000, 128_000, CNEW, ONE_OF),
    // A Claude model newer than this table: the smallest window and the strictest rules of
    // the current models, counted as the newer tokenizer.
    claude("anthropic.claude-", 200_000, 32_000, CNEW, ONE_OF),
    // Meta. Llama 2 chat: 4K. Llama 3: 8K; 3.1, 3.2 and 3.3: 128K; `max_gen_len` up to 2,048.
    native("meta.llama2-", ModelFamily::Llama2, 4_096, 2_048, LLAMA2),
    native(
        "meta.llama3-1-",
        ModelFamily::Llama3,
        128_000,
        2_048,
        TokenScheme::Cl100k,
    ),
    native(
        "meta.llama3-2-",
        ModelFamily::Llama3,
        128_000,
        2_048,
        TokenScheme::Cl100k,
    ),
    native(
        "meta.llama3-3-",
        ModelFamily::Llama3,
        128_000,
        2_048,
        TokenScheme::Cl100k,
    ),
    native(
        "meta.llama3-",
        ModelFamily::Llama3,
        8_192,
        2_048,
        TokenScheme::Cl100k,
    ),
    // Llama 4 takes images (Meta's Llama 4 model cards: "natively multimodal"). Llama 3.2 11B
    // and 90B Vision take images through Converse only ([`super::converse_takes_images`]): the
    // native Llama prompt is text.
    //
    // Llama 4: Bedrock's Meta page says "You can't use the InvokeModelWithResponseStream or
    // ConverseStream (streaming) operations with Llama 4 Instruct". Windows as measured
    // through Converse (Maverick 1,048,576, Scout 3,500,000); Llama 4's own tokenizer counts up
    // to 1.155x cl100k on the shared corpus.
    Entry {
        streams: false,
        images: true,
        ..converse(
            "meta.llama4-maverick-",
            1_048_576,
            8_192,
            TokenScheme::Cl100kTimes(1_200),
        )
    },
    Entry {
        streams: false,
        images: true,
        ..converse(
            "meta.llama4-scout-",
            3_500_000,
            8_192,
            TokenScheme::Cl100kTimes(1_200),
        )
    },
    // Amazon Titan Text: Lite 4K, Express 8K, Premier 32K windows (Bedrock's Titan Text page).
    native(
        "amazon.titan-text-lite",
        ModelFamily::TitanText,
        4_096,
        4_096,
        TITAN,
    ),
    native(
        "amazon.titan-text-express",
        ModelFamily::TitanText,
        8_192,
        8_192,
        TITAN,
    ),
    native(
        "amazon.titan-text-premier",
        ModelFamily::TitanText,
        32_000,
        3_072,
        TITAN,
    ),
    // Amazon Nova, through Converse: Micro 128K, Lite and Pro 300K, Nova 2 Lite 256K (the
    // context suffixes of Bedrock's fine-tuning table); `maxTokens` up to 5K (Nova's request
    // schema). Lite and Pro take images, Micro does not (the Vision column of Bedrock's
    // Converse feature table); Nova 2 Lite is not in that table and is left without images
    // until it is.
    converse("amazon.nova-micro-", 128_000, 5_000, GENERIC),
    Entry {
        images: true,
        ..converse("amazon.nova-lite-", 300_000, 5_000, GENERIC)
    },
    Entry {
        images: true,
        ..converse("amazon.nova-pro-", 300_000, 5_000, GENERIC)
    },
    converse("amazon.nova-2-lite-", 256_000, 5_000, GENERIC),
    // Mistral. Text completion (`prompt`): Mistral 7B Instruct, Mixtral 8x7B, Mistral Large
    // and Small 2402 (Bedrock's Mistral text-completion page); 32K windows.
    native(
        "mistral.mistral-7b-",
        ModelFamily::Mistral,
        32_000,
        8_192,
        TokenScheme::MistralV1,
    ),
    native(
        "mistral.mixtral-8x7b-",
        ModelFamily::Mistral,
        32_000,
        4_096,
        TokenScheme::MistralV1,
    ),
    native(
        "mistral.mistral-large-2402",
        ModelFamily::Mistral,
        32_000,
        8_192,
        TokenScheme::MistralV1,
    ),
    native(
        "mistral.mistral-small-2402",
        ModelFamily::Mistral,
        32_000,
        8_192,
        TokenScheme::MistralV1,
    ),
    // Mistral Large 2 (24.07) takes Bedrock's chat-completion body (`messages`), not a prompt;
    // Bedrock recommends Converse for it. 128K window. Its v3 tokenizer counts text as v1.
    converse(
        "mistral.mistral-large-2407",
        128_000,
        8_192,
        TokenScheme::MistralV1,
    ),
    // DeepSeek R1: `max_tokens` up to 32,768 (Bedrock's DeepSeek page), 128K window.
    converse("deepseek.r1-", 128_000, 32_768, GENERIC),
];

#[cfg(test)]
pub(super) fn entries() -> &'static [Entry] {
    TABLE
}
