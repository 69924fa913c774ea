//! A hand-written cl100k pre-tokenizer for ASCII text.
//!
//! cl100k cuts text into chunks with the pattern
//! `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
//! (leftmost-first: the first alternative that matches wins, each as long as it can be).
//! Over ASCII the classes are a handful of byte sets, so the pattern becomes the few branches
//! of [`chunk_end`], several times faster than a regex engine. Bytes it does not handle
//! ([`Class::Other`]: non-ASCII bytes and control bytes other than `\t \n \x0B \x0C \r`) are
//! left to the regex by the caller.

/// What the pattern can tell apart about an ASCII byte.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Class {
    /// `A-Z a-z`: `\p{L}`.
    Letter,
    /// `0-9`: `\p{N}`.
    Digit,
    /// `' '`, the only whitespace the optional space of ` ?[^\s\p{L}\p{N}]+` takes.
    Space,
    /// `\t \x0B \x0C`: whitespace that is not a line break.
    Blank,
    /// `\r \n`.
    Break,
    /// Printable ASCII that is neither a letter, a digit nor whitespace: `[^\s\p{L}\p{N}]`.
    Punct,
    /// Not handled here: non-ASCII bytes, and control bytes that are not whitespace (the regex
    /// takes them, so that this scanner never has to agree with it about them).
    Other,
}

static CLASSES: [Class; 256] = classes();

const fn classes() -> [Class; 256] {
    let mut table = [Class::Other; 256];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        table[b] = match c {
            b'A'..=b'Z' | b'a'..=b'z' => Class::Letter,
            b'0'..=b'9' => Class::Digit,
            b' ' => Class::Space,
            b'\t' | 0x0B | 0x0C => Class::Blank,
            b'\r' | b'\n' => Class::Break,
            0x21..=0x7E => Class::Punct,
            _ => Class::Other,
        };
        b += 1;
    }
    table
}

/// The class of byte `b`.
#[inline]
fn class(b: u8) -> Class {
    CLASSES[b as usize]
}

/// The class of `bytes[i]`, or `None` past the end.
#[inline]
fn class_at(bytes: &[u8], i: usize) -> Option<Class> {
    bytes.get(i).map(|&b| class(b))
}

/// The position of the first byte in `bytes` that this scanner leaves to the regex.
#[inline]
pub(super) fn first_other(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| class(b) == Class::Other)
}

/// The end of the chunk of `bytes` that starts at `i` (`i < bytes.len()`), for `bytes` in
/// which no byte is [`Class::Other`]. The end of `bytes` is the end of the text to the pattern.
#[inline]
pub(super) fn chunk_end(bytes: &[u8], i: usize) -> usize {
    match class(bytes[i]) {
        Class::Letter => run_end(bytes, i + 1, Class::Letter),
        Class::Digit => {
            // `\p{N}{1,3}`.
            let mut end = i + 1;
            while end < bytes.len() && end < i + 3 && class(bytes[end]) == Class::Digit {
                end += 1;
            }
            end
        }
        Class::Punct => {
            if bytes[i] == b'\'' {
                if let Some(len) = contraction_len(&bytes[i + 1..]) {
                    return i + 1 + len;
                }
            }
            if class_at(bytes, i + 1) == Some(Class::Letter) {
                // `[^\r\n\p{L}\p{N}]?\p{L}+` with a punctuation prefix: ".com".
                run_end(bytes, i + 2, Class::Letter)
            } else {
                punct_end(bytes, i + 1)
            }
        }
        Class::Space => match class_at(bytes, i + 1) {
            Some(Class::Letter) => run_end(bytes, i + 2, Class::Letter),
            Some(Class::Punct) => punct_end(bytes, i + 2),
            _ => whitespace_end(bytes, i),
        },
        Class::Blank => {
            if class_at(bytes, i + 1) == Some(Class::Letter) {
                run_end(bytes, i + 2, Class::Letter)
            } else {
                whitespace_end(bytes, i)
            }
        }
        Class::Break => whitespace_end(bytes, i),
        Class::Other => {
            // The caller never passes these; one byte keeps the scan going if it did.
            debug_assert!(false, "byte {:#x} is left to the regex", bytes[i]);
            i + 1
        }
    }
}

/// The end of the run of `class` bytes from `from`.
#[inline]
fn run_end(bytes: &[u8], from: usize, of: Class) -> usize {
    let mut end = from;
    while end < bytes.len() && class(bytes[end]) == of {
        end += 1;
    }
    end
}

