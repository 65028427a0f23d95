//! Limit changes, poll by poll (issue 9, items 1 and 4).
//!
//! Item 1: lowering a limit (`set_limit`, `clear_limit`, `set_max_tasks`, `set_default_limit`,
//! `set_limits`) takes back the slots reserved for waiters above the new limit, youngest waiter
//! first; each such waiter goes back to its place in the group's queue, ahead of younger
//! waiters; running work is never cancelled. At every snapshot of a named group:
//! `reserved == 0 || running + reserved <= limit`, and if somebody is queued for a slot of it
//! (`waiting > reserved`), `running + reserved >= limit`.
//!
//! Item 4: `set_limits` applies a batch of changes as one: no admission happens under a mix of
//! old and new limits, the same key twice means the last one wins, and an empty batch changes
//! nothing.
//!
//! Every waiting future is driven by hand through `tokio_test::task::spawn`, so each step shows
//! exactly which waiter was granted.

use taskherd::{AcquireError, GroupStats, LimitChanges, Permit, TaskPool};
use tokio_test::task::{Spawn, spawn as mock};
use tokio_test::{assert_pending, assert_ready, assert_ready_ok};

type Pool = TaskPool<&'static str>;

/// A waiting `acquire` under a mock task; one future type whatever the number of groups.
fn wait(
    pool: &Pool,
    groups: &[&'static str],
) -> Spawn<impl Future<Output = Result<Permit<&'static str>, AcquireError>> + use<>> {
    mock(pool.acquire(groups.to_vec()))
}

/// Slots of `stats` reserved for waiters that still wait elsewhere.
fn reserved(stats: &GroupStats) -> usize {
    stats.reserved
}

/// Asserts `(running, reserved, waiting)` of named group `key`, that `task_count` and
/// `waiting_count` agree with them, and the two invariants of item 1.
#[track_caller]
fn group(pool: &Pool, key: &'static str, running: usize, reserved_slots: usize, waiting: usize) {
    let stats = pool.stats(&key);
    assert_eq!(
        (stats.running, reserved(&stats), stats.waiting),
        (running, reserved_slots, waiting),
        "group {key:?}: (running, reserved, waiting), stats {stats:?}"
    );
    assert_eq!(pool.task_count(&key), running, "task_count({key:?})");
    assert_eq!(pool.waiting_count(&key), waiting, "waiting_count({key:?})");
    invariants(key, &stats);
}

/// The two invariants of a named group's snapshot (issue 9, item 1).
#[track_caller]
fn invariants(key: &str, stats: &GroupStats) {
    let Some(limit) = stats.limit else {
        return;
    };
    let held = stats.running + reserved(stats);
    if reserved(stats) > 0 {
        assert!(
            held <= limit,
            "group {key:?}: reservations above the limit: {stats:?}"
        );
    }
    if stats.waiting > reserved(stats) {
        assert!(
            held >= limit,
            "group {key:?}: free room while somebody queues: {stats:?}"
        );
    }
}

/// Nothing is left: no admission, no waiter, no reservation; closing and waiting resolve.
#[track_caller]
fn finish(pool: &Pool) {
    assert_eq!(pool.len(), 0, "len()");
    assert_eq!(pool.waiting_len(), 0, "waiting_len()");
    assert_eq!(reserved(&pool.total_stats()), 0, "total reserved");
    assert!(pool.close());
    let mut idle = mock(pool.wait());
    assert_ready!(idle.poll());
}

// ---------------------------------------------------------------------------------------------
// Item 1: a lowered limit binds slots promised to waiters.
// ---------------------------------------------------------------------------------------------

