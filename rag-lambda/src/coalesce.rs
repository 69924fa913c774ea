//! Gathering the model's tokens into frames that fit API Gateway's limits.
//!
//! A model streams an answer in pieces of a few bytes, and PostToConnection costs one request
//! (and one metered message) per frame, so posting each piece would be slow and dear. The
//! [`TokenBatcher`] gathers pieces into `token` frames whose JSON stays under a byte limit
//! (API Gateway's WebSocket frame size quota is 32 KB: "Amazon API Gateway quotas for
//! configuring and running a WebSocket API",
//! <https://docs.aws.amazon.com/apigateway/latest/developerguide/apigateway-execution-service-websocket-limits-table.html>),
//! and [`FrameLimits::min_token_interval`] bounds how often a token frame is posted.

use std::time::Duration;

/// The bounds on the frames posted to one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// The largest frame, in bytes of JSON (default 32,000: under API Gateway's 32 KB frame
    /// quota, whether it is read as 32,000 or 32,768 bytes).
    pub max_frame_bytes: usize,
    /// The least time between two `token` frames of one answer (default 100 ms, so at most
    /// ten a second); the text that arrives meanwhile goes in the next frame. The first token
    /// frame is posted at once.
    pub min_token_interval: Duration,
}

impl Default for FrameLimits {
    fn default() -> Self {
        FrameLimits {
            max_frame_bytes: 32_000,
            min_token_interval: Duration::from_millis(100),
        }
    }
}

/// The bytes `c` takes inside a JSON string as `serde_json` writes it: `"` and `\` and the
/// control characters are escaped, everything else is written as its UTF-8 bytes.
pub fn escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\u{08}' | '\u{0C}' | '\n' | '\r' | '\t' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// Gathers text into pieces whose JSON string form fits a budget of bytes.
///
/// ```
/// use rag_lambda::coalesce::TokenBatcher;
///
/// let mut batcher = TokenBatcher::new(8);
/// let mut full = Vec::new();
/// for piece in ["Retr", "ieval", " aug", "mented"] {
///     batcher.push(piece, &mut full);
/// }
/// assert_eq!(full, ["Retrieva", "l augmen"]);
/// assert_eq!(batcher.take().as_deref(), Some("ted"));
/// ```
#[derive(Debug, Clone)]
pub struct TokenBatcher {
    budget: usize,
    pending: String,
    pending_len: usize,
}

impl TokenBatcher {
    /// A batcher whose pieces take at most `budget` bytes once escaped (at least 6, the
    /// longest escape, so every character fits).
    pub fn new(budget: usize) -> Self {
        TokenBatcher {
            budget: budget.max(6),
            pending: String::new(),
            pending_len: 0,
        }
    }

    /// Adds `text`; each piece that became full is moved to `full`, in order.
    pub fn push(&mut self, text: &str, full: &mut Vec<String>) {
        let mut rest = text;
        while !rest.is_empty() {
            // The longest prefix of `rest` that still fits.
            let mut fits = 0;
            for (at, c) in rest.char_indices() {
                let len = escaped_len(c);
                if self.pending_len + len > self.budget {
                    break;
                }
                self.pending_len += len;
                fits = at + c.len_utf8();
            }
            self.pending.push_str(&rest[..fits]);
            rest = &rest[fits..];
            if !rest.is_empty() {
                full.push(std::mem::take(&mut self.pending));
                self.pending_len = 0;
            }
        }
    }

    /// Takes the text gathered so far, if any.
    pub fn take(&mut self) -> Option<String> {
        self.pending_len = 0;
        (!self.pending.is_empty()).then(|| std::mem::take(&mut self.pending))
    }

    /// Whether no text is waiting.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The escaped bytes of the text waiting.
    pub fn pending_len(&self) -> usize {
        self.pending_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_len(text: &str) -> usize {
        serde_json::to_string(text).unwrap().len() - 2
    }

    #[test]
    fn escaped_lengths_are_serde_jsons() {
        let all: String = (0u32..0x3000)
            .chain([0x1F600, 0x10FFFF])
            .filter_map(char::from_u32)
            .collect();
        for c in all.chars() {
            assert_eq!(escaped_len(c), json_len(&c.to_string()), "{c:?}");
        }
    }

    #[test]
    fn pieces_fit_the_budget_and_keep_every_byte_in_order() {
        let pieces = [
            "plain ",
            "\"quoted\" ",
            "tab\tand\nnewline ",
            "\u{1}\u{2}",
            "ünïcödé ",
            "😀😀😀",
            &"long ".repeat(40),
        ];
        for budget in [6, 7, 8, 13, 64, 1000] {
            let mut batcher = TokenBatcher::new(budget);
            let mut full = Vec::new();
            for piece in pieces {
                batcher.push(piece, &mut full);
            }
            full.extend(batcher.take());
            assert_eq!(full.concat(), pieces.concat(), "budget {budget}");
            for piece in &full {
                assert!(json_len(piece) <= budget, "{piece:?} over {budget}");
                assert!(!piece.is_empty());
            }
            // A piece is only cut when the next character would not fit.
            for pair in full.windows(2) {
                let next = pair[1].chars().next().unwrap();
                assert!(json_len(&pair[0]) + escaped_len(next) > budget);
            }
        }
    }

    #[test]
    fn an_empty_batcher_gives_nothing() {
        let mut batcher = TokenBatcher::new(10);
        let mut full = Vec::new();
        batcher.push("", &mut full);
        assert!(full.is_empty() && batcher.is_empty());
        assert_eq!(batcher.take(), None);
    }
}
