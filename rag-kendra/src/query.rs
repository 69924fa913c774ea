//! Query text preparation: Kendra's character pattern and length limit.

/// The longest query text Kendra accepts, in characters (Kendra's quota for query text; the
/// service itself only uses the first 30 words that are not stop words).
pub const MAX_QUERY_CHARS: usize = 1_000;

/// A query ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PreparedQuery {
    /// The text to send.
    pub(crate) text: String,
    /// `Some((original_chars, sent_chars))` when the text was shortened.
    pub(crate) truncated: Option<(usize, usize)>,
}

/// Replaces control characters (Kendra's `QueryText` pattern is `^\P{C}*$`, so a newline or a
/// tab is rejected) and runs of white space by one space, trims, and shortens the result to at
/// most `max_chars` characters at a word boundary (mid-word only when the first word alone is
/// longer than the limit).
///
/// `None` when nothing searchable is left.
pub(crate) fn prepare(query: &str, max_chars: usize) -> Option<PreparedQuery> {
    let mut text = String::with_capacity(query.len());
    for word in query
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
    {
        if !text.is_empty() {
            text.push(' ');
        }
        // Other invisible format characters (category Cf, such as a zero-width space) are also
        // outside Kendra's pattern; they carry no meaning for search.
        text.extend(word.chars().filter(|c| !is_format_char(*c)));
    }
    let text = text.trim().to_owned();
    if text.is_empty() {
        return None;
    }
    let original_chars = text.chars().count();
    if original_chars <= max_chars {
        return Some(PreparedQuery {
            text,
            truncated: None,
        });
    }
    // Byte offset of the char at `max_chars` (the first char that does not fit).
    let cut = text
        .char_indices()
        .nth(max_chars)
        .map_or(text.len(), |(i, _)| i);
    let head = &text[..cut];
    let shortened = if text[cut..].starts_with(' ') {
        head
    } else {
        match head.rfind(' ') {
            Some(space) => &head[..space],
            None => head,
        }
    };
    let shortened = shortened.trim_end().to_owned();
    let sent_chars = shortened.chars().count();
    Some(PreparedQuery {
        text: shortened,
        truncated: Some((original_chars, sent_chars)),
    })
}

fn is_format_char(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{FEFF}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_queries_pass_unchanged() {
        let q = prepare("How do Lambda functions scale?", 100).unwrap();
        assert_eq!(q.text, "How do Lambda functions scale?");
        assert_eq!(q.truncated, None);
    }

    #[test]
    fn control_characters_and_space_runs_become_one_space() {
        let q = prepare("  line one\nline\ttwo\r\n\u{200B}three \u{7} ", 100).unwrap();
        assert_eq!(q.text, "line one line two three");
        assert!(prepare(" \n\t ", 100).is_none());
    }

    #[test]
    fn long_queries_are_cut_at_a_word_boundary() {
        let q = prepare("alpha beta gamma delta", 13).unwrap();
        assert_eq!(q.text, "alpha beta");
        assert_eq!(q.truncated, Some((22, 10)));
        // The limit falls exactly before a space: keep the whole last word.
        let q = prepare("alpha beta gamma", 10).unwrap();
        assert_eq!(q.text, "alpha beta");
        // One word longer than the limit is cut mid-word.
        let q = prepare("abcdefghij", 4).unwrap();
        assert_eq!(q.text, "abcd");
        assert_eq!(q.truncated, Some((10, 4)));
    }

    #[test]
    fn limits_count_characters_not_bytes() {
        let q = prepare("ééé ééé ééé", 7).unwrap();
        assert_eq!(q.text, "ééé ééé");
        assert_eq!(q.truncated, Some((11, 7)));
        let long = "word ".repeat(400);
        let q = prepare(&long, MAX_QUERY_CHARS).unwrap();
        assert!(q.text.chars().count() <= MAX_QUERY_CHARS);
        assert!(q.text.ends_with("word"));
    }
}