/// The case of the issue: db at 2 with one permit held, a waiter for [db, b] reserves db and
/// queues on b; db goes to 0; when b frees, the waiter is not granted; when db is raised to 2
/// again (the permit still held), it is.
#[test]
fn the_issue_case_a_lowered_limit_takes_back_the_reservation() {
    let pool = Pool::builder().limit("db", 2).limit("b", 1).build();
    let held_db = pool.try_acquire(["db"]).unwrap();
    let held_b = pool.try_acquire(["b"]).unwrap();
    let mut waiter = wait(&pool, &["db", "b"]);
    assert_pending!(waiter.poll());
    group(&pool, "db", 1, 1, 1);
    group(&pool, "b", 1, 0, 1);

    pool.set_limit("db", 0);
    group(&pool, "db", 1, 0, 1);
    group(&pool, "b", 1, 0, 1);
    assert!(pool.try_acquire(["db"]).is_err(), "db is at 0");
    assert_pending!(waiter.poll());

    // b's slot goes to the waiter (the oldest on b) as a reservation; it still misses db.
    drop(held_b);
    group(&pool, "b", 0, 1, 1);
    group(&pool, "db", 1, 0, 1);
    assert_pending!(waiter.poll(), "no new work in db under a limit of 0");
    assert_eq!(pool.task_count(&"db"), 1);
    assert_eq!(pool.len(), 1);

    pool.set_limit("db", 2);
    assert!(waiter.is_woken(), "raising db completes the waiter");
    let permit = assert_ready_ok!(waiter.poll());
    group(&pool, "db", 2, 0, 0);
    group(&pool, "b", 1, 0, 0);
    drop(permit);
    drop(held_db);
    group(&pool, "db", 0, 0, 0);
    finish(&pool);
}

/// Two waiters each reserve a db slot; lowering db by one takes back the younger one's, the
/// older keeps its own; raising db again gives the slot back to that younger waiter before
/// an even younger one.
#[test]
fn the_youngest_reservation_is_taken_back_first_and_given_back_first() {
    let pool = Pool::builder()
        .limit("db", 2)
        .limit("b", 1)
        .limit("c", 1)
        .build();
    let held_b = pool.try_acquire(["b"]).unwrap();
    let held_c = pool.try_acquire(["c"]).unwrap();
    let mut older = wait(&pool, &["db", "b"]);
    assert_pending!(older.poll());
    let mut younger = wait(&pool, &["db", "c"]);
    assert_pending!(younger.poll());
    group(&pool, "db", 0, 2, 2);

    pool.set_limit("db", 1);
    group(&pool, "db", 0, 1, 2);
    assert_pending!(older.poll());
    assert_pending!(younger.poll());

    // c frees: the younger waiter reserves it but lost its db slot, so it is not granted.
    drop(held_c);
    group(&pool, "c", 0, 1, 1);
    assert_pending!(
        younger.poll(),
        "the younger waiter's db slot was taken back"
    );
    group(&pool, "db", 0, 1, 2);

    // b frees: the older waiter kept its db slot, so it is granted.
    drop(held_b);
    assert!(older.is_woken());
    let older_permit = assert_ready_ok!(older.poll());
    group(&pool, "db", 1, 0, 1);
    group(&pool, "b", 1, 0, 0);

    // An even younger waiter on db queues behind the one that lost its slot.
    let mut youngest = wait(&pool, &["db"]);
    assert_pending!(youngest.poll());
    group(&pool, "db", 1, 0, 2);

    pool.set_limit("db", 2);
    assert!(
        younger.is_woken(),
        "the slot goes back to the waiter that lost it"
    );
    let younger_permit = assert_ready_ok!(younger.poll());
    assert_pending!(youngest.poll());
    group(&pool, "db", 2, 0, 1);
    group(&pool, "c", 1, 0, 0);

    drop(older_permit);
    assert!(youngest.is_woken());
    let youngest_permit = assert_ready_ok!(youngest.poll());
    group(&pool, "db", 2, 0, 0);
    drop((younger_permit, youngest_permit));
    finish(&pool);
}

