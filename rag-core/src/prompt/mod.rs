//! Prompts: the [`PromptTemplate`] trait, what it renders, the token budget it keeps, and one
//! template per Bedrock text family.
//!
//! | family | template | prompt |
//! |---|---|---|
//! | Claude 3+ Messages | [`ClaudeMessagesTemplate`] | [`Prompt::Chat`] |
//! | Claude 2 / Instant | [`ClaudeTextTemplate`] | `\n\nHuman:` / `\n\nAssistant:` text |
//! | Llama 2 chat | [`Llama2Template`] | `<s>[INST] <<SYS>>...<</SYS>> ... [/INST]` text |
//! | Llama 3.x instruct | [`Llama3Template`] | `<\|start_header_id\|>...<\|eot_id\|>` text |
//! | Titan Text | [`TitanTextTemplate`] | `User:` / `Bot:` text |
//! | Mistral / Mixtral | [`MistralTemplate`] | `<s>[INST] ... [/INST]` text |
//! | chat models behind ConverseStream | [`ChatTemplate`] | [`Prompt::Chat`] |
//!
//! Every template numbers the passages it keeps from 1 in rank order, neutralizes the family's
//! markers wherever untrusted text touches them ([`sanitize`]), lets a user replace the system
//! text, the passage block and the question framing with handlebars templates ([`parts`]), and
//! packs the prompt into a [`TokenBudget`] counted by a [`crate::tokens::TokenCounter`]: the
//! family's own tokenizer where it is public, a measured upper bound where it is not
//! ([`template_for_profile`] counts the way a model's profile says).
//!
//! ```
//! use rag_core::prompt::Llama3Template;
//! use rag_core::{Passage, Prompt, PromptInput, PromptTemplate, TokenBudget};
//!
//! let template = Llama3Template::builder()
//!     .with_system("Answer from the documents.")
//!     .with_passage_template("[{{index}}] {{text}}")
//!     .build()?;
//! let passages = [Passage::new("p1", "Functions time out after 15 minutes.")];
//! let input = PromptInput { question: "How long can a function run?", passages: &passages, history: &[] };
//! let rendered = template.render(&input, &TokenBudget::new(8_192, 1_024, 0))?;
//! assert_eq!(
//!     rendered.prompt,
//!     Prompt::Text(
//!         "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nAnswer from the documents.<|eot_id|>\
//!          <|start_header_id|>user<|end_header_id|>\n\n<documents>\n[1] Functions time out after 15 minutes.\n</documents>\n\n\
//!          How long can a function run?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
//!             .into()
//!     )
//! );
//! assert_eq!(rendered.passages_kept, [0]);
//! # Ok::<(), rag_core::Error>(())
//! ```

use std::fmt::Debug;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::model::{ModelFamily, ModelProfile};
use crate::types::{Image, Passage, Turn};

mod budget;
mod claude;
mod claude_text;
mod engine;
mod llama2;
mod llama3;
mod mistral;
pub mod parts;
pub mod sanitize;
mod titan;

pub use claude::{
    ChatTemplate, ChatTemplateBuilder, ClaudeMessagesTemplate, ClaudeMessagesTemplateBuilder,
};
pub use claude_text::{ClaudeTextTemplate, ClaudeTextTemplateBuilder};
pub use llama2::{Llama2Template, Llama2TemplateBuilder};
pub use llama3::{Llama3Template, Llama3TemplateBuilder};
pub use mistral::{MistralTemplate, MistralTemplateBuilder};
pub use titan::{TitanTextTemplate, TitanTextTemplateBuilder};

/// The shipped template of `family`, counted the family's way
/// ([`ModelFamily::default_tokens`]).
pub fn template_for(family: ModelFamily) -> Box<dyn PromptTemplate> {
    match family {
        ModelFamily::Claude => Box::new(ClaudeMessagesTemplate::new()),
        ModelFamily::ClaudeText => Box::new(ClaudeTextTemplate::new()),
        ModelFamily::Llama2 => Box::new(Llama2Template::new()),
        ModelFamily::Llama3 => Box::new(Llama3Template::new()),
        ModelFamily::TitanText => Box::new(TitanTextTemplate::new()),
        ModelFamily::Mistral => Box::new(MistralTemplate::new()),
        _ => Box::new(ChatTemplate::new()),
    }
}

