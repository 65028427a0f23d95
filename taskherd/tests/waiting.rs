//! Waiting admission (`spawn` and `acquire`), poll by poll.
//!
//! Every waiting future is driven by hand through `tokio_test::task::spawn`, so each test sees
//! exactly which waiters were woken by a release or a limit change (`is_woken`) and what they
//! return when polled. A slot is granted at release time, so a woken waiter already counts in
//! `task_count` before it is polled.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use taskherd::{AcquireError, Group, Permit, TaskPool};
use tokio_test::task::{Spawn, spawn as mock};
use tokio_test::{assert_pending, assert_ready, assert_ready_ok};

type Pool = TaskPool<&'static str>;

/// Asserts every live count the pool reports for `keys`: `(task_count, waiting_count)` per key,
/// then `len()` and `waiting_len()`.
#[track_caller]
fn assert_counts(pool: &Pool, keys: &[(&'static str, usize, usize)], len: usize, waiting: usize) {
    for &(key, running, waiting_in_key) in keys {
        assert_eq!(pool.task_count(&key), running, "task_count({key:?})");
        assert_eq!(
            pool.waiting_count(&key),
            waiting_in_key,
            "waiting_count({key:?})"
        );
    }
    assert_eq!(pool.len(), len, "len()");
    assert_eq!(pool.is_empty(), len == 0, "is_empty()");
    assert_eq!(pool.waiting_len(), waiting, "waiting_len()");
}

/// A waiting `acquire` under a mock task. Every call returns the same future type, whatever
/// the number of groups, so waiters can be kept together in arrays and vectors.
fn wait<'a>(
    pool: &'a Pool,
    groups: &[&'static str],
) -> Spawn<impl Future<Output = Result<Permit<&'static str>, AcquireError>> + 'a> {
    mock(pool.acquire(groups.to_vec()))
}

/// A future that records that it was polled, then completes.
fn flagged() -> (Arc<AtomicBool>, impl Future<Output = ()> + Send + 'static) {
    let polled = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&polled);
    (polled, async move {
        flag.store(true, Ordering::SeqCst);
    })
}

// ---------------------------------------------------------------------------------------------
// Waiting while full, and being granted.
// ---------------------------------------------------------------------------------------------

#[test]
fn acquire_is_ready_at_once_when_there_is_room() {
    let pool = Pool::builder().limit("a", 1).build();
    let mut waiter = wait(&pool, &["a", "b"]);
    let permit = assert_ready_ok!(waiter.poll());
    assert_eq!(permit.groups().copied().collect::<Vec<_>>(), ["a", "b"]);
    assert_counts(&pool, &[("a", 1, 0), ("b", 1, 0)], 1, 0);
    drop(permit);
    assert_counts(&pool, &[("a", 0, 0), ("b", 0, 0)], 0, 0);
}

#[test]
fn acquire_waits_while_full_and_is_granted_on_release() {
    let pool = Pool::builder().limit("a", 1).build();
    let held = pool.try_acquire(["a"]).unwrap();

    let mut waiter = wait(&pool, &["a"]);
    assert_pending!(waiter.poll());
    assert!(!waiter.is_woken());
    assert_counts(&pool, &[("a", 1, 1)], 1, 1);

    // Polling again without a release changes nothing and does not wake.
    assert_pending!(waiter.poll());
    assert!(!waiter.is_woken());
    assert_counts(&pool, &[("a", 1, 1)], 1, 1);

    drop(held);
    assert!(waiter.is_woken());
    // Granted at release time: it counts as running, no longer as waiting.
    assert_counts(&pool, &[("a", 1, 0)], 1, 0);

    let permit = assert_ready_ok!(waiter.poll());
    assert_eq!(permit.groups().copied().collect::<Vec<_>>(), ["a"]);
    assert_counts(&pool, &[("a", 1, 0)], 1, 0);
    drop(permit);
    assert_counts(&pool, &[("a", 0, 0)], 0, 0);
}

#[test]
fn waiter_naming_a_key_twice_counts_it_once() {
    let pool = Pool::builder().limit("a", 1).build();
    let held = pool.try_acquire(["a"]).unwrap();
    let mut waiter = wait(&pool, &["a", "a", "b", "a"]);
    assert_pending!(waiter.poll());
    assert_counts(&pool, &[("a", 1, 1), ("b", 0, 1)], 1, 1);
    drop(held);
    assert!(waiter.is_woken());
    let permit = assert_ready_ok!(waiter.poll());
    assert_eq!(permit.groups().copied().collect::<Vec<_>>(), ["a", "b"]);
    assert_counts(&pool, &[("a", 1, 0), ("b", 1, 0)], 1, 0);
    drop(permit);
    assert_counts(&pool, &[("a", 0, 0), ("b", 0, 0)], 0, 0);
}

#[test]
fn waiter_with_no_groups_waits_for_the_total() {
    let pool = Pool::builder().max_tasks(1).build();
    let held = pool.try_acquire(["a"]).unwrap();
    let mut waiter = wait(&pool, &[]);
    assert_pending!(waiter.poll());
    assert_counts(&pool, &[("a", 1, 0)], 1, 1);
    drop(held);
    assert!(waiter.is_woken());
    assert_counts(&pool, &[("a", 0, 0)], 1, 0);
    let permit = assert_ready_ok!(waiter.poll());
    assert_eq!(permit.groups().count(), 0);
    drop(permit);
    assert_counts(&pool, &[("a", 0, 0)], 0, 0);
}

#[tokio::test]
async fn spawn_waits_while_full_and_the_task_counts_until_done() {
    let pool = Pool::builder().limit("a", 1).build();
    let held = pool.try_acquire(["a"]).unwrap();

    let (finish, finished) = tokio::sync::oneshot::channel::<()>();
    let started = Arc::new(AtomicBool::new(false));
    let started_in_task = Arc::clone(&started);
    let mut waiter = mock(pool.spawn(["a", "b"], async move {
        started_in_task.store(true, Ordering::SeqCst);
        finished.await.unwrap();
        "done"
    }));
    assert_pending!(waiter.poll());
    assert_counts(&pool, &[("a", 1, 1), ("b", 0, 1)], 1, 1);
    assert!(!started.load(Ordering::SeqCst));

    drop(held);
    assert!(waiter.is_woken());
    assert_counts(&pool, &[("a", 1, 0), ("b", 1, 0)], 1, 0);
    let handle = assert_ready_ok!(waiter.poll());

    // The spawned task runs and keeps counting until it completes.
    while !started.load(Ordering::SeqCst) {
        tokio::task::yield_now().await;
    }
    assert_counts(&pool, &[("a", 1, 0), ("b", 1, 0)], 1, 0);
    assert!(pool.try_acquire(["a"]).unwrap_err().is_full());

    finish.send(()).unwrap();
    assert_eq!(handle.await.unwrap(), "done");
    assert_counts(&pool, &[("a", 0, 0), ("b", 0, 0)], 0, 0);
}

#[tokio::test]
async fn spawn_await_eventually_spawns_every_task_within_the_limit() {
    let pool = Pool::builder().limit("a", 2).max_tasks(3).build();
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for _ in 0..20 {
        let (running, peak) = (Arc::clone(&running), Arc::clone(&peak));
        let handle = pool
            .spawn(["a"], async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::task::yield_now().await;
                running.fetch_sub(1, Ordering::SeqCst);
            })
            .await
            .unwrap();
        assert!(pool.task_count(&"a") <= 2);
        handles.push(handle);
    }
    for handle in handles {
        handle.await.unwrap();
    }
    assert!(peak.load(Ordering::SeqCst) <= 2);
    assert_counts(&pool, &[("a", 0, 0)], 0, 0);
}