/// After the take-back, the waiter keeps its turn: a slot freed by a release goes to it, not to
/// a newer waiter on db.
#[test]
fn a_waiter_whose_reservation_was_taken_back_keeps_its_turn_on_release() {
    let pool = Pool::builder().limit("db", 2).limit("b", 1).build();
    let held_db = pool.try_acquire(["db"]).unwrap();
    let held_b = pool.try_acquire(["b"]).unwrap();
    let mut first = wait(&pool, &["db", "b"]);
    assert_pending!(first.poll());
    group(&pool, "db", 1, 1, 1);

    // 1 running + 1 reserved is above the new limit of 1: the reservation is taken back.
    pool.set_limit("db", 1);
    group(&pool, "db", 1, 0, 1);

    let mut second = wait(&pool, &["db"]);
    assert_pending!(second.poll());
    group(&pool, "db", 1, 0, 2);

    // b frees: `first` reserves it, but it no longer holds db.
    drop(held_b);
    group(&pool, "b", 0, 1, 1);
    assert_pending!(first.poll(), "db is full: the taken-back slot is not used");
    assert_eq!(pool.task_count(&"db"), 1);

    // db frees: the slot goes to `first` (ahead of `second`), which now holds everything.
    drop(held_db);
    assert!(first.is_woken());
    let first_permit = assert_ready_ok!(first.poll());
    assert_pending!(second.poll(), "the newer waiter must not get db first");
    assert!(pool.try_acquire(["db"]).is_err(), "no barging either");
    group(&pool, "db", 1, 0, 1);

    drop(first_permit);
    assert!(second.is_woken());
    let second_permit = assert_ready_ok!(second.poll());
    drop(second_permit);
    finish(&pool);
}

/// Several waiters lose their reservations at once; they go back to the queue in arrival
/// order, ahead of a waiter that was queued on db before the take-back, and raising the limit
/// hands the slots out in that order.
#[test]
fn several_taken_back_waiters_keep_their_arrival_order() {
    let pool = Pool::builder().limit("db", 3).limit("b", 1).build();
    let held_b = pool.try_acquire(["b"]).unwrap();
    let mut w1 = wait(&pool, &["db", "b"]);
    let mut w2 = wait(&pool, &["db", "b"]);
    let mut w3 = wait(&pool, &["db", "b"]);
    for w in [&mut w1, &mut w2, &mut w3] {
        assert_pending!(w.poll());
    }
    let mut w4 = wait(&pool, &["db"]);
    assert_pending!(w4.poll());
    group(&pool, "db", 0, 3, 4);
    group(&pool, "b", 1, 0, 3);

    pool.set_limit("db", 0);
    group(&pool, "db", 0, 0, 4);

    // b frees and goes to w1, which lost db: not granted.
    drop(held_b);
    group(&pool, "b", 0, 1, 3);
    assert_pending!(w1.poll(), "db is at 0");
    assert_eq!(pool.task_count(&"db"), 0);

    // Two db slots: w1 (granted: it holds b) and w2 (reserved), the oldest two.
    pool.set_limit("db", 2);
    assert!(w1.is_woken());
    let p1 = assert_ready_ok!(w1.poll());
    // w4 needs only db: had it got a slot, it would be granted.
    assert_pending!(w4.poll(), "the slots go to w1 and w2, the oldest");
    assert_pending!(w2.poll());
    assert_pending!(w3.poll());
    group(&pool, "db", 1, 1, 3);
    group(&pool, "b", 1, 0, 2);

    drop(p1);
    // b goes to w2, which holds db: granted. db's freed slot goes to w3 (ahead of w4).
    assert!(w2.is_woken());
    let p2 = assert_ready_ok!(w2.poll());
    assert_pending!(w4.poll());
    assert_pending!(w3.poll());
    group(&pool, "db", 1, 1, 2);
    group(&pool, "b", 1, 0, 1);

    drop(p2);
    let p3 = assert_ready_ok!(w3.poll());
    let p4 = assert_ready_ok!(w4.poll());
    group(&pool, "db", 2, 0, 0);
    drop((p3, p4));
    finish(&pool);
}

