//! Meta Llama 2 chat.
//!
//! The format of `chat_completion` in Meta's reference code: the system text goes inside the
//! first instruction as `<<SYS>>\n{system}\n<</SYS>>\n\n`; every exchange is
//! `<s>[INST] {question} [/INST] {answer} </s>` with both texts stripped; the prompt ends with
//! `<s>[INST] {question} [/INST]`, for the model to complete.

use std::ops::Range;

use super::engine::{family_template, Layout, Shape, TextShape, Writer};
use crate::model::ModelFamily;

fn prefix(system: &str, w: &mut Writer) {
    w.text("<s>[INST] ");
    if !system.is_empty() {
        w.text("<<SYS>>\n");
        w.text(system);
        w.text("\n<</SYS>>\n\n");
    }
}

fn turn(question: &str, answer: &str, w: &mut Writer) {
    w.value(question);
    w.text(" [/INST] ");
    w.value(answer);
    w.text(" </s><s>[INST] ");
}

fn tail(question: &str, spans: &[Range<usize>], w: &mut Writer) {
    w.rendered(question, spans);
    w.text(" [/INST]");
}

pub(crate) const LAYOUT: Layout = Layout {
    family: ModelFamily::Llama2,
    shape: Shape::Text(TextShape { prefix, turn, tail }),
};

family_template!(
    /// Meta Llama 2 chat: `<s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{question} [/INST]`, earlier
    /// exchanges as `<s>[INST] {question} [/INST] {answer} </s>`.
    ///
    /// Passages go at the top of the first instruction, after the system block, numbered from
    /// 1 in rank order. Counted as Mistral's SentencePiece v1 model times 1.2, a bound measured
    /// against Llama 2's own tokenizer.
    Llama2Template,
    Llama2TemplateBuilder,
    LAYOUT
);