// ---------------------------------------------------------------------------------------------
// FIFO order and reservations.
// ---------------------------------------------------------------------------------------------

#[test]
fn waiters_are_served_in_arrival_order() {
    let pool = Pool::builder().limit("a", 1).build();
    let held = pool.try_acquire(["a"]).unwrap();
    let mut waiters: Vec<_> = (0..4).map(|_| wait(&pool, &["a"])).collect();
    for waiter in &mut waiters {
        assert_pending!(waiter.poll());
    }
    assert_counts(&pool, &[("a", 1, 4)], 1, 4);

    let mut previous = held;
    for i in 0..4 {
        drop(previous);
        for (j, waiter) in waiters.iter().enumerate().skip(i) {
            assert_eq!(
                waiter.is_woken(),
                j == i,
                "after release {i}: waiter {j} woken"
            );
        }
        // Younger waiters polled now are still pending.
        for waiter in waiters.iter_mut().skip(i + 1) {
            assert_pending!(waiter.poll());
        }
        assert_counts(&pool, &[("a", 1, 3 - i)], 1, 3 - i);
        previous = assert_ready_ok!(waiters[i].poll());
    }
    drop(previous);
    assert_counts(&pool, &[("a", 0, 0)], 0, 0);
}

#[test]
fn releases_serve_the_oldest_waiter_even_if_a_younger_was_polled_more_recently() {
    let pool = Pool::builder().limit("a", 1).build();
    let held = pool.try_acquire(["a"]).unwrap();
    let mut first = wait(&pool, &["a"]);
    let mut second = wait(&pool, &["a"]);
    let mut third = wait(&pool, &["a"]);
    assert_pending!(first.poll());
    assert_pending!(second.poll());
    assert_pending!(third.poll());
    // Re-polling younger waiters does not move them ahead.
    assert_pending!(third.poll());
    assert_pending!(second.poll());
    drop(held);
    assert!(first.is_woken());
    assert!(!second.is_woken());
    assert!(!third.is_woken());
    assert_pending!(third.poll());
    assert_pending!(second.poll());
    let _permit = assert_ready_ok!(first.poll());
}

#[test]
fn a_freed_slot_is_reserved_for_the_oldest_waiter_on_that_group() {
    // w1 wants [a, b], w2 wants [b]: b's slot goes to w1 (the oldest waiter queued on b), even
    // though w1 still misses a and w2 could run at once.
    let pool = Pool::builder().limit("a", 1).limit("b", 1).build();
    let held_a = pool.try_acquire(["a"]).unwrap();
    let held_b = pool.try_acquire(["b"]).unwrap();
    let mut w1 = wait(&pool, &["a", "b"]);
    let mut w2 = wait(&pool, &["b"]);
    assert_pending!(w1.poll());
    assert_pending!(w2.poll());
    assert_counts(&pool, &[("a", 1, 1), ("b", 1, 2)], 2, 2);

    drop(held_b);
    assert!(!w1.is_woken(), "w1 still misses a");
    assert!(!w2.is_woken(), "b's slot is reserved for w1");
    assert_pending!(w2.poll());
    assert_pending!(w1.poll());
    // The reservation is not running, but b has no room for anyone else.
    assert_counts(&pool, &[("a", 1, 1), ("b", 0, 2)], 1, 2);
    assert_eq!(
        pool.try_acquire(["b"]).unwrap_err().full_group(),
        Some(&Group::Key("b"))
    );

    drop(held_a);
    assert!(w1.is_woken());
    assert!(!w2.is_woken());
    assert_counts(&pool, &[("a", 1, 0), ("b", 1, 1)], 1, 1);
    let p1 = assert_ready_ok!(w1.poll());
    assert_pending!(w2.poll());

    drop(p1);
    assert!(w2.is_woken());
    let p2 = assert_ready_ok!(w2.poll());
    assert_counts(&pool, &[("a", 0, 0), ("b", 1, 0)], 1, 0);
    drop(p2);
    assert_counts(&pool, &[("a", 0, 0), ("b", 0, 0)], 0, 0);
}

#[test]
fn a_younger_waiter_on_other_groups_is_not_held_back_by_an_older_one() {
    let pool = Pool::builder().limit("a", 1).limit("c", 1).build();
    let held_a = pool.try_acquire(["a"]).unwrap();
    let held_c = pool.try_acquire(["c"]).unwrap();
    let mut old = wait(&pool, &["a", "b"]);
    let mut young = wait(&pool, &["c"]);
    assert_pending!(old.poll());
    assert_pending!(young.poll());

    drop(held_c);
    assert!(young.is_woken());
    assert!(!old.is_woken());
    let _young_permit = assert_ready_ok!(young.poll());
    assert_pending!(old.poll());

    drop(held_a);
    assert!(old.is_woken());
    let _old_permit = assert_ready_ok!(old.poll());
    assert_counts(&pool, &[("a", 1, 0), ("b", 1, 0), ("c", 1, 0)], 2, 0);
}

#[test]
fn waiting_counts_cover_queued_and_partly_reserved_waiters_only() {
    let pool = Pool::builder().limit("a", 1).limit("b", 2).build();
    let held_a = pool.try_acquire(["a"]).unwrap();
    // Takes b's reservation at once, queued on a.
    let mut w1 = wait(&pool, &["a", "b"]);
    assert_pending!(w1.poll());
    // Takes b's second slot, queued on a behind w1.
    let mut w2 = wait(&pool, &["b", "a"]);
    assert_pending!(w2.poll());
    // b is full of reservations: queued on b; c has no limit: reserved at once.
    let mut w3 = wait(&pool, &["c", "b"]);
    assert_pending!(w3.poll());
    assert_counts(&pool, &[("a", 1, 2), ("b", 0, 3), ("c", 0, 1)], 1, 3);
    assert_eq!(
        pool.try_acquire(["c"]).map(drop),
        Ok(()),
        "c has no limit: a reservation there does not fill it"
    );

    drop(held_a);
    assert!(w1.is_woken());
    assert!(!w2.is_woken());
    assert!(!w3.is_woken());
    assert_counts(&pool, &[("a", 1, 1), ("b", 1, 2), ("c", 0, 1)], 1, 2);

    let p1 = assert_ready_ok!(w1.poll());
    drop(p1);
    // a goes to w2 (granted); b's slot freed by w1 goes to w3 (granted).
    assert!(w2.is_woken());
    assert!(w3.is_woken());
    assert_counts(&pool, &[("a", 1, 0), ("b", 2, 0), ("c", 1, 0)], 2, 0);
    drop(assert_ready_ok!(w2.poll()));
    drop(assert_ready_ok!(w3.poll()));
    assert_counts(&pool, &[("a", 0, 0), ("b", 0, 0), ("c", 0, 0)], 0, 0);
}

