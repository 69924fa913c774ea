//! Packing a prompt into its token budget.
//!
//! The prompt is made of blocks: the mandatory base (system text, question and the family's
//! framing), then passages in rank order, then history turns from the newest. Each block is
//! rendered once and counted at most once; a block is counted only when the UTF-8 lengths
//! (an upper bound of cl100k tokens) no longer settle whether it fits. The kept passages are the
//! best ones, a prefix of the ranking, so passage `n` in the prompt is always the `n`-th best;
//! the kept turns are the newest whole turns.
//!
//! Blocks are joined where a BPE pre-tokenizer splits anyway (after a line break or a marker),
//! so the sum of their counts is the count of the joined prompt, or off by about one token at
//! a joint. The packer keeps one token per joint free on top of the sum; the sum plus that
//! slack is reported as an upper bound of the count (the budget property test checks it over
//! thousands of random prompts full of markers and multi-byte text). When that estimate leaves
//! fewer than [`CLOSE`] tokens free, the whole prompt is counted, and a prompt whose count
//! exceeds the budget is never returned: the last block kept is dropped until it fits.

use crate::tokens::TokenCounter;

/// Tokens allowed for each joint between separately counted blocks.
const JOINT_SLACK: usize = 1;

/// An estimate (counted blocks plus joint slack) that leaves fewer tokens than this free is
/// close enough to the budget for the whole prompt to be counted.
const CLOSE: usize = 8;

/// Counts one block when called.
type CountBlock<'c> = Box<dyn FnOnce(&dyn TokenCounter) -> usize + 'c>;

/// A greedy packer over blocks whose exact counts are asked for only when needed.
pub(crate) struct Packer<'c> {
    counter: &'c dyn TokenCounter,
    available: usize,
    /// Upper bound of the tokens of the blocks kept so far (counted tokens, or bytes).
    used: usize,
    /// Blocks kept so far.
    blocks: usize,
    /// Kept blocks not counted yet, with what counts them.
    uncounted: Vec<(usize, CountBlock<'c>)>,
}

impl std::fmt::Debug for Packer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packer")
            .field("available", &self.available)
            .field("used", &self.used)
            .field("blocks", &self.blocks)
            .finish_non_exhaustive()
    }
}

impl<'c> Packer<'c> {
    pub(crate) fn new(counter: &'c dyn TokenCounter, available: usize) -> Self {
        Packer {
            counter,
            available,
            used: 0,
            blocks: 0,
            uncounted: Vec::new(),
        }
    }

    /// The kept blocks' tokens (an upper bound where only lengths were needed) plus one token
    /// per joint.
    pub(crate) fn estimate(&self) -> usize {
        self.used + self.blocks.saturating_sub(1) * JOINT_SLACK
    }

    /// Keeps the block if it fits and returns whether it did. `count` gives its tokens; it is
    /// called only when lengths do not settle the question.
    pub(crate) fn offer(
        &mut self,
        bytes: usize,
        count: impl FnOnce(&dyn TokenCounter) -> usize + 'c,
    ) -> bool {
        // After this block there are `blocks` joints, each with its token of slack.
        let available = self.available.saturating_sub(self.blocks * JOINT_SLACK);
        if self.used.saturating_add(bytes) <= available {
            self.used += bytes;
            self.blocks += 1;
            self.uncounted.push((bytes, Box::new(count)));
            return true;
        }
        // Lengths do not settle it: count what was kept on lengths alone, then this block.
        for (bytes, count) in self.uncounted.drain(..) {
            let tokens = count(self.counter);
            self.used = self.used - bytes + tokens.min(bytes);
        }
        let tokens = count(self.counter);
        if self.used.saturating_add(tokens) <= available {
            self.used += tokens;
            self.blocks += 1;
            true
        } else {
            false
        }
    }

    /// Whether the estimate is close enough to the budget that the whole prompt must be
    /// counted before it is returned.
    pub(crate) fn needs_whole_count(&self, prompt_bytes: usize) -> bool {
        prompt_bytes > self.available && self.estimate() + CLOSE > self.available
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::Utf8ByteCounter;
    use std::cell::Cell;

    #[derive(Debug)]
    struct Halves;
    impl TokenCounter for Halves {
        fn count(&self, text: &str) -> usize {
            text.len().div_ceil(2)
        }
    }

    #[test]
    fn lengths_settle_small_blocks_without_counting() {
        let counter = Utf8ByteCounter::new();
        let calls = Cell::new(0);
        let mut packer = Packer::new(&counter, 100);
        for _ in 0..3 {
            assert!(packer.offer(10, |_| {
                calls.set(calls.get() + 1);
                10
            }));
        }
        assert_eq!(calls.get(), 0);
        assert_eq!(packer.estimate(), 30 + 2);
        assert!(!packer.needs_whole_count(30));
    }

    #[test]
    fn counts_only_when_lengths_do_not_fit() {
        let counter = Halves;
        let calls = Cell::new(0);
        let text = "x".repeat(60);
        let mut packer = Packer::new(&counter, 100);
        let counted = || {
            |c: &dyn TokenCounter| {
                calls.set(calls.get() + 1);
                c.count(&text)
            }
        };
        assert!(packer.offer(60, counted()));
        assert_eq!(calls.get(), 0);
        // 60 + 60 + 1 > 100 by length: both get counted, 30 + 30 + 1 fits.
        assert!(packer.offer(60, counted()));
        assert_eq!(calls.get(), 2);
        assert_eq!(packer.estimate(), 61);
        assert!(packer.offer(60, counted()));
        assert_eq!(packer.estimate(), 92);
        assert!(!packer.offer(60, counted()));
        // 92 leaves 8 free: no whole count.
        assert!(!packer.needs_whole_count(180));
        // Filled to the last token of slack: close enough to count the whole.
        assert!(packer.offer(20, |_| 5));
        assert_eq!(packer.estimate(), 95 + 3);
        assert!(packer.needs_whole_count(200));
        assert!(!packer.needs_whole_count(100));
    }
}
