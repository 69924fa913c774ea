//! Anthropic Claude 3 and later, Messages API; and any chat model behind ConverseStream.
//!
//! A [`super::Prompt::Chat`]: the system text in its own field, then messages that start with
//! the user and alternate, none empty. Passages go at the top of the first user message in
//! `<documents><document index="n">...</document></documents>`, as Anthropic's long-context
//! prompting tips advise.

use super::engine::{family_template, Layout, Shape};
use crate::model::ModelFamily;

pub(crate) const LAYOUT: Layout = Layout {
    family: ModelFamily::Claude,
    shape: Shape::Chat,
};

pub(crate) const CHAT_LAYOUT: Layout = Layout {
    family: ModelFamily::Chat,
    shape: Shape::Chat,
};

family_template!(
    /// Anthropic Claude Messages API: a system text and alternating user and assistant
    /// messages, the passages in `<document>` blocks at the top of the first user message,
    /// numbered from 1 in rank order.
    ///
    /// Counted as cl100k times a published factor plus the Messages API's framing (Claude's
    /// tokenizer is not public); see [`crate::ModelFamily::default_tokens`].
    ClaudeMessagesTemplate,
    ClaudeMessagesTemplateBuilder,
    LAYOUT
);

family_template!(
    /// Any chat model behind Bedrock's ConverseStream (Amazon Nova, Mistral Large 2, Llama 4,
    /// DeepSeek, ...): a system text and alternating messages, which Bedrock puts into the
    /// model's own format; the passages in `<document>` blocks at the top of the first user
    /// message, numbered from 1 in rank order.
    ///
    /// Counted with the model's profile ([`crate::ModelProfile::tokens`]) plus the framing of
    /// a message API.
    ChatTemplate,
    ChatTemplateBuilder,
    CHAT_LAYOUT
);
