//! Anthropic Claude 3 and later, Messages API.
//!
//! A [`Prompt::Chat`]: the system text in its own field, then messages that start with the user
//! and alternate, none empty. Passages go at the top of the first user message in
//! `<documents><document index="n">...</document></documents>`, as Anthropic's long-context
//! prompting tips advise.

use super::engine::{family_template, Layout, Pieces};
use super::{Message, Prompt};
use crate::model::ModelFamily;

fn assemble(p: &Pieces<'_, '_>) -> Prompt {
    let mut messages = Vec::with_capacity(2 * p.turns.len() + 1);
    let mut first = String::with_capacity(p.context.len() + p.question.len() + 2);
    p.first_user(&mut first);
    messages.push(Message::user(first));
    for (is_first, turn) in p.turns_with_first() {
        if !is_first {
            messages.push(Message::user(turn.question.as_ref()));
        }
        messages.push(Message::assistant(turn.answer.as_ref()));
    }
    if !p.turns.is_empty() {
        messages.push(Message::user(p.question));
    }
    Prompt::Chat {
        system: (!p.system.is_empty()).then(|| p.system.to_owned()),
        messages,
    }
}

pub(crate) const LAYOUT: Layout = Layout {
    family: ModelFamily::Claude,
    assemble,
    turn_text: None,
};

family_template!(
    /// Anthropic Claude Messages API: a system text and alternating user and assistant
    /// messages, the passages in `<document>` blocks at the top of the first user message,
    /// numbered from 1 in rank order.
    ClaudeMessagesTemplate,
    ClaudeMessagesTemplateBuilder,
    LAYOUT
);
