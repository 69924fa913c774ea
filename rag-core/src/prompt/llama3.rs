//! Meta Llama 3, 3.1, 3.2 and 3.3 instruct.
//!
//! The format of Meta's Llama 3 model card and reference `ChatFormat`: the prompt starts with
//! `<|begin_of_text|>`; every message is `<|start_header_id|>{role}<|end_header_id|>\n\n`, its
//! content stripped of surrounding whitespace, then `<|eot_id|>`; the prompt ends with an open
//! assistant header followed by its blank line, for the model to complete.

use std::ops::Range;

use super::engine::{family_template, Layout, Shape, TextShape, Writer};
use crate::model::ModelFamily;

const BEGIN: &str = "<|begin_of_text|>";
const EOT: &str = "<|eot_id|>";
const USER: &str = "<|start_header_id|>user<|end_header_id|>\n\n";
const ASSISTANT: &str = "<|start_header_id|>assistant<|end_header_id|>\n\n";

fn prefix(system: &str, w: &mut Writer) {
    w.text(BEGIN);
    if !system.is_empty() {
        w.text("<|start_header_id|>system<|end_header_id|>\n\n");
        w.text(system);
        w.text(EOT);
    }
    w.text(USER);
}

fn turn(question: &str, answer: &str, w: &mut Writer) {
    w.value(question);
    w.text(EOT);
    w.text(ASSISTANT);
    w.value(answer);
    w.text(EOT);
    w.text(USER);
}

fn tail(question: &str, spans: &[Range<usize>], w: &mut Writer) {
    w.rendered(question, spans);
    w.text(EOT);
    w.text(ASSISTANT);
}

pub(crate) const LAYOUT: Layout = Layout {
    family: ModelFamily::Llama3,
    shape: Shape::Text(TextShape { prefix, turn, tail }),
};

family_template!(
    /// Meta Llama 3.x instruct:
    /// `<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n...<|eot_id|>` then the
    /// user and assistant messages, ending with an open assistant header.
    ///
    /// Passages go at the top of the first user message, numbered from 1 in rank order.
    /// Counted with cl100k, an upper bound of Llama 3's own count.
    Llama3Template,
    Llama3TemplateBuilder,
    LAYOUT
);
