//! Model families and the profile table keyed by Bedrock model id.
//!
//! A [`ModelProfile`] says everything the library must know about a model before it calls
//! it: the prompt format ([`ModelFamily`]), which Bedrock Runtime API serves it ([`Route`]),
//! its context window and answer limit, how its tokens are counted ([`TokenScheme`]), the
//! framing its message API adds ([`Framing`]), and the sampling settings it refuses
//! ([`SamplingRule`]). [`ModelProfile::for_model_id`] looks a Bedrock model id up in the
//! table; [`route_for_model_id`] gives the API of any id, listed or not.
//!
//! Image models have their own table: [`ImageModelProfile::for_model_id`] says what a
//! text-to-image model takes, and [`ImageModelProfile::check`] checks an
//! [`crate::ImageRequest`] against it without a client.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::tokens::TokenScheme;
use crate::types::GenerationParams;

mod image;
mod table;

pub use image::{ImageModelFamily, ImageModelProfile, ImageSizes};

/// A prompt format: models of one family take the same prompt shape.
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
    /// Mistral and Mixtral instruct, text completion (`<s>[INST] ... [/INST]`).
    Mistral,
    /// Any chat model behind ConverseStream (Amazon Nova, Llama 4, Mistral Large 2, DeepSeek,
    /// ...): a system text and alternating messages, which Bedrock puts into the model's own
    /// format.
    Chat,
}

impl ModelFamily {
    /// Every family, in the order they are listed in errors.
    pub const ALL: [ModelFamily; 7] = [
        ModelFamily::Claude,
        ModelFamily::ClaudeText,
        ModelFamily::Llama2,
        ModelFamily::Llama3,
        ModelFamily::TitanText,
        ModelFamily::Mistral,
        ModelFamily::Chat,
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
            ModelFamily::Chat => "chat",
        }
    }

    /// Whether the family takes a separate system prompt.
    pub fn takes_system_prompt(self) -> bool {
        !matches!(self, ModelFamily::TitanText)
    }

    /// Whether the family's prompt is one text in its own format ([`crate::Prompt::Text`]),
    /// rather than a system text and messages ([`crate::Prompt::Chat`]).
    pub fn is_text(self) -> bool {
        !matches!(self, ModelFamily::Claude | ModelFamily::Chat)
    }

    /// The API that serves the family unless a profile says otherwise.
    pub fn default_route(self) -> Route {
        match self {
            ModelFamily::Chat => Route::Converse,
            _ => Route::Native,
        }
    }

    /// How the family's tokens are counted unless a profile says otherwise (see
    /// `docs/token-budget.md` for the measurements).
    pub fn default_tokens(self) -> TokenScheme {
        match self {
            // Anthropic does not publish Claude 3's tokenizer; it says tiktoken undercounts
            // Claude "by ~15-20% on typical text, and by much more on code", and a published
            // comparison measured +16% on English, +21% on math, +30% on Python.
            ModelFamily::Claude => TokenScheme::Cl100kTimes(table::CLAUDE_3_PER_MILLE),
            // Measured against Anthropic's own legacy tokenizer on the shared corpus: 1.078x
            // cl100k overall, 1.355x on the worst passage.
            ModelFamily::ClaudeText => TokenScheme::Cl100kTimes(1_400),
            // Measured against the Llama 2 tokenizer: 0.998x Mistral v1 overall, 1.116x on the
            // worst passage.
            ModelFamily::Llama2 => TokenScheme::MistralV1Times(1_200),
            ModelFamily::Llama3 => TokenScheme::Cl100k,
            // Titan's tokenizer is not public and no ratio is published; a conservative factor,
            // and Titan's "too many input tokens" error reports the exact count for the retry.
            ModelFamily::TitanText => TokenScheme::Cl100kTimes(1_500),
            ModelFamily::Mistral => TokenScheme::MistralV1,
            ModelFamily::Chat => TokenScheme::Cl100kTimes(1_500),
        }
    }

    /// The framing the family's API adds around the prompt's text (zero for text families,
    /// whose framing is part of the text and counted with it).
    pub fn default_framing(self) -> Framing {
        match self {
            // Anthropic's count of a one-message prompt is its text plus 3 tokens, and a
            // two-message prompt of "hi" and "hi" counts 9: about 3 per prompt and 2 per
            // message. The framing here is well above that.
            ModelFamily::Claude | ModelFamily::Chat => Framing {
                per_prompt: 16,
                per_message: 8,
            },
            _ => Framing::NONE,
        }
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

pub(crate) fn known_families() -> String {
    ModelFamily::ALL.map(ModelFamily::name).join(", ")
}

/// Which Bedrock Runtime API serves a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Route {
    /// InvokeModelWithResponseStream with the family's native request body.
    Native,
    /// ConverseStream, the same chat request for every chat model.
    Converse,
}

