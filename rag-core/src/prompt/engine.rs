//! What every family template shares: rendering the handlebars parts, neutralizing what came
//! from values, packing the prompt's parts into the budget and laying them out.
//!
//! A prompt is a sequence of parts. A text prompt is the family's prefix (its opening markers
//! and the system text), the context block (an opening tag, one block per passage, a closing
//! tag), one part per earlier exchange, and the tail (the question and the family's closing
//! markers). A chat prompt is the system text and messages, the first of which holds the
//! context block. Each part is rendered once and counted once ([`super::budget`]), so a
//! cached count of a passage or a turn is reused by every prompt that holds it.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use super::budget::{Joiner, Total};
use super::parts::{self, PartSources, Parts, PassageData};
use super::sanitize::{find_role_marker, neutralize, neutralize_spans};
use super::{Message, Prompt, PromptInput, PromptKind, RenderedPrompt, TokenBudget};
use crate::error::{Error, Result};
use crate::model::{Framing, ModelFamily};
use crate::tokens::TokenCounter;

/// Opens the context block.
pub(crate) const CONTEXT_OPEN: &str = "<documents>\n";
/// Closes the context block, with the blank line before the text that follows it.
pub(crate) const CONTEXT_CLOSE: &str = "</documents>\n\n";
/// Between the system text and the first user text where a family has no separate system
/// slot.
pub(crate) const PARAGRAPH: &str = "\n\n";

/// Shown instead of an empty question or answer of a history turn, since message APIs refuse
/// empty content and a missing answer would break the alternation of roles.
pub(crate) const NO_QUESTION: &str = "(no question)";
pub(crate) const NO_ANSWER: &str = "(no answer)";

/// Text being written with the spans of the untrusted values in it.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    pub(crate) out: String,
    pub(crate) spans: Vec<Range<usize>>,
}

impl Writer {
    fn with_capacity(bytes: usize) -> Self {
        Writer {
            out: String::with_capacity(bytes),
            spans: Vec::with_capacity(4),
        }
    }

    /// Writes the template's own text.
    pub(crate) fn text(&mut self, text: &str) {
        self.out.push_str(text);
    }

    /// Writes an untrusted value.
    pub(crate) fn value(&mut self, value: &str) {
        let start = self.out.len();
        self.out.push_str(value);
        self.spans.push(start..self.out.len());
    }

    /// Writes text rendered elsewhere, with its spans.
    pub(crate) fn rendered(&mut self, text: &str, spans: &[Range<usize>]) {
        let at = self.out.len();
        self.out.push_str(text);
        self.spans
            .extend(spans.iter().map(|s| s.start + at..s.end + at));
    }

    /// The text with every marker of `family` that overlaps a value broken.
    fn finish(self, family: ModelFamily) -> String {
        match neutralize_spans(family, &self.out, &self.spans, true) {
            Cow::Borrowed(_) => self.out,
            Cow::Owned(out) => out,
        }
    }
}

/// How a text family lays out its prompt: `prefix + [context] + turn... + tail`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TextShape {
    /// The text before the first user text, with the (trimmed, maybe empty) system text.
    pub(crate) prefix: fn(system: &str, out: &mut Writer),
    /// One earlier exchange, from its question to the start of the next user text.
    pub(crate) turn: fn(question: &str, answer: &str, out: &mut Writer),
    /// The current question (the rendered framing, with its spans) to the end of the prompt.
    pub(crate) tail: fn(question: &str, spans: &[Range<usize>], out: &mut Writer),
}

/// The shape of a family's prompt.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Shape {
    /// One text.
    Text(TextShape),
    /// A system text and alternating messages.
    Chat,
}

/// How a family lays out its prompt.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    pub(crate) family: ModelFamily,
    pub(crate) shape: Shape,
}

