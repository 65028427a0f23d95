//! loom models of the admission core: every interleaving of admissions, releases, limit changes
//! and cancellations from several threads, so a lost wake-up (a waiter never woken although it
//! was granted: loom reports the deadlock) or a leaked reservation fails.
//!
//! Run with:
//! `RUSTFLAGS="--cfg taskherd_loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p taskherd --release --test loom`
#![cfg(taskherd_loom)]

use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use loom::future::block_on;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;
use taskherd::{AcquireError, LimitChanges, Permit, TaskPool};

type Pool = TaskPool<&'static str>;

/// Checks the snapshot invariants of group `key` (one consistent snapshot, so they hold at any
/// moment, from any thread): reservations never above the limit, and nobody queued (waiting
/// without a reservation of the group) while the group has room.
fn assert_snapshot(pool: &Pool, key: &'static str) {
    let stats = pool.stats(&key);
    let held = stats.running + stats.reserved;
    assert!(stats.reserved <= stats.waiting, "{key}: {stats:?}");
    match stats.limit {
        Some(limit) => {
            assert!(
                stats.reserved == 0 || held <= limit,
                "{key} holds reservations above its limit: {stats:?}"
            );
            assert!(
                stats.waiting == stats.reserved || held >= limit,
                "{key} has room while someone queues: {stats:?}"
            );
        }
        None => assert_eq!(
            stats.waiting, stats.reserved,
            "{key} has no limit: {stats:?}"
        ),
    }
}

type Waiting = Pin<Box<dyn Future<Output = Result<Permit<&'static str>, AcquireError>> + Send>>;

/// Starts a waiting `acquire` and polls it once (with a waker that does nothing), so it is
/// queued, holding whatever reservations it could get, before any thread starts.
fn queued(pool: &Pool, groups: &[&'static str]) -> Waiting {
    let mut waiting: Waiting = Box::pin(pool.acquire(groups.to_vec()));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(
        waiting.as_mut().poll(&mut cx).is_pending(),
        "{groups:?} had to wait"
    );
    waiting
}

/// Polls once (with a waker that does nothing): `Some` if it was granted.
fn poll_once(waiting: &mut Waiting) -> Option<Permit<&'static str>> {
    let mut cx = Context::from_waker(Waker::noop());
    match waiting.as_mut().poll(&mut cx) {
        Poll::Ready(permit) => Some(permit.unwrap()),
        Poll::Pending => None,
    }
}

