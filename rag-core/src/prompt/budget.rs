//! Packing a prompt into its token budget, part by part.
//!
//! The packer keeps a running total of the tokens of the parts kept so far. With a counter
//! that splits exactly ([`TokenCounter::splits_exactly`]), the total is the exact count of the
//! prompt: where two parts join at a clean split ([`crate::tokens::is_clean_joint`]) their
//! counts add up; where they do not, the difference is counted on a small window around the
//! joint, from the last clean split of the left part to the first clean split of the right
//! one. The family layouts put most joints at clean splits (after a line feed, before a tag or
//! a question), so most joints cost nothing. A counter that does not split exactly gets one
//! token per joint and a count of the whole prompt when the estimate comes close to the
//! budget.

use crate::tokens::{is_clean_joint, is_clean_split, TokenCounter};

/// Tokens allowed for each joint when the counter does not split exactly.
const JOINT_SLACK: isize = 1;

/// The running total of a prompt's tokens against the budget.
#[derive(Debug)]
pub(crate) struct Total {
    available: usize,
    tokens: isize,
    exact: bool,
    /// Parts (by address) that a joint's window covered whole, and from which side; a part
    /// covered whole from both sides has windows that overlap, so the sum is not exact.
    covered: Vec<(usize, bool)>,
}

impl Total {
    pub(crate) fn new(available: usize) -> Self {
        Total {
            available,
            tokens: 0,
            exact: true,
            covered: Vec::new(),
        }
    }

    /// Adds tokens (joints may merge tokens, so a change can be negative).
    pub(crate) fn add(&mut self, tokens: isize) {
        self.tokens += tokens;
    }

    /// Whether the total is over the budget.
    pub(crate) fn over(&self) -> bool {
        self.tokens > self.available as isize
    }

    /// The total so far.
    pub(crate) fn tokens(&self) -> usize {
        self.tokens.max(0) as usize
    }

    /// Whether the total is the prompt's exact count (or, for a scaled counter, the exact
    /// sum of its bound).
    pub(crate) fn exact(&self) -> bool {
        self.exact
    }

    /// Keeps a part if it fits: `joints` is what keeping it changes at its joints, `count`
    /// counts the part itself and returns `None` once it passes the limit it is given.
    pub(crate) fn offer(
        &mut self,
        joints: isize,
        count: impl FnOnce(usize) -> Option<usize>,
    ) -> bool {
        let room = self.available as isize - self.tokens - joints;
        if room < 0 {
            return false;
        }
        match count(room as usize) {
            Some(n) => {
                self.tokens += joints + n as isize;
                true
            }
            None => false,
        }
    }

    fn cover(&mut self, part: &str, from_left: bool) {
        let key = part.as_ptr() as usize;
        if self.covered.contains(&(key, !from_left)) {
            self.exact = false;
        }
        self.covered.push((key, from_left));
    }
}

/// Counts what joining two parts changes.
#[derive(Debug)]
pub(crate) struct Joiner<'c> {
    counter: &'c dyn TokenCounter,
    exact: bool,
}

impl<'c> Joiner<'c> {
    pub(crate) fn new(counter: &'c dyn TokenCounter) -> Self {
        Joiner {
            counter,
            exact: counter.splits_exactly(),
        }
    }

    /// The tokens of `left + right` minus the tokens of each (zero at a clean split).
    /// `left_at_start` says `left` starts the prompt, so a window that reaches back to its
    /// start is counted as the start of a prompt.
    pub(crate) fn delta(
        &self,
        left: &str,
        left_at_start: bool,
        right: &str,
        total: &mut Total,
    ) -> isize {
        if left.is_empty() || right.is_empty() {
            return 0;
        }
        if !self.exact {
            total.exact = false;
            return JOINT_SLACK;
        }
        if is_clean_joint(left, right) {
            return 0;
        }
        let (tail, left_whole) = tail_window(left);
        let (head, right_whole) = head_window(right);
        if left_whole && !left_at_start {
            total.cover(left, false);
        }
        if right_whole {
            total.cover(right, true);
        }
        let mut joined = String::with_capacity(tail.len() + head.len());
        joined.push_str(tail);
        joined.push_str(head);
        self.counter
            .joint_delta(&joined, tail, head, left_at_start && left_whole)
    }
}

/// The end of `text` after its last clean split, and whether that is all of it.
fn tail_window(text: &str) -> (&str, bool) {
    let found = text
        .char_indices()
        .rev()
        .map(|(i, _)| i)
        .find(|&i| is_clean_split(text, i));
    match found {
        Some(i) => (&text[i..], false),
        None => (text, true),
    }
}

/// The start of `text` before its first clean split, and whether that is all of it.
fn head_window(text: &str) -> (&str, bool) {
    let found = text
        .char_indices()
        .map(|(i, _)| i)
        .find(|&i| is_clean_split(text, i));
    match found {
        Some(i) => (&text[..i], false),
        None => (text, true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::{Cl100kCounter, Utf8ByteCounter};

    #[derive(Debug)]
    struct Inexact;
    impl TokenCounter for Inexact {
        fn count(&self, text: &str) -> usize {
            text.len()
        }
    }

    #[test]
    fn windows_stop_at_clean_splits() {
        assert_eq!(tail_window("a b\ncd ef"), (" ef", false));
        assert_eq!(head_window("ab cd"), ("ab", false));
        assert_eq!(head_window("abcd"), ("abcd", true));
        assert_eq!(tail_window("<s>[INST] "), ("<s>[INST] ", true));
    }

    #[test]
    fn deltas_make_sums_exact() {
        let counter = Cl100kCounter::new();
        let joiner = Joiner::new(&counter);
        let mut total = Total::new(1_000);
        for (left, right) in [
            ("Human: ", "<documents>\n"),
            ("the end</s>[INST] ", "What next?"),
            ("x\n", " indented"),
            ("a", "'s"),
            ("one\n", "two"),
        ] {
            let whole = counter.count(&format!("{left}{right}")) as isize;
            let parts = counter.count(left) as isize + counter.count_part(right) as isize;
            assert_eq!(
                parts + joiner.delta(left, true, right, &mut total),
                whole,
                "{left:?} + {right:?}"
            );
        }
        assert!(total.exact());
    }

    #[test]
    fn offers_keep_what_fits() {
        let counter = Utf8ByteCounter::new();
        let mut total = Total::new(10);
        total.add(4);
        assert!(total.offer(1, |limit| counter.count_part_till_limit("abc", limit)));
        assert_eq!(total.tokens(), 8);
        assert!(!total.offer(0, |limit| counter.count_part_till_limit("abc", limit)));
        assert!(!total.offer(3, |_| Some(0)));
        assert!(total.offer(2, |_| Some(0)));
        assert!(!total.over());
    }

    #[test]
    fn counters_that_do_not_split_exactly_pay_slack() {
        let counter = Inexact;
        let joiner = Joiner::new(&counter);
        let mut total = Total::new(100);
        assert_eq!(joiner.delta("a\n", false, "b", &mut total), JOINT_SLACK);
        assert!(!total.exact());
    }

    #[test]
    fn a_part_covered_from_both_sides_is_not_exact() {
        let counter = Cl100kCounter::new();
        let joiner = Joiner::new(&counter);
        let mut total = Total::new(100);
        let middle = String::from("xyz");
        joiner.delta("a ", false, &middle, &mut total);
        assert!(total.exact());
        joiner.delta(&middle, false, " ", &mut total);
        assert!(!total.exact());
    }
}