/// A family template's state: its layout, compiled parts, counter and framing.
#[derive(Debug, Clone)]
pub(crate) struct Engine {
    layout: Layout,
    parts: Parts,
    counter: Arc<dyn TokenCounter>,
    framing: Framing,
    /// Text families: the prefix, with the system text.
    prefix: String,
    /// Counts of the parts every prompt of this template shares, made once.
    fixed: Arc<OnceLock<Fixed>>,
}

/// The counts every prompt of a template shares.
#[derive(Debug, Clone, Copy)]
struct Fixed {
    /// The prefix at the start of a prompt (text families) or the system text (chat).
    start: usize,
    /// The context's opening tag after other text.
    open: usize,
    /// The context's opening tag at the start of a message (chat).
    open_at_start: usize,
    /// The context's closing tag.
    close: usize,
}

/// The builder state shared by the family builders.
#[derive(Debug, Clone)]
pub(crate) struct EngineBuilder {
    pub(crate) sources: PartSources,
    pub(crate) counter: Option<Arc<dyn TokenCounter>>,
    pub(crate) framing: Option<Framing>,
}

impl EngineBuilder {
    pub(crate) fn new() -> Self {
        EngineBuilder {
            sources: PartSources::default(),
            counter: None,
            framing: None,
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
        let parts = Parts::compile(&self.sources)?;
        let mut prefix = Writer::default();
        if let Shape::Text(shape) = layout.shape {
            (shape.prefix)(&parts.system, &mut prefix);
        }
        Ok(Engine {
            layout,
            counter: self
                .counter
                .unwrap_or_else(|| layout.family.default_tokens().counter()),
            framing: self
                .framing
                .unwrap_or_else(|| layout.family.default_framing()),
            prefix: prefix.out,
            parts,
            fixed: Arc::default(),
        })
    }
}

/// A rendered passage block: the template's output, neutralized, and a line feed.
struct Part {
    text: String,
}

impl Engine {
    /// The family's template with the shipped parts and the family's counter.
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

    /// The framing counted around chat prompts.
    pub(crate) fn framing(&self) -> Framing {
        self.framing
    }

    /// The kind of prompt this template renders.
    pub(crate) fn kind(&self) -> PromptKind {
        match self.layout.shape {
            Shape::Text(_) => PromptKind::Text(self.layout.family),
            Shape::Chat => PromptKind::Chat,
        }
    }

    fn fixed(&self) -> Fixed {
        *self.fixed.get_or_init(|| {
            let c = &*self.counter;
            Fixed {
                start: match self.layout.shape {
                    Shape::Text(_) => c.count(&self.prefix),
                    Shape::Chat if self.parts.system.is_empty() => 0,
                    Shape::Chat => c.count(&self.parts.system),
                },
                open: c.count_part(CONTEXT_OPEN),
                open_at_start: c.count(CONTEXT_OPEN),
                close: c.count_part(CONTEXT_CLOSE),
            }
        })
    }

    pub(crate) fn render(
        &self,
        input: &PromptInput<'_>,
        budget: &TokenBudget,
    ) -> Result<RenderedPrompt> {
        let family = self.layout.family;
        let question = input.question.trim();
        if question.is_empty() {
            return Err(Error::invalid_input("question", "is empty"));
        }
        let (question, question_spans) = self.parts.question(question)?;

        // Every passage block, rendered and neutralized once, each ending in a line feed.
        let mut scratch = Writer::with_capacity(1_024);
        let mut blocks: Vec<Part> = Vec::with_capacity(input.passages.len());
        for (i, passage) in input.passages.iter().enumerate() {
            let title = passage.title.as_deref().unwrap_or("");
            let source = passage
                .uri
                .as_deref()
                .or(passage.title.as_deref())
                .unwrap_or(&passage.id);
            scratch.out.clear();
            scratch.spans.clear();
            self.parts.passage(
                &PassageData {
                    index: i + 1,
                    id: &passage.id,
                    title,
                    source,
                    text: passage.text.trim(),
                },
                &mut scratch.out,
                &mut scratch.spans,
            )?;
            let mut text = match neutralize_spans(family, &scratch.out, &scratch.spans, true) {
                Cow::Borrowed(text) => String::from(text),
                Cow::Owned(text) => text,
            };
            text.push('\n');
            blocks.push(Part { text });
        }

        let turns: Vec<(&str, &str)> = input
            .history
            .iter()
            .map(|turn| {
                (
                    non_empty(turn.question.trim(), NO_QUESTION),
                    non_empty(turn.answer.trim(), NO_ANSWER),
                )
            })
            .collect();

        match self.layout.shape {
            Shape::Text(shape) => {
                self.render_text(shape, &question, &question_spans, &blocks, &turns, budget)
            }
            Shape::Chat => self.render_chat(&question, &question_spans, &blocks, &turns, budget),
        }
    }

