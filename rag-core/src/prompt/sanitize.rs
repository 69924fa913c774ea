//! Neutralizing untrusted text so that it cannot forge a family's prompt structure.
//!
//! Passages, history and the question come from users and documents. If such text contained
//! `<|eot_id|>` or `\n\nHuman:`, a model would read it as the end of a message or a new turn.
//! A marker is broken by inserting a zero-width space (U+200B) inside it: the text reads the
//! same to a person, but no tokenizer or model sees the marker any more. The document tags of
//! the context block (`<document`, `</document`) are broken the same way, so a passage cannot
//! close its block early.
//!
//! Neutralizing each value alone is not enough: a template such as `{{title}}: {{text}}` joins
//! values to its own text, and a title `x\n\nHuman` then reads `\n\nHuman:`. So the rendered
//! text is scanned as a whole, with the template's own text as the only trusted span
//! ([`neutralize_spans`]): every marker that overlaps an untrusted value, even by one
//! character, is broken; markers wholly inside the template's text are its structure. Markers
//! are matched generously:
//!
//! - special tokens and tags (`<|`, `[INST]`, `</s>`, `<document`, ...) in any letter case;
//! - line roles (`Human:`, `Assistant:` for Claude text, `User:`, `Bot:` for Titan) in any
//!   letter case and in compatibility forms that NFKC folds to them (Anthropic's legacy
//!   tokenizer normalizes its input with NFKC, so `Ｈｕｍａｎ：` reaches it as `Human:`), after
//!   any Unicode line break (`\n`, `\r`, U+000B, U+000C, U+0085, U+2028, U+2029) and any other
//!   whitespace (NBSP included), and at the start of a value, which a template may place after
//!   a line break.

use std::borrow::Cow;
use std::ops::Range;

use unicode_normalization::UnicodeNormalization;

use crate::model::ModelFamily;

/// What is inserted to break a marker.
pub const BREAK: char = '\u{200B}';

const DOCUMENT_TAGS: &[&str] = &["<document", "</document"];
const LLAMA3: &[&str] = &["<document", "</document", "<|"];
const LLAMA2: &[&str] = &[
    "<document",
    "</document",
    "[INST]",
    "[/INST]",
    "<<SYS>>",
    "<</SYS>>",
    "<s>",
    "</s>",
];
const MISTRAL: &[&str] = &[
    "<document",
    "</document",
    "[INST]",
    "[/INST]",
    "<s>",
    "</s>",
];

/// Role names that start a turn at the start of a line (matched in any letter case).
const CLAUDE_TEXT_ROLES: &[&str] = &["Human:", "Assistant:"];
const TITAN_ROLES: &[&str] = &["User:", "Bot:"];

/// How far before a value a line start may be for a role from it to reach the value: the
/// longest role name with its colon, and blanks before it.
const LONGEST_ROLE_REACH: usize = 64;

/// The marker rules of a family.
struct Rules {
    /// Broken anywhere, in any letter case, after their first character.
    tokens: &'static [&'static str],
    /// Broken at line starts, before the role name.
    roles: &'static [&'static str],
}

fn rules(family: ModelFamily) -> Rules {
    let (tokens, roles): (&'static [&'static str], &'static [&'static str]) = match family {
        ModelFamily::ClaudeText => (DOCUMENT_TAGS, CLAUDE_TEXT_ROLES),
        ModelFamily::Llama2 => (LLAMA2, &[]),
        ModelFamily::Llama3 => (LLAMA3, &[]),
        ModelFamily::TitanText => (DOCUMENT_TAGS, TITAN_ROLES),
        ModelFamily::Mistral => (MISTRAL, &[]),
        // Message APIs keep roles out of the text; only the context block has structure.
        _ => (DOCUMENT_TAGS, &[]),
    };
    Rules { tokens, roles }
}

/// Whether `c` ends a line for a model: the line breaks of Unicode's White_Space.
fn is_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\u{000B}' | '\u{000C}' | '\u{0085}' | '\u{2028}' | '\u{2029}'
    )
}

/// Whitespace that may stand between a line break and a role name.
fn is_blank(c: char) -> bool {
    c.is_whitespace() && !is_line_break(c)
}

/// The role name (with its colon) that starts exactly at `at`, and where it ends. Letters
/// are compared after NFKC and lower-casing.
fn role_at(text: &str, at: usize, roles: &[&'static str]) -> Option<(&'static str, usize)> {
    'roles: for &role in roles {
        let mut want = role.chars().flat_map(char::to_lowercase);
        let mut expected = want.next();
        for (i, c) in text[at..].char_indices() {
            for folded in std::iter::once(c).nfkc() {
                for lower in folded.to_lowercase() {
                    match expected {
                        Some(e) if e == lower => expected = want.next(),
                        _ => continue 'roles,
                    }
                }
            }
            if expected.is_none() {
                return Some((role, at + i + c.len_utf8()));
            }
        }
    }
    None
}

