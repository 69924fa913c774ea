//! Amazon Titan Text.
//!
//! The conversational format of Bedrock's Titan Text documentation: `User: {text}\nBot:`, with
//! earlier exchanges as `User: {question}\nBot: {answer}\n` lines. Titan takes no system
//! prompt, so the system text opens the first user text, followed by a blank line.

use super::engine::{family_template, Layout, Pieces, PARAGRAPH};
use super::Prompt;
use crate::model::ModelFamily;

fn turn_text(question: &str, answer: &str, out: &mut String) {
    out.push_str("User: ");
    out.push_str(question);
    out.push_str("\nBot: ");
    out.push_str(answer);
    out.push('\n');
}

fn assemble(p: &Pieces<'_, '_>) -> Prompt {
    let mut out = String::with_capacity(p.capacity());
    out.push_str("User: ");
    if !p.system.is_empty() {
        out.push_str(p.system);
        out.push_str(PARAGRAPH);
    }
    p.first_user(&mut out);
    for (first, turn) in p.turns_with_first() {
        if !first {
            out.push_str("User: ");
            out.push_str(&turn.question);
        }
        out.push_str("\nBot: ");
        out.push_str(&turn.answer);
        out.push('\n');
    }
    if !p.turns.is_empty() {
        out.push_str("User: ");
        out.push_str(p.question);
    }
    out.push_str("\nBot:");
    Prompt::Text(out)
}

pub(crate) const LAYOUT: Layout = Layout {
    family: ModelFamily::TitanText,
    assemble,
    turn_text: Some(turn_text),
};

family_template!(
    /// Amazon Titan Text: `User: {text}\nBot:`, earlier exchanges as `User: ...\nBot: ...`
    /// lines; the system text is folded into the first user text.
    ///
    /// Passages go at the top of the first user text, after the system text, numbered from 1
    /// in rank order.
    TitanTextTemplate,
    TitanTextTemplateBuilder,
    LAYOUT
);
