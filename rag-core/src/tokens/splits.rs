//! Clean splits: places where a prompt can be cut into parts that are counted one by one
//! without changing the total.
//!
//! BPE tokenizers never make a token across certain character boundaries. cl100k's and Llama
//! 3's pre-tokenizer (`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
//! ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`) cuts the text into chunks and encodes
//! each chunk alone; SentencePiece models such as Mistral's have no piece that holds a line
//! feed or a `▁` (an escaped space) after another character. Two boundaries are clean for
//! both, whatever comes before or after them:
//!
//! - after a line feed, before a character that is not whitespace: no chunk of the pattern
//!   runs from a line feed into a non-space character, and no piece holds a line feed;
//! - after a character that is neither whitespace nor `▁`, before a single space followed by
//!   such a character: every chunk that ends in a non-space character stops before a space,
//!   and a piece holds a `▁` only at its start (or is all `▁`).
//!
//! A counter that reports [`super::TokenCounter::splits_exactly`] promises that counts add
//! up across these boundaries, which the packer uses to count a prompt part by part.

/// Whether a character is "solid": neither whitespace nor SentencePiece's `▁` (U+2581), which
/// a SentencePiece tokenizer cannot tell from an escaped space.
fn solid(c: char) -> bool {
    !c.is_whitespace() && c != '\u{2581}'
}

/// Whether `text` can be cut at byte `at` (a char boundary) into two parts whose counts add up:
/// after `\n` and before a solid character, or after a solid character and before a single
/// space followed by a solid character. The ends of the text (`at == 0`, `at == len`) are not
/// splits.
pub fn is_clean_split(text: &str, at: usize) -> bool {
    if at == 0 || at >= text.len() || !text.is_char_boundary(at) {
        return false;
    }
    is_clean_joint(&text[..at], &text[at..])
}

/// Whether `left` followed by `right` joins at a clean split (see [`is_clean_split`]).
pub fn is_clean_joint(left: &str, right: &str) -> bool {
    let (Some(last), Some(first)) = (left.chars().next_back(), right.chars().next()) else {
        return false;
    };
    if last == '\n' {
        return solid(first);
    }
    if solid(last) && first == ' ' {
        return right[1..].chars().next().is_some_and(solid);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_feeds_before_solid_text_and_word_spaces_are_clean() {
        assert!(is_clean_joint("a\n", "b"));
        assert!(is_clean_joint("a\n\n", "<doc"));
        assert!(is_clean_joint("word", " next"));
        assert!(is_clean_joint("end.", " (x"));
        assert!(!is_clean_joint("a\n", " b"));
        assert!(!is_clean_joint("a\n", "\nb"));
        assert!(!is_clean_joint("a ", "b"));
        assert!(!is_clean_joint("a", "b"));
        assert!(!is_clean_joint("a", "  b"));
        assert!(!is_clean_joint("a", " "));
        assert!(!is_clean_joint("a\u{2581}", " b"));
        assert!(!is_clean_joint("a", " \u{2581}"));
        assert!(!is_clean_joint("", "b"));
        assert!(!is_clean_joint("a\r", "b"));
        assert!(is_clean_split("one two", 3));
        assert!(!is_clean_split("one two", 4));
        assert!(!is_clean_split("one two", 0));
        assert!(!is_clean_split("é", 1));
    }
}