/// Lowering limits never cancels running work: permits stay counted, spawned tasks keep
/// running; new work is refused until the counts are below the new limits.
#[tokio::test(flavor = "current_thread")]
async fn running_work_is_never_cancelled_by_a_lower_limit() {
    let pool = Pool::builder().max_tasks(4).limit("db", 3).build();
    let p1 = pool.try_acquire(["db"]).unwrap();
    let p2 = pool.try_acquire(["db"]).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = pool
        .try_spawn(["db"], async move {
            let _ = rx.await;
            "done"
        })
        .unwrap();
    tokio::task::yield_now().await;

    pool.set_limit("db", 0);
    pool.set_max_tasks(0);
    pool.set_default_limit(0);
    pool.set_limits(LimitChanges::new().max_tasks(0).limit("db", 0));
    tokio::task::yield_now().await;
    assert!(!task.is_finished(), "the running task was not cancelled");
    assert_eq!(pool.task_count(&"db"), 3);
    assert_eq!(pool.len(), 3);
    assert!(pool.try_acquire(["db"]).is_err());
    assert!(pool.try_acquire([]).is_err());

    drop(p1);
    assert_eq!(pool.task_count(&"db"), 2, "the other permit still counts");
    tx.send(()).unwrap();
    assert_eq!(task.await.unwrap(), "done");
    drop(p2);
    finish(&pool);
}

/// The same take-back through `set_default_limit`, for a group without an explicit limit.
#[test]
fn a_lowered_default_limit_takes_back_reservations() {
    let pool = Pool::builder().default_limit(2).limit("b", 1).build();
    let held_db = pool.try_acquire(["db"]).unwrap();
    let held_b = pool.try_acquire(["b"]).unwrap();
    let mut waiter = wait(&pool, &["db", "b"]);
    assert_pending!(waiter.poll());
    group(&pool, "db", 1, 1, 1);

    pool.set_default_limit(0);
    group(&pool, "db", 1, 0, 1);
    group(&pool, "b", 1, 0, 1);

    drop(held_b);
    group(&pool, "b", 0, 1, 1);
    assert_pending!(
        waiter.poll(),
        "no new work in db under a default limit of 0"
    );
    assert_eq!(pool.task_count(&"db"), 1);

    pool.set_default_limit(2);
    assert!(waiter.is_woken());
    let permit = assert_ready_ok!(waiter.poll());
    group(&pool, "db", 2, 0, 0);
    drop((permit, held_db));
    finish(&pool);
}

/// Removing the default limit (None) is a raise: the taken-back waiter is granted.
#[test]
fn removing_the_default_limit_gives_the_slot_back() {
    let pool = Pool::builder().default_limit(1).limit("b", 1).build();
    let held_b = pool.try_acquire(["b"]).unwrap();
    let mut waiter = wait(&pool, &["db", "b"]);
    assert_pending!(waiter.poll());
    group(&pool, "db", 0, 1, 1);
    pool.set_default_limit(0);
    group(&pool, "db", 0, 0, 1);
    drop(held_b);
    assert_pending!(waiter.poll());
    pool.set_default_limit(None);
    let permit = assert_ready_ok!(waiter.poll());
    group(&pool, "db", 1, 0, 0);
    drop(permit);
    finish(&pool);
}

/// `clear_limit` lowers the effective limit when the default is lower than the explicit one:
/// that takes reservations back too.
#[test]
fn clearing_a_higher_explicit_limit_takes_back_reservations() {
    let pool = Pool::builder()
        .default_limit(1)
        .limit("db", 3)
        .limit("b", 1)
        .build();
    let held_db = pool.try_acquire(["db"]).unwrap();
    let held_b = pool.try_acquire(["b"]).unwrap();
    let mut waiter = wait(&pool, &["db", "b"]);
    assert_pending!(waiter.poll());
    group(&pool, "db", 1, 1, 1);

    pool.clear_limit(&"db");
    assert_eq!(pool.effective_limit(&"db"), Some(1));
    group(&pool, "db", 1, 0, 1);
    drop(held_b);
    assert_pending!(waiter.poll());
    assert_eq!(pool.task_count(&"db"), 1);

    pool.set_limit("db", 2);
    let permit = assert_ready_ok!(waiter.poll());
    group(&pool, "db", 2, 0, 0);
    drop((permit, held_db));
    pool.clear_limit(&"db");
    finish(&pool);
}