    fn render_text(
        &self,
        shape: TextShape,
        question: &str,
        question_spans: &[Range<usize>],
        blocks: &[Part],
        turns: &[(&str, &str)],
        budget: &TokenBudget,
    ) -> Result<RenderedPrompt> {
        let family = self.layout.family;
        let counter = &*self.counter;
        let available = budget.prompt_tokens();
        let mut tail = Writer::with_capacity(question.len() + 64);
        (shape.tail)(question, question_spans, &mut tail);
        let tail = tail.finish(family);
        let turn_parts: Vec<String> = turns
            .iter()
            .map(|(q, a)| {
                let mut w = Writer::with_capacity(q.len() + a.len() + 96);
                (shape.turn)(q, a, &mut w);
                w.finish(family)
            })
            .collect();

        let context_bytes = if blocks.is_empty() {
            0
        } else {
            CONTEXT_OPEN.len()
                + CONTEXT_CLOSE.len()
                + blocks.iter().map(|b| b.text.len()).sum::<usize>()
        };
        let all_bytes = self.prefix.len()
            + context_bytes
            + turn_parts.iter().map(String::len).sum::<usize>()
            + tail.len();
        let extra = self.framing.tokens(0);

        // Everything fits by length alone: nothing needs a count.
        let bound = counter.max_count_for_len(all_bytes) + extra;
        if bound <= available {
            let prompt = assemble_text(&self.prefix, blocks, &turn_parts, &tail);
            return Ok(rendered(
                Prompt::Text(prompt),
                blocks.len(),
                blocks.len(),
                turns.len(),
                turns.len(),
                bound,
            ));
        }

        let fixed = self.fixed();
        let joiner = Joiner::new(counter);
        let prefix = self.prefix.as_str();
        let mut total = Total::new(available);
        let base = extra as isize
            + fixed.start as isize
            + counter.count_part(&tail) as isize
            + joiner.delta(prefix, true, &tail, &mut total);
        total.add(base);
        if total.over() {
            return Err(Error::ContextOverflow {
                needed: total.tokens(),
                budget: available,
            });
        }

        // The best passages, a prefix of the ranking; the first opens the context block
        // between the prefix and the tail.
        let kept_passages = pack_passages(counter, &joiner, &mut total, blocks, |block, total| {
            fixed.open as isize
                + fixed.close as isize
                + joiner.delta(prefix, true, CONTEXT_OPEN, total)
                + joiner.delta(CONTEXT_OPEN, false, block, total)
                + joiner.delta(block, false, CONTEXT_CLOSE, total)
                + joiner.delta(CONTEXT_CLOSE, false, &tail, total)
                - joiner.delta(prefix, true, &tail, total)
        });

        // The newest whole turns, each between what comes before the oldest kept one and the
        // one after it.
        let (left, left_at_start) = if kept_passages > 0 {
            (CONTEXT_CLOSE, false)
        } else {
            (prefix, true)
        };
        let mut right = tail.as_str();
        let mut kept_turns = 0;
        for part in turn_parts.iter().rev() {
            let joints = joiner.delta(left, left_at_start, part, &mut total)
                + joiner.delta(part, false, right, &mut total)
                - joiner.delta(left, left_at_start, right, &mut total);
            if !total.offer(joints, |limit| counter.count_part_till_limit(part, limit)) {
                break;
            }
            kept_turns += 1;
            right = part;
        }

        lay_out(
            &total,
            available,
            (blocks.len(), kept_passages),
            (turns.len(), kept_turns),
            |passages, turns| {
                Prompt::Text(assemble_text(
                    &self.prefix,
                    &blocks[..passages],
                    &turn_parts[turn_parts.len() - turns..],
                    &tail,
                ))
            },
            |prompt| count_chat(counter, self.framing, prompt),
        )
    }