/// The shipped template of a model's family, counted as its profile says (its token scheme and
/// framing).
pub fn template_for_profile(profile: &ModelProfile) -> Box<dyn PromptTemplate> {
    macro_rules! build {
        ($template:ty) => {
            Box::new(
                <$template>::builder()
                    .with_tokens(profile.tokens)
                    .with_framing(profile.framing)
                    .build()
                    .expect("the shipped templates compile"),
            )
        };
    }
    match profile.family {
        ModelFamily::Claude => build!(ClaudeMessagesTemplate),
        ModelFamily::ClaudeText => build!(ClaudeTextTemplate),
        ModelFamily::Llama2 => build!(Llama2Template),
        ModelFamily::Llama3 => build!(Llama3Template),
        ModelFamily::TitanText => build!(TitanTextTemplate),
        ModelFamily::Mistral => build!(MistralTemplate),
        _ => build!(ChatTemplate),
    }
}

/// The kind of prompt a template renders, or a generator takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PromptKind {
    /// A system text and messages ([`Prompt::Chat`]), for message APIs (Claude Messages,
    /// ConverseStream).
    Chat,
    /// One text in the format of a text family ([`Prompt::Text`]).
    Text(ModelFamily),
    /// Whatever it is given (test doubles, the extractive generator).
    Any,
}

impl PromptKind {
    /// Whether a template rendering `self` fits a generator taking `generator`.
    pub fn fits(self, generator: PromptKind) -> bool {
        match (self, generator) {
            (PromptKind::Any, _) | (_, PromptKind::Any) => true,
            (PromptKind::Chat, PromptKind::Chat) => true,
            (PromptKind::Text(a), PromptKind::Text(b)) => a == b,
            _ => false,
        }
    }
}

impl std::fmt::Display for PromptKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PromptKind::Chat => f.write_str("chat prompts (a system text and messages)"),
            PromptKind::Text(family) => write!(f, "{family} text prompts"),
            PromptKind::Any => f.write_str("any prompt"),
        }
    }
}

/// Who says a message in a chat prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The user.
    User,
    /// The model.
    Assistant,
}

/// One message of a chat prompt: its text and, for models that take image input, images.
///
/// Images go before the text in the request (Anthropic's vision guide: "Claude works best when
/// images come before text"; Converse takes the same order). Only generators of models that
/// take images accept a message with images ([`crate::ModelProfile::images`]); the others
/// refuse it before any call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who says it.
    pub role: Role,
    /// What is said.
    pub content: String,
    /// Images shown with the text (user messages only), before it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<Image>,
}

impl Message {
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Message {
            role: Role::User,
            content: content.into(),
            images: Vec::new(),
        }
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Message {
            role: Role::Assistant,
            content: content.into(),
            images: Vec::new(),
        }
    }

    /// Adds an image, shown before the text.
    pub fn with_image(mut self, image: Image) -> Self {
        self.images.push(image);
        self
    }
}

/// A prompt, in the shape the model's API takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Prompt {
    /// One string, for text-completion APIs (Llama, Titan, Mistral, Claude legacy).
    Text(String),
    /// A system text and alternating messages, for message APIs (Claude Messages, Converse).
    Chat {
        /// The system text, for families that take one.
        system: Option<String>,
        /// The messages, first from the user, roles alternating.
        messages: Vec<Message>,
    },
}

impl Prompt {
    /// The length in bytes of the passages block that opens the first message of a chat
    /// prompt, as this library's chat templates lay it out (`<documents>` ... `</documents>`
    /// and a blank line, before the first question); `None` for a text prompt or one without
    /// that block.
    ///
    /// With the system text, it is the prompt's stable prefix: what stays the same when the
    /// same passages come back, and what a prompt cache can hold (Bedrock's `cachePoint`,
    /// Claude's `cache_control`). The history and the question come after it.
    pub fn context_block_len(&self) -> Option<usize> {
        let Prompt::Chat { messages, .. } = self else {
            return None;
        };
        let first = messages.first().filter(|m| m.role == Role::User)?;
        let text = first.content.strip_prefix(engine::CONTEXT_OPEN)?;
        let end = text.find(engine::CONTEXT_CLOSE)?;
        Some(engine::CONTEXT_OPEN.len() + end + engine::CONTEXT_CLOSE.len())
    }
}