// ---------------------------------------------------------------------------------------------
// No barging by try_* calls.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn try_calls_do_not_steal_a_slot_granted_to_an_unpolled_waiter() {
    // anyio #1170: a try_* between the release and the woken waiter's poll must not steal it.
    let pool = Pool::builder().limit("a", 1).build();
    let held = pool.try_acquire(["a"]).unwrap();
    let mut waiter = wait(&pool, &["a"]);
    assert_pending!(waiter.poll());
    drop(held);
    assert!(waiter.is_woken());

    let err = pool.try_acquire(["a"]).unwrap_err();
    assert!(err.is_full());
    assert!(!err.is_closed());
    assert_eq!(err.full_group(), Some(&Group::Key("a")));

    let (polled, future) = flagged();
    let err = pool.try_spawn(["a"], future).unwrap_err();
    assert!(err.is_full());
    assert_eq!(err.full_group(), Some(&Group::Key("a")));
    drop(err.into_inner());
    assert!(!polled.load(Ordering::SeqCst));

    assert_counts(&pool, &[("a", 1, 0)], 1, 0);
    let permit = assert_ready_ok!(waiter.poll());
    drop(permit);
    assert_counts(&pool, &[("a", 0, 0)], 0, 0);
}

#[tokio::test]
async fn try_calls_are_refused_in_a_group_reserved_for_a_waiter_of_another_combination() {
    // The waiter wants [a, b]; b is free and reserved for it while it waits for a. try_* calls
    // into b alone (another combination) must be refused although b has nothing running.
    let pool = Pool::builder().limit("a", 1).limit("b", 1).build();
    let held_a = pool.try_acquire(["a"]).unwrap();
    let mut waiter = wait(&pool, &["a", "b"]);
    assert_pending!(waiter.poll());
    assert_counts(&pool, &[("a", 1, 1), ("b", 0, 1)], 1, 1);

    let err = pool.try_acquire(["b"]).unwrap_err();
    assert_eq!(err.full_group(), Some(&Group::Key("b")));
    // The first full group in the caller's order is reported.
    let err = pool.try_acquire(["c", "b", "a"]).unwrap_err();
    assert_eq!(err.full_group(), Some(&Group::Key("b")));
    let err = pool.try_acquire(["a", "b"]).unwrap_err();
    assert_eq!(err.full_group(), Some(&Group::Key("a")));
    let (polled, future) = flagged();
    let err = pool.try_spawn(["b"], future).unwrap_err();
    assert_eq!(err.full_group(), Some(&Group::Key("b")));
    drop(err);
    assert!(!polled.load(Ordering::SeqCst));
    // Refusals left nothing behind.
    assert_counts(&pool, &[("a", 1, 1), ("b", 0, 1), ("c", 0, 0)], 1, 1);

    drop(held_a);
    assert!(waiter.is_woken());
    let permit = assert_ready_ok!(waiter.poll());
    drop(permit);
    assert_counts(&pool, &[("a", 0, 0), ("b", 0, 0), ("c", 0, 0)], 0, 0);
}

#[test]
fn try_calls_are_refused_in_a_group_with_queued_waiters_and_in_the_total() {
    let pool = Pool::builder().max_tasks(1).build();
    let held = pool.try_acquire(["a"]).unwrap();
    let mut waiter = wait(&pool, &["b"]);
    assert_pending!(waiter.poll());
    // The total is named first whatever the caller's groups.
    let err = pool.try_acquire(["b"]).unwrap_err();
    assert_eq!(err.full_group(), Some(&Group::Total));
    drop(held);
    assert!(waiter.is_woken());
    // The total slot is the waiter's now.
    let err = pool.try_acquire(["c"]).unwrap_err();
    assert_eq!(err.full_group(), Some(&Group::Total));
    drop(assert_ready_ok!(waiter.poll()));
    assert!(pool.try_acquire(["c"]).is_ok());
}

#[test]
fn try_calls_may_take_room_that_no_waiter_is_owed() {
    // The waiter holds its slot of a (limit 2) and waits for b. The second slot of a is owed to
    // nobody, so a try_* may take it; the waiter's own slot stays reserved for it.
    let pool = Pool::builder().limit("a", 2).limit("b", 1).build();
    let held_b = pool.try_acquire(["b"]).unwrap();
    let mut waiter = wait(&pool, &["a", "b"]);
    assert_pending!(waiter.poll());
    assert_counts(&pool, &[("a", 0, 1), ("b", 1, 1)], 1, 1);
    let other = pool.try_acquire(["a"]).unwrap();
    assert_eq!(
        pool.try_acquire(["a"]).unwrap_err().full_group(),
        Some(&Group::Key("a"))
    );
    drop(held_b);
    assert!(waiter.is_woken());
    drop(assert_ready_ok!(waiter.poll()));
    drop(other);
    assert_counts(&pool, &[("a", 0, 0), ("b", 0, 0)], 0, 0);
}

#[test]
fn a_stream_of_try_calls_does_not_starve_a_waiter_for_two_groups() {
    let pool = Pool::builder().limit("a", 2).limit("b", 1).build();
    let mut holders_of_a = vec![
        pool.try_acquire(["a"]).unwrap(),
        pool.try_acquire(["a"]).unwrap(),
    ];
    let held_b = pool.try_acquire(["b"]).unwrap();
    let mut waiter = wait(&pool, &["a", "b"]);
    assert_pending!(waiter.poll());

    // Holders of a keep finishing and a stream of try_acquire/try_spawn keeps trying to take
    // their place. After the first release the waiter owns one slot of a, whatever happens.
    let mut refused = 0;
    for round in 0..100 {
        holders_of_a.pop();
        for _ in 0..3 {
            match pool.try_acquire(["a"]) {
                Ok(permit) => holders_of_a.push(permit),
                Err(err) => {
                    assert_eq!(err.full_group(), Some(&Group::Key("a")));
                    refused += 1;
                }
            }
        }
        assert_eq!(pool.waiting_count(&"a"), 1, "round {round}");
        assert_eq!(
            pool.task_count(&"a"),
            1,
            "round {round}: one slot of a is the waiter's"
        );
        assert!(!waiter.is_woken(), "still missing b");
    }
    assert!(refused >= 200);

    drop(held_b);
    assert!(waiter.is_woken());
    let permit = assert_ready_ok!(waiter.poll());
    assert_eq!(pool.task_count(&"a"), 2);
    drop(permit);
    drop(holders_of_a);
    assert_counts(&pool, &[("a", 0, 0), ("b", 0, 0)], 0, 0);
}

// ---------------------------------------------------------------------------------------------
// Crossing group sets.
// ---------------------------------------------------------------------------------------------