/// The total is the last gate: a waiter whose named reservation is taken back stops waiting for
/// the total, so a total slot that frees goes to the next waiter queued on the total.
#[test]
fn a_waiter_that_lost_a_named_slot_leaves_the_totals_queue() {
    let pool = Pool::builder().max_tasks(1).limit("db", 1).build();
    let held = pool.try_acquire([]).unwrap();
    let mut on_db = wait(&pool, &["db"]);
    assert_pending!(on_db.poll());
    group(&pool, "db", 0, 1, 1);
    let mut on_total = wait(&pool, &[]);
    assert_pending!(on_total.poll());
    assert_eq!(pool.waiting_len(), 2);

    pool.set_limit("db", 0);
    group(&pool, "db", 0, 0, 1);

    drop(held);
    assert_pending!(on_db.poll(), "db is at 0: no new work in db");
    assert_eq!(pool.task_count(&"db"), 0);
    assert!(
        on_total.is_woken(),
        "the total's slot goes to the next waiter on the total"
    );
    let total_permit = assert_ready_ok!(on_total.poll());
    assert_eq!(pool.len(), 1);

    // db is raised: the waiter holds db again and queues on the (full) total.
    pool.set_limit("db", 1);
    group(&pool, "db", 0, 1, 1);
    assert_pending!(on_db.poll());
    drop(total_permit);
    assert!(on_db.is_woken());
    let db_permit = assert_ready_ok!(on_db.poll());
    group(&pool, "db", 1, 0, 0);
    drop(db_permit);
    finish(&pool);
}

/// Lowering the total: running work stays, waiters on the total keep their order, and the
/// total never keeps reservations at rest (it is the last gate).
#[test]
fn a_lowered_max_tasks_keeps_waiters_in_order() {
    let pool = Pool::builder().max_tasks(2).limit("db", 1).build();
    let p1 = pool.try_acquire([]).unwrap();
    let p2 = pool.try_acquire([]).unwrap();
    let mut first = wait(&pool, &[]);
    assert_pending!(first.poll());
    let mut second = wait(&pool, &["db"]);
    assert_pending!(second.poll());
    group(&pool, "db", 0, 1, 1);
    assert_eq!(reserved(&pool.total_stats()), 0);

    pool.set_max_tasks(1);
    assert_eq!(pool.len(), 2, "nothing running is cancelled");
    drop(p1);
    assert_pending!(first.poll(), "1 running under a total of 1: no room");
    assert_pending!(second.poll());
    assert_eq!(reserved(&pool.total_stats()), 0);

    drop(p2);
    let first_permit = assert_ready_ok!(first.poll());
    assert_pending!(second.poll());

    pool.set_max_tasks(0);
    drop(first_permit);
    assert_pending!(second.poll(), "the total is at 0");
    assert_eq!(pool.len(), 0);
    group(&pool, "db", 0, 1, 1);

    pool.set_max_tasks(None);
    let second_permit = assert_ready_ok!(second.poll());
    assert_eq!(pool.len(), 1);
    drop(second_permit);
    finish(&pool);
}

/// A spawn waiting for a slot is taken back like an acquire; the granted task then runs.
#[tokio::test(flavor = "current_thread")]
async fn a_waiting_spawn_loses_its_reservation_too() {
    let pool = Pool::builder().limit("db", 1).limit("b", 1).build();
    let held_b = pool.try_acquire(["b"]).unwrap();
    let mut job = mock(pool.spawn(["db", "b"], async { 7 }));
    assert_pending!(job.poll());
    group(&pool, "db", 0, 1, 1);
    pool.set_limit("db", 0);
    group(&pool, "db", 0, 0, 1);
    drop(held_b);
    assert_pending!(job.poll());
    assert_eq!(pool.task_count(&"db"), 0);
    pool.set_limit("db", 1);
    let handle = match assert_ready!(job.poll()) {
        Ok(handle) => handle,
        Err(_) => panic!("the pool is open"),
    };
    assert_eq!(handle.await.unwrap(), 7);
    finish(&pool);
}

// ---------------------------------------------------------------------------------------------
// Item 4: set_limits applies a batch as one change.
// ---------------------------------------------------------------------------------------------

