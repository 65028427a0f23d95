//! loom models of the admission core: every interleaving of admissions, releases, limit changes
//! and cancellations from several threads, so a lost wake-up (a waiter never woken although it
//! was granted: loom reports the deadlock) or a leaked reservation fails.
//!
//! Run with:
//! `RUSTFLAGS="--cfg taskherd_loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p taskherd --release --test loom`
#![cfg(taskherd_loom)]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Waker};

use loom::future::block_on;
use loom::thread;
use taskherd::TaskPool;

type Pool = TaskPool<&'static str>;

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
