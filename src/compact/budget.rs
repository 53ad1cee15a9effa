//! How many prompt tokens one upstream call may carry.

use serde_json::{Map, Value};

/// The prompt-token limit of one upstream call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub limit: usize,
}

impl Budget {
    /// `context_window × ratio − reply`, saturating at zero. `ratio` is clamped to
    /// `0..=1`; the part of the window it leaves over absorbs counting error.
    pub fn new(context_window: usize, ratio: f64, reply: usize) -> Self {
        // Float-to-int `as` saturates (and maps NaN to 0), which is what a limit wants.
        let usable = (context_window as f64 * ratio.clamp(0.0, 1.0)) as usize;
        Self { limit: usable.saturating_sub(reply) }
    }

    /// The tokens to keep for the reply: what the request asks for (the larger of
    /// `max_completion_tokens` and `max_tokens` when both are given), else `default`.
    pub fn reply_tokens(request: &Map<String, Value>, default: usize) -> usize {
        let asked =
            |key: &str| request.get(key).and_then(Value::as_u64).map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        match (asked("max_completion_tokens"), asked("max_tokens")) {
            (None, None) => default,
            (a, b) => a.max(b).unwrap_or(default),
        }
    }

    /// The budget for a retry after the upstream said the prompt was too long anyway
    /// (an estimate that was not pessimistic enough): 70% of this one.
    pub fn tighter(&self) -> Self {
        // floor(limit × 0.7) without overflow.
        Self { limit: self.limit / 10 * 7 + self.limit % 10 * 7 / 10 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn window_ratio_and_reply() {
        assert_eq!(Budget::new(128_000, 0.75, 0).limit, 96_000);
        assert_eq!(Budget::new(128_000, 0.75, 4_000).limit, 92_000);
        assert_eq!(Budget::new(8_192, 0.75, 10_000).limit, 0, "saturates");
        assert_eq!(Budget::new(1_000, 7.0, 0).limit, 1_000, "ratio clamped");
        assert_eq!(Budget::new(1_000, f64::NAN, 0).limit, 0);
    }

    #[test]
    fn reply_tokens_from_the_request() {
        let request = |v: Value| v.as_object().cloned().unwrap_or_default();
        assert_eq!(Budget::reply_tokens(&request(json!({})), 512), 512);
        assert_eq!(Budget::reply_tokens(&request(json!({"max_tokens": 100})), 512), 100);
        assert_eq!(Budget::reply_tokens(&request(json!({"max_completion_tokens": 300, "max_tokens": 100})), 0), 300);
        assert_eq!(Budget::reply_tokens(&request(json!({"max_tokens": null})), 7), 7);
    }

    #[test]
    fn tighter_is_seventy_percent() {
        assert_eq!(Budget { limit: 96_000 }.tighter().limit, 67_200);
        assert_eq!(Budget { limit: 19 }.tighter().limit, 13);
        assert_eq!(Budget { limit: usize::MAX }.tighter().limit, usize::MAX / 10 * 7 + 3);
    }
}