/// `n` waiters on `key`, each polled once.
fn waiters(
    pool: &Pool,
    key: &'static str,
    n: usize,
) -> Vec<Spawn<impl Future<Output = Result<Permit<&'static str>, AcquireError>> + use<>>> {
    (0..n)
        .map(|_| {
            let mut waiter = wait(pool, &[key]);
            assert_pending!(waiter.poll());
            waiter
        })
        .collect()
}

/// The case of the issue: default 1, g explicit 1 with 1 running and 9 waiting; raising the
/// default with g unchanged admits nobody new in g (peak stays 1).
#[test]
fn raising_the_default_with_g_unchanged_admits_nobody_in_g() {
    let pool = Pool::builder().default_limit(1).limit("g", 1).build();
    let running = pool.try_acquire(["g"]).unwrap();
    let mut queued = waiters(&pool, "g", 9);
    group(&pool, "g", 1, 0, 9);

    pool.set_limits(LimitChanges::new().default_limit(10).limit("g", 1));
    for waiter in &mut queued {
        assert_pending!(waiter.poll());
    }
    group(&pool, "g", 1, 0, 9);
    assert_eq!(pool.stats(&"g").peak, 1, "g never ran more than its limit");
    assert_eq!(pool.default_limit(), Some(10));
    assert_eq!(pool.limit(&"g"), Some(1));
    assert_eq!(pool.effective_limit(&"g"), Some(1));
    assert_eq!(pool.effective_limit(&"other"), Some(10));

    drop(running);
    let first = assert_ready_ok!(queued[0].poll());
    for waiter in &mut queued[1..] {
        assert_pending!(waiter.poll());
    }
    assert_eq!(pool.stats(&"g").peak, 1);
    drop(first);
    drop(queued);
    pool.clear_limit(&"g");
    finish(&pool);
}

/// What the command-line runner does when its limits file is replaced: clear every explicit
/// limit, set the new default, set the file's limits again. As one batch, g never runs above 1.
#[test]
fn a_reload_that_clears_and_sets_again_admits_nobody_in_g() {
    let pool = Pool::builder().default_limit(1).limit("g", 1).build();
    let running = pool.try_acquire(["g"]).unwrap();
    let mut queued = waiters(&pool, "g", 9);

    pool.set_limits(
        LimitChanges::new()
            .clear_limit("g")
            .default_limit(10)
            .limit("g", 1),
    );
    for waiter in &mut queued {
        assert_pending!(waiter.poll());
    }
    group(&pool, "g", 1, 0, 9);
    assert_eq!(pool.stats(&"g").peak, 1, "g never ran more than its limit");
    assert_eq!(pool.limit(&"g"), Some(1));
    assert_eq!(pool.default_limit(), Some(10));
    drop(running);
    drop(queued);
    pool.clear_limit(&"g");
    finish(&pool);
}

/// Lowering g to 0 and raising the total in one batch: no g job starts, while a waiter on the
/// total alone gets the total's new room.
#[test]
fn lowering_a_group_and_raising_the_total_in_one_batch_starts_no_job_in_the_group() {
    let pool = Pool::builder().max_tasks(1).limit("g", 5).build();
    let held = pool.try_acquire([]).unwrap();
    let mut on_g = wait(&pool, &["g"]);
    assert_pending!(on_g.poll());
    let mut on_total = wait(&pool, &[]);
    assert_pending!(on_total.poll());
    group(&pool, "g", 0, 1, 1);

    pool.set_limits(LimitChanges::new().max_tasks(5).limit("g", 0));
    assert_pending!(on_g.poll(), "no g job starts");
    assert_eq!(pool.task_count(&"g"), 0);
    group(&pool, "g", 0, 0, 1);
    let total_permit = assert_ready_ok!(on_total.poll());
    assert_eq!(pool.max_tasks(), Some(5));
    assert_eq!(pool.limit(&"g"), Some(0));
    assert!(pool.try_acquire(["g"]).is_err());
    let spare = pool
        .try_acquire([])
        .expect("the total has room and nobody queues on it");

    drop((held, total_permit, spare));
    assert_pending!(on_g.poll());
    pool.set_limits(LimitChanges::new().limit("g", None));
    let g_permit = assert_ready_ok!(on_g.poll());
    assert_eq!(pool.limit(&"g"), None);
    drop(g_permit);
    finish(&pool);
}

