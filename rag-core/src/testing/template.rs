use crate::error::{Error, Result};
use crate::prompt::{Prompt, PromptInput, PromptTemplate, RenderedPrompt, TokenBudget};

/// A plain-text template for tests: numbered passages, `Q:`/`A:` history, then the question.
///
/// It counts one token per byte, which is never less than a real tokenizer's count, so it keeps
/// the budget without a tokenizer. Not a model family's format: use the family templates of
/// [`crate::prompt`] for real models.
#[derive(Debug, Clone, Default)]
pub struct PlainTemplate {
    _private: (),
}

impl PromptTemplate for PlainTemplate {
    fn render(&self, input: &PromptInput<'_>, budget: &TokenBudget) -> Result<RenderedPrompt> {
        let available = budget.prompt_tokens();
        let question = format!("Question: {}\n", input.question);
        if question.len() > available {
            return Err(Error::ContextOverflow {
                needed: question.len(),
                budget: available,
            });
        }
        let mut used = question.len();
        let mut passages = String::new();
        let mut passages_kept = Vec::new();
        let mut passages_dropped = Vec::new();
        for (i, passage) in input.passages.iter().enumerate() {
            let block = format!("[{}] {}\n", passages_kept.len() + 1, passage.text);
            if used + block.len() <= available {
                used += block.len();
                passages.push_str(&block);
                passages_kept.push(i);
            } else {
                passages_dropped.push(i);
            }
        }
        let mut turns = Vec::new();
        for turn in input.history.iter().rev() {
            let block = format!("Q: {}\nA: {}\n", turn.question, turn.answer);
            if used + block.len() > available {
                break;
            }
            used += block.len();
            turns.push(block);
        }
        let turns_kept = turns.len();
        let mut text = passages;
        for turn in turns.iter().rev() {
            text.push_str(turn);
        }
        text.push_str(&question);
        Ok(RenderedPrompt {
            token_count: text.len(),
            prompt: Prompt::Text(text),
            passages_kept,
            passages_dropped,
            turns_kept,
            turns_dropped: input.history.len() - turns_kept,
        })
    }
}