/// The length after the apostrophe of `(?i:'s|'t|'re|'ve|'m|'ll|'d)`, if `rest` (the bytes
/// after an apostrophe) starts with one of them.
#[inline]
fn contraction_len(rest: &[u8]) -> Option<usize> {
    let lower = |i: usize| rest.get(i).map(u8::to_ascii_lowercase);
    match (lower(0)?, lower(1)) {
        (b's' | b't' | b'm' | b'd', _) => Some(1),
        (b'r' | b'v', Some(b'e')) | (b'l', Some(b'l')) => Some(2),
        _ => None,
    }
}

/// The end of `[^\s\p{L}\p{N}]+[\r\n]*` whose first punctuation byte ends at `from`.
#[inline]
fn punct_end(bytes: &[u8], from: usize) -> usize {
    let end = run_end(bytes, from, Class::Punct);
    run_end(bytes, end, Class::Break)
}

/// The end of the whitespace chunk that starts at `i`: `\s*[\r\n]+` runs to the last line
/// break of the whitespace run; otherwise `\s+(?!\S)` leaves the last whitespace before a
/// non-space for the next chunk (which then starts with it), and `\s+` takes a lone one.
#[inline]
fn whitespace_end(bytes: &[u8], i: usize) -> usize {
    let mut end = i;
    let mut after_break = None;
    while end < bytes.len() {
        match class(bytes[end]) {
            Class::Break => after_break = Some(end + 1),
            Class::Space | Class::Blank => {}
            _ => break,
        }
        end += 1;
    }
    match after_break {
        Some(after) => after,
        None if end == bytes.len() || end - i == 1 => end,
        None => end - 1,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn chunks(text: &str) -> Vec<&str> {
        let bytes = text.as_bytes();
        let mut out = vec![];
        let mut i = 0;
        while i < bytes.len() {
            let end = chunk_end(bytes, i);
            out.push(&text[i..end]);
            i = end;
        }
        out
    }

    #[test]
    fn chunks_follow_the_pattern() {
        assert_eq!(chunks("Hello world"), ["Hello", " world"]);
        assert_eq!(
            chunks("it's THEY'RE we'Ll"),
            ["it", "'s", " THEY", "'RE", " we", "'Ll"]
        );
        assert_eq!(chunks("'tis 'x"), ["'t", "is", " '", "x"]);
        assert_eq!(chunks(" 's"), [" '", "s"]);
        assert_eq!(chunks("1234567"), ["123", "456", "7"]);
        assert_eq!(chunks("a1b"), ["a", "1", "b"]);
        assert_eq!(chunks("x.com ((a"), ["x", ".com", " ((", "a"]);
        assert_eq!(chunks("end.\n\nNext"), ["end", ".\n\n", "Next"]);
        assert_eq!(chunks("a   b"), ["a", "  ", " b"]);
        assert_eq!(chunks("a \t\n  \n  b"), ["a", " \t\n  \n", " ", " b"]);
        assert_eq!(chunks("a  "), ["a", "  "]);
        assert_eq!(chunks("a  ."), ["a", " ", " ."]);
        assert_eq!(chunks("a \t."), ["a", " ", "\t", "."]);
        assert_eq!(chunks("\tword \x0Bx"), ["\tword", " ", "\x0Bx"]);
        assert_eq!(chunks("a 1"), ["a", " ", "1"]);
        assert_eq!(chunks("!!\r\n\r\n x"), ["!!\r\n\r\n", " x"]);
    }

    #[test]
    fn non_whitespace_control_bytes_and_non_ascii_are_left_to_the_regex() {
        assert_eq!(first_other(b"plain text\t\r\n\x0B\x0C~"), None);
        assert_eq!(first_other(b"ab\x00"), Some(2));
        assert_eq!(first_other(b"ab\x7F"), Some(2));
        assert_eq!(first_other("caf\u{e9}".as_bytes()), Some(3));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The scanner cuts ASCII text exactly where `bpe-openai`'s regex of the pattern does.
        #[test]
        fn chunks_are_the_regex_chunks(
            text in "([a-zA-Z]{1,5}|[0-9]{1,5}|[ \t\r\n\x0B\x0C]{1,4}|[!-/:-@\\[-`{-~]{1,3}|'(s|T|re|VE|m|Ll|d|x)?)*"
        ) {
            prop_assert!(first_other(text.as_bytes()).is_none());
            let regex: Vec<&str> = bpe_openai::cl100k_base().split(&text).collect();
            prop_assert_eq!(chunks(&text), regex);
        }
    }
}
