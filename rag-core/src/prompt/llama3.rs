//! Meta Llama 3, 3.1, 3.2 and 3.3 instruct.
//!
//! The format of Meta's Llama 3 model card and reference `ChatFormat`: the prompt starts with
//! `<|begin_of_text|>`; every message is `<|start_header_id|>{role}<|end_header_id|>\n\n`, its
//! content stripped of surrounding whitespace, then `<|eot_id|>`; the prompt ends with an open
//! assistant header followed by its blank line, for the model to complete.

use super::engine::{family_template, Layout, Pieces};
use super::Prompt;
use crate::model::ModelFamily;

const BEGIN: &str = "<|begin_of_text|>";
const EOT: &str = "<|eot_id|>";

fn header(role: &str, out: &mut String) {
    out.push_str("<|start_header_id|>");
    out.push_str(role);
    out.push_str("<|end_header_id|>\n\n");
}

fn message(role: &str, content: &str, out: &mut String) {
    header(role, out);
    out.push_str(content);
    out.push_str(EOT);
}

fn turn_text(question: &str, answer: &str, out: &mut String) {
    message("user", question, out);
    message("assistant", answer, out);
}

fn assemble(p: &Pieces<'_, '_>) -> Prompt {
    let mut out = String::with_capacity(p.capacity());
    out.push_str(BEGIN);
    if !p.system.is_empty() {
        message("system", p.system, &mut out);
    }
    header("user", &mut out);
    p.first_user(&mut out);
    out.push_str(EOT);
    for (first, turn) in p.turns_with_first() {
        if !first {
            message("user", &turn.question, &mut out);
        }
        message("assistant", &turn.answer, &mut out);
    }
    if !p.turns.is_empty() {
        message("user", p.question, &mut out);
    }
    header("assistant", &mut out);
    Prompt::Text(out)
}

pub(crate) const LAYOUT: Layout = Layout {
    family: ModelFamily::Llama3,
    assemble,
    turn_text: Some(turn_text),
};

family_template!(
    /// Meta Llama 3.x instruct:
    /// `<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n...<|eot_id|>` then the
    /// user and assistant messages, ending with an open assistant header.
    ///
    /// Passages go at the top of the first user message, numbered from 1 in rank order.
    Llama3Template,
    Llama3TemplateBuilder,
    LAYOUT
);
