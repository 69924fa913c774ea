use std::time::Duration;

use crate::error::{Error, Result};

/// How model calls that fail before their first token are retried: exponential backoff with
/// full jitter (each wait is uniform in `0..=min(max_backoff, initial * multiplier^n)`).
///
/// Only errors that say [`Error::is_retryable`] are retried; failures after the first token
/// are never retried (the user has already seen part of the answer).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Model calls in all, the first included (1 = no retry).
    pub max_attempts: u32,
    /// The first backoff's ceiling.
    pub initial_backoff: Duration,
    /// No backoff is longer than this.
    pub max_backoff: Duration,
    /// Each backoff ceiling is the previous one times this.
    pub multiplier: f64,
    /// Whether to draw each wait at random below its ceiling (recommended: it spreads retries
    /// of many clients throttled at once).
    pub jitter: bool,
}

impl Default for RetryPolicy {
    /// 3 attempts, backoff from 200 ms doubling up to 5 s, with jitter.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            multiplier: 2.0,
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// `max_attempts` attempts with the default backoff.
    pub fn attempts(max_attempts: u32) -> Self {
        RetryPolicy {
            max_attempts,
            ..Self::default()
        }
    }

    /// Sets the backoff bounds.
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max;
        self
    }

    /// Turns jitter on or off.
    pub fn with_jitter(mut self, jitter: bool) -> Self {
        self.jitter = jitter;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.max_attempts == 0 {
            return Err(Error::config(
                "retry policy: max_attempts must be at least 1",
            ));
        }
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(Error::config(
                "retry policy: multiplier must be a number >= 1",
            ));
        }
        if self.initial_backoff > self.max_backoff {
            return Err(Error::config(
                "retry policy: initial_backoff must not exceed max_backoff",
            ));
        }
        Ok(())
    }

    /// The wait before retry number `retry` (0 for the first retry).
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self
            .initial_backoff
            .mul_f64(self.multiplier.powi(retry.min(64) as i32))
            .min(self.max_backoff);
        if self.jitter {
            ceiling.mul_f64(fastrand::f64())
        } else {
            ceiling
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy::default().with_jitter(false);
        assert_eq!(p.backoff(0), Duration::from_millis(200));
        assert_eq!(p.backoff(1), Duration::from_millis(400));
        assert_eq!(p.backoff(2), Duration::from_millis(800));
        assert_eq!(p.backoff(30), Duration::from_secs(5));
        assert_eq!(p.backoff(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn jitter_stays_below_the_ceiling() {
        let p = RetryPolicy::default();
        for retry in 0..8 {
            let ceiling = RetryPolicy::default().with_jitter(false).backoff(retry);
            assert!(p.backoff(retry) <= ceiling);
        }
    }

    #[test]
    fn invalid_policies_are_config_errors() {
        assert!(RetryPolicy::attempts(0).validate().is_err());
        let p = RetryPolicy {
            multiplier: 0.5,
            ..RetryPolicy::default()
        };
        assert!(p.validate().is_err());
        let p = RetryPolicy::default().with_backoff(Duration::from_secs(2), Duration::from_secs(1));
        assert!(p.validate().is_err());
    }
}