/// Sampling settings a model refuses, checked before any call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SamplingRule {
    /// Every setting the family takes.
    Any,
    /// `temperature` or `top_p`, not both: Bedrock's Claude Messages reference says "Claude
    /// Sonnet 4.5 and Claude Haiku 4.5 support specifying either the temperature or top_p
    /// parameter, but not both", and Claude Opus 4.1 and the models after these answer both
    /// with "`temperature` and `top_p` cannot both be specified for this model".
    TemperatureOrTopP,
}

/// Tokens a message API adds around the text of a prompt: role markers, message separators,
/// the template the service wraps the messages in. Counted on top of the text by the chat
/// templates; text families carry their framing in the text and have none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Framing {
    /// Tokens once per prompt.
    pub per_prompt: usize,
    /// Tokens per message, the system text included.
    pub per_message: usize,
}

impl Framing {
    /// No framing.
    pub const NONE: Framing = Framing {
        per_prompt: 0,
        per_message: 0,
    };

    /// The framing tokens of a chat prompt of `messages` messages (the system text counts as
    /// one).
    pub fn tokens(&self, messages: usize) -> usize {
        self.per_prompt + self.per_message * messages
    }
}

/// What a model can take: its family, API, limits, tokens and sampling rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ModelProfile {
    /// The prompt format.
    pub family: ModelFamily,
    /// The API that serves the model.
    pub route: Route,
    /// The context window, in tokens.
    pub context_window: usize,
    /// The most tokens the model may answer with in one call on Bedrock.
    pub max_output_tokens: usize,
    /// Whether the model takes a system prompt.
    pub system_prompt: bool,
    /// How its tokens are counted for the budget.
    pub tokens: TokenScheme,
    /// The framing its API adds around a chat prompt's text.
    pub framing: Framing,
    /// The sampling settings it refuses.
    pub sampling: SamplingRule,
    /// Whether Bedrock streams its answers (the pipeline only streams).
    pub streams: bool,
    /// Whether it takes images in its messages ([`crate::Message::images`]).
    pub images: bool,
}

impl ModelProfile {
    /// A profile for a model this table does not know, in a family you name, with the
    /// family's route, token counting and framing.
    pub fn custom(family: ModelFamily, context_window: usize, max_output_tokens: usize) -> Self {
        ModelProfile {
            family,
            route: family.default_route(),
            context_window,
            max_output_tokens,
            system_prompt: family.takes_system_prompt(),
            tokens: family.default_tokens(),
            framing: family.default_framing(),
            sampling: SamplingRule::Any,
            streams: true,
            images: false,
        }
    }

    /// Takes images in its messages (or not) instead.
    pub fn with_images(mut self, images: bool) -> Self {
        self.images = images;
        self
    }

    /// Counts its tokens with `tokens` instead.
    pub fn with_tokens(mut self, tokens: TokenScheme) -> Self {
        self.tokens = tokens;
        self
    }

    /// Calls it through `route` instead.
    pub fn with_route(mut self, route: Route) -> Self {
        self.route = route;
        self
    }

    /// Counts `framing` around its chat prompts instead.
    pub fn with_framing(mut self, framing: Framing) -> Self {
        self.framing = framing;
        self
    }

    /// Checks sampling settings against `sampling` instead.
    pub fn with_sampling(mut self, sampling: SamplingRule) -> Self {
        self.sampling = sampling;
        self
    }

