//! How many Events one policy may publish: client-go's EventCorrelator spam filter, a token
//! bucket per object (25 at once, then one every five minutes). Whatever a tenant's lock
//! does (flap, go stale and recover every few seconds), its policy cannot fill the API
//! server's Events, or the operator's queue, for everyone else.

use std::{collections::HashMap, hash::Hash, time::Instant};

use crate::limits::{EVENT_BURST, EVENT_REFILL_EVERY};

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: u32,
    /// When the last token was added (or the bucket was full).
    refilled: Instant,
}

/// A token bucket per key; time is passed in.
#[derive(Debug)]
pub struct EventBudget<K> {
    buckets: HashMap<K, Bucket>,
    /// Full buckets are dropped once the map grows past this (a full bucket is the same as
    /// none); then it is set to twice what is left, so pruning costs O(1) a take amortized.
    prune_at: usize,
}

impl<K> Default for EventBudget<K> {
    fn default() -> Self {
        EventBudget { buckets: HashMap::new(), prune_at: PRUNE_ABOVE }
    }
}

/// The fewest buckets at which full ones are pruned.
const PRUNE_ABOVE: usize = 1024;

impl<K: Hash + Eq + Clone> EventBudget<K> {
    /// Takes a token for `key` if it has one.
    pub fn take(&mut self, key: &K, now: Instant) -> bool {
        if self.buckets.len() > self.prune_at {
            self.buckets.retain(|_, bucket| refill(*bucket, now).tokens < EVENT_BURST);
            self.prune_at = PRUNE_ABOVE.max(2 * self.buckets.len());
        }
        let bucket = self.buckets.entry(key.clone()).or_insert(Bucket { tokens: EVENT_BURST, refilled: now });
        *bucket = refill(*bucket, now);
        if bucket.tokens == 0 {
            return false;
        }
        bucket.tokens -= 1;
        true
    }
}

fn refill(bucket: Bucket, now: Instant) -> Bucket {
    let elapsed = now.saturating_duration_since(bucket.refilled);
    let earned = (elapsed.as_secs_f64() / EVENT_REFILL_EVERY.as_secs_f64()) as u32;
    if earned == 0 {
        return bucket;
    }
    let tokens = bucket.tokens.saturating_add(earned).min(EVENT_BURST);
    // Keep the fraction of a token earned since, unless full.
    let refilled = if tokens == EVENT_BURST { now } else { bucket.refilled + EVENT_REFILL_EVERY * earned };
    Bucket { tokens, refilled }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_then_one_per_refill_period() {
        let mut budget = EventBudget::default();
        let t0 = Instant::now();
        let taken = (0..100).filter(|_| budget.take(&"noisy", t0)).count();
        assert_eq!(taken, EVENT_BURST as usize);
        assert!(budget.take(&"quiet", t0), "another policy's budget is its own");
        assert!(!budget.take(&"noisy", t0 + EVENT_REFILL_EVERY - Duration::from_millis(1)));
        assert!(budget.take(&"noisy", t0 + EVENT_REFILL_EVERY));
        assert!(!budget.take(&"noisy", t0 + EVENT_REFILL_EVERY));
        let later = t0 + EVENT_REFILL_EVERY * 1000;
        assert_eq!((0..100).filter(|_| budget.take(&"noisy", later)).count(), EVENT_BURST as usize, "full again");
    }

    #[test]
    fn buckets_of_quiet_keys_are_dropped() {
        let mut budget = EventBudget::default();
        let t0 = Instant::now();
        for key in 0..5000 {
            budget.take(&key, t0);
        }
        // Two refill periods later the first 5000 are full again, as good as absent.
        let later = t0 + EVENT_REFILL_EVERY * 2;
        for key in 5000..12_000 {
            budget.take(&key, later);
        }
        assert!(budget.buckets.keys().all(|key| *key >= 5000), "full buckets were kept");
        assert_eq!(budget.buckets.len(), 7000);
    }
}
