//! `GroupStats` from `stats` and `total_stats`, and the pool's `Debug` output.
//!
//! Single-threaded tests compare whole `GroupStats` structs after every step, so each field is
//! checked every time. The multi-threaded test at the end checks that a snapshot is never torn:
//! `running` and `waiting` always describe one instant.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use support::{admitted, refused};
use taskherd::{AcquireError, Group, GroupStats, TaskPool};
use tokio_test::task::spawn as mock;
use tokio_test::{assert_pending, assert_ready_err, assert_ready_ok};

type Pool = TaskPool<&'static str>;

/// A `GroupStats` literal: `(running, waiting, limit, admitted, rejected, peak)`, with no
/// reserved slots (see [`check`] for steps with waiters).
fn gs(
    running: usize,
    waiting: usize,
    limit: Option<usize>,
    admitted: u64,
    rejected: u64,
    peak: usize,
) -> GroupStats {
    GroupStats {
        running,
        waiting,
        reserved: 0,
        limit,
        admitted,
        rejected,
        peak,
    }
}

/// `stats` with `reserved` slots promised to waiters.
fn reserving(reserved: usize, stats: GroupStats) -> GroupStats {
    GroupStats { reserved, ..stats }
}

/// Asserts the statistics of every listed group and of the total after step `step`.
///
/// `reserved` is not part of this scenario's expectations (`tests/limit_changes.rs` pins it);
/// here it is only checked to be a part of `waiting`, and `0` for the total.
#[track_caller]
fn check(pool: &Pool, step: &str, groups: &[(&'static str, GroupStats)], total: GroupStats) {
    for (key, expected) in groups {
        let actual = pool.stats(key);
        assert!(
            actual.reserved <= actual.waiting,
            "stats({key:?}) after {step}"
        );
        let actual = GroupStats {
            reserved: 0,
            ..actual
        };
        assert_eq!(actual, *expected, "stats({key:?}) after {step}");
    }
    assert_eq!(pool.total_stats(), total, "total_stats() after {step}");
}

// ---------------------------------------------------------------------------------------------
// One deterministic scenario, step by step.
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn exact_statistics_through_a_deterministic_scenario() {
    // db: explicit limit 1. peers: default limit 2. total: 3.
    let pool = Pool::builder()
        .max_tasks(3)
        .default_limit(2)
        .limit("db", 1)
        .build();
    let (d, p) = (Some(1), Some(2));
    let t = Some(3);
    check(
        &pool,
        "build",
        &[
            ("db", gs(0, 0, d, 0, 0, 0)),
            ("peer", gs(0, 0, p, 0, 0, 0)),
            ("other", gs(0, 0, p, 0, 0, 0)),
        ],
        gs(0, 0, t, 0, 0, 0),
    );

    // 1. A permit in peer and db.
    let p1 = pool.try_acquire(["peer", "db"]).unwrap();
    check(
        &pool,
        "1: try_acquire(peer, db)",
        &[("db", gs(1, 0, d, 1, 0, 1)), ("peer", gs(1, 0, p, 1, 0, 1))],
        gs(1, 0, t, 1, 0, 1),
    );

    // 2. Refused by db (peer still has room): db and the total count the refusal.
    let err = pool.try_acquire(["peer", "db"]).unwrap_err();
    assert_eq!(err.full_group(), Some(&Group::Key("db")));
    check(
        &pool,
        "2: refused by db",
        &[("db", gs(1, 0, d, 1, 1, 1)), ("peer", gs(1, 0, p, 1, 0, 1))],
        gs(1, 0, t, 1, 1, 1),
    );

    // 3. A task in peer: peer is now full.
    let task = admitted(pool.try_spawn(["peer"], std::future::pending::<()>()));
    check(
        &pool,
        "3: try_spawn(peer)",
        &[("db", gs(1, 0, d, 1, 1, 1)), ("peer", gs(2, 0, p, 2, 0, 2))],
        gs(2, 0, t, 2, 1, 2),
    );

    // 4. Refused by peer.
    let err = refused(pool.try_spawn(["peer"], async {}));
    assert_eq!(err.full_group(), Some(&Group::Key("peer")));
    check(
        &pool,
        "4: refused by peer",
        &[("db", gs(1, 0, d, 1, 1, 1)), ("peer", gs(2, 0, p, 2, 1, 2))],
        gs(2, 0, t, 2, 2, 2),
    );

    // 5. A waiter on peer and other: reserves a slot of other, queues on peer; it asks for a
    // total slot only once it holds both (the total is the last gate).
    let mut waiter = mock(pool.acquire(["peer", "other"]));
    assert_pending!(waiter.poll());
    check(
        &pool,
        "5: acquire(peer, other) waits",
        &[
            ("db", gs(1, 0, d, 1, 1, 1)),
            ("peer", gs(2, 1, p, 2, 1, 2)),
            ("other", gs(0, 1, p, 0, 0, 0)),
        ],
        gs(2, 1, t, 2, 2, 2),
    );

    // 6. A permit in x: the total has 2 running and the waiter holds none of it: one more fits.
    let x = pool.try_acquire(["x"]).unwrap();
    check(
        &pool,
        "6: try_acquire(x)",
        &[("x", gs(1, 0, p, 1, 0, 1)), ("other", gs(0, 1, p, 0, 0, 0))],
        gs(3, 1, t, 3, 2, 3),
    );

    // 7. Refused by the total (3 running = 3): only the total counts it.
    let err = pool.try_acquire(["y"]).unwrap_err();
    assert_eq!(err.full_group(), Some(&Group::Total));
    check(
        &pool,
        "7: refused by the total",
        &[("y", gs(0, 0, p, 0, 0, 0)), ("x", gs(1, 0, p, 1, 0, 1))],
        gs(3, 1, t, 3, 3, 3),
    );

    // 8. x goes idle and is reclaimed: its history is gone.
    drop(x);
    check(
        &pool,
        "8: x released",
        &[("x", gs(0, 0, p, 0, 0, 0))],
        gs(2, 1, t, 3, 3, 3),
    );

    // 9. The task in peer is aborted: its slot goes to the waiter, which is granted at once.
    assert_eq!(pool.abort_group(&"peer"), 1);
    let aborted = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("an aborted task hung");
    assert!(aborted.unwrap_err().is_cancelled());
    assert!(waiter.is_woken());
    let after_grant = [
        ("db", gs(1, 0, d, 1, 1, 1)),
        ("peer", gs(2, 0, p, 3, 1, 2)),
        ("other", gs(1, 0, p, 1, 0, 1)),
    ];
    let total_after_grant = gs(2, 0, t, 4, 3, 3);
    check(&pool, "9: waiter granted", &after_grant, total_after_grant);

    // 10. Collecting the granted permit changes nothing.
    let p2 = assert_ready_ok!(waiter.poll());
    check(
        &pool,
        "10: permit collected",
        &after_grant,
        total_after_grant,
    );

    // 11. A waiter on db (full), then close: the waiter fails and counts in the total only.
    let mut db_waiter = mock(pool.acquire(["db"]));
    assert_pending!(db_waiter.poll());
    check(
        &pool,
        "11: acquire(db) waits",
        &[("db", gs(1, 1, d, 1, 1, 1))],
        gs(2, 1, t, 4, 3, 3),
    );
    assert!(pool.close());
    check(
        &pool,
        "11: close",
        &[("db", gs(1, 0, d, 1, 1, 1))],
        gs(2, 0, t, 4, 4, 3),
    );
    let _: AcquireError = assert_ready_err!(db_waiter.poll());
    check(
        &pool,
        "11: failed waiter polled",
        &[("db", gs(1, 0, d, 1, 1, 1))],
        gs(2, 0, t, 4, 4, 3),
    );

    // 12. A closed refusal counts in the total only, even on a full group.
    assert!(pool.try_acquire(["db"]).unwrap_err().is_closed());
    assert!(refused(pool.try_spawn(["peer"], async {})).is_closed());
    check(
        &pool,
        "12: closed refusals",
        &[("db", gs(1, 0, d, 1, 1, 1)), ("peer", gs(2, 0, p, 3, 1, 2))],
        gs(2, 0, t, 4, 6, 3),
    );

    // 13. Everything released: db keeps its history (explicit limit), peer and other are
    // reclaimed, the total keeps its history.
    drop(p1);
    drop(p2);
    check(
        &pool,
        "13: all released",
        &[
            ("db", gs(0, 0, d, 1, 1, 1)),
            ("peer", gs(0, 0, p, 0, 0, 0)),
            ("other", gs(0, 0, p, 0, 0, 0)),
        ],
        gs(0, 0, t, 4, 6, 3),
    );
}

// ---------------------------------------------------------------------------------------------
// One property per test.
// ---------------------------------------------------------------------------------------------

#[test]
fn peak_is_the_highest_running_count_seen() {
    let pool = Pool::new();
    let permits: Vec<_> = (0..3).map(|_| pool.try_acquire(["a"]).unwrap()).collect();
    assert_eq!(pool.stats(&"a"), gs(3, 0, None, 3, 0, 3));
    let keep = pool.try_acquire(["a"]).unwrap();
    drop(permits);
    assert_eq!(pool.stats(&"a"), gs(1, 0, None, 4, 0, 4));
    let again = pool.try_acquire(["a"]).unwrap();
    assert_eq!(pool.stats(&"a"), gs(2, 0, None, 5, 0, 4));
    assert_eq!(pool.total_stats(), gs(2, 0, None, 5, 0, 4));
    drop((keep, again));
    assert_eq!(pool.total_stats(), gs(0, 0, None, 5, 0, 4));
}

#[test]
fn rejected_counts_only_the_first_full_group_and_the_total() {
    let pool = Pool::builder()
        .limit("a", 5)
        .limit("b", 1)
        .limit("c", 1)
        .build();
    let _held = pool.try_acquire(["b", "c"]).unwrap();
    // Both b and c are full; b is named first.
    let err = pool.try_acquire(["a", "b", "c"]).unwrap_err();
    assert_eq!(err.full_group(), Some(&Group::Key("b")));
    assert_eq!(pool.stats(&"a"), gs(0, 0, Some(5), 0, 0, 0));
    assert_eq!(pool.stats(&"b"), gs(1, 0, Some(1), 1, 1, 1));
    assert_eq!(pool.stats(&"c"), gs(1, 0, Some(1), 1, 0, 1));
    assert_eq!(pool.total_stats().rejected, 1);
    // In the other order, c is reported and counted.
    let err = pool.try_acquire(["c", "b"]).unwrap_err();
    assert_eq!(err.full_group(), Some(&Group::Key("c")));
    assert_eq!(pool.stats(&"b").rejected, 1);
    assert_eq!(pool.stats(&"c").rejected, 1);
    assert_eq!(pool.total_stats().rejected, 2);
}

#[test]
fn a_refusal_by_the_total_counts_in_no_named_group() {
    let pool = Pool::builder().max_tasks(1).limit("a", 0).build();
    let _held = pool.try_acquire(["b"]).unwrap();
    // "a" is full too, but the total is checked first.
    let err = pool.try_acquire(["a", "b"]).unwrap_err();
    assert_eq!(err.full_group(), Some(&Group::Total));
    assert_eq!(pool.stats(&"a"), gs(0, 0, Some(0), 0, 0, 0));
    assert_eq!(pool.stats(&"b"), gs(1, 0, None, 1, 0, 1));
    assert_eq!(pool.total_stats(), gs(1, 0, Some(1), 1, 1, 1));
}

#[tokio::test]
async fn try_spawn_and_try_acquire_refusals_count_alike() {
    let pool = Pool::builder().limit("a", 1).build();
    let _held = pool.try_acquire(["a"]).unwrap();
    let _ = refused(pool.try_spawn(["a"], async {}));
    let _ = refused(pool.try_spawn_with(["a"], || async {}));
    let _ = pool.try_acquire(["a"]).unwrap_err();
    assert_eq!(pool.stats(&"a"), gs(1, 0, Some(1), 1, 3, 1));
    assert_eq!(pool.total_stats(), gs(1, 0, None, 1, 3, 1));
}

#[tokio::test]
async fn closed_refusals_count_in_the_total_only() {
    let pool = Pool::builder().limit("a", 3).build();
    pool.close();
    assert!(pool.try_acquire(["a"]).unwrap_err().is_closed());
    assert!(refused(pool.try_spawn(["a", "b"], async {})).is_closed());
    assert!(refused(pool.try_spawn_with(["a"], || async {})).is_closed());
    assert_eq!(pool.stats(&"a"), gs(0, 0, Some(3), 0, 0, 0));
    assert_eq!(pool.stats(&"b"), gs(0, 0, None, 0, 0, 0));
    assert_eq!(pool.total_stats(), gs(0, 0, None, 0, 3, 0));
}

#[test]
fn waiters_failed_by_close_count_once_each_in_the_total_only() {
    let pool = Pool::builder().limit("a", 1).build();
    let held = pool.try_acquire(["a"]).unwrap();
    let mut queued: Vec<_> = (0..3).map(|_| mock(pool.acquire(["a", "b"]))).collect();
    for waiter in &mut queued {
        assert_pending!(waiter.poll());
    }
    assert_eq!(pool.stats(&"a"), gs(1, 3, Some(1), 1, 0, 1));
    pool.close();
    assert_eq!(pool.stats(&"a"), gs(1, 0, Some(1), 1, 0, 1));
    // "b" had only waiters: it is reclaimed.
    assert_eq!(pool.stats(&"b"), gs(0, 0, None, 0, 0, 0));
    assert_eq!(pool.total_stats(), gs(1, 0, None, 1, 3, 1));
    // Polling the failed waiters does not count them again.
    for waiter in &mut queued {
        let _: AcquireError = assert_ready_err!(waiter.poll());
    }
    assert_eq!(pool.total_stats(), gs(1, 0, None, 1, 3, 1));
    drop(held);
    assert_eq!(pool.total_stats(), gs(0, 0, None, 1, 3, 1));
}

/// `GroupStats::rejected` documents the total's count as "every refused `try_*` call, full or
/// closed, plus every waiting admission that failed because the pool closed". A `spawn` or
/// `acquire` future first polled after `close` fails because the pool is closed, like a
/// `try_*` call would, but is counted nowhere.
#[tokio::test]
async fn spawn_and_acquire_refused_because_the_pool_is_closed_count_in_the_total() {
    let pool = Pool::new();
    pool.close();
    assert!(pool.acquire(["a"]).await.is_err());
    assert!(pool.spawn(["a"], async {}).await.is_err());
    assert_eq!(pool.stats(&"a"), gs(0, 0, None, 0, 0, 0));
    assert_eq!(pool.total_stats(), gs(0, 0, None, 0, 2, 0));
}

#[test]
fn a_granted_waiter_failed_by_close_counts_as_admitted_and_rejected() {
    let pool = Pool::builder().limit("a", 1).build();
    let held = pool.try_acquire(["a"]).unwrap();
    let mut waiter = mock(pool.acquire(["a"]));
    assert_pending!(waiter.poll());
    drop(held);
    // Granted at release time: admitted and running.
    assert_eq!(pool.stats(&"a"), gs(1, 0, Some(1), 2, 0, 1));
    assert_eq!(pool.total_stats(), gs(1, 0, None, 2, 0, 1));
    pool.close();
    let _: AcquireError = assert_ready_err!(waiter.poll());
    assert_eq!(pool.stats(&"a"), gs(0, 0, Some(1), 2, 0, 1));
    assert_eq!(pool.total_stats(), gs(0, 0, None, 2, 1, 1));
}

#[test]
fn a_reclaimed_group_loses_its_statistics() {
    let pool = Pool::builder().default_limit(1).build();
    let permit = pool.try_acquire(["a"]).unwrap();
    assert!(pool.try_acquire(["a"]).is_err());
    assert_eq!(pool.stats(&"a"), gs(1, 0, Some(1), 1, 1, 1));
    drop(permit);
    assert_eq!(pool.stats(&"a"), gs(0, 0, Some(1), 0, 0, 0));
    // A later use starts from zero.
    let permit = pool.try_acquire(["a"]).unwrap();
    assert_eq!(pool.stats(&"a"), gs(1, 0, Some(1), 1, 0, 1));
    drop(permit);
    // The total is never reclaimed.
    assert_eq!(pool.total_stats(), gs(0, 0, None, 2, 1, 1));
}

#[test]
fn a_group_with_an_explicit_limit_keeps_its_statistics_while_idle() {
    let pool = Pool::builder().limit("a", 2).build();
    let permits: Vec<_> = (0..2).map(|_| pool.try_acquire(["a"]).unwrap()).collect();
    assert!(pool.try_acquire(["a"]).is_err());
    drop(permits);
    assert_eq!(pool.stats(&"a"), gs(0, 0, Some(2), 2, 1, 2));
    // Changing the limit keeps them too.
    pool.set_limit("a", 3);
    assert_eq!(pool.stats(&"a"), gs(0, 0, Some(3), 2, 1, 2));
    // Clearing the limit of an idle group reclaims it.
    pool.clear_limit(&"a");
    assert_eq!(pool.stats(&"a"), gs(0, 0, None, 0, 0, 0));
}

#[test]
fn a_limit_set_while_running_keeps_statistics_after_the_group_goes_idle() {
    let pool = Pool::new();
    let permit = pool.try_acquire(["a"]).unwrap();
    pool.set_limit("a", 1);
    assert!(pool.try_acquire(["a"]).is_err());
    drop(permit);
    assert_eq!(pool.stats(&"a"), gs(0, 0, Some(1), 1, 1, 1));
}

#[test]
fn limit_reflects_the_explicit_limit_else_the_default_and_max_tasks_for_the_total() {
    let pool = Pool::new();
    assert_eq!(pool.stats(&"a").limit, None);
    assert_eq!(pool.total_stats().limit, None);

    pool.set_default_limit(3);
    assert_eq!(pool.stats(&"a").limit, Some(3));
    assert_eq!(
        pool.total_stats().limit,
        None,
        "the default limit applies to the total"
    );

    pool.set_limit("a", 7);
    assert_eq!(pool.stats(&"a").limit, Some(7));
    assert_eq!(pool.stats(&"b").limit, Some(3));
    pool.set_limit("a", 1);
    assert_eq!(pool.stats(&"a").limit, Some(1), "lower than the default");

    pool.set_max_tasks(9);
    assert_eq!(pool.total_stats().limit, Some(9));
    assert_eq!(pool.stats(&"a").limit, Some(1));

    pool.set_default_limit(None);
    assert_eq!(pool.stats(&"a").limit, Some(1));
    assert_eq!(pool.stats(&"b").limit, None);
    pool.clear_limit(&"a");
    assert_eq!(pool.stats(&"a").limit, None);
    pool.set_max_tasks(None);
    assert_eq!(pool.total_stats().limit, None);
}

#[test]
fn limit_follows_live_changes_while_the_group_runs() {
    let pool = Pool::builder().default_limit(4).build();
    let permit = pool.try_acquire(["a"]).unwrap();
    assert_eq!(pool.stats(&"a"), gs(1, 0, Some(4), 1, 0, 1));
    pool.set_default_limit(2);
    assert_eq!(pool.stats(&"a"), gs(1, 0, Some(2), 1, 0, 1));
    pool.set_limit("a", 0);
    assert_eq!(pool.stats(&"a"), gs(1, 0, Some(0), 1, 0, 1));
    drop(permit);
}

#[test]
fn waiting_counts_queued_and_partially_reserved_waiters() {
    let pool = Pool::builder().limit("a", 1).limit("b", 1).build();
    let held = pool.try_acquire(["a"]).unwrap();

    // Reserves b, queues on a.
    let mut partial = mock(pool.acquire(["b", "a"]));
    assert_pending!(partial.poll());
    assert_eq!(pool.stats(&"a"), gs(1, 1, Some(1), 1, 0, 1));
    assert_eq!(pool.stats(&"b"), reserving(1, gs(0, 1, Some(1), 0, 0, 0)));
    assert_eq!(pool.total_stats(), gs(1, 1, None, 1, 0, 1));

    // Queues on b (reserved for the older waiter); the total has room.
    let mut queued = mock(pool.acquire(["b"]));
    assert_pending!(queued.poll());
    assert_eq!(pool.stats(&"b"), reserving(1, gs(0, 2, Some(1), 0, 0, 0)));
    assert_eq!(pool.total_stats(), gs(1, 2, None, 1, 0, 1));
    // A try_* call finds no room in b: refused, and counted.
    assert!(pool.try_acquire(["b"]).is_err());
    assert_eq!(pool.stats(&"b"), reserving(1, gs(0, 2, Some(1), 0, 1, 0)));

    // Releasing a grants the older waiter: it no longer waits; it runs.
    drop(held);
    assert!(partial.is_woken());
    assert_eq!(pool.stats(&"a"), gs(1, 0, Some(1), 2, 0, 1));
    assert_eq!(pool.stats(&"b"), gs(1, 1, Some(1), 1, 1, 1));
    assert_eq!(pool.total_stats(), gs(1, 1, None, 2, 1, 1));

    // Dropping the younger waiter removes it from waiting.
    drop(queued);
    assert_eq!(pool.stats(&"b"), gs(1, 0, Some(1), 1, 1, 1));
    assert_eq!(pool.total_stats(), gs(1, 0, None, 2, 1, 1));
    drop(assert_ready_ok!(partial.poll()));
    assert_eq!(pool.total_stats(), gs(0, 0, None, 2, 1, 1));
}

#[tokio::test]
async fn waiting_spawns_count_as_waiting_then_as_admitted_running_tasks() {
    let pool = Pool::builder().limit("a", 1).build();
    let held = pool.try_acquire(["a"]).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let mut waiter = mock(pool.spawn(["a"], async move {
        let _ = rx.await;
    }));
    assert_pending!(waiter.poll());
    assert_eq!(pool.stats(&"a"), gs(1, 1, Some(1), 1, 0, 1));
    drop(held);
    assert_eq!(pool.stats(&"a"), gs(1, 0, Some(1), 2, 0, 1));
    let task = assert_ready_ok!(waiter.poll());
    assert_eq!(pool.stats(&"a"), gs(1, 0, Some(1), 2, 0, 1));
    tx.send(()).unwrap();
    task.await.unwrap();
    assert_eq!(pool.stats(&"a"), gs(0, 0, Some(1), 2, 0, 1));
    assert_eq!(pool.total_stats(), gs(0, 0, None, 2, 0, 1));
}

#[test]
fn stats_of_an_unknown_key_are_zeros_with_the_default_limit() {
    let pool = Pool::builder().default_limit(5).max_tasks(8).build();
    assert_eq!(pool.stats(&"never-seen"), gs(0, 0, Some(5), 0, 0, 0));
    assert_eq!(
        pool.stats(&"never-seen"),
        GroupStats {
            limit: Some(5),
            ..GroupStats::default()
        }
    );
    // Asking creates nothing.
    assert!(format!("{pool:?}").contains("groups: 0"));
    let without_default = Pool::new();
    assert_eq!(without_default.stats(&"never-seen"), GroupStats::default());
    assert_eq!(without_default.total_stats(), GroupStats::default());
}

#[tokio::test]
async fn task_admissions_count_like_permits() {
    let pool = Pool::new();
    let tasks: Vec<_> = (0..3)
        .map(|i| admitted(pool.try_spawn(["a", "b"], async move { i })))
        .collect();
    assert_eq!(pool.stats(&"a"), gs(3, 0, None, 3, 0, 3));
    for task in tasks {
        task.await.unwrap();
    }
    // Idle and without a limit: reclaimed.
    assert_eq!(pool.stats(&"a"), GroupStats::default());
    assert_eq!(pool.total_stats(), gs(0, 0, None, 3, 0, 3));
}

// ---------------------------------------------------------------------------------------------
// Debug.
// ---------------------------------------------------------------------------------------------

#[test]
fn debug_shows_totals_and_the_number_of_groups_but_no_key() {
    const KEYS: [&str; 3] = ["quokka-tenant-5521", "narwhal-peer-0917", "ocelot-db-3360"];
    for pool in [
        Pool::builder().max_tasks(10).default_limit(4).build(),
        // Even a pool that logs keys does not show them in Debug.
        Pool::builder()
            .max_tasks(10)
            .default_limit(4)
            .log_keys()
            .build(),
    ] {
        pool.set_limit(KEYS[2], 1);
        let _p1 = pool.try_acquire([KEYS[0], KEYS[1]]).unwrap();
        let _p2 = pool.try_acquire([KEYS[0], KEYS[2]]).unwrap();
        let mut waiter = mock(pool.acquire([KEYS[2]]));
        assert_pending!(waiter.poll());

        let text = format!("{pool:?}");
        for field in [
            "len",
            "waiting",
            "closed",
            "max_tasks",
            "default_limit",
            "groups",
        ] {
            assert!(text.contains(field), "Debug lacks {field:?}: {text}");
        }
        for key in KEYS {
            assert!(!text.contains(key), "Debug shows key {key:?}: {text}");
        }
        assert!(text.contains("len: 2"), "{text}");
        assert!(text.contains("waiting: 1"), "{text}");
        assert!(text.contains("closed: false"), "{text}");
        assert!(text.contains("max_tasks: Some(10)"), "{text}");
        assert!(text.contains("default_limit: Some(4)"), "{text}");
        assert!(text.contains("groups: 3"), "{text}");

        pool.close();
        let text = format!("{pool:#?}");
        assert!(text.contains("closed: true"), "{text}");
        assert!(text.contains("waiting: 0"), "{text}");
        for key in KEYS {
            assert!(!text.contains(key), "Debug shows key {key:?}: {text}");
        }
    }
}

#[test]
fn debug_of_a_pool_with_many_groups_stays_short() {
    let pool = TaskPool::<String>::new();
    let permits: Vec<_> = (0..1000)
        .map(|i| pool.try_acquire([format!("key-{i}")]).unwrap())
        .collect();
    let text = format!("{pool:?}");
    assert!(text.contains("groups: 1000"), "{text}");
    assert!(!text.contains("key-"), "{text}");
    assert!(text.len() < 200, "Debug grows with the groups: {text}");
    drop(permits);
}

// ---------------------------------------------------------------------------------------------
// Snapshots are never torn under concurrency.
// ---------------------------------------------------------------------------------------------

/// Workers acquire a permit in "hot" (limit `LIMIT`) through the waiting path only, hold it
/// across a few yields and drop it, while a plain thread takes snapshots. Around every
/// snapshot the thread reads four monotonic counters the workers keep:
///
/// - `started` (before `acquire` is first polled) and `finished` (after the permit dropped):
///   every caller counted in `running + waiting` has started and not finished, so
///   `running + waiting <= started(after) - finished(before)`;
/// - `holding` (after the permit arrived) and `released` (before it is dropped): every such
///   caller is counted in `running`, so `running >= holding(before) - released(after)`.
///
/// And since nobody else uses the group, a torn snapshot is the only way to see waiters queued
/// on "hot" while it has free room: `waiting > 0` implies `running == LIMIT`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshots_are_never_torn_under_concurrency() {
    const LIMIT: usize = 3;
    const WORKERS: usize = 12;
    const ROUNDS: usize = 300;

    #[derive(Default)]
    struct Counters {
        started: AtomicU64,
        holding: AtomicU64,
        released: AtomicU64,
        finished: AtomicU64,
    }

    let pool = Pool::builder().limit("hot", LIMIT).build();
    let counters = Arc::new(Counters::default());
    let done = Arc::new(AtomicBool::new(false));

    let checker = {
        let (pool, counters, done) = (pool.clone(), Arc::clone(&counters), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut snapshots = 0u64;
            let mut previous = GroupStats::default();
            loop {
                let stop = done.load(Ordering::SeqCst);
                let finished_before = counters.finished.load(Ordering::SeqCst);
                let holding_before = counters.holding.load(Ordering::SeqCst);
                let hot = pool.stats(&"hot");
                let total = pool.total_stats();
                let released_after = counters.released.load(Ordering::SeqCst);
                let started_after = counters.started.load(Ordering::SeqCst);

                let upper = usize::try_from(started_after - finished_before).unwrap();
                let lower = usize::try_from(holding_before.saturating_sub(released_after)).unwrap();
                assert!(hot.running <= LIMIT, "{hot:?}");
                assert!(hot.peak <= LIMIT, "{hot:?}");
                assert!(hot.running + hot.waiting <= upper, "{hot:?} > {upper}");
                assert!(hot.running >= lower, "{hot:?} < {lower}");
                if hot.waiting > 0 {
                    assert_eq!(hot.running, LIMIT, "torn or unpumped snapshot: {hot:?}");
                }
                assert_eq!(hot.limit, Some(LIMIT));
                assert_eq!(hot.rejected, 0);
                // The total has no limit: its waiters are the same callers, holding a slot.
                assert!(total.running <= LIMIT, "{total:?}");
                assert!(
                    total.running + total.waiting <= upper,
                    "{total:?} > {upper}"
                );
                assert!(total.running >= lower, "{total:?} < {lower}");
                // Every caller holding a permit was admitted; no caller was admitted twice.
                assert!(hot.admitted >= holding_before, "{hot:?}");
                assert!(hot.admitted <= started_after, "{hot:?}");
                // "hot" has an explicit limit, so it is never reclaimed: its history only grows.
                assert!(
                    hot.admitted >= previous.admitted,
                    "{hot:?} after {previous:?}"
                );
                assert!(hot.peak >= previous.peak, "{hot:?} after {previous:?}");
                previous = hot;
                snapshots += 1;
                if stop {
                    return snapshots;
                }
            }
        })
    };

    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let (pool, counters) = (pool.clone(), Arc::clone(&counters));
        workers.push(tokio::spawn(async move {
            for _ in 0..ROUNDS {
                counters.started.fetch_add(1, Ordering::SeqCst);
                let permit = pool.acquire(["hot"]).await.expect("the pool stays open");
                counters.holding.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
                tokio::task::yield_now().await;
                counters.released.fetch_add(1, Ordering::SeqCst);
                drop(permit);
                counters.finished.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    for worker in workers {
        tokio::time::timeout(Duration::from_secs(60), worker)
            .await
            .expect("a worker hung")
            .expect("a worker panicked");
    }
    done.store(true, Ordering::SeqCst);
    let snapshots = checker.join().expect("an invariant failed in a snapshot");
    assert!(snapshots > 0);

    let rounds = u64::try_from(WORKERS * ROUNDS).unwrap();
    let hot = pool.stats(&"hot");
    assert_eq!(
        (hot.running, hot.waiting, hot.admitted, hot.rejected),
        (0, 0, rounds, 0)
    );
    assert!((1..=LIMIT).contains(&hot.peak));
    let total = pool.total_stats();
    assert_eq!(
        (total.running, total.waiting, total.admitted, total.rejected),
        (0, 0, rounds, 0)
    );
    assert!((1..=LIMIT).contains(&total.peak));
}
