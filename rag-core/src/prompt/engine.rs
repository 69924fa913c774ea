//! What every family template shares: neutralizing the input, rendering the handlebars parts
//! once, packing the blocks into the budget and asking the family to lay them out.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use super::budget::Packer;
use super::parts::{self, PartSources, Parts, PassageData};
use super::sanitize::{find_role_marker, neutralize};
use super::{Prompt, PromptInput, RenderedPrompt, TokenBudget};
use crate::error::{Error, Result};
use crate::model::ModelFamily;
use crate::tokens::{count_prompt, default_counter, TokenCounter};

/// Opens the context block.
pub(crate) const CONTEXT_OPEN: &str = "<documents>\n";
/// Closes the context block.
pub(crate) const CONTEXT_CLOSE: &str = "</documents>";
/// Between the context block and the text after it, and between the system text and the
/// first user text where a family has no separate system slot.
pub(crate) const PARAGRAPH: &str = "\n\n";

/// Shown instead of an empty question or answer of a history turn, since message APIs refuse
/// empty content and a missing answer would break the alternation of roles.
pub(crate) const NO_QUESTION: &str = "(no question)";
pub(crate) const NO_ANSWER: &str = "(no answer)";

/// A history turn ready for a prompt: trimmed, neutralized, never empty.
#[derive(Debug, Clone)]
pub(crate) struct SafeTurn<'a> {
    pub(crate) question: Cow<'a, str>,
    pub(crate) answer: Cow<'a, str>,
}

/// The rendered parts of a prompt, for a family to lay out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pieces<'p, 'a> {
    /// The system text, trimmed; empty when there is none.
    pub(crate) system: &'p str,
    /// The context block (`<documents>...</documents>`), empty when no passage is kept.
    pub(crate) context: &'p str,
    /// The kept turns, oldest first.
    pub(crate) turns: &'p [SafeTurn<'a>],
    /// The rendered question framing.
    pub(crate) question: &'p str,
}

impl Pieces<'_, '_> {
    /// The first user text: the context block, then the first question (of the oldest kept
    /// turn, or the current one).
    pub(crate) fn first_user(&self, out: &mut String) {
        if !self.context.is_empty() {
            out.push_str(self.context);
            out.push_str(PARAGRAPH);
        }
        out.push_str(self.first_question());
    }

    fn first_question(&self) -> &str {
        self.turns
            .first()
            .map_or(self.question, |t| t.question.as_ref())
    }

    /// The turns after the first, when the first user text holds the oldest turn's question;
    /// each with whether it is the first (whose question is in the first user text).
    pub(crate) fn turns_with_first(&self) -> impl Iterator<Item = (bool, &SafeTurn<'_>)> {
        self.turns.iter().enumerate().map(|(i, t)| (i == 0, t))
    }

    /// Bytes the text of these pieces takes at least, for reserving a string.
    pub(crate) fn capacity(&self) -> usize {
        self.system.len()
            + self.context.len()
            + self.question.len()
            + self
                .turns
                .iter()
                .map(|t| t.question.len() + t.answer.len() + 96)
                .sum::<usize>()
            + 192
    }
}

/// How a family lays out its prompt.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    pub(crate) family: ModelFamily,
    /// The whole prompt.
    pub(crate) assemble: fn(&Pieces<'_, '_>) -> Prompt,
    /// The text one history turn adds to a text prompt (for counting), or `None` for chat
    /// prompts, where a turn adds its question and answer as two messages.
    pub(crate) turn_text: Option<fn(&str, &str, &mut String)>,
}

/// A family template's state: its layout, compiled parts and token counter.
#[derive(Debug, Clone)]
pub(crate) struct Engine {
    layout: Layout,
    parts: Parts,
    counter: Arc<dyn TokenCounter>,
    /// Tokens of the context block's framing, counted once.
    wrapper_tokens: Arc<OnceLock<usize>>,
}

/// The builder state shared by the family builders.
#[derive(Debug, Clone)]
pub(crate) struct EngineBuilder {
    pub(crate) sources: PartSources,
    pub(crate) counter: Option<Arc<dyn TokenCounter>>,
}