/// Asserts that nothing is held or waiting any more in `keys`.
fn assert_drained(pool: &Pool, keys: &[&'static str]) {
    assert_eq!(pool.len(), 0, "admissions leaked");
    assert_eq!(pool.waiting_len(), 0, "waiters leaked");
    for key in keys {
        assert_eq!(pool.task_count(key), 0, "group {key} leaked a slot");
        assert_eq!(
            pool.waiting_count(key),
            0,
            "group {key} leaked a reservation"
        );
    }
}

/// A release racing with a waiter that is about to queue: the waiter must be woken.
#[test]
fn release_wakes_waiter() {
    loom::model(|| {
        let pool: Pool = TaskPool::builder().limit("a", 1).build();
        let held = pool.try_acquire(["a"]).unwrap();
        let waiter = {
            let pool = pool.clone();
            thread::spawn(move || {
                let permit = block_on(pool.acquire(["a"])).unwrap();
                assert_eq!(pool.task_count(&"a"), 1);
                drop(permit);
            })
        };
        drop(held);
        waiter.join().unwrap();
        assert_drained(&pool, &["a"]);
    });
}

/// Two waiters with crossing group sets, both blocked by a held permit, both finish.
#[test]
fn crossing_groups_do_not_deadlock() {
    loom::model(|| {
        let pool: Pool = TaskPool::builder().limit("a", 1).limit("b", 1).build();
        let held = pool.try_acquire(["a"]).unwrap();
        let spawn_waiter = |groups: [&'static str; 2]| {
            let pool = pool.clone();
            thread::spawn(move || {
                let permit = block_on(pool.acquire(groups)).unwrap();
                assert_eq!(pool.task_count(&"a"), 1);
                assert_eq!(pool.task_count(&"b"), 1);
                drop(permit);
            })
        };
        let ab = spawn_waiter(["a", "b"]);
        let ba = spawn_waiter(["b", "a"]);
        drop(held);
        ab.join().unwrap();
        ba.join().unwrap();
        assert_drained(&pool, &["a", "b"]);
    });
}

/// A waiter that gives up (polled once, then dropped) while the slot it waits for is released
/// and handed to it: whatever the interleaving, the slot is not leaked and a second waiter gets
/// it.
#[test]
fn cancelled_waiter_hands_its_slot_on() {
    loom::model(|| {
        let pool: Pool = TaskPool::builder().limit("a", 1).build();
        let held = pool.try_acquire(["a"]).unwrap();
        let quitter = {
            let pool = pool.clone();
            thread::spawn(move || {
                let mut acquire = pin!(pool.acquire(["a"]));
                let mut cx = Context::from_waker(Waker::noop());
                // Granted or not, the permit (if any) is dropped at once, then the future.
                let _ = acquire.as_mut().poll(&mut cx);
            })
        };
        let patient = {
            let pool = pool.clone();
            thread::spawn(move || drop(block_on(pool.acquire(["a"])).unwrap()))
        };
        drop(held);
        quitter.join().unwrap();
        patient.join().unwrap();
        assert_drained(&pool, &["a"]);
        assert!(pool.try_acquire(["a"]).is_ok());
    });
}

/// Raising a limit concurrently with a waiter queuing: the waiter is granted.
#[test]
fn raising_a_limit_wakes_waiter() {
    loom::model(|| {
        let pool: Pool = TaskPool::builder().limit("a", 1).build();
        let held = pool.try_acquire(["a"]).unwrap();
        let waiter = {
            let pool = pool.clone();
            thread::spawn(move || drop(block_on(pool.acquire(["a"])).unwrap()))
        };
        pool.set_limit("a", 2);
        waiter.join().unwrap();
        drop(held);
        assert_drained(&pool, &["a"]);
    });
}

/// A `try_acquire` racing with a release and a waiter never takes the waiter's slot and never
/// exceeds the limit.
#[test]
fn try_acquire_never_barges() {
    loom::model(|| {
        let pool: Pool = TaskPool::builder().max_tasks(1).build();
        let held = pool.try_acquire(["a"]).unwrap();
        let waiter = {
            let pool = pool.clone();
            thread::spawn(move || drop(block_on(pool.acquire(["b"])).unwrap()))
        };
        let barger = {
            let pool = pool.clone();
            thread::spawn(move || {
                if let Ok(permit) = pool.try_acquire(["c"]) {
                    assert_eq!(pool.len(), 1, "the total limit is 1");
                    drop(permit);
                }
            })
        };
        drop(held);
        waiter.join().unwrap();
        barger.join().unwrap();
        assert_drained(&pool, &["a", "b", "c"]);
    });
}

/// `close` racing with a waiter and a release: the waiter either gets its permit (granted
/// before the close) or an error, and nothing is leaked either way.
#[test]
fn close_races_with_a_waiter() {
    loom::model(|| {
        let pool: Pool = TaskPool::builder().limit("a", 1).build();
        let held = pool.try_acquire(["a"]).unwrap();
        let waiter = {
            let pool = pool.clone();
            thread::spawn(move || drop(block_on(pool.acquire(["a"]))))
        };
        let releaser = thread::spawn(move || drop(held));
        assert!(pool.close());
        waiter.join().unwrap();
        releaser.join().unwrap();
        assert_drained(&pool, &["a"]);
        assert!(pool.try_acquire(["a"]).unwrap_err().is_closed());
    });
}

/// `wait` racing with the last release: it is woken and resolves.
#[test]
fn wait_sees_the_last_release() {
    loom::model(|| {
        let pool: Pool = TaskPool::new();
        let held = pool.try_acquire(["a"]).unwrap();
        pool.close();
        let releaser = thread::spawn(move || drop(held));
        block_on(pool.wait());
        releaser.join().unwrap();
        assert_drained(&pool, &["a"]);
    });
}

/// Issue 9, item 1: a limit lowered while a release would grant a waiter that holds a
/// reservation in the lowered group. `db` is at 2 with one permit held; the waiter for
/// `[db, b]` reserves `db` and queues on the full `b`. One thread lowers `db` to 0 while another
/// frees `b`. If the lowering was complete before the release began, the waiter must not be
/// granted (its `db` reservation was taken back; it keeps its place in `db`'s queue); in any
/// case it is granted once `db` is raised again, and nothing leaks.
#[test]
fn lowered_limit_binds_a_waiters_reservation() {
    loom::model(|| {
        let pool: Pool = TaskPool::builder().limit("db", 2).limit("b", 1).build();
        let held_db = pool.try_acquire(["db"]).unwrap();
        let held_b = pool.try_acquire(["b"]).unwrap();
        let mut waiter = queued(&pool, &["db", "b"]);
        assert_eq!(pool.stats(&"db").reserved, 1);
        let lowered = Arc::new(AtomicBool::new(false));
        let lowerer = {
            let (pool, lowered) = (pool.clone(), Arc::clone(&lowered));
            thread::spawn(move || {
                pool.set_limit("db", 0);
                lowered.store(true, Ordering::SeqCst);
                assert_snapshot(&pool, "db");
            })
        };
        let releaser = {
            let (pool, lowered) = (pool.clone(), Arc::clone(&lowered));
            thread::spawn(move || {
                let after_lowering = lowered.load(Ordering::SeqCst);
                drop(held_b);
                assert_snapshot(&pool, "b");
                after_lowering
            })
        };
        lowerer.join().unwrap();
        let released_after_lowering = releaser.join().unwrap();

        let permit = match poll_once(&mut waiter) {
            Some(permit) => {
                assert!(
                    !released_after_lowering,
                    "granted into db after db was lowered to 0"
                );
                // Granted under the old limit: running work is never cancelled.
                assert_eq!(pool.task_count(&"db"), 2);
                permit
            }
            None => {
                let db = pool.stats(&"db");
                assert_eq!((db.running, db.waiting, db.reserved), (1, 1, 0), "{db:?}");
                assert_eq!(
                    pool.task_count(&"b"),
                    0,
                    "b is only reserved for the waiter"
                );
                assert!(pool.try_acquire(["db"]).is_err());
                // Raised again (the first permit still held): the waiter is granted and woken.
                pool.set_limit("db", 2);
                let permit = block_on(waiter.as_mut()).unwrap();
                assert_eq!(pool.task_count(&"db"), 2);
                permit
            }
        };
        drop(permit);
        drop(held_db);
        drop(waiter);
        assert_drained(&pool, &["db", "b"]);
    });
}

/// Issue 9, item 4: `set_limits` racing a release and a waiter. Before the batch, `g` has a
/// limit of 1 and there is no total limit; the batch raises `g` to 2 and sets `max_tasks` to 1.
/// Under either configuration as a whole at most one admission runs in `g`; only a mix (`g` at
/// 2 with no total limit yet) would let a second admission into `g`. Two waiters check the
/// count while they hold their permits.
#[test]
fn set_limits_admits_under_no_mix_of_limits() {
    loom::model(|| {
        let pool: Pool = TaskPool::builder().limit("g", 1).build();
        let held = pool.try_acquire(["g"]).unwrap();
        let setter = {
            let pool = pool.clone();
            thread::spawn(move || {
                pool.set_limits(LimitChanges::new().limit("g", 2).max_tasks(1));
            })
        };
        let spawn_waiter = || {
            let pool = pool.clone();
            thread::spawn(move || {
                let permit = block_on(pool.acquire(["g"])).unwrap();
                assert_eq!(
                    pool.task_count(&"g"),
                    1,
                    "admitted in g while another admission runs there"
                );
                drop(permit);
            })
        };
        let first = spawn_waiter();
        let second = spawn_waiter();
        let releaser = thread::spawn(move || drop(held));
        setter.join().unwrap();
        first.join().unwrap();
        second.join().unwrap();
        releaser.join().unwrap();
        assert_eq!(pool.limit(&"g"), Some(2));
        assert_eq!(pool.max_tasks(), Some(1));
        assert_drained(&pool, &["g"]);
    });
}

/// A cancelled waiter racing a lowering that takes back a reservation. `db` is at 3 with one
/// permit held; two waiters for `[db, b]` (the first one older) reserve `db` and queue on the
/// full `b`. One thread drops the older waiter while another lowers `db` to 2 (which takes
/// back the younger waiter's reservation, unless the cancel already made room). Either way
/// the younger one ends up holding `db` again, exactly one reservation is counted, and once
/// `b` frees it is granted.
#[test]
fn cancelled_waiter_races_a_lowering() {
    loom::model(|| {
        let pool: Pool = TaskPool::builder().limit("db", 3).limit("b", 1).build();
        let held_db = pool.try_acquire(["db"]).unwrap();
        let held_b = pool.try_acquire(["b"]).unwrap();
        let older = queued(&pool, &["db", "b"]);
        let mut younger = queued(&pool, &["db", "b"]);
        assert_eq!(pool.stats(&"db").reserved, 2);
        let quitter = {
            let pool = pool.clone();
            thread::spawn(move || {
                drop(older);
                assert_snapshot(&pool, "db");
            })
        };
        let lowerer = {
            let pool = pool.clone();
            thread::spawn(move || {
                pool.set_limit("db", 2);
                assert_snapshot(&pool, "db");
            })
        };
        quitter.join().unwrap();
        lowerer.join().unwrap();
        let db = pool.stats(&"db");
        assert_eq!(
            (db.running, db.waiting, db.reserved, db.limit),
            (1, 1, 1, Some(2)),
            "{db:?}"
        );
        let b = pool.stats(&"b");
        assert_eq!((b.running, b.waiting, b.reserved), (1, 1, 0), "{b:?}");
        assert!(poll_once(&mut younger).is_none());
        drop(held_b);
        let permit = block_on(younger.as_mut()).unwrap();
        assert_eq!(pool.task_count(&"db"), 2);
        drop(permit);
        drop(held_db);
        drop(younger);
        assert_drained(&pool, &["db", "b"]);
    });
}