    /// The profile of a Bedrock model id or inference-profile id (`us.`, `eu.`, `apac.`,
    /// `global.` and other geography prefixes are accepted), or of the ARN of a foundation
    /// model or an inference profile.
    ///
    /// Ids the table does not list are a [`Error::Config`]: without a known window the budget
    /// cannot be kept. Name the model with [`ModelProfile::custom`] instead.
    pub fn for_model_id(model_id: &str) -> Result<Self> {
        let base = base_model_id(model_id);
        table::lookup(base)
            .map(table::Entry::profile)
            .ok_or_else(|| {
                Error::config(format!(
                    "unknown Bedrock model id `{model_id}`: the model table does not list it (known families: {}); \
                     give its family, window and answer limit with ModelProfile::custom",
                    known_families()
                ))
            })
    }

    /// The safety margin the budget keeps by default: 1% of the window, at least 16 tokens.
    /// Counting is exact or an upper bound per family; the margin covers what a service adds
    /// that no counter sees (a beginning-of-text token, a template's own tokens).
    pub fn default_reserve(&self) -> usize {
        default_reserve(self.context_window)
    }

    /// Checks `params` against the model's answer limit and sampling rule, before any call.
    pub fn check_params(&self, model: &str, params: &GenerationParams) -> Result<()> {
        if params.max_tokens as usize > self.max_output_tokens {
            return Err(Error::invalid_input(
                "params.max_tokens",
                format!(
                    "{} is more than {model} answers with at most ({})",
                    params.max_tokens, self.max_output_tokens
                ),
            ));
        }
        if self.sampling == SamplingRule::TemperatureOrTopP
            && params.temperature.is_some()
            && params.top_p.is_some()
        {
            return Err(Error::invalid_input(
                "params.top_p",
                format!("{model} takes temperature or top_p, not both: set only one"),
            ));
        }
        Ok(())
    }
}

/// 1% of `context_window`, at least 16 tokens (see [`ModelProfile::default_reserve`]).
pub fn default_reserve(context_window: usize) -> usize {
    (context_window / 100).max(16)
}

/// The API for `model_id`: the table's route for the ids it lists; ConverseStream, the API
/// that takes the same chat request for every chat model, for every other id.
pub fn route_for_model_id(model_id: &str) -> Route {
    table::lookup(base_model_id(model_id)).map_or(Route::Converse, |entry| entry.route)
}

/// Whether Bedrock's Converse API takes images in the messages of `model_id`, when the tables
/// know: the chat models' own profiles ([`ModelProfile::images`]), the Claude Messages models
/// (whose Converse vision is their Messages vision), and the vision models the table lists
/// only for their native text API or not at all (Llama 3.2 11B and 90B Vision, Amazon Nova
/// Premier, Mistral Pixtral Large). `None` for ids neither table knows: Bedrock decides.
pub fn converse_takes_images(model_id: &str) -> Option<bool> {
    let base = base_model_id(model_id);
    if table::CONVERSE_VISION.iter().any(|p| base.starts_with(p)) {
        return Some(true);
    }
    table::lookup(base).map(|entry| entry.images)
}

/// The model id without a cross-region inference-profile prefix (and without the ARN around
/// it, for `arn:...:foundation-model/<id>` and `arn:...:inference-profile/<id>`).
pub fn base_model_id(model_id: &str) -> &str {
    let model_id = match model_id.strip_prefix("arn:") {
        Some(arn) => arn.rsplit('/').next().unwrap_or(arn),
        None => model_id,
    };
    // The geographies of cross-region inference profiles (the AWS CDK's
    // CrossRegionInferenceProfileRegion lists global, us, eu, us-gov, apac, jp and au; `in.`
    // appears for newer models, `ca.` in Bedrock's model ids for Canada).
    const GEOGRAPHIES: [&str; 9] = [
        "us.", "eu.", "apac.", "global.", "us-gov.", "ca.", "jp.", "au.", "in.",
    ];
    GEOGRAPHIES
        .iter()
        .find_map(|g| model_id.strip_prefix(g))
        .unwrap_or(model_id)
}

#[cfg(test)]
mod tests;
