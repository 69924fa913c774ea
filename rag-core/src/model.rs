//! Model families and the profile table keyed by Bedrock model id.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A prompt format: models of one family take the same prompt shape and request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ModelFamily {
    /// Anthropic Claude 3 and later, Messages API (system + alternating messages).
    Claude,
    /// Anthropic Claude 2 and Instant, legacy text completion (`\n\nHuman:` / `\n\nAssistant:`).
    ClaudeText,
    /// Meta Llama 2 chat (`<s>[INST] <<SYS>> ... [/INST]`).
    Llama2,
    /// Meta Llama 3, 3.1, 3.2 and 3.3 instruct (`<|start_header_id|>role<|end_header_id|>`).
    Llama3,
    /// Amazon Titan Text (`User:` / `Bot:`).
    TitanText,
    /// Mistral and Mixtral instruct (`<s>[INST] ... [/INST]`).
    Mistral,
}

impl ModelFamily {
    /// Every family, in the order they are listed in errors.
    pub const ALL: [ModelFamily; 6] = [
        ModelFamily::Claude,
        ModelFamily::ClaudeText,
        ModelFamily::Llama2,
        ModelFamily::Llama3,
        ModelFamily::TitanText,
        ModelFamily::Mistral,
    ];

    /// The family's name, as used in configuration (`claude`, `llama3`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ModelFamily::Claude => "claude",
            ModelFamily::ClaudeText => "claude-text",
            ModelFamily::Llama2 => "llama2",
            ModelFamily::Llama3 => "llama3",
            ModelFamily::TitanText => "titan-text",
            ModelFamily::Mistral => "mistral",
        }
    }

    /// Whether the family takes a separate system prompt.
    pub fn takes_system_prompt(self) -> bool {
        !matches!(self, ModelFamily::TitanText)
    }
}

impl fmt::Display for ModelFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ModelFamily {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        ModelFamily::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                Error::config(format!(
                    "unknown model family `{s}`; known families: {}",
                    known_families()
                ))
            })
    }
}

fn known_families() -> String {
    ModelFamily::ALL.map(ModelFamily::name).join(", ")
}

/// What a model can take: its family, context window and answer length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelProfile {
    /// The prompt format.
    pub family: ModelFamily,
    /// The context window, in tokens.
    pub context_window: usize,
    /// The most tokens the model may answer with in one call on Bedrock.
    pub max_output_tokens: usize,
    /// Whether the model takes a system prompt.
    pub system_prompt: bool,
}

impl ModelProfile {
    /// A profile for a model this table does not know, in a family you name.
    pub fn custom(family: ModelFamily, context_window: usize, max_output_tokens: usize) -> Self {
        ModelProfile {
            family,
            context_window,
            max_output_tokens,
            system_prompt: family.takes_system_prompt(),
        }
    }

    /// The profile of a Bedrock model id or inference-profile id (`us.`, `eu.`, `apac.`,
    /// `global.` and other geography prefixes are accepted), or of the ARN of a foundation
    /// model or an inference profile.
    pub fn for_model_id(model_id: &str) -> Result<Self> {
        let base = base_model_id(model_id);
        PROFILES
            .iter()
            .find(|(prefix, ..)| base.starts_with(prefix))
            .map(|&(_, family, context_window, max_output_tokens)| {
                ModelProfile::custom(family, context_window, max_output_tokens)
            })
            .ok_or_else(|| {
                Error::config(format!(
                    "unknown Bedrock model id `{model_id}`: no known family matches it (known families: {}); \
                     name the family explicitly with ModelProfile::custom",
                    known_families()
                ))
            })
    }
}

/// The model id without a cross-region inference-profile prefix (and without the ARN around
/// it, for `arn:...:foundation-model/<id>` and `arn:...:inference-profile/<id>`).
pub fn base_model_id(model_id: &str) -> &str {
    let model_id = match model_id.strip_prefix("arn:") {
        Some(arn) => arn.rsplit('/').next().unwrap_or(arn),
        None => model_id,
    };
    const GEOGRAPHIES: [&str; 8] = [
        "us.", "eu.", "apac.", "global.", "us-gov.", "ca.", "jp.", "au.",
    ];
    GEOGRAPHIES
        .iter()
        .find_map(|g| model_id.strip_prefix(g))
        .unwrap_or(model_id)
}

