//! Anthropic Claude 2 and Instant, legacy text completions.
//!
//! The format of Anthropic's text completions API: the prompt alternates `\n\nHuman: {text}`
//! and `\n\nAssistant: {text}` and ends with `\n\nAssistant:`, for the model to complete. The
//! system text goes before the first `\n\nHuman:`.

use super::engine::{family_template, Layout, Pieces};
use super::Prompt;
use crate::model::ModelFamily;

const HUMAN: &str = "\n\nHuman: ";
const ASSISTANT: &str = "\n\nAssistant:";

fn turn_text(question: &str, answer: &str, out: &mut String) {
    out.push_str(HUMAN);
    out.push_str(question);
    out.push_str(ASSISTANT);
    out.push(' ');
    out.push_str(answer);
}

fn assemble(p: &Pieces<'_, '_>) -> Prompt {
    let mut out = String::with_capacity(p.capacity());
    out.push_str(p.system);
    out.push_str(HUMAN);
    p.first_user(&mut out);
    for (first, turn) in p.turns_with_first() {
        if !first {
            out.push_str(HUMAN);
            out.push_str(&turn.question);
        }
        out.push_str(ASSISTANT);
        out.push(' ');
        out.push_str(&turn.answer);
    }
    if !p.turns.is_empty() {
        out.push_str(HUMAN);
        out.push_str(p.question);
    }
    out.push_str(ASSISTANT);
    Prompt::Text(out)
}

pub(crate) const LAYOUT: Layout = Layout {
    family: ModelFamily::ClaudeText,
    assemble,
    turn_text: Some(turn_text),
};

family_template!(
    /// Anthropic Claude legacy text completion: `{system}\n\nHuman: {question}\n\nAssistant:`,
    /// earlier exchanges as `\n\nHuman: ...\n\nAssistant: ...`.
    ///
    /// Passages go at the top of the first human text, numbered from 1 in rank order.
    ClaudeTextTemplate,
    ClaudeTextTemplateBuilder,
    LAYOUT
);