#[test]
fn crossing_waiters_both_finish() {
    for release_a_first in [true, false] {
        let pool = Pool::builder().limit("a", 1).limit("b", 1).build();
        let held_a = pool.try_acquire(["a"]).unwrap();
        let held_b = pool.try_acquire(["b"]).unwrap();
        let mut ab = wait(&pool, &["a", "b"]);
        let mut ba = wait(&pool, &["b", "a"]);
        assert_pending!(ab.poll());
        assert_pending!(ba.poll());
        assert_counts(&pool, &[("a", 1, 2), ("b", 1, 2)], 2, 2);

        let (first, second) = if release_a_first {
            (held_a, held_b)
        } else {
            (held_b, held_a)
        };
        drop(first);
        // The freed slot goes to the older waiter, which now holds one of its two slots.
        assert!(!ab.is_woken());
        assert!(!ba.is_woken());
        assert_pending!(ab.poll());
        assert_pending!(ba.poll());
        drop(second);
        assert!(ab.is_woken());
        assert!(!ba.is_woken());
        let permit = assert_ready_ok!(ab.poll());
        assert_pending!(ba.poll());
        drop(permit);
        assert!(ba.is_woken());
        let permit = assert_ready_ok!(ba.poll());
        assert_counts(&pool, &[("a", 1, 0), ("b", 1, 0)], 1, 0);
        drop(permit);
        assert_counts(&pool, &[("a", 0, 0), ("b", 0, 0)], 0, 0);
    }
}