/// Id prefix, family, context window, max output tokens; the first matching prefix wins, so
/// specific entries come before general ones.
const PROFILES: &[(&str, ModelFamily, usize, usize)] = &[
    (
        "anthropic.claude-instant-v1",
        ModelFamily::ClaudeText,
        100_000,
        4_096,
    ),
    (
        "anthropic.claude-v2:1",
        ModelFamily::ClaudeText,
        200_000,
        4_096,
    ),
    (
        "anthropic.claude-v2",
        ModelFamily::ClaudeText,
        100_000,
        4_096,
    ),
    ("anthropic.claude-3-5", ModelFamily::Claude, 200_000, 8_192),
    ("anthropic.claude-3-7", ModelFamily::Claude, 200_000, 64_000),
    ("anthropic.claude-3", ModelFamily::Claude, 200_000, 4_096),
    (
        "anthropic.claude-opus-4",
        ModelFamily::Claude,
        200_000,
        32_000,
    ),
    ("anthropic.claude-", ModelFamily::Claude, 200_000, 64_000),
    ("meta.llama2-", ModelFamily::Llama2, 4_096, 2_048),
    ("meta.llama3-1-", ModelFamily::Llama3, 128_000, 2_048),
    ("meta.llama3-2-", ModelFamily::Llama3, 128_000, 2_048),
    ("meta.llama3-3-", ModelFamily::Llama3, 128_000, 2_048),
    ("meta.llama3-", ModelFamily::Llama3, 8_192, 2_048),
    (
        "amazon.titan-text-lite",
        ModelFamily::TitanText,
        4_096,
        4_096,
    ),
    (
        "amazon.titan-text-express",
        ModelFamily::TitanText,
        8_192,
        8_192,
    ),
    (
        "amazon.titan-text-premier",
        ModelFamily::TitanText,
        32_000,
        3_072,
    ),
    (
        "mistral.mistral-large-2407",
        ModelFamily::Mistral,
        128_000,
        8_192,
    ),
    ("mistral.mixtral-", ModelFamily::Mistral, 32_000, 4_096),
    ("mistral.mistral-", ModelFamily::Mistral, 32_000, 8_192),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_from_ids_and_inference_profiles() {
        let cases = [
            (
                "anthropic.claude-3-sonnet-20240229-v1:0",
                ModelFamily::Claude,
                200_000,
            ),
            (
                "us.anthropic.claude-3-5-sonnet-20241022-v2:0",
                ModelFamily::Claude,
                200_000,
            ),
            (
                "global.anthropic.claude-sonnet-4-20250514-v1:0",
                ModelFamily::Claude,
                200_000,
            ),
            ("anthropic.claude-v2", ModelFamily::ClaudeText, 100_000),
            (
                "anthropic.claude-instant-v1",
                ModelFamily::ClaudeText,
                100_000,
            ),
            ("meta.llama2-70b-chat-v1", ModelFamily::Llama2, 4_096),
            ("meta.llama3-8b-instruct-v1:0", ModelFamily::Llama3, 8_192),
            (
                "eu.meta.llama3-2-3b-instruct-v1:0",
                ModelFamily::Llama3,
                128_000,
            ),
            (
                "apac.meta.llama3-3-70b-instruct-v1:0",
                ModelFamily::Llama3,
                128_000,
            ),
            (
                "amazon.titan-text-express-v1",
                ModelFamily::TitanText,
                8_192,
            ),
            (
                "mistral.mixtral-8x7b-instruct-v0:1",
                ModelFamily::Mistral,
                32_000,
            ),
            (
                "mistral.mistral-7b-instruct-v0:2",
                ModelFamily::Mistral,
                32_000,
            ),
        ];
        for (id, family, window) in cases {
            let profile = ModelProfile::for_model_id(id).unwrap();
            assert_eq!(
                (profile.family, profile.context_window),
                (family, window),
                "{id}"
            );
        }
    }

    #[test]
    fn arns_of_models_and_inference_profiles() {
        let cases = [
            (
                "arn:aws:bedrock:us-east-1::foundation-model/meta.llama3-8b-instruct-v1:0",
                ModelFamily::Llama3,
            ),
            (
                "arn:aws:bedrock:eu-west-1:123456789012:inference-profile/eu.anthropic.claude-3-haiku-20240307-v1:0",
                ModelFamily::Claude,
            ),
        ];
        for (arn, family) in cases {
            assert_eq!(
                ModelProfile::for_model_id(arn).unwrap().family,
                family,
                "{arn}"
            );
        }
        assert!(ModelProfile::for_model_id(
            "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc123"
        )
        .is_err());
    }

    #[test]
    fn unknown_ids_name_the_known_families() {
        let err = ModelProfile::for_model_id("cohere.command-r-v1:0").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("cohere.command-r-v1:0"), "{msg}");
        for family in ModelFamily::ALL {
            assert!(msg.contains(family.name()), "{msg} lacks {family}");
        }
        let custom = ModelProfile::custom("llama3".parse().unwrap(), 32_000, 1_000);
        assert_eq!(custom.family, ModelFamily::Llama3);
    }

    #[test]
    fn titan_takes_no_system_prompt() {
        assert!(
            !ModelProfile::for_model_id("amazon.titan-text-lite-v1")
                .unwrap()
                .system_prompt
        );
        assert!(
            ModelProfile::for_model_id("anthropic.claude-3-haiku-20240307-v1:0")
                .unwrap()
                .system_prompt
        );
    }
}
