//! Amazon Titan Text.
//!
//! The conversational format of Bedrock's Titan Text documentation: `User: {text}\nBot:`, with
//! earlier exchanges as `User: {question}\nBot: {answer}\n` lines. Titan takes no system
//! prompt, so the system text opens the first user text, followed by a blank line.

use std::ops::Range;

use super::engine::{family_template, Layout, Shape, TextShape, Writer, PARAGRAPH};
use crate::model::ModelFamily;

fn prefix(system: &str, w: &mut Writer) {
    w.text("User: ");
    if !system.is_empty() {
        w.text(system);
        w.text(PARAGRAPH);
    }
}

fn turn(question: &str, answer: &str, w: &mut Writer) {
    w.value(question);
    w.text("\nBot: ");
    w.value(answer);
    w.text("\nUser: ");
}

fn tail(question: &str, spans: &[Range<usize>], w: &mut Writer) {
    w.rendered(question, spans);
    w.text("\nBot:");
}

pub(crate) const LAYOUT: Layout = Layout {
    family: ModelFamily::TitanText,
    shape: Shape::Text(TextShape { prefix, turn, tail }),
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
