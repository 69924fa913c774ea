//! Anthropic Claude 2 and Instant, legacy text completions.
//!
//! The format of Anthropic's text completions API: the prompt alternates `\n\nHuman: {text}`
//! and `\n\nAssistant: {text}` and ends with `\n\nAssistant:`, for the model to complete. The
//! system text goes before the first `\n\nHuman:`.

use std::ops::Range;

use super::engine::{family_template, Layout, Shape, TextShape, Writer};
use crate::model::ModelFamily;

const HUMAN: &str = "\n\nHuman: ";
const ASSISTANT: &str = "\n\nAssistant:";

fn prefix(system: &str, w: &mut Writer) {
    w.text(system);
    w.text(HUMAN);
}

fn turn(question: &str, answer: &str, w: &mut Writer) {
    w.value(question);
    w.text(ASSISTANT);
    w.text(" ");
    w.value(answer);
    w.text(HUMAN);
}

fn tail(question: &str, spans: &[Range<usize>], w: &mut Writer) {
    w.rendered(question, spans);
    w.text(ASSISTANT);
}

pub(crate) const LAYOUT: Layout = Layout {
    family: ModelFamily::ClaudeText,
    shape: Shape::Text(TextShape { prefix, turn, tail }),
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