/// The issue case as one batch: db lowered to 0 and b raised together; the waiter gets b but
/// not db, whatever the order of the changes in the batch.
#[test]
fn lowering_db_and_raising_b_in_one_batch_grants_nothing() {
    for db_first in [true, false] {
        let pool = Pool::builder().limit("db", 2).limit("b", 1).build();
        let held_db = pool.try_acquire(["db"]).unwrap();
        let held_b = pool.try_acquire(["b"]).unwrap();
        let mut waiter = wait(&pool, &["db", "b"]);
        assert_pending!(waiter.poll());
        group(&pool, "db", 1, 1, 1);
        let changes = if db_first {
            LimitChanges::new().limit("db", 0).limit("b", 2)
        } else {
            LimitChanges::new().limit("b", 2).limit("db", 0)
        };
        pool.set_limits(changes);
        assert_pending!(waiter.poll(), "db_first: {db_first}");
        group(&pool, "db", 1, 0, 1);
        group(&pool, "b", 1, 1, 1);
        pool.set_limits(LimitChanges::new().limit("db", 2));
        let permit = assert_ready_ok!(waiter.poll());
        drop((permit, held_db, held_b));
        finish(&pool);
    }
}

/// `clear_limit` in a batch: with a lower default set in the same batch, nobody is admitted
/// under the higher default of the moment between the two.
#[test]
fn clear_limit_in_a_batch_uses_the_batchs_default() {
    let pool = Pool::builder().default_limit(5).limit("g", 1).build();
    let running = pool.try_acquire(["g"]).unwrap();
    let mut queued = waiters(&pool, "g", 3);

    pool.set_limits(LimitChanges::new().clear_limit("g").default_limit(1));
    for waiter in &mut queued {
        assert_pending!(waiter.poll());
    }
    assert_eq!(pool.limit(&"g"), None);
    assert_eq!(pool.effective_limit(&"g"), Some(1));
    assert_eq!(pool.default_limit(), Some(1));
    group(&pool, "g", 1, 0, 3);
    assert_eq!(pool.stats(&"g").peak, 1);

    // Raising the default now admits exactly two more, oldest first.
    pool.set_limits(LimitChanges::new().default_limit(3));
    let a = assert_ready_ok!(queued[0].poll());
    let b = assert_ready_ok!(queued[1].poll());
    assert_pending!(queued[2].poll());
    group(&pool, "g", 3, 0, 1);
    drop((running, a, b));
    let c = assert_ready_ok!(queued[2].poll());
    drop(c);
    finish(&pool);
}

/// The same key twice in one batch: the last one wins, and nothing is admitted under the
/// first.
#[test]
fn the_same_key_twice_in_a_batch_the_last_wins() {
    let pool = Pool::builder().limit("g", 1).build();
    let running = pool.try_acquire(["g"]).unwrap();
    let mut queued = waiters(&pool, "g", 3);

    pool.set_limits(LimitChanges::new().limit("g", 3).limit("g", 0));
    assert_eq!(pool.limit(&"g"), Some(0));
    for waiter in &mut queued {
        assert_pending!(waiter.poll());
    }
    assert_eq!(pool.stats(&"g").peak, 1);

    pool.set_limits(LimitChanges::new().limit("g", 0).limit("g", 3));
    assert_eq!(pool.limit(&"g"), Some(3));
    let a = assert_ready_ok!(queued[0].poll());
    let b = assert_ready_ok!(queued[1].poll());
    assert_pending!(queued[2].poll());
    group(&pool, "g", 3, 0, 1);

    pool.set_limits(LimitChanges::new().limit("g", 5).clear_limit("g"));
    assert_eq!(pool.limit(&"g"), None);
    assert_eq!(pool.effective_limit(&"g"), None);
    let c = assert_ready_ok!(queued[2].poll());
    group(&pool, "g", 4, 0, 0);

    pool.set_limits(LimitChanges::new().max_tasks(1).max_tasks(None));
    assert_eq!(pool.max_tasks(), None);
    pool.set_limits(LimitChanges::new().default_limit(None).default_limit(2));
    assert_eq!(pool.default_limit(), Some(2));
    drop((running, a, b, c));
    finish(&pool);
}

