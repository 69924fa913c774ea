//! [`ScaledCounter`]: an upper bound for a tokenizer that is not public.

use super::TokenCounter;

/// Counts with another counter and multiplies by a factor (rounding up), for models whose
/// tokenizer is not public: the factor is how many of the model's tokens one token of the
/// inner counter can be at most, as measured or published (see `docs/token-budget.md`).
///
/// Rounding up part by part keeps the sum of the parts at or above the bound of the whole, and
/// the differences at the joints are scaled once from the inner counter's
/// ([`TokenCounter::joint_delta`]), so the packer may still count a prompt part by part when
/// the inner counter splits exactly.
#[derive(Debug, Clone)]
pub struct ScaledCounter<C> {
    inner: C,
    per_mille: u32,
}

impl<C: TokenCounter> ScaledCounter<C> {
    /// `inner`'s counts times `per_mille / 1000` (1,350 means 1.35x). Factors below 1 are
    /// raised to 1: a bound is never below the count it scales.
    pub fn new(inner: C, per_mille: u32) -> Self {
        ScaledCounter {
            inner,
            per_mille: per_mille.max(1000),
        }
    }

    /// The factor in thousandths.
    pub fn per_mille(&self) -> u32 {
        self.per_mille
    }

    /// The inner counter.
    pub fn inner(&self) -> &C {
        &self.inner
    }

    fn scale(&self, n: usize) -> usize {
        (n as u128 * self.per_mille as u128).div_ceil(1000) as usize
    }

    /// The largest inner count whose scaled value is at most `limit`.
    fn unscale(&self, limit: usize) -> usize {
        (limit as u128 * 1000 / self.per_mille as u128) as usize
    }
}

impl<C: TokenCounter> TokenCounter for ScaledCounter<C> {
    fn count(&self, text: &str) -> usize {
        self.scale(self.inner.count(text))
    }

    fn count_till_limit(&self, text: &str, limit: usize) -> Option<usize> {
        self.inner
            .count_till_limit(text, self.unscale(limit))
            .map(|n| self.scale(n))
            .filter(|&n| n <= limit)
    }

    fn count_part(&self, text: &str) -> usize {
        self.scale(self.inner.count_part(text))
    }

    fn count_part_till_limit(&self, text: &str, limit: usize) -> Option<usize> {
        self.inner
            .count_part_till_limit(text, self.unscale(limit))
            .map(|n| self.scale(n))
            .filter(|&n| n <= limit)
    }

    fn splits_exactly(&self) -> bool {
        self.inner.splits_exactly()
    }

    fn max_count_for_len(&self, bytes: usize) -> usize {
        self.scale(self.inner.max_count_for_len(bytes))
    }

    /// The inner counter's difference, scaled once and rounded up (towards zero when it is
    /// negative): with the parts rounded up one by one, the packer's sum then stays at or
    /// above the scaled count of the whole prompt.
    fn joint_delta(&self, joined: &str, tail: &str, head: &str, at_start: bool) -> isize {
        let inner = self.inner.joint_delta(joined, tail, head, at_start) as i128;
        // ceil(inner * f / 1000), for either sign.
        (inner * self.per_mille as i128).div_euclid(1000) as isize
            + isize::from((inner * self.per_mille as i128).rem_euclid(1000) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::Utf8ByteCounter;

    #[test]
    fn scales_up_and_never_down() {
        let c = ScaledCounter::new(Utf8ByteCounter::new(), 1_350);
        assert_eq!(c.count("abcdefghij"), 14); // 13.5 rounded up
        assert_eq!(c.count(""), 0);
        assert_eq!(c.max_count_for_len(10), 14);
        assert_eq!(
            ScaledCounter::new(Utf8ByteCounter::new(), 500).count("ab"),
            2
        );
        // Parts round up one by one, so they never sum below the whole.
        let (a, b) = ("abc", "defg");
        assert!(c.count(a) + c.count_part(b) >= c.count(&format!("{a}{b}")));
    }

    /// One token per `+`-separated word: joining two texts merges nothing.
    #[derive(Debug)]
    struct Words;
    impl TokenCounter for Words {
        fn count(&self, text: &str) -> usize {
            text.split('+').filter(|w| !w.is_empty()).count()
        }
        fn splits_exactly(&self) -> bool {
            true
        }
    }

    #[test]
    fn joint_differences_are_scaled_once() {
        let c = ScaledCounter::new(Words, 1_400);
        // Joining "a" and "+b" merges nothing: the difference is 0. Differencing the rounded
        // counts would say ceil(2.8) - ceil(1.4) - ceil(1.4) = -1 and under-count the whole.
        assert_eq!(c.joint_delta("a+b", "a", "+b", false), 0);
        let parts = (c.count("a") + c.count_part("+b")) as isize;
        assert!(parts + c.joint_delta("a+b", "a", "+b", false) >= c.count("a+b") as isize);
        // A joint that merges keeps its difference, rounded towards zero: ceil(-1.4) = -1.
        #[derive(Debug)]
        struct Merging;
        impl TokenCounter for Merging {
            fn count(&self, text: &str) -> usize {
                if text == "ab" {
                    1
                } else {
                    text.len()
                }
            }
        }
        assert_eq!(
            ScaledCounter::new(Merging, 1_400).joint_delta("ab", "a", "b", false),
            -1
        );
    }

    #[test]
    fn limits_apply_to_the_scaled_count() {
        let c = ScaledCounter::new(Utf8ByteCounter::new(), 1_500);
        assert_eq!(c.count_till_limit("abcd", 6), Some(6));
        assert_eq!(c.count_till_limit("abcd", 5), None);
        assert_eq!(c.count_part_till_limit("abcde", 8), Some(8));
        assert_eq!(c.count_part_till_limit("abcde", 7), None);
    }
}
