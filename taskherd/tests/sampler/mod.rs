//! A sampler for the stress tests (`mod sampler;`): while the test runs, it keeps taking
//! `pool.stats(&k)` for every key and `pool.total_stats()` and checks the snapshot invariants of
//! issue 9, item 1 (DESIGN.md, invariants 2 and 5):
//!
//! - `reserved <= waiting`, and `reserved == 0 || running + reserved <= limit`;
//! - for a named group, somebody queued (`waiting > reserved`) implies no free room:
//!   `running + reserved >= limit` (for the total, `waiting` also counts waiters that are not
//!   queued on it yet, and `reserved` is always 0);
//! - between two snapshots with no limit change in between (see [`Epoch`]), `running` grows only
//!   up to the limit: a lowered limit admits nothing new, even to waiters that held a promised
//!   slot when it was lowered.
//!
//! A violation panics in the sampler with both snapshots; the test awaits the sampler at the end.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use taskherd::{GroupStats, TaskPool};

/// Counts limit changes: odd while one is being applied. Every limit change of the test goes
/// through [`Epoch::change`], so two snapshots taken within the same even epoch saw the same
/// limits.
#[derive(Default)]
pub struct Epoch(AtomicU64);

impl Epoch {
    pub fn change<R>(&self, apply: impl FnOnce() -> R) -> R {
        self.0.fetch_add(1, Ordering::SeqCst);
        let result = apply();
        self.0.fetch_add(1, Ordering::SeqCst);
        result
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// What the sampler saw, for the test's summary line.
#[derive(Debug, Default, Clone, Copy)]
pub struct Report {
    /// Rounds of snapshots (every key and the total).
    pub rounds: u64,
    /// Group snapshots with a slot promised to a waiter (`reserved > 0`).
    pub reserved_seen: u64,
    /// Group snapshots with somebody queued (`waiting > reserved`).
    pub queued_seen: u64,
    /// Group snapshots with `running` above the limit (a lowered limit, running work kept).
    pub over_limit_seen: u64,
    /// Pairs of snapshots under the same limits compared for growth.
    pub growth_checks: u64,
}

fn fits(value: usize, limit: Option<usize>) -> bool {
    limit.is_none_or(|limit| value <= limit)
}

/// Checks one snapshot of one group (`key` None for the total).
pub fn check_snapshot(key: Option<u8>, s: &GroupStats, report: &mut Report) {
    let name = key.map_or_else(|| "the total".to_owned(), |k| format!("group {k}"));
    assert!(
        s.reserved <= s.waiting,
        "{name}: more promised slots than waiters: {s:?}"
    );
    assert!(
        s.reserved == 0 || fits(s.running + s.reserved, s.limit),
        "{name}: running + reserved above the limit while slots are promised: {s:?}"
    );
    if key.is_none() {
        assert_eq!(
            s.reserved, 0,
            "the total promises no slot to a waiter: {s:?}"
        );
    } else if s.waiting > s.reserved {
        let limit = s
            .limit
            .unwrap_or_else(|| panic!("{name}: a waiter queued on an unlimited group: {s:?}"));
        assert!(
            s.running + s.reserved >= limit,
            "{name}: a waiter queued while the group has room: {s:?}"
        );
    }
    report.reserved_seen += u64::from(s.reserved > 0);
    report.queued_seen += u64::from(s.waiting > s.reserved);
    report.over_limit_seen += u64::from(!fits(s.running, s.limit));
}

/// Checks two snapshots of one group under the same limits: `running` grows only up to the
/// limit.
pub fn check_growth(key: Option<u8>, before: &GroupStats, after: &GroupStats) {
    let name = key.map_or_else(|| "the total".to_owned(), |k| format!("group {k}"));
    assert_eq!(
        before.limit, after.limit,
        "{name}: the limit changed outside a limit change (the test's epoch is wrong)"
    );
    if after.running > before.running {
        assert!(
            fits(after.running, after.limit),
            "{name}: running grew above a limit that did not change: {before:?} then {after:?}"
        );
    }
}

fn snapshot(pool: &TaskPool<u8>, keys: &[u8]) -> Vec<GroupStats> {
    let mut snap: Vec<_> = keys.iter().map(|k| pool.stats(k)).collect();
    snap.push(pool.total_stats());
    snap
}

/// Samples until `stop`, then returns what it saw. Panics on the first violation.
pub async fn sample(
    pool: TaskPool<u8>,
    keys: Vec<u8>,
    epoch: Arc<Epoch>,
    stop: Arc<AtomicBool>,
) -> Report {
    let mut report = Report::default();
    let mut previous: Option<(u64, Vec<GroupStats>)> = None;
    let name = |i: usize| keys.get(i).copied();
    while !stop.load(Ordering::SeqCst) {
        let before = epoch.get();
        let snap = snapshot(&pool, &keys);
        let after = epoch.get();
        report.rounds += 1;
        for (i, s) in snap.iter().enumerate() {
            check_snapshot(name(i), s, &mut report);
        }
        if before == after && before.is_multiple_of(2) {
            if let Some((epoch_then, then)) = &previous
                && *epoch_then == before
            {
                for (i, (a, b)) in then.iter().zip(&snap).enumerate() {
                    check_growth(name(i), a, b);
                }
                report.growth_checks += 1;
            }
            previous = Some((before, snap));
        } else {
            previous = None;
        }
        tokio::task::yield_now().await;
    }
    report
}