    fn render_chat(
        &self,
        question: &str,
        question_spans: &[Range<usize>],
        blocks: &[Part],
        turns: &[(&str, &str)],
        budget: &TokenBudget,
    ) -> Result<RenderedPrompt> {
        let family = self.layout.family;
        let counter = &*self.counter;
        let available = budget.prompt_tokens();
        let mut q = Writer::with_capacity(question.len());
        q.rendered(question, question_spans);
        let question = q.finish(family);
        let safe: Vec<(Cow<'_, str>, Cow<'_, str>)> = turns
            .iter()
            .map(|(q, a)| (neutralize(family, q), neutralize(family, a)))
            .collect();
        let turns: Vec<(&str, &str)> = safe.iter().map(|(q, a)| (&**q, &**a)).collect();
        let turns = turns.as_slice();
        let system = self.parts.system.as_str();
        let has_system = !system.is_empty();
        let framing = self.framing;

        let context_bytes = if blocks.is_empty() {
            0
        } else {
            CONTEXT_OPEN.len()
                + CONTEXT_CLOSE.len()
                + blocks.iter().map(|b| b.text.len()).sum::<usize>()
        };
        // Each message is counted as a text of its own (a tokenizer may add a token at the
        // start of each), so the bound is summed message by message.
        let bound_of = |bytes: usize| counter.max_count_for_len(bytes);
        let first_question = turns.first().map_or(question.as_str(), |t| t.0);
        let later_questions = turns
            .iter()
            .skip(1)
            .map(|t| t.0.len())
            .chain((!turns.is_empty()).then_some(question.len()));
        let messages = usize::from(has_system) + 1 + 2 * turns.len();
        let bound = if has_system {
            bound_of(system.len())
        } else {
            0
        } + bound_of(context_bytes + first_question.len())
            + turns.iter().map(|t| bound_of(t.1.len())).sum::<usize>()
            + later_questions.map(bound_of).sum::<usize>()
            + framing.tokens(messages);
        if bound <= available {
            let prompt = assemble_chat(system, blocks, turns, &question);
            return Ok(rendered(
                prompt,
                blocks.len(),
                blocks.len(),
                turns.len(),
                turns.len(),
                bound,
            ));
        }

        let fixed = self.fixed();
        let joiner = Joiner::new(counter);
        let mut total = Total::new(available);
        // The first message holds the context, then the first question: the oldest kept
        // turn's, or the current one.
        let in_first = |text: &str, with_context: bool, total: &mut Total| -> isize {
            if with_context {
                counter.count_part(text) as isize + joiner.delta(CONTEXT_CLOSE, false, text, total)
            } else {
                counter.count(text) as isize
            }
        };
        let base = framing.tokens(usize::from(has_system) + 1) as isize
            + fixed.start as isize
            + in_first(&question, false, &mut total);
        total.add(base);
        if total.over() {
            return Err(Error::ContextOverflow {
                needed: total.tokens(),
                budget: available,
            });
        }
        // The first passage opens the context block at the top of the first message, before
        // the question there.
        let kept_passages = pack_passages(counter, &joiner, &mut total, blocks, |block, total| {
            fixed.open_at_start as isize
                + fixed.close as isize
                + joiner.delta(CONTEXT_OPEN, true, block, total)
                + joiner.delta(block, false, CONTEXT_CLOSE, total)
                + in_first(&question, true, total)
                - in_first(&question, false, total)
        });
        let with_context = kept_passages > 0;
        let mut first: &str = &question;
        let mut kept_turns = 0;
        for &(q, a) in turns.iter().rev() {
            // The turn's question moves into the first message; the one there becomes its own
            // message, after the turn's answer.
            let cost = 2 * framing.per_message as isize
                + counter.count(first) as isize
                + in_first(q, with_context, &mut total)
                - in_first(first, with_context, &mut total);
            if !total.offer(cost, |limit| counter.count_till_limit(a, limit)) {
                break;
            }
            kept_turns += 1;
            first = q;
        }

        lay_out(
            &total,
            available,
            (blocks.len(), kept_passages),
            (turns.len(), kept_turns),
            |passages, kept| {
                assemble_chat(
                    system,
                    &blocks[..passages],
                    &turns[turns.len() - kept..],
                    &question,
                )
            },
            |prompt| count_chat(counter, framing, prompt),
        )
    }
}

/// An estimate that is not exact and leaves fewer tokens than this free is checked by counting
/// the whole prompt.
const CLOSE: usize = 8;

/// Keeps the best passages that fit, a prefix of the ranking: `first` is what opening the
/// context block with the first one costs at its joints; each later one joins the one before
/// it and the closing tag. Returns how many were kept.
fn pack_passages(
    counter: &dyn TokenCounter,
    joiner: &Joiner<'_>,
    total: &mut Total,
    blocks: &[Part],
    mut first: impl FnMut(&str, &mut Total) -> isize,
) -> usize {
    let mut kept = 0;
    for (i, block) in blocks.iter().enumerate() {
        let block = block.text.as_str();
        let joints = if i == 0 {
            first(block, total)
        } else {
            let previous = blocks[i - 1].text.as_str();
            joiner.delta(previous, false, block, total)
                + joiner.delta(block, false, CONTEXT_CLOSE, total)
                - joiner.delta(previous, false, CONTEXT_CLOSE, total)
        };
        if !total.offer(joints, |limit| counter.count_part_till_limit(block, limit)) {
            break;
        }
        kept += 1;
    }
    kept
}

/// Lays out what was kept (`assemble(passages, turns)`); a total that is not exact and comes
/// close to the budget is checked by counting the whole prompt (`count`), dropping turns,
/// then passages, until it fits.
fn lay_out(
    total: &Total,
    available: usize,
    (passages, mut kept_passages): (usize, usize),
    (turns, mut kept_turns): (usize, usize),
    assemble: impl Fn(usize, usize) -> Prompt,
    count: impl Fn(&Prompt) -> usize,
) -> Result<RenderedPrompt> {
    let mut estimate = Some(total.tokens());
    loop {
        let prompt = assemble(kept_passages, kept_turns);
        let tokens = match estimate.take() {
            Some(tokens) if total.exact() || tokens + CLOSE <= available => tokens,
            _ => count(&prompt),
        };
        if tokens <= available {
            return Ok(rendered(
                prompt,
                passages,
                kept_passages,
                turns,
                kept_turns,
                tokens,
            ));
        }
        if !drop_last(&mut kept_passages, &mut kept_turns) {
            return Err(Error::ContextOverflow {
                needed: tokens,
                budget: available,
            });
        }
    }
}

/// Drops the oldest kept turn, else the worst kept passage; false when nothing is left.
fn drop_last(kept_passages: &mut usize, kept_turns: &mut usize) -> bool {
    if *kept_turns > 0 {
        *kept_turns -= 1;
    } else if *kept_passages > 0 {
        *kept_passages -= 1;
    } else {
        return false;
    }
    true
}

fn rendered(
    prompt: Prompt,
    passages: usize,
    kept_passages: usize,
    turns: usize,
    kept_turns: usize,
    token_count: usize,
) -> RenderedPrompt {
    RenderedPrompt {
        prompt,
        passages_kept: (0..kept_passages).collect(),
        passages_dropped: (kept_passages..passages).collect(),
        turns_kept: kept_turns,
        turns_dropped: turns - kept_turns,
        token_count,
    }
}

fn assemble_text(prefix: &str, blocks: &[Part], turns: &[String], tail: &str) -> String {
    let mut out = String::with_capacity(
        prefix.len()
            + CONTEXT_OPEN.len()
            + CONTEXT_CLOSE.len()
            + blocks.iter().map(|b| b.text.len()).sum::<usize>()
            + turns.iter().map(String::len).sum::<usize>()
            + tail.len(),
    );
    out.push_str(prefix);
    push_context(blocks, &mut out);
    for turn in turns {
        out.push_str(turn);
    }
    out.push_str(tail);
    out
}

fn push_context(blocks: &[Part], out: &mut String) {
    if blocks.is_empty() {
        return;
    }
    out.push_str(CONTEXT_OPEN);
    for block in blocks {
        out.push_str(&block.text);
    }
    out.push_str(CONTEXT_CLOSE);
}

fn assemble_chat(system: &str, blocks: &[Part], turns: &[(&str, &str)], question: &str) -> Prompt {
    let mut messages = Vec::with_capacity(2 * turns.len() + 1);
    let first_question = turns.first().map_or(question, |t| t.0);
    let mut first = String::with_capacity(
        CONTEXT_OPEN.len()
            + CONTEXT_CLOSE.len()
            + blocks.iter().map(|b| b.text.len()).sum::<usize>()
            + first_question.len(),
    );
    push_context(blocks, &mut first);
    first.push_str(first_question);
    messages.push(Message::user(first));
    for (i, (_, answer)) in turns.iter().enumerate() {
        messages.push(Message::assistant(*answer));
        messages.push(Message::user(turns.get(i + 1).map_or(question, |t| t.0)));
    }
    Prompt::Chat {
        system: (!system.is_empty()).then(|| system.to_owned()),
        messages,
    }
}

/// A chat prompt's tokens by `counter`: each text as a message of its own, plus the framing.
fn count_chat(counter: &dyn TokenCounter, framing: Framing, prompt: &Prompt) -> usize {
    match prompt {
        Prompt::Text(text) => counter.count(text) + framing.tokens(0),
        Prompt::Chat { system, messages } => {
            let system_tokens = system.as_deref().map_or(0, |s| counter.count(s));
            system_tokens
                + messages
                    .iter()
                    .map(|m| counter.count(&m.content))
                    .sum::<usize>()
                + framing.tokens(messages.len() + usize::from(system.is_some()))
        }
    }
}

fn non_empty<'a>(text: &'a str, placeholder: &'static str) -> &'a str {
    if text.is_empty() {
        placeholder
    } else {
        text
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
            /// and question framing, counted the family's way
            /// ([`crate::ModelFamily::default_tokens`]).
            pub fn new() -> Self {
                $name {
                    engine: $crate::prompt::engine::Engine::with_defaults($layout),
                }
            }

            /// A builder to replace the system text, the passage block, the question framing,
            /// the token counter or the framing.
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

            /// The framing counted around a chat prompt's text.
            pub fn framing(&self) -> $crate::model::Framing {
                self.engine.framing()
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

            fn kind(&self) -> $crate::prompt::PromptKind {
                self.engine.kind()
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

            /// The token counter; by default the family's
            /// ([`crate::ModelFamily::default_tokens`]).
            pub fn with_counter(
                mut self,
                counter: impl $crate::tokens::TokenCounter + 'static,
            ) -> Self {
                self.inner.counter = Some(std::sync::Arc::new(counter));
                self
            }

            /// Counts with the shared counter of `tokens` (what a model's profile names).
            pub fn with_tokens(mut self, tokens: $crate::tokens::TokenScheme) -> Self {
                self.inner.counter = Some(tokens.counter());
                self
            }

            /// The framing a message API adds around a chat prompt's text, counted on top of
            /// it; by default the family's ([`crate::ModelFamily::default_framing`]).
            pub fn with_framing(mut self, framing: $crate::model::Framing) -> Self {
                self.inner.framing = Some(framing);
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
