//! Sentences and words, for picking the sentences that answer a question.

use std::collections::HashSet;

/// English words too common to say what a question is about.
const STOP_WORDS: &[&str] = &[
    "a", "about", "after", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be",
    "because", "been", "before", "being", "between", "both", "but", "by", "can", "could", "did",
    "do", "does", "doing", "during", "each", "for", "from", "further", "had", "has", "have",
    "having", "he", "her", "here", "him", "his", "how", "i", "if", "in", "into", "is", "it", "its",
    "just", "me", "more", "most", "my", "no", "nor", "not", "of", "off", "on", "once", "only",
    "or", "other", "our", "out", "over", "own", "same", "she", "should", "so", "some", "such",
    "than", "that", "the", "their", "them", "then", "there", "these", "they", "this", "those",
    "through", "to", "too", "under", "until", "up", "use", "very", "want", "was", "we", "were",
    "what", "when", "where", "which", "while", "who", "whom", "why", "will", "with", "would",
    "you", "your",
];

/// The distinct content words of `text`, lowercased and crudely stemmed.
pub(crate) fn terms(text: &str) -> HashSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| !STOP_WORDS.contains(&w.as_str()))
        .map(|w| stem(&w))
        .collect()
}

/// Strips one common English suffix so `functions`/`function` and `invoked`/`invoke` meet.
fn stem(word: &str) -> String {
    let mut w = word.to_string();
    for suffix in ["ing", "ed", "es", "s"] {
        if w.ends_with(suffix) && w.chars().count() >= suffix.len() + 3 {
            w.truncate(w.len() - suffix.len());
            break;
        }
    }
    if w.ends_with('e') && w.chars().count() > 3 {
        w.pop();
    }
    w
}

/// The sentences of a passage's text, in order, without Markdown heading lines, code
/// fences or list markers. Lines of one paragraph are joined; each list item stands alone.
pub(crate) fn sentences(text: &str) -> Vec<String> {
    let mut segments: Vec<String> = Vec::new();
    let mut open = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("```") || line == "~~~" {
            open = false;
            continue;
        }
        let (item, body) = strip_list_marker(line);
        if open && !item {
            let last = segments.last_mut().expect("an open segment exists");
            last.push(' ');
            last.push_str(body);
        } else {
            segments.push(body.to_string());
            open = true;
        }
    }
    segments.iter().flat_map(|s| split_sentences(s)).collect()
}

/// Whether `line` is a list item, and its text without the marker.
fn strip_list_marker(line: &str) -> (bool, &str) {
    for marker in ["- ", "* ", "+ "] {
        if let Some(rest) = line.strip_prefix(marker) {
            return (true, rest.trim_start());
        }
    }
    let digits = line.len() - line.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    if digits > 0 {
        if let Some(rest) = line[digits..].strip_prefix(". ") {
            return (true, rest.trim_start());
        }
    }
    (false, line)
}

/// Cuts after `.`, `!` or `?` followed by whitespace.
fn split_sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if matches!(c, '.' | '!' | '?') && chars.peek().is_some_and(|(_, n)| n.is_whitespace()) {
            let end = i + c.len_utf8();
            push_trimmed(&mut out, &text[start..end]);
            start = end;
        }
    }
    push_trimmed(&mut out, &text[start..]);
    out
}

fn push_trimmed(out: &mut Vec<String>, s: &str) {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if !s.is_empty() {
        out.push(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_drop_stop_words_and_meet_across_suffixes() {
        let t = terms("How do I invoke the Functions? invoked function, INVOKING");
        assert_eq!(
            t,
            ["invok", "function"]
                .map(String::from)
                .into_iter()
                .collect()
        );
        assert!(terms("what is the").is_empty());
    }

    #[test]
    fn sentences_follow_paragraphs_and_list_items() {
        let text = "## Heading\nFirst sentence. Second one\ncontinues here! Third?\n\n- item one\n- item two. With more\n```\ncode\n```\n1. numbered";
        assert_eq!(
            sentences(text),
            vec![
                "First sentence.",
                "Second one continues here!",
                "Third?",
                "item one",
                "item two.",
                "With more",
                "code",
                "numbered",
            ]
        );
    }
}