impl EngineBuilder {
    pub(crate) fn new() -> Self {
        EngineBuilder {
            sources: PartSources::default(),
            counter: None,
        }
    }

    pub(crate) fn build(self, layout: Layout) -> Result<Engine> {
        for (name, source) in [
            (parts::SYSTEM, &self.sources.system),
            (parts::PASSAGE, &self.sources.passage),
            (parts::QUESTION, &self.sources.question),
        ] {
            if let Some((at, marker)) = find_role_marker(layout.family, source) {
                let line = source[..at].matches('\n').count() + 1;
                let column = source[..at]
                    .rsplit('\n')
                    .next()
                    .map_or(0, |l| l.chars().count())
                    + 1;
                return Err(Error::Template {
                    name: name.to_owned(),
                    message: format!(
                        "`{marker}` is a role marker or special token of {}: templates may change \
                         the wording of a prompt, not its structure",
                        layout.family
                    ),
                    line: Some(line),
                    column: Some(column),
                });
            }
        }
        Ok(Engine {
            layout,
            parts: Parts::compile(&self.sources)?,
            counter: self.counter.unwrap_or_else(default_counter),
            wrapper_tokens: Arc::default(),
        })
    }
}

impl Engine {
    /// The family's template with the shipped parts and the cl100k counter.
    pub(crate) fn with_defaults(layout: Layout) -> Engine {
        EngineBuilder::new()
            .build(layout)
            .expect("the shipped templates compile")
    }

    /// The rendered system text.
    pub(crate) fn system(&self) -> &str {
        &self.parts.system
    }

    /// The token counter.
    pub(crate) fn counter(&self) -> &Arc<dyn TokenCounter> {
        &self.counter
    }

