//! Mistral and Mixtral instruct.
//!
//! The format of Mistral's instruct models (the Mistral 7B Instruct model card and Mistral's
//! tokenizer guide, as Bedrock's Mistral prompt guide shows it):
//! `<s>[INST] {instruction} [/INST] {answer}</s>[INST] {instruction} [/INST]`: one
//! beginning-of-sequence at the very start only, a space inside both sides of each
//! instruction, the answer after a space and closed by `</s>` with no space. The format has no
//! system role: the system text opens the first instruction, followed by a blank line.

use std::ops::Range;

use super::engine::{family_template, Layout, Shape, TextShape, Writer, PARAGRAPH};
use crate::model::ModelFamily;

fn prefix(system: &str, w: &mut Writer) {
    w.text("<s>[INST] ");
    if !system.is_empty() {
        w.text(system);
        w.text(PARAGRAPH);
    }
}

fn turn(question: &str, answer: &str, w: &mut Writer) {
    w.value(question);
    w.text(" [/INST] ");
    w.value(answer);
    w.text("</s>[INST] ");
}

fn tail(question: &str, spans: &[Range<usize>], w: &mut Writer) {
    w.rendered(question, spans);
    w.text(" [/INST]");
}

pub(crate) const LAYOUT: Layout = Layout {
    family: ModelFamily::Mistral,
    shape: Shape::Text(TextShape { prefix, turn, tail }),
};

family_template!(
    /// Mistral and Mixtral instruct: `<s>[INST] {system}\n\n{question} [/INST]`, earlier
    /// exchanges as `[INST] {question} [/INST] {answer}</s>`.
    ///
    /// Passages go at the top of the first instruction, after the system text, numbered from
    /// 1 in rank order. Counted exactly with Mistral's SentencePiece v1 model.
    MistralTemplate,
    MistralTemplateBuilder,
    LAYOUT
);
