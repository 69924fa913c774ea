//! Prompts: the [`PromptTemplate`] trait, what it renders, and the token budget it keeps.

use std::fmt::Debug;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::types::{Passage, Turn};

/// Who says a message in a chat prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The user.
    User,
    /// The model.
    Assistant,
}

/// One message of a chat prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who says it.
    pub role: Role,
    /// What is said.
    pub content: String,
}

impl Message {
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Message {
            role: Role::User,
            content: content.into(),
        }
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Message {
            role: Role::Assistant,
            content: content.into(),
        }
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
    /// The prompt's size as the template's token counter counts it.
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
}

impl<T: PromptTemplate + ?Sized> PromptTemplate for &T {
    fn render(&self, input: &PromptInput<'_>, budget: &TokenBudget) -> Result<RenderedPrompt> {
        (**self).render(input, budget)
    }
}

impl<T: PromptTemplate + ?Sized> PromptTemplate for Box<T> {
    fn render(&self, input: &PromptInput<'_>, budget: &TokenBudget) -> Result<RenderedPrompt> {
        (**self).render(input, budget)
    }
}

impl<T: PromptTemplate + ?Sized> PromptTemplate for std::sync::Arc<T> {
    fn render(&self, input: &PromptInput<'_>, budget: &TokenBudget) -> Result<RenderedPrompt> {
        (**self).render(input, budget)
    }
}