    pub(crate) fn render(
        &self,
        input: &PromptInput<'_>,
        budget: &TokenBudget,
    ) -> Result<RenderedPrompt> {
        let family = self.layout.family;
        let counter: &dyn TokenCounter = &*self.counter;
        let question = input.question.trim();
        if question.is_empty() {
            return Err(Error::invalid_input("question", "is empty"));
        }
        let question = self.parts.question(&neutralize(family, question))?;

        // Every passage block, rendered once, one after the other into the context block:
        // block `i` is `context[ends[i]..ends[i + 1]]`.
        let mut context = String::with_capacity(
            CONTEXT_OPEN.len()
                + CONTEXT_CLOSE.len()
                + input
                    .passages
                    .iter()
                    .map(|p| p.text.len() + p.uri.as_ref().map_or(0, String::len) + 160)
                    .sum::<usize>(),
        );
        context.push_str(CONTEXT_OPEN);
        let mut ends = Vec::with_capacity(input.passages.len() + 1);
        ends.push(context.len());
        for (i, passage) in input.passages.iter().enumerate() {
            let title = passage.title.as_deref().unwrap_or("");
            let source = passage
                .uri
                .as_deref()
                .or(passage.title.as_deref())
                .unwrap_or(&passage.id);
            self.parts.passage(
                &PassageData {
                    index: i + 1,
                    id: &neutralize(family, &passage.id),
                    title: &neutralize(family, title),
                    source: &neutralize(family, source),
                    text: &neutralize(family, passage.text.trim()),
                },
                &mut context,
            )?;
            context.push('\n');
            ends.push(context.len());
        }
        let passage_count = input.passages.len();
        let block = |i: usize| &context[ends[i]..ends[i + 1]];
        let turns: Vec<SafeTurn<'_>> = input
            .history
            .iter()
            .map(|turn| SafeTurn {
                question: non_empty(neutralize(family, turn.question.trim()), NO_QUESTION),
                answer: non_empty(neutralize(family, turn.answer.trim()), NO_ANSWER),
            })
            .collect();
        let turn_texts: Vec<String> = match self.layout.turn_text {
            Some(turn_text) => turns
                .iter()
                .map(|t| {
                    let mut text = String::with_capacity(t.question.len() + t.answer.len() + 64);
                    turn_text(&t.question, &t.answer, &mut text);
                    text
                })
                .collect(),
            None => Vec::new(),
        };
        let turn_bytes = |j: usize| match turn_texts.get(j) {
            Some(text) => text.len(),
            None => turns[j].question.len() + turns[j].answer.len(),
        };

        let base = (self.layout.assemble)(&Pieces {
            system: &self.parts.system,
            context: "",
            turns: &[],
            question: &question,
        });
        let available = budget.prompt_tokens();

        // Everything fits by length alone: nothing needs a count.
        let wrapper_bytes = CONTEXT_OPEN.len() + CONTEXT_CLOSE.len() + PARAGRAPH.len();
        let all_bytes = prompt_bytes(&base)
            + if passage_count == 0 {
                0
            } else {
                wrapper_bytes + ends[passage_count] - ends[0]
            }
            + (0..turns.len()).map(turn_bytes).sum::<usize>();

        let (kept_passages, kept_turns, mut token_count) = if all_bytes <= available {
            (passage_count, turns.len(), None)
        } else {
            let mut packer = Packer::new(counter, available);
            if !packer.offer(prompt_bytes(&base), |c| count_prompt(c, &base)) {
                let needed = count_prompt(counter, &base);
                return Err(Error::ContextOverflow {
                    needed,
                    budget: available,
                });
            }
            let mut kept_passages = 0;
            for i in 0..passage_count {
                let block = block(i);
                let (bytes, wrapper) = if i == 0 {
                    (block.len() + wrapper_bytes, Some(&self.wrapper_tokens))
                } else {
                    (block.len(), None)
                };
                let fits = packer.offer(bytes, move |c| {
                    c.count(block)
                        + wrapper.map_or(0, |w| {
                            *w.get_or_init(|| {
                                c.count(&format!("{CONTEXT_OPEN}{CONTEXT_CLOSE}{PARAGRAPH}"))
                            })
                        })
                });
                if !fits {
                    break;
                }
                kept_passages += 1;
            }
            let mut kept_turns = 0;
            for j in (0..turns.len()).rev() {
                let text = turn_texts.get(j);
                let turn = &turns[j];
                let fits = packer.offer(turn_bytes(j), move |c| match text {
                    Some(text) => c.count(text),
                    None => c.count(&turn.question) + c.count(&turn.answer),
                });
                if !fits {
                    break;
                }
                kept_turns += 1;
            }
            let estimate = packer.estimate();
            let whole = packer.needs_whole_count(all_bytes);
            (kept_passages, kept_turns, (!whole).then_some(estimate))
        };

        // Lay out what was kept; count the whole when the estimate is close to the budget,
        // and drop blocks from the end until the count fits.
        let (mut kept_passages, mut kept_turns) = (kept_passages, kept_turns);
        loop {
            // Keep the first `kept_passages` blocks of the context and close it.
            if kept_passages == 0 {
                context.clear();
            } else {
                context.truncate(ends[kept_passages]);
                context.push_str(CONTEXT_CLOSE);
            }
            let prompt = (self.layout.assemble)(&Pieces {
                system: &self.parts.system,
                context: &context,
                turns: &turns[turns.len() - kept_turns..],
                question: &question,
            });
            let bytes = prompt_bytes(&prompt);
            let tokens = match token_count.take() {
                Some(estimate) => estimate.min(bytes),
                None if bytes <= available => bytes,
                None => count_prompt(counter, &prompt),
            };
            if tokens <= available {
                return Ok(RenderedPrompt {
                    prompt,
                    passages_kept: (0..kept_passages).collect(),
                    passages_dropped: (kept_passages..passage_count).collect(),
                    turns_kept: kept_turns,
                    turns_dropped: turns.len() - kept_turns,
                    token_count: tokens,
                });
            }
            if kept_turns > 0 {
                kept_turns -= 1;
            } else if kept_passages > 0 {
                kept_passages -= 1;
            } else {
                return Err(Error::ContextOverflow {
                    needed: tokens,
                    budget: available,
                });
            }
        }
    }
}

