//! Mistral and Mixtral instruct.
//!
//! The format of Mistral's instruct models (the Mistral 7B Instruct model card and Mistral's
//! tokenizer guide, as Bedrock's Mistral prompt guide shows it):
//! `<s>[INST] {instruction} [/INST] {answer}</s>[INST] {instruction} [/INST]`: one
//! beginning-of-sequence at the very start only, a space inside both sides of each
//! instruction, the answer after a space and closed by `</s>` with no space. The format has no
//! system role: the system text opens the first instruction, followed by a blank line.

use super::engine::{family_template, Layout, Pieces, PARAGRAPH};
use super::Prompt;
use crate::model::ModelFamily;

fn instruction(user: impl FnOnce(&mut String), out: &mut String) {
    out.push_str("[INST] ");
    user(out);
    out.push_str(" [/INST]");
}

fn answer(answer: &str, out: &mut String) {
    out.push(' ');
    out.push_str(answer);
    out.push_str("</s>");
}

fn turn_text(question: &str, reply: &str, out: &mut String) {
    instruction(|o| o.push_str(question), out);
    answer(reply, out);
}

fn assemble(p: &Pieces<'_, '_>) -> Prompt {
    let mut out = String::with_capacity(p.capacity());
    out.push_str("<s>");
    instruction(
        |o| {
            if !p.system.is_empty() {
                o.push_str(p.system);
                o.push_str(PARAGRAPH);
            }
            p.first_user(o);
        },
        &mut out,
    );
    for (first, turn) in p.turns_with_first() {
        if !first {
            instruction(|o| o.push_str(&turn.question), &mut out);
        }
        answer(&turn.answer, &mut out);
    }
    if !p.turns.is_empty() {
        instruction(|o| o.push_str(p.question), &mut out);
    }
    Prompt::Text(out)
}

pub(crate) const LAYOUT: Layout = Layout {
    family: ModelFamily::Mistral,
    assemble,
    turn_text: Some(turn_text),
};

family_template!(
    /// Mistral and Mixtral instruct: `<s>[INST] {system}\n\n{question} [/INST]`, earlier
    /// exchanges as `[INST] {question} [/INST] {answer}</s>`.
    ///
    /// Passages go at the top of the first instruction, after the system text, numbered from
    /// 1 in rank order.
    MistralTemplate,
    MistralTemplateBuilder,
    LAYOUT
);