/// An empty batch changes nothing: limits, counts and statistics stay as they were, nobody is
/// admitted. An unset setting is left alone, unlike one set to `None`.
#[test]
fn an_empty_batch_is_a_no_op() {
    let pool = Pool::builder()
        .max_tasks(3)
        .default_limit(2)
        .limit("g", 1)
        .build();
    let running = pool.try_acquire(["g"]).unwrap();
    let mut queued = waiters(&pool, "g", 2);
    let before = (pool.stats(&"g"), pool.total_stats(), pool.stats(&"other"));

    pool.set_limits(LimitChanges::new());
    pool.set_limits(LimitChanges::default());
    for waiter in &mut queued {
        assert_pending!(waiter.poll());
    }
    assert_eq!(
        (pool.stats(&"g"), pool.total_stats(), pool.stats(&"other")),
        before
    );
    assert_eq!(pool.max_tasks(), Some(3));
    assert_eq!(pool.default_limit(), Some(2));
    assert_eq!(pool.limit(&"g"), Some(1));

    // Touching only the total leaves the default and g alone.
    pool.set_limits(LimitChanges::new().max_tasks(None));
    assert_eq!(pool.max_tasks(), None);
    assert_eq!(pool.default_limit(), Some(2));
    assert_eq!(pool.limit(&"g"), Some(1));
    for waiter in &mut queued {
        assert_pending!(waiter.poll());
    }
    drop(running);
    drop(queued);
    pool.clear_limit(&"g");
    finish(&pool);
}

/// `LimitChanges` is `Default`, `Debug` and `Clone`; a cloned batch applies the same changes,
/// and applying a batch twice is the same as applying it once.
#[test]
fn limit_changes_is_default_debug_and_clone() {
    let changes: LimitChanges<&'static str> = LimitChanges::default()
        .max_tasks(4)
        .default_limit(2)
        .limit("db", 1)
        .clear_limit("web");
    let debug = format!("{changes:?}");
    assert!(!debug.is_empty());
    let pool = Pool::builder().limit("web", 9).build();
    pool.set_limits(changes.clone());
    pool.set_limits(changes);
    assert_eq!(pool.max_tasks(), Some(4));
    assert_eq!(pool.default_limit(), Some(2));
    assert_eq!(pool.limit(&"db"), Some(1));
    assert_eq!(pool.limit(&"web"), None);
    assert_eq!(pool.effective_limit(&"web"), Some(2));
    pool.clear_limit(&"db");
    finish(&pool);
}

/// A batch that lowers limits takes back reservations like `set_limit` does, youngest first.
#[test]
fn a_batch_that_lowers_takes_back_the_youngest_reservation() {
    let pool = Pool::builder()
        .limit("db", 2)
        .limit("b", 1)
        .limit("c", 1)
        .build();
    let held_b = pool.try_acquire(["b"]).unwrap();
    let held_c = pool.try_acquire(["c"]).unwrap();
    let mut older = wait(&pool, &["db", "b"]);
    assert_pending!(older.poll());
    let mut younger = wait(&pool, &["db", "c"]);
    assert_pending!(younger.poll());

    // Lower db to 1 and raise c in the same batch: the younger waiter gets c but loses db.
    pool.set_limits(LimitChanges::new().limit("c", 2).limit("db", 1));
    assert_pending!(younger.poll());
    group(&pool, "db", 0, 1, 2);
    group(&pool, "c", 1, 1, 1);

    drop(held_b);
    let older_permit = assert_ready_ok!(older.poll());
    assert_pending!(younger.poll());
    drop(older_permit);
    let younger_permit = assert_ready_ok!(younger.poll());
    drop((younger_permit, held_c));
    finish(&pool);
}