/// The first token marker starting at `at`, compared in any ASCII letter case.
fn token_at(text: &str, at: usize, tokens: &[&'static str]) -> Option<&'static str> {
    let rest = &text.as_bytes()[at..];
    tokens
        .iter()
        .copied()
        .find(|m| rest.len() >= m.len() && rest[..m.len()].eq_ignore_ascii_case(m.as_bytes()))
}

/// Whether the marker `[start, end)` overlaps the untrusted span: shares a character with
/// it, or surrounds it when it is empty (an empty value between template texts that join).
fn overlaps(marker: Range<usize>, span: &Range<usize>) -> bool {
    if span.is_empty() {
        marker.start < span.start && span.start < marker.end
    } else {
        marker.start < span.end && span.start < marker.end
    }
}

/// Whether `at` is at a line start, looking back over blanks: the text starts there (and the
/// text itself may start a line), or a line break comes before the blanks.
fn at_line_start(text: &str, at: usize, text_starts_line: bool) -> bool {
    match text[..at].trim_end_matches(is_blank).chars().next_back() {
        None => text_starts_line,
        Some(c) => is_line_break(c),
    }
}

/// `text` with every marker of `family` that overlaps one of the `untrusted` byte ranges
/// broken; borrowed when there was nothing to break. `untrusted` ranges are ordered and do
/// not overlap; empty ranges mark values that rendered empty. `text_starts_line` says whether
/// the text may follow a line break in the prompt, so that its first characters start a line.
pub fn neutralize_spans<'t>(
    family: ModelFamily,
    text: &'t str,
    untrusted: &[Range<usize>],
    text_starts_line: bool,
) -> Cow<'t, str> {
    let rules = rules(family);
    let mut breaks: Vec<usize> = Vec::new();
    let longest = rules.tokens.iter().map(|t| t.len()).max().unwrap_or(1);
    let bytes = text.as_bytes();
    for span in untrusted {
        // Token markers that overlap the span start at most `longest - 1` bytes before it.
        let mut from = span.start.saturating_sub(longest - 1);
        while !text.is_char_boundary(from) {
            from -= 1;
        }
        let window = &bytes[from..span.end.min(bytes.len())];
        for found in memchr::memchr2_iter(b'<', b'[', window) {
            let at = from + found;
            if let Some(marker) = token_at(text, at, rules.tokens) {
                if overlaps(at..at + marker.len(), span) {
                    breaks.push(at + 1);
                }
            }
        }
        if rules.roles.is_empty() {
            continue;
        }
        // Line starts: the span's start when a line may start there, and after every line
        // break inside it.
        let mut starts: Vec<usize> = Vec::new();
        if at_line_start(text, span.start, text_starts_line) {
            starts.push(span.start);
        } else {
            // A role the template starts at a line start and a value finishes (`Human{{text}}`
            // with a text `:`): the start of the value's line, when a role could reach it.
            let line = text[..span.start]
                .char_indices()
                .rev()
                .find(|&(_, c)| is_line_break(c))
                .map(|(i, c)| i + c.len_utf8());
            let line = match line {
                Some(line) => Some(line),
                None if text_starts_line => Some(0),
                None => None,
            };
            if let Some(line) = line.filter(|&l| span.start - l <= LONGEST_ROLE_REACH) {
                starts.push(line);
            }
        }
        for (i, c) in text[span.start..span.end].char_indices() {
            if is_line_break(c) {
                starts.push(span.start + i + c.len_utf8());
            }
        }
        for start in starts {
            let name = start
                + text[start..]
                    .char_indices()
                    .find(|&(_, c)| !is_blank(c))
                    .map_or(text.len() - start, |(i, _)| i);
            if name >= text.len() {
                continue;
            }
            // The marker runs from the line break (or the line start) to the colon.
            let line = text[..start]
                .char_indices()
                .next_back()
                .filter(|&(_, c)| is_line_break(c))
                .map_or(start, |(i, _)| i);
            if let Some((_, end)) = role_at(text, name, rules.roles) {
                // An empty value at the line start counts too: `{{title}}Human:` with no
                // title puts the template's `Human:` at the start of a line.
                let touches = if span.is_empty() {
                    line <= span.start && span.start < end
                } else {
                    overlaps(line..end, span)
                };
                if touches {
                    breaks.push(name);
                }
            }
        }
    }
    if breaks.is_empty() {
        return Cow::Borrowed(text);
    }
    breaks.sort_unstable();
    breaks.dedup();
    let mut out = String::with_capacity(text.len() + breaks.len() * BREAK.len_utf8());
    let mut copied = 0;
    for at in breaks {
        out.push_str(&text[copied..at]);
        out.push(BREAK);
        copied = at;
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// `text` with every marker of `family` broken, the whole text untrusted and starting a line;
/// borrowed when there was nothing to break.
///
/// Markers broken per family: `<|` (every Llama 3 special token) for Llama 3; `[INST]`,
/// `[/INST]`, `<s>`, `</s>` (and `<<SYS>>`, `<</SYS>>` for Llama 2) for Llama 2 and Mistral;
/// `Human:` / `Assistant:` at a line start for Claude text; `User:` / `Bot:` at a line start
/// for Titan; `<document` and `</document` for every family; all in any letter case.
pub fn neutralize(family: ModelFamily, text: &str) -> Cow<'_, str> {
    let whole = 0..text.len();
    neutralize_spans(family, text, std::slice::from_ref(&whole), true)
}

/// The first role marker or special token of `family` in a template's own text, with its
/// byte offset: templates may change the wording of a prompt, never its structure. Document
/// tags are not role markers (the passage template writes them). The template's first line
/// counts as a line start, since a template may be placed after a line break.
pub(crate) fn find_role_marker(family: ModelFamily, text: &str) -> Option<(usize, &'static str)> {
    let rules = rules(family);
    let tokens: Vec<&'static str> = rules
        .tokens
        .iter()
        .copied()
        .filter(|t| !DOCUMENT_TAGS.contains(t))
        .collect();
    for (at, c) in text.char_indices() {
        if matches!(c, '<' | '[') {
            if let Some(marker) = token_at(text, at, &tokens) {
                return Some((at, marker));
            }
        }
        if !rules.roles.is_empty() && !is_blank(c) && at_line_start(text, at, true) {
            if let Some((role, _)) = role_at(text, at, rules.roles) {
                return Some((at, role));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests;