fn non_empty<'a>(text: Cow<'a, str>, placeholder: &'static str) -> Cow<'a, str> {
    if text.is_empty() {
        Cow::Borrowed(placeholder)
    } else {
        text
    }
}

/// The UTF-8 length of what [`count_prompt`] counts.
pub(crate) fn prompt_bytes(prompt: &Prompt) -> usize {
    match prompt {
        Prompt::Text(text) => text.len(),
        Prompt::Chat { system, messages } => {
            system.as_deref().map_or(0, str::len)
                + messages.iter().map(|m| m.content.len()).sum::<usize>()
        }
    }
}

/// Defines a family template type and its builder around an [`Engine`].
macro_rules! family_template {
    (
        $(#[$doc:meta])*
        $name:ident, $builder:ident, $layout:expr
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name {
            engine: $crate::prompt::engine::Engine,
        }

        impl $name {
            /// The template with the shipped defaults: the default system text, passage block
            /// and question framing, counted with cl100k ([`crate::tokens::default_counter`]).
            pub fn new() -> Self {
                $name {
                    engine: $crate::prompt::engine::Engine::with_defaults($layout),
                }
            }

            /// A builder to replace the system text, the passage block, the question framing
            /// or the token counter.
            pub fn builder() -> $builder {
                $builder {
                    inner: $crate::prompt::engine::EngineBuilder::new(),
                }
            }

            /// The model family whose format this template renders.
            pub fn family(&self) -> $crate::model::ModelFamily {
                $layout.family
            }

            /// The rendered system text (empty when there is none).
            pub fn system(&self) -> &str {
                self.engine.system()
            }

            /// The counter that keeps the budget.
            pub fn counter(&self) -> &std::sync::Arc<dyn $crate::tokens::TokenCounter> {
                self.engine.counter()
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl $crate::prompt::PromptTemplate for $name {
            fn render(
                &self,
                input: &$crate::prompt::PromptInput<'_>,
                budget: &$crate::prompt::TokenBudget,
            ) -> $crate::error::Result<$crate::prompt::RenderedPrompt> {
                self.engine.render(input, budget)
            }
        }

        #[doc = concat!("Builds a [`", stringify!($name), "`]; templates are checked at [`", stringify!($builder), "::build`].")]
        ///
        /// The parts may change the wording of the prompt, not its structure: a part whose
        /// own text holds a role marker or special token of the family (`<|eot_id|>`,
        /// `[INST]`, a line starting with `Bot:` for Titan, ...) fails `build()`.
        #[derive(Debug, Clone)]
        #[must_use]
        pub struct $builder {
            inner: $crate::prompt::engine::EngineBuilder,
        }

        impl $builder {
            /// The system text, a handlebars template without variables (`\{{` writes `{{`).
            /// An empty text means no system prompt.
            pub fn with_system(mut self, template: impl Into<String>) -> Self {
                self.inner.sources.system = template.into();
                self
            }

            /// The block of one passage, a handlebars template over `index` (its number in the
            /// prompt, from 1), `id`, `title`, `source` and `text`; it must use `text`.
            pub fn with_passage_template(mut self, template: impl Into<String>) -> Self {
                self.inner.sources.passage = template.into();
                self
            }

            /// The framing of the question, a handlebars template over `question`, which it
            /// must use.
            pub fn with_question_template(mut self, template: impl Into<String>) -> Self {
                self.inner.sources.question = template.into();
                self
            }

            /// The token counter; by default cl100k behind a process-wide cache
            /// ([`crate::tokens::default_counter`]).
            pub fn with_counter(
                mut self,
                counter: impl $crate::tokens::TokenCounter + 'static,
            ) -> Self {
                self.inner.counter = Some(std::sync::Arc::new(counter));
                self
            }

            /// The template, or [`crate::Error::Template`] with the line and column of the
            /// first problem in a template.
            pub fn build(self) -> $crate::error::Result<$name> {
                Ok($name {
                    engine: self.inner.build($layout)?,
                })
            }
        }
    };
}

pub(crate) use family_template;
