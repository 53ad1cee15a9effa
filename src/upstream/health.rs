//! Target health shared across requests: consecutive failures and cool-downs.
//!
//! Times are `tokio::time::Instant`, so tests drive cool-downs with paused time.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Default, Clone, Copy)]
struct TargetHealth {
    consecutive_failures: u32,
    last_failure: Option<Instant>,
    cooling_until: Option<Instant>,
}

/// Read on every call, written only when something fails (or recovers), so it is a
/// `RwLock`: healthy traffic never contends.
#[derive(Debug)]
pub struct Health {
    targets: RwLock<HashMap<String, TargetHealth>>,
    cooldown_after: u32,
    cooldown: Duration,
}

impl Health {
    pub fn new(cooldown_after: u32, cooldown: Duration) -> Self {
        Self { targets: RwLock::new(HashMap::new()), cooldown_after, cooldown }
    }

    /// The order in which to try `labels` (chain order, `sticky` first): targets
    /// that are not cooling down, then the cooling ones, least recently failed
    /// first, as a last resort — so a request is never refused without a try.
    pub fn order<S: AsRef<str>>(&self, labels: &[S], sticky: Option<usize>) -> Vec<usize> {
        if labels.len() == 1 {
            return vec![0];
        }
        let now = Instant::now();
        let targets = self.read();
        let mut base: Vec<usize> = (0..labels.len()).collect();
        if let Some(s) = sticky.filter(|s| *s < labels.len()) {
            base.retain(|i| *i != s);
            base.insert(0, s);
        }
        let cooling =
            |i: &usize| targets.get(labels[*i].as_ref()).and_then(|h| h.cooling_until).is_some_and(|until| until > now);
        let (mut cold, mut ready): (Vec<usize>, Vec<usize>) = base.into_iter().partition(cooling);
        cold.sort_by_key(|i| targets.get(labels[*i].as_ref()).and_then(|h| h.last_failure));
        ready.extend(cold);
        ready
    }

    pub fn is_cooling(&self, label: &str) -> bool {
        let now = Instant::now();
        self.read().get(label).and_then(|h| h.cooling_until).is_some_and(|until| until > now)
    }

    pub fn succeeded(&self, label: &str) {
        if !self.read().contains_key(label) {
            return;
        }
        self.write().remove(label);
    }

    /// Records a failed call; true when this failure starts a cool-down.
    pub fn failed(&self, label: &str) -> bool {
        let now = Instant::now();
        let mut targets = self.write();
        let h = targets.entry(label.to_owned()).or_default();
        h.consecutive_failures += 1;
        h.last_failure = Some(now);
        if h.consecutive_failures >= self.cooldown_after {
            h.cooling_until = Some(now + self.cooldown);
            true
        } else {
            false
        }
    }

    // A panic while holding this lock cannot leave the map inconsistent (every update
    // is a single assignment), so a poisoned lock is still usable.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, TargetHealth>> {
        self.targets.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, TargetHealth>> {
        self.targets.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<String> {
        ["a", "b", "c"].map(String::from).to_vec()
    }

    #[tokio::test(start_paused = true)]
    async fn cools_down_after_consecutive_failures_and_recovers() {
        let h = Health::new(2, Duration::from_secs(30));
        assert_eq!(h.order(&labels(), None), [0, 1, 2]);
        assert!(!h.failed("a"));
        assert_eq!(h.order(&labels(), None), [0, 1, 2], "one failure is not enough");
        assert!(h.failed("a"));
        assert_eq!(h.order(&labels(), None), [1, 2, 0], "a cooling target goes last");
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(h.order(&labels(), None), [0, 1, 2], "tried again after the cool-down");
        // Still failing after the cool-down: cooling again at once.
        assert!(h.failed("a"));
        h.succeeded("a");
        assert!(!h.is_cooling("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn every_target_cooling_tries_the_least_recently_failed_first() {
        let h = Health::new(1, Duration::from_secs(30));
        h.failed("b");
        tokio::time::advance(Duration::from_secs(1)).await;
        h.failed("a");
        tokio::time::advance(Duration::from_secs(1)).await;
        h.failed("c");
        assert_eq!(h.order(&labels(), None), [1, 0, 2]);
    }

    #[test]
    fn sticky_target_comes_first() {
        let h = Health::new(3, Duration::from_secs(30));
        assert_eq!(h.order(&labels(), Some(2)), [2, 0, 1]);
        assert_eq!(h.order(&labels(), Some(9)), [0, 1, 2]);
    }
}
