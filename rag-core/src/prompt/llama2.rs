//! Meta Llama 2 chat.
//!
//! The format of `chat_completion` in Meta's reference code: the system text goes inside the
//! first instruction as `<<SYS>>\n{system}\n<</SYS>>\n\n`; every exchange is
//! `<s>[INST] {question} [/INST] {answer} </s>` with both texts stripped; the prompt ends with
//! `<s>[INST] {question} [/INST]`, for the model to complete.

use super::engine::{family_template, Layout, Pieces};
use super::Prompt;
use crate::model::ModelFamily;

fn instruction(system: &str, user: impl FnOnce(&mut String), out: &mut String) {
    out.push_str("<s>[INST] ");
    if !system.is_empty() {
        out.push_str("<<SYS>>\n");
        out.push_str(system);
        out.push_str("\n<</SYS>>\n\n");
    }
    user(out);
    out.push_str(" [/INST]");
}

fn answer(answer: &str, out: &mut String) {
    out.push(' ');
    out.push_str(answer);
    out.push_str(" </s>");
}

fn turn_text(question: &str, reply: &str, out: &mut String) {
    instruction("", |o| o.push_str(question), out);
    answer(reply, out);
}

fn assemble(p: &Pieces<'_, '_>) -> Prompt {
    let mut out = String::with_capacity(p.capacity());
    instruction(p.system, |o| p.first_user(o), &mut out);
    for (first, turn) in p.turns_with_first() {
        if !first {
            instruction("", |o| o.push_str(&turn.question), &mut out);
        }
        answer(&turn.answer, &mut out);
    }
    if !p.turns.is_empty() {
        instruction("", |o| o.push_str(p.question), &mut out);
    }
    Prompt::Text(out)
}

pub(crate) const LAYOUT: Layout = Layout {
    family: ModelFamily::Llama2,
    assemble,
    turn_text: Some(turn_text),
};

family_template!(
    /// Meta Llama 2 chat: `<s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{question} [/INST]`, earlier
    /// exchanges as `<s>[INST] {question} [/INST] {answer} </s>`.
    ///
    /// Passages go at the top of the first instruction, after the system block, numbered from
    /// 1 in rank order.
    Llama2Template,
    Llama2TemplateBuilder,
    LAYOUT
);
