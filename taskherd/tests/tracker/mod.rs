//! Concurrency of every group, counted from inside admitted work: the stress tests' check that
//! no group ever holds more than the largest limit it can have (and how they read their sizes).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The environment variable `name` parsed, or `default` (the stress tests' sizes and seeds).
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Counts of admitted work per group (keys `0..bounds.len()`) and in the total, with their
/// peaks.
pub struct Tracker {
    /// The most tasks each group may ever hold at once.
    pub bounds: Vec<usize>,
    pub total_bound: usize,
    pub inside: Vec<AtomicUsize>,
    pub total: AtomicUsize,
    pub peak: Vec<AtomicUsize>,
    pub peak_total: AtomicUsize,
}

impl Tracker {
    pub fn new(bounds: &[usize], total_bound: usize) -> Self {
        let zeros = || bounds.iter().map(|_| AtomicUsize::new(0)).collect();
        Self {
            bounds: bounds.to_vec(),
            total_bound,
            inside: zeros(),
            total: AtomicUsize::new(0),
            peak: zeros(),
            peak_total: AtomicUsize::new(0),
        }
    }

    /// Counts admitted work in `groups` (distinct); call right after admission, and drop the
    /// guard before the admission is released.
    pub fn enter(self: &Arc<Self>, groups: &[u8]) -> Inside {
        // Counted first and checked after, so that a failed check (a panic) still uncounts
        // through `Inside`'s drop and does not cascade into other tasks' checks.
        let total = self.total.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak_total.fetch_max(total, Ordering::SeqCst);
        let nows: Vec<usize> = groups
            .iter()
            .map(|&key| {
                let k = usize::from(key);
                let now = self.inside[k].fetch_add(1, Ordering::SeqCst) + 1;
                self.peak[k].fetch_max(now, Ordering::SeqCst);
                now
            })
            .collect();
        let inside = Inside {
            tracker: Arc::clone(self),
            groups: groups.to_vec(),
        };
        assert!(
            total <= self.total_bound,
            "{total} tasks inside, max_tasks is at most {}",
            self.total_bound
        );
        for (&key, now) in groups.iter().zip(nows) {
            let k = usize::from(key);
            assert!(
                now <= self.bounds[k],
                "{now} tasks inside group {key}, its limit is at most {}",
                self.bounds[k]
            );
        }
        inside
    }
}

/// One admission's place in the [`Tracker`], given back when dropped (a task aborted or
/// panicking included).
pub struct Inside {
    tracker: Arc<Tracker>,
    groups: Vec<u8>,
}

impl Drop for Inside {
    fn drop(&mut self) {
        for &key in &self.groups {
            self.tracker.inside[usize::from(key)].fetch_sub(1, Ordering::SeqCst);
        }
        self.tracker.total.fetch_sub(1, Ordering::SeqCst);
    }
}