/// What a template renders: the question, the retrieved passages and the history.
#[derive(Debug, Clone, Copy)]
pub struct PromptInput<'a> {
    /// The user's question.
    pub question: &'a str,
    /// Retrieved passages, best first.
    pub passages: &'a [Passage],
    /// Earlier turns of the conversation, oldest first.
    pub history: &'a [Turn],
}

/// How many tokens a prompt may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenBudget {
    /// The model's context window, in tokens.
    pub context_window: usize,
    /// Tokens kept free for the answer.
    pub max_output_tokens: usize,
    /// Tokens kept free as a safety margin (counters of other tokenizers differ a little).
    pub reserve: usize,
}

impl TokenBudget {
    /// A budget for a model with `context_window` tokens.
    pub fn new(context_window: usize, max_output_tokens: usize, reserve: usize) -> Self {
        TokenBudget {
            context_window,
            max_output_tokens,
            reserve,
        }
    }

    /// Tokens the prompt may use: `context_window - max_output_tokens - reserve`, never
    /// negative.
    pub fn prompt_tokens(&self) -> usize {
        self.context_window
            .saturating_sub(self.max_output_tokens)
            .saturating_sub(self.reserve)
    }
}

/// A rendered prompt and what the budget kept of its input.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedPrompt {
    /// The prompt for the model.
    pub prompt: Prompt,
    /// Indexes into [`PromptInput::passages`] of the passages in the prompt, in prompt order:
    /// the passage numbered `n` in the prompt is `passages[passages_kept[n - 1]]`.
    pub passages_kept: Vec<usize>,
    /// Indexes into [`PromptInput::passages`] of the passages the budget left out.
    pub passages_dropped: Vec<usize>,
    /// How many of the newest turns of [`PromptInput::history`] are in the prompt.
    pub turns_kept: usize,
    /// How many older turns the budget left out.
    pub turns_dropped: usize,
    /// The prompt's size as the template's token counter counts it (with the framing of a
    /// message API, for chat prompts), or an upper bound of it that is never over the budget.
    /// The family templates skip counting when the UTF-8 length already settles it
    /// ([`crate::tokens::TokenCounter::max_count_for_len`]); otherwise they count part by
    /// part, exactly for counters that split exactly, and check the whole prompt for the
    /// others.
    pub token_count: usize,
}

/// Renders a [`PromptInput`] in one model family's exact format, inside a [`TokenBudget`].
///
/// Implementations keep the best passages in rank order and the newest whole turns, never
/// exceed the budget, and fail with [`crate::Error::ContextOverflow`] when the question alone
/// does not fit. Untrusted text (passages, history, the question) is never evaluated as a
/// template and cannot produce the family's role markers.
pub trait PromptTemplate: Send + Sync + Debug {
    /// Renders `input` within `budget`.
    fn render(&self, input: &PromptInput<'_>, budget: &TokenBudget) -> Result<RenderedPrompt>;

    /// The kind of prompt it renders; the pipeline refuses a generator that takes another
    /// kind. [`PromptKind::Any`] unless said otherwise.
    fn kind(&self) -> PromptKind {
        PromptKind::Any
    }
}

macro_rules! forward_template {
    ($($ty:ty),*) => {$(
        impl<T: PromptTemplate + ?Sized> PromptTemplate for $ty {
            fn render(&self, input: &PromptInput<'_>, budget: &TokenBudget) -> Result<RenderedPrompt> {
                (**self).render(input, budget)
            }

            fn kind(&self) -> PromptKind {
                (**self).kind()
            }
        }
    )*};
}

forward_template!(&T, Box<T>, std::sync::Arc<T>);