#[test]
fn a_cycle_of_three_crossing_waiters_finishes_oldest_first() {
    let pool = Pool::builder()
        .limit("a", 1)
        .limit("b", 1)
        .limit("c", 1)
        .build();
    let held = [
        pool.try_acquire(["a"]).unwrap(),
        pool.try_acquire(["b"]).unwrap(),
        pool.try_acquire(["c"]).unwrap(),
    ];
    let mut ab = wait(&pool, &["a", "b"]);
    let mut bc = wait(&pool, &["b", "c"]);
    let mut ca = wait(&pool, &["c", "a"]);
    for waiter in [&mut ab, &mut bc, &mut ca] {
        assert_pending!(waiter.poll());
    }
    // Release in the "wrong" order for the oldest: c, then b, then a.
    let [held_a, held_b, held_c] = held;
    drop(held_c); // c goes to bc (the oldest queued on c)
    drop(held_b); // b goes to ab
    assert!(!ab.is_woken() && !bc.is_woken() && !ca.is_woken());
    drop(held_a); // a goes to ab: granted
    assert!(ab.is_woken());
    assert!(!bc.is_woken() && !ca.is_woken());
    drop(assert_ready_ok!(ab.poll())); // b -> bc (granted), a -> ca
    assert!(bc.is_woken());
    assert!(!ca.is_woken());
    drop(assert_ready_ok!(bc.poll())); // c -> ca (granted)
    assert!(ca.is_woken());
    drop(assert_ready_ok!(ca.poll()));
    assert_counts(&pool, &[("a", 0, 0), ("b", 0, 0), ("c", 0, 0)], 0, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_acquiring_in_crossing_order_on_many_threads_all_finish() {
    let pool = Pool::builder().limit("a", 1).limit("b", 1).build();
    let inside = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..400 {
        let pool = pool.clone();
        let (inside, done) = (Arc::clone(&inside), Arc::clone(&done));
        tasks.push(tokio::spawn(async move {
            let groups = if i % 2 == 0 { ["a", "b"] } else { ["b", "a"] };
            let permit = pool.acquire(groups).await.unwrap();
            assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "limit 1 exceeded");
            assert_eq!(pool.task_count(&"a"), 1);
            assert_eq!(pool.task_count(&"b"), 1);
            tokio::task::yield_now().await;
            inside.fetch_sub(1, Ordering::SeqCst);
            drop(permit);
            done.fetch_add(1, Ordering::SeqCst);
        }));
    }
    let all = async {
        for task in tasks {
            task.await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("crossing acquires deadlocked");
    assert_eq!(done.load(Ordering::SeqCst), 400);
    assert_counts(&pool, &[("a", 0, 0), ("b", 0, 0)], 0, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_spawning_in_crossing_order_on_many_threads_all_finish() {
    let pool = Pool::builder()
        .limit("a", 1)
        .limit("b", 1)
        .limit("c", 1)
        .build();
    let orders: [&[&'static str]; 4] = [&["a", "b"], &["b", "a"], &["b", "c", "a"], &["c", "a"]];
    let inside = Arc::new([const { AtomicUsize::new(0) }; 3]);
    let mut tasks = Vec::new();
    for i in 0..400 {
        let pool = pool.clone();
        let inside = Arc::clone(&inside);
        let groups = orders[i % orders.len()];
        tasks.push(tokio::spawn(async move {
            let handle = pool
                .spawn(groups.iter().copied(), async move {
                    let slots: Vec<usize> = groups
                        .iter()
                        .map(|g| match *g {
                            "a" => 0,
                            "b" => 1,
                            _ => 2,
                        })
                        .collect();
                    for &s in &slots {
                        assert_eq!(inside[s].fetch_add(1, Ordering::SeqCst), 0);
                    }
                    tokio::task::yield_now().await;
                    for &s in &slots {
                        inside[s].fetch_sub(1, Ordering::SeqCst);
                    }
                })
                .await
                .unwrap();
            handle.await.unwrap();
        }));
    }
    let all = async {
        for task in tasks {
            task.await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("crossing spawns deadlocked");
    assert_counts(&pool, &[("a", 0, 0), ("b", 0, 0), ("c", 0, 0)], 0, 0);
}

// ---------------------------------------------------------------------------------------------
// Cancellation.
// ---------------------------------------------------------------------------------------------

#[test]
fn dropping_a_queued_waiter_leaves_nothing_behind() {
    let pool = Pool::builder().limit("a", 1).build();
    let held = pool.try_acquire(["a"]).unwrap();
    let mut w1 = wait(&pool, &["a", "b"]);
    let mut w2 = wait(&pool, &["a"]);
    assert_pending!(w1.poll());
    assert_pending!(w2.poll());
    assert_counts(&pool, &[("a", 1, 2), ("b", 0, 1)], 1, 2);

    drop(w1);
    assert!(!w2.is_woken(), "a is still held");
    assert_counts(&pool, &[("a", 1, 1), ("b", 0, 0)], 1, 1);
    // b is free again for anyone.
    drop(pool.try_acquire(["b"]).unwrap());

    drop(held);
    assert!(
        w2.is_woken(),
        "the dropped waiter's place went to the next one"
    );
    drop(assert_ready_ok!(w2.poll()));
    assert_counts(&pool, &[("a", 0, 0), ("b", 0, 0)], 0, 0);
}

#[test]
fn dropping_a_never_polled_waiter_does_nothing() {
    let pool = Pool::builder().limit("a", 1).build();
    let held = pool.try_acquire(["a"]).unwrap();
    let waiter = wait(&pool, &["a"]);
    drop(waiter);
    assert_counts(&pool, &[("a", 1, 0)], 1, 0);
    drop(held);
    assert_counts(&pool, &[("a", 0, 0)], 0, 0);
}

#[test]
fn dropping_a_waiter_holding_a_partial_reservation_hands_it_on_at_once() {
    // w1 wants [a, b]: a is free (reserved for w1), b is full. w2 wants [a], queued behind.
    let pool = Pool::builder().limit("a", 1).limit("b", 1).build();
    let held_b = pool.try_acquire(["b"]).unwrap();
    let mut w1 = wait(&pool, &["a", "b"]);
    let mut w2 = wait(&pool, &["a"]);
    assert_pending!(w1.poll());
    assert_pending!(w2.poll());
    assert_counts(&pool, &[("a", 0, 2), ("b", 1, 1)], 1, 2);
    assert!(pool.try_acquire(["a"]).is_err());

    drop(w1);
    // w2 is granted by the drop itself, with no release.
    assert!(w2.is_woken());
    assert_counts(&pool, &[("a", 1, 0), ("b", 1, 0)], 2, 0);
    let permit = assert_ready_ok!(w2.poll());
    drop(permit);
    drop(held_b);
    assert_counts(&pool, &[("a", 0, 0), ("b", 0, 0)], 0, 0);
}

#[test]
fn dropping_a_waiter_holding_reservations_in_several_groups_hands_each_on() {
    let pool = Pool::builder()
        .limit("a", 1)
        .limit("b", 1)
        .limit("c", 1)
        .build();
    let held_c = pool.try_acquire(["c"]).unwrap();
    let mut big = wait(&pool, &["a", "b", "c"]); // reserves a and b, queued on c
    let mut on_a = wait(&pool, &["a"]);
    let mut on_b = wait(&pool, &["b"]);
    let mut on_c = wait(&pool, &["c"]);
    for waiter in [&mut big, &mut on_a, &mut on_b, &mut on_c] {
        assert_pending!(waiter.poll());
    }
    assert_counts(&pool, &[("a", 0, 2), ("b", 0, 2), ("c", 1, 2)], 1, 4);

    drop(big);
    assert!(on_a.is_woken());
    assert!(on_b.is_woken());
    assert!(!on_c.is_woken(), "c is still held");
    assert_counts(&pool, &[("a", 1, 0), ("b", 1, 0), ("c", 1, 1)], 3, 1);
    drop(assert_ready_ok!(on_a.poll()));
    drop(assert_ready_ok!(on_b.poll()));
    assert_pending!(on_c.poll());
    drop(held_c);
    assert!(on_c.is_woken());
    drop(assert_ready_ok!(on_c.poll()));
    assert_counts(&pool, &[("a", 0, 0), ("b", 0, 0), ("c", 0, 0)], 0, 0);
}

#[test]
fn dropping_a_granted_but_unpolled_waiter_releases_its_slots() {
    // anyio #947: granted, then dropped before it was polled again.
    let pool = Pool::builder().limit("a", 1).build();
    let held = pool.try_acquire(["a"]).unwrap();
    let mut waiter = wait(&pool, &["a", "b"]);
    assert_pending!(waiter.poll());
    drop(held);
    assert!(waiter.is_woken());
    assert_counts(&pool, &[("a", 1, 0), ("b", 1, 0)], 1, 0);
    drop(waiter);
    assert_counts(&pool, &[("a", 0, 0), ("b", 0, 0)], 0, 0);
    drop(pool.try_acquire(["a", "b"]).unwrap());
}

#[test]
fn dropping_a_granted_but_unpolled_waiter_hands_its_slots_to_the_next_waiter() {
    let pool = Pool::builder().limit("a", 1).build();
    let held = pool.try_acquire(["a"]).unwrap();
    let mut w1 = wait(&pool, &["a"]);
    let mut w2 = wait(&pool, &["a"]);
    assert_pending!(w1.poll());
    assert_pending!(w2.poll());
    drop(held);
    assert!(w1.is_woken());
    assert!(!w2.is_woken());
    drop(w1);
    assert!(w2.is_woken());
    assert_counts(&pool, &[("a", 1, 0)], 1, 0);
    drop(assert_ready_ok!(w2.poll()));
    assert_counts(&pool, &[("a", 0, 0)], 0, 0);
}

#[tokio::test(start_paused = true)]
async fn timeout_around_acquire_leaves_nothing_behind() {
    let pool = Pool::builder().limit("a", 1).limit("b", 1).build();
    let held_b = pool.try_acquire(["b"]).unwrap();

    // It reserves a, then waits for b until it gives up.
    let late = tokio::time::timeout(Duration::from_millis(50), pool.acquire(["a", "b"])).await;
    assert!(late.is_err());
    assert_counts(&pool, &[("a", 0, 0), ("b", 1, 0)], 1, 0);
    // The reservation on a was given back.
    drop(pool.try_acquire(["a"]).unwrap());

    // A waiter behind a timed-out one gets the slot when it frees.
    let pool2 = pool.clone();
    let patient = tokio::spawn(async move { pool2.acquire(["b"]).await.map(drop) });
    while pool.waiting_count(&"b") == 0 {
        tokio::task::yield_now().await;
    }
    let impatient = tokio::time::timeout(Duration::from_millis(10), pool.acquire(["b"])).await;
    assert!(impatient.is_err());
    assert_eq!(pool.waiting_count(&"b"), 1);
    drop(held_b);
    tokio::time::timeout(Duration::from_secs(10), patient)
        .await
        .expect("the patient waiter was not served")
        .unwrap()
        .unwrap();
    assert_counts(&pool, &[("a", 0, 0), ("b", 0, 0)], 0, 0);
}

#[tokio::test(start_paused = true)]
async fn timeout_around_spawn_leaves_nothing_behind_and_never_polls_the_task() {
    let pool = Pool::builder().limit("a", 1).build();
    let held = pool.try_acquire(["a"]).unwrap();
    let (polled, future) = flagged();
    let late =
        tokio::time::timeout(Duration::from_millis(50), pool.spawn(["a", "b"], future)).await;
    assert!(late.is_err());
    assert_counts(&pool, &[("a", 1, 0), ("b", 0, 0)], 1, 0);
    drop(held);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!polled.load(Ordering::SeqCst));
    assert_counts(&pool, &[("a", 0, 0), ("b", 0, 0)], 0, 0);
}

#[tokio::test]
async fn a_dropped_spawn_future_never_polls_its_task() {
    let pool = Pool::builder().limit("a", 1).build();
    let held = pool.try_acquire(["a"]).unwrap();

    // Dropped while queued.
    let (polled_queued, future) = flagged();
    let mut queued = mock(pool.spawn(["a"], future));
    assert_pending!(queued.poll());
    assert_counts(&pool, &[("a", 1, 1)], 1, 1);
    drop(queued);
    assert_counts(&pool, &[("a", 1, 0)], 1, 0);

    // Dropped after it was granted, before it was polled again.
    let (polled_granted, future) = flagged();
    let mut granted = mock(pool.spawn(["a"], future));
    assert_pending!(granted.poll());
    drop(held);
    assert!(granted.is_woken());
    assert_counts(&pool, &[("a", 1, 0)], 1, 0);
    drop(granted);
    assert_counts(&pool, &[("a", 0, 0)], 0, 0);

    // Give any wrongly spawned task every chance to run.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!polled_queued.load(Ordering::SeqCst));
    assert!(!polled_granted.load(Ordering::SeqCst));
    assert_counts(&pool, &[("a", 0, 0)], 0, 0);

    // A spawn that is polled to completion does run its task.
    let (polled, future) = flagged();
    let mut spawned = mock(pool.spawn(["a"], future));
    let handle = assert_ready_ok!(spawned.poll());
    handle.await.unwrap();
    assert!(polled.load(Ordering::SeqCst));
    assert_counts(&pool, &[("a", 0, 0)], 0, 0);
}

// ---------------------------------------------------------------------------------------------
// Limit changes wake exactly the waiters that can now go in.
// ---------------------------------------------------------------------------------------------

#[test]
fn raising_a_limit_wakes_exactly_the_waiters_that_fit() {
    let pool = Pool::builder().limit("a", 1).build();
    let held = pool.try_acquire(["a"]).unwrap();
    let mut waiters: Vec<_> = (0..3).map(|_| wait(&pool, &["a"])).collect();
    for waiter in &mut waiters {
        assert_pending!(waiter.poll());
    }

    pool.set_limit("a", 3); // room for two more
    assert!(waiters[0].is_woken());
    assert!(waiters[1].is_woken());
    assert!(!waiters[2].is_woken());
    assert_counts(&pool, &[("a", 3, 1)], 3, 1);
    let p0 = assert_ready_ok!(waiters[0].poll());
    let p1 = assert_ready_ok!(waiters[1].poll());
    assert_pending!(waiters[2].poll());

    // Setting the same limit again wakes nobody.
    pool.set_limit("a", 3);
    assert!(!waiters[2].is_woken());

    pool.set_limit("a", 4);
    assert!(waiters[2].is_woken());
    let p2 = assert_ready_ok!(waiters[2].poll());
    assert_counts(&pool, &[("a", 4, 0)], 4, 0);
    drop((held, p0, p1, p2));
    assert_counts(&pool, &[("a", 0, 0)], 0, 0);
}

#[test]
fn raising_a_limit_does_not_wake_waiters_still_missing_another_group() {
    let pool = Pool::builder().limit("a", 1).limit("b", 1).build();
    let held_a = pool.try_acquire(["a"]).unwrap();
    let held_b = pool.try_acquire(["b"]).unwrap();
    let mut ab = wait(&pool, &["a", "b"]);
    let mut a = wait(&pool, &["a"]);
    assert_pending!(ab.poll());
    assert_pending!(a.poll());

    pool.set_limit("a", 2); // the new slot is reserved for ab, which still misses b
    assert!(!ab.is_woken());
    assert!(!a.is_woken());
    assert_counts(&pool, &[("a", 1, 2), ("b", 1, 1)], 2, 2);
    pool.set_limit("a", 3);
    assert!(!ab.is_woken());
    assert!(a.is_woken());
    drop(assert_ready_ok!(a.poll()));
    assert!(!ab.is_woken());
    pool.set_limit("b", 2);
    assert!(ab.is_woken());
    drop(assert_ready_ok!(ab.poll()));
    drop((held_a, held_b));
    assert_counts(&pool, &[("a", 0, 0), ("b", 0, 0)], 0, 0);
}

#[test]
fn lowering_a_limit_wakes_nobody_and_cancels_nothing() {
    let pool = Pool::builder().limit("a", 2).build();
    let p1 = pool.try_acquire(["a"]).unwrap();
    let p2 = pool.try_acquire(["a"]).unwrap();
    let mut waiter = wait(&pool, &["a"]);
    assert_pending!(waiter.poll());

    pool.set_limit("a", 1);
    assert!(!waiter.is_woken());
    assert_counts(&pool, &[("a", 2, 1)], 2, 1);
    drop(p1);
    assert!(!waiter.is_woken(), "one running, limit 1: no room");
    assert_pending!(waiter.poll());
    assert_counts(&pool, &[("a", 1, 1)], 1, 1);
    drop(p2);
    assert!(waiter.is_woken());
    drop(assert_ready_ok!(waiter.poll()));

    pool.set_limit("a", 0);
    let mut never = wait(&pool, &["a"]);
    assert_pending!(never.poll());
    assert!(!never.is_woken());
    drop(never);
    assert_counts(&pool, &[("a", 0, 0)], 0, 0);
}

#[test]
fn clear_limit_wakes_every_waiter_on_the_group_that_has_its_other_slots() {
    let pool = Pool::builder().limit("a", 1).limit("b", 1).build();
    let held_a = pool.try_acquire(["a"]).unwrap();
    let held_b = pool.try_acquire(["b"]).unwrap();
    let mut on_a: Vec<_> = (0..3).map(|_| wait(&pool, &["a"])).collect();
    let mut ab = wait(&pool, &["a", "b"]);
    let mut on_b = wait(&pool, &["b"]);
    for waiter in on_a.iter_mut().chain([&mut ab, &mut on_b]) {
        assert_pending!(waiter.poll());
    }

    pool.clear_limit(&"a");
    assert_eq!(pool.limit(&"a"), None);
    for waiter in &on_a {
        assert!(waiter.is_woken());
    }
    assert!(!ab.is_woken(), "still misses b");
    assert!(!on_b.is_woken());
    assert_counts(&pool, &[("a", 4, 1), ("b", 1, 2)], 5, 2);
    let permits: Vec<_> = on_a
        .iter_mut()
        .map(|w| assert_ready_ok!(w.poll()))
        .collect();
    assert_pending!(ab.poll());

    // set_limit(None) is the same as clear_limit.
    pool.set_limit("b", None);
    assert!(ab.is_woken());
    assert!(on_b.is_woken());
    drop(assert_ready_ok!(ab.poll()));
    drop(assert_ready_ok!(on_b.poll()));
    drop((permits, held_a, held_b));
    assert_counts(&pool, &[("a", 0, 0), ("b", 0, 0)], 0, 0);
}

#[test]
fn clear_limit_falls_back_to_the_default_limit() {
    let pool = Pool::builder().default_limit(2).limit("a", 1).build();
    let held = pool.try_acquire(["a"]).unwrap();
    let mut waiters: Vec<_> = (0..3).map(|_| wait(&pool, &["a"])).collect();
    for waiter in &mut waiters {
        assert_pending!(waiter.poll());
    }
    pool.clear_limit(&"a"); // the default, 2, applies: one more
    assert!(waiters[0].is_woken());
    assert!(!waiters[1].is_woken());
    assert!(!waiters[2].is_woken());
    assert_counts(&pool, &[("a", 2, 2)], 2, 2);
    drop(waiters);
    drop(held);
    assert_counts(&pool, &[("a", 0, 0)], 0, 0);
}

#[test]
fn raising_the_default_limit_wakes_waiters_in_groups_without_an_explicit_limit_only() {
    let pool = Pool::builder().default_limit(1).limit("low", 1).build();
    let held: Vec<_> = ["a", "b", "low"]
        .into_iter()
        .map(|k| pool.try_acquire([k]).unwrap())
        .collect();
    let mut a1 = wait(&pool, &["a"]);
    let mut a2 = wait(&pool, &["a"]);
    let mut a3 = wait(&pool, &["a"]);
    let mut b1 = wait(&pool, &["b"]);
    let mut low = wait(&pool, &["low"]);
    let mut b_low = wait(&pool, &["b", "low"]);
    for waiter in [&mut a1, &mut a2, &mut a3, &mut b1, &mut low, &mut b_low] {
        assert_pending!(waiter.poll());
    }

    pool.set_default_limit(3);
    assert!(a1.is_woken() && a2.is_woken());
    assert!(!a3.is_woken());
    assert!(b1.is_woken());
    assert!(
        !low.is_woken(),
        "an explicit lower limit wins over the default"
    );
    assert!(!b_low.is_woken(), "b's slot is reserved, low is still full");
    assert_counts(&pool, &[("a", 3, 1), ("b", 2, 1), ("low", 1, 2)], 6, 3);
    let p: Vec<_> = [&mut a1, &mut a2, &mut b1]
        .into_iter()
        .map(|w| assert_ready_ok!(w.poll()))
        .collect();

    // Lowering the default wakes nobody.
    pool.set_default_limit(1);
    assert!(!a3.is_woken() && !low.is_woken() && !b_low.is_woken());

    // Removing it wakes everyone in default-limited groups that has its other slots.
    pool.set_default_limit(None);
    assert!(a3.is_woken());
    assert!(!low.is_woken());
    assert!(!b_low.is_woken());
    drop(assert_ready_ok!(a3.poll()));
    drop(p);
    drop(held);
    // low's holder released: low goes to the oldest waiter on it.
    assert!(low.is_woken());
    assert!(!b_low.is_woken());
    drop(assert_ready_ok!(low.poll()));
    assert!(b_low.is_woken());
    drop(assert_ready_ok!(b_low.poll()));
    assert_counts(&pool, &[("a", 0, 0), ("b", 0, 0), ("low", 0, 0)], 0, 0);
}

#[test]
fn set_max_tasks_wakes_exactly_the_waiters_that_fit() {
    let pool = Pool::builder().max_tasks(1).build();
    let held = pool.try_acquire([]).unwrap();
    let mut w1 = wait(&pool, &["a"]);
    let mut w2 = wait(&pool, &["b"]);
    let mut w3 = wait(&pool, &[]);
    for waiter in [&mut w1, &mut w2, &mut w3] {
        assert_pending!(waiter.poll());
    }
    assert_counts(&pool, &[("a", 0, 1), ("b", 0, 1)], 1, 3);

    pool.set_max_tasks(3);
    assert!(w1.is_woken() && w2.is_woken());
    assert!(!w3.is_woken());
    assert_counts(&pool, &[("a", 1, 0), ("b", 1, 0)], 3, 1);
    pool.set_max_tasks(2); // lowering wakes nobody
    assert!(!w3.is_woken());
    pool.set_max_tasks(None);
    assert!(w3.is_woken());
    for waiter in [&mut w1, &mut w2, &mut w3] {
        drop(assert_ready_ok!(waiter.poll()));
    }
    drop(held);
    assert_counts(&pool, &[("a", 0, 0), ("b", 0, 0)], 0, 0);
}

#[test]
fn raising_max_tasks_serves_ready_waiters_not_those_still_blocked_elsewhere() {
    // w1 is blocked on a, so it has not asked for a total slot yet (the total is the last gate);
    // w2 has all its groups and waits only for the total: the new total slot is w2's.
    let pool = Pool::builder().max_tasks(1).limit("a", 1).build();
    let held = pool.try_acquire(["a"]).unwrap();
    let mut w1 = wait(&pool, &["a"]);
    let mut w2 = wait(&pool, &["b"]);
    assert_pending!(w1.poll());
    assert_pending!(w2.poll());
    pool.set_max_tasks(2);
    assert!(!w1.is_woken());
    assert!(w2.is_woken());
    assert_eq!(
        pool.try_acquire(["c"]).unwrap_err().full_group(),
        Some(&Group::Total)
    );
    let p2 = assert_ready_ok!(w2.poll());
    drop(held);
    assert!(w1.is_woken());
    drop(assert_ready_ok!(w1.poll()));
    drop(p2);
    assert_counts(&pool, &[("a", 0, 0), ("b", 0, 0)], 0, 0);
}

// ---------------------------------------------------------------------------------------------
// Permits.
// ---------------------------------------------------------------------------------------------

#[test]
fn permit_debug_names_its_groups() {
    let pool = Pool::new();
    let permit = pool.try_acquire(["alpha", "beta", "alpha"]).unwrap();
    let debug = format!("{permit:?}");
    assert!(debug.contains("Permit"), "{debug}");
    assert!(debug.contains("alpha") && debug.contains("beta"), "{debug}");

    let mut waiter = wait(&pool, &["gamma"]);
    let waited = assert_ready_ok!(waiter.poll());
    assert!(format!("{waited:?}").contains("gamma"));
}

#[test]
fn dropping_a_resolved_acquire_future_keeps_its_permit() {
    // Once Ready, the future holds nothing: the permit alone holds the slot.
    let pool = Pool::builder().limit("a", 1).build();
    let mut waiter = wait(&pool, &["a"]);
    let permit = assert_ready!(waiter.poll()).unwrap();
    drop(waiter);
    assert_counts(&pool, &[("a", 1, 0)], 1, 0);
    drop(permit);
    assert_counts(&pool, &[("a", 0, 0)], 0, 0);
}

// ---------------------------------------------------------------------------------------------
// Wakers, wide group sets, many groups.
// ---------------------------------------------------------------------------------------------

#[test]
fn a_waiter_moved_to_another_task_wakes_the_task_that_polled_it_last() {
    let pool = Pool::builder().limit("a", 1).build();
    let held = pool.try_acquire(["a"]).unwrap();
    let mut first_task = mock(Box::pin(pool.acquire(["a"])));
    assert_pending!(first_task.poll());
    let mut second_task = mock(first_task.into_inner());
    assert_pending!(second_task.poll());
    drop(held);
    assert!(second_task.is_woken());
    drop(assert_ready_ok!(second_task.poll()));
    assert_counts(&pool, &[("a", 0, 0)], 0, 0);
}

#[test]
fn a_waiter_naming_many_groups_with_repeats_is_counted_once_in_each() {
    let pool = TaskPool::<u32>::builder().default_limit(1).build();
    let groups: Vec<u32> = (0..40).chain((0..40).rev()).chain([7, 7, 39]).collect();
    let held = pool.try_acquire([25]).unwrap();
    let mut waiter = mock(pool.acquire(groups.clone()));
    assert_pending!(waiter.poll());
    for key in 0..40 {
        assert_eq!(pool.waiting_count(&key), 1, "waiting_count({key})");
    }
    assert_eq!(pool.waiting_len(), 1);
    // Its reservations in the other 39 groups keep try_* out of them.
    assert_eq!(
        pool.try_acquire([40, 3]).unwrap_err().full_group(),
        Some(&Group::Key(3))
    );
    drop(held);
    assert!(waiter.is_woken());
    let permit = assert_ready_ok!(waiter.poll());
    assert_eq!(
        permit.groups().copied().collect::<Vec<_>>(),
        (0..40).collect::<Vec<_>>()
    );
    for key in 0..40 {
        assert_eq!(pool.task_count(&key), 1, "task_count({key})");
        assert_eq!(pool.waiting_count(&key), 0);
    }
    assert_eq!(pool.len(), 1);
    drop(permit);
    for key in 0..40 {
        assert_eq!(pool.task_count(&key), 0);
    }
    assert!(pool.is_empty());

    // The same waiter dropped while it holds 39 reservations gives them all back.
    let held = pool.try_acquire([25]).unwrap();
    let mut waiter = mock(pool.acquire(groups));
    assert_pending!(waiter.poll());
    drop(waiter);
    assert_eq!(pool.waiting_len(), 0);
    drop(pool.try_acquire((0..40).filter(|&k| k != 25)).unwrap());
    drop(held);
    assert!(pool.is_empty());
}

#[test]
fn a_long_chain_of_overlapping_waiters_is_served_one_by_one_and_drains_to_zero() {
    // Waiter i wants [i, i + 1]; every key has limit 1 and starts held. Key k is owed first to
    // waiter k - 1, so after every holder is gone only waiter 0 has both its keys; each one
    // served hands key i + 1 to waiter i + 1. Hundreds of groups and waiters also exercise the
    // reclamation of the pool's tables as it drains.
    const N: u32 = 300;
    let pool = TaskPool::<u32>::builder().default_limit(1).build();
    let holders: Vec<_> = (0..=N).map(|k| pool.try_acquire([k]).unwrap()).collect();
    let mut waiters: Vec<_> = (0..N).map(|i| mock(pool.acquire([i, i + 1]))).collect();
    for waiter in &mut waiters {
        assert_pending!(waiter.poll());
    }
    assert_eq!(pool.waiting_len(), usize::try_from(N).unwrap());
    assert_eq!(pool.waiting_count(&0), 1);
    assert_eq!(pool.waiting_count(&5), 2);

    for holder in holders.into_iter().rev() {
        drop(holder);
    }
    assert!(waiters[0].is_woken());
    assert!(waiters[1..].iter().all(|w| !w.is_woken()));
    assert_eq!(pool.len(), 1);
    // Every waiter now holds key i + 1 and waits for key i.
    assert_eq!(pool.waiting_len(), usize::try_from(N - 1).unwrap());

    for i in 0..waiters.len() {
        let permit = assert_ready_ok!(waiters[i].poll());
        drop(permit);
        if let Some(next) = waiters.get(i + 1) {
            assert!(next.is_woken(), "waiter {} not woken", i + 1);
        }
        if let Some(after) = waiters.get(i + 2) {
            assert!(!after.is_woken(), "waiter {} woken too early", i + 2);
        }
    }
    assert!(pool.is_empty());
    assert_eq!(pool.waiting_len(), 0);
    for key in 0..=N {
        assert_eq!(pool.task_count(&key), 0);
        assert_eq!(pool.waiting_count(&key), 0);
    }
    drop(pool.try_acquire(0..=N).unwrap());
}

#[test]
fn a_waiter_takes_its_place_in_the_queue_when_first_polled() {
    let pool = Pool::builder().limit("a", 1).build();
    let held = pool.try_acquire(["a"]).unwrap();
    let mut made_first = wait(&pool, &["a"]);
    let mut polled_first = wait(&pool, &["a"]);
    // Made but not polled: not waiting yet.
    assert_counts(&pool, &[("a", 1, 0)], 1, 0);
    assert_pending!(polled_first.poll());
    assert_pending!(made_first.poll());
    assert_counts(&pool, &[("a", 1, 2)], 1, 2);
    drop(held);
    assert!(polled_first.is_woken());
    assert!(!made_first.is_woken());
    drop(assert_ready_ok!(polled_first.poll()));
    assert!(made_first.is_woken());
    drop(assert_ready_ok!(made_first.poll()));
}

#[tokio::test]
async fn waiting_futures_do_not_borrow_the_pool() {
    let pool = Pool::builder().limit("a", 1).build();
    let held = pool.try_acquire(["a"]).unwrap();
    let acquire = pool.acquire(["a"]);
    let spawn = pool.spawn(["a"], async { 5 });
    let observer = pool.clone();
    drop(pool);
    // 'static and Send: they can be spawned as tasks of their own.
    let acquired = tokio::spawn(acquire);
    let spawned = tokio::spawn(spawn);
    while observer.waiting_len() < 2 {
        tokio::task::yield_now().await;
    }
    drop(held);
    let all = async {
        drop(acquired.await.unwrap().unwrap());
        spawned.await.unwrap().unwrap().await.unwrap()
    };
    let five = tokio::time::timeout(Duration::from_secs(10), all)
        .await
        .expect("waiters not served");
    assert_eq!(five, 5);
    assert_counts(&observer, &[("a", 0, 0)], 0, 0);
}

#[test]
fn a_waiter_blocked_on_a_named_group_holds_no_total_slot() {
    // The total is the last gate: a waiter asks for a total slot only once it holds every group
    // it names, so a group closed with limit 0 does not hold the pool's capacity hostage.
    let pool = Pool::builder().max_tasks(1).limit("db", 0).build();
    let mut blocked = wait(&pool, &["db"]);
    assert_pending!(blocked.poll());
    assert_eq!(pool.waiting_len(), 1);
    assert_eq!(
        pool.total_stats().waiting,
        1,
        "still counted as waiting in the total"
    );

    let web = pool
        .try_acquire(["web"])
        .expect("the only total slot is free: the db waiter must not hold it");
    assert_counts(&pool, &[("db", 0, 1), ("web", 1, 0)], 1, 1);

    // Once db opens, the waiter becomes ready and queues for the total behind nobody: it gets
    // the slot when the web permit goes.
    pool.set_limit("db", 1);
    assert_pending!(blocked.poll());
    drop(web);
    assert!(blocked.is_woken());
    let permit = assert_ready_ok!(blocked.poll());
    assert_counts(&pool, &[("db", 1, 0), ("web", 0, 0)], 1, 0);
    drop(permit);
}

#[test]
fn ready_waiters_are_served_the_total_in_the_order_they_became_ready() {
    let pool = Pool::builder().max_tasks(2).limit("a", 1).build();
    let x = pool.try_acquire(["x"]).unwrap();
    let _a = pool.try_acquire(["a"]).unwrap();
    // w1 arrives first but waits for a; w2 needs only the total and is ready at once.
    let mut w1 = wait(&pool, &["a"]);
    assert_pending!(w1.poll());
    let mut w2 = wait(&pool, &[]);
    assert_pending!(w2.poll());
    // Room in a: w1 now holds a and queues for the total, behind w2.
    pool.set_limit("a", 2);
    assert!(!w1.is_woken());
    drop(x);
    assert!(w2.is_woken(), "the first ready waiter gets the total slot");
    assert!(!w1.is_woken());
    let p2 = assert_ready_ok!(w2.poll());
    drop(p2);
    assert!(w1.is_woken());
    drop(assert_ready_ok!(w1.poll()));
}
