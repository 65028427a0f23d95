//! The pool's lifecycle: `close`, `reopen`, `wait`, `abort_group`, `abort_all` and `shutdown`.
//!
//! Single-threaded tests drive the `wait`, `spawn`, `acquire` and `shutdown` futures by hand
//! through `tokio_test::task::spawn`, so each one sees exactly when a future is woken and what it
//! returns. Tasks spawned on the test's current-thread runtime run only when the test awaits, so
//! an aborted task has been dropped (and has released its slots) once its `JoinHandle` resolved.
//! The multi-threaded tests at the end race aborts, spawns and shutdowns and only check that
//! everything drains; a generous timeout turns a hang into a failure.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use support::{admitted, refused};
use taskherd::{AcquireError, TaskPool};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_test::task::spawn as mock;
use tokio_test::{assert_pending, assert_ready, assert_ready_err, assert_ready_ok};

type Pool = TaskPool<&'static str>;

/// Long enough that only a hang reaches it. Tests that run on a paused clock reach it at once
/// when they hang (the runtime auto-advances an idle clock), so it costs nothing.
const HANG: Duration = Duration::from_secs(60);

/// Awaits `future`, failing the test if it does not complete within [`HANG`].
async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(HANG, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what} did not complete within {HANG:?}"),
    }
}

/// A future that records that it was polled, then completes.
fn flagged() -> (Arc<AtomicBool>, impl Future<Output = ()> + Send + 'static) {
    let polled = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&polled);
    (polled, async move {
        flag.store(true, Ordering::SeqCst);
    })
}

/// A future that completes with `value` once the returned sender fires (or is dropped).
fn gated<T: Send + 'static>(value: T) -> (oneshot::Sender<()>, impl Future<Output = T> + Send) {
    let (tx, rx) = oneshot::channel();
    (tx, async move {
        let _ = rx.await;
        value
    })
}

/// Spawns a task that never completes on its own.
#[track_caller]
fn spawn_pending(pool: &Pool, groups: &[&'static str]) -> JoinHandle<()> {
    admitted(pool.try_spawn(groups.to_vec(), std::future::pending::<()>()))
}

/// Awaits a handle that must have been aborted.
async fn assert_cancelled<T: std::fmt::Debug>(handle: JoinHandle<T>) {
    let error = within("an aborted task", handle)
        .await
        .expect_err("the task was not aborted");
    assert!(error.is_cancelled(), "the task ended otherwise: {error}");
}

/// Asserts the pool's live counts: `task_count` per key, `len()` and `waiting_len()`.
#[track_caller]
fn assert_counts(pool: &Pool, keys: &[(&'static str, usize)], len: usize, waiting: usize) {
    for &(key, running) in keys {
        assert_eq!(pool.task_count(&key), running, "task_count({key:?})");
    }
    assert_eq!(pool.len(), len, "len()");
    assert_eq!(pool.waiting_len(), waiting, "waiting_len()");
}

// ---------------------------------------------------------------------------------------------
// close, is_closed, reopen.
// ---------------------------------------------------------------------------------------------

#[test]
fn close_returns_true_only_for_the_call_that_closed_the_pool() {
    let pool = Pool::new();
    assert!(!pool.is_closed());
    assert!(pool.close());
    assert!(pool.is_closed());
    assert!(!pool.close());
    assert!(!pool.close());
    assert!(pool.is_closed());
}

#[test]
fn reopen_returns_true_only_for_the_call_that_reopened_the_pool() {
    let pool = Pool::new();
    assert!(!pool.reopen(), "an open pool was reopened");
    assert!(pool.close());
    assert!(pool.reopen());
    assert!(!pool.is_closed());
    assert!(!pool.reopen());
    // The cycle can be repeated.
    assert!(pool.close());
    assert!(!pool.close());
    assert!(pool.reopen());
    assert!(!pool.is_closed());
}

#[test]
fn clones_share_the_closed_state() {
    let pool = Pool::new();
    let clone = pool.clone();
    assert!(clone.close());
    assert!(pool.is_closed());
    assert!(!pool.close());
    assert!(pool.reopen());
    assert!(!clone.is_closed());
}

#[test]
fn close_keeps_limits_and_running_admissions() {
    let pool = Pool::builder()
        .max_tasks(5)
        .default_limit(3)
        .limit("a", 2)
        .build();
    let permit = pool.try_acquire(["a", "b"]).unwrap();
    assert!(pool.close());
    assert_eq!(
        (pool.max_tasks(), pool.default_limit(), pool.limit(&"a")),
        (Some(5), Some(3), Some(2))
    );
    assert_counts(&pool, &[("a", 1), ("b", 1)], 1, 0);
    drop(permit);
    assert_counts(&pool, &[("a", 0), ("b", 0)], 0, 0);
}

#[tokio::test]
async fn try_spawn_after_close_is_refused_as_closed_and_hands_the_future_back_unpolled() {
    let pool = Pool::new();
    pool.close();
    let (polled, future) = flagged();
    let error = refused(pool.try_spawn(["a"], future));
    assert!(error.is_closed());
    assert!(!error.is_full());
    assert_eq!(error.full_group(), None);
    assert_counts(&pool, &[("a", 0)], 0, 0);
    assert!(
        !polled.load(Ordering::SeqCst),
        "a refused future was polled"
    );
    error.into_inner().await;
    assert!(polled.load(Ordering::SeqCst));
}

#[tokio::test]
async fn try_spawn_with_after_close_does_not_call_the_closure() {
    let pool = Pool::new();
    pool.close();
    let error = refused(pool.try_spawn_with(["a"], || -> std::future::Ready<u8> {
        panic!("the closure of a refused task was called")
    }));
    assert!(error.is_closed());
    assert_eq!(error.full_group(), None);
}

#[test]
fn try_acquire_after_close_is_refused_as_closed() {
    let pool = Pool::new();
    pool.close();
    let error = pool.try_acquire(["a"]).unwrap_err();
    assert!(error.is_closed());
    assert!(!error.is_full());
    assert_eq!(error.full_group(), None);
    assert_counts(&pool, &[("a", 0)], 0, 0);
}

#[test]
fn a_closed_pool_reports_closed_even_where_a_group_is_also_full() {
    let pool = Pool::builder().limit("a", 0).max_tasks(0).build();
    pool.close();
    let error = pool.try_acquire(["a"]).unwrap_err();
    assert!(error.is_closed() && !error.is_full());
    assert_eq!(error.full_group(), None);
}

#[tokio::test]
async fn spawn_and_acquire_created_after_close_fail_at_once() {
    let pool = Pool::new();
    pool.close();

    let (polled, future) = flagged();
    let mut spawn = mock(pool.spawn(["a"], future));
    let error = assert_ready_err!(spawn.poll());
    assert!(!polled.load(Ordering::SeqCst));
    error.into_inner().await;
    assert!(polled.load(Ordering::SeqCst));

    let mut acquire = mock(pool.acquire(["a"]));
    let _: AcquireError = assert_ready_err!(acquire.poll());
    assert_counts(&pool, &[("a", 0)], 0, 0);
}

#[tokio::test]
async fn spawn_created_before_close_but_first_polled_after_it_fails() {
    let pool = Pool::new();
    let (polled, future) = flagged();
    let mut spawn = mock(pool.spawn(["a"], future));
    pool.close();
    let error = assert_ready_err!(spawn.poll());
    assert!(!polled.load(Ordering::SeqCst));
    drop(error);
    assert_counts(&pool, &[("a", 0)], 0, 0);
}

// ---------------------------------------------------------------------------------------------
// Waiting spawns and acquires when the pool closes.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn waiting_spawn_fails_on_close_and_hands_its_future_back_unpolled() {
    let pool = Pool::builder().limit("a", 1).build();
    let held = pool.try_acquire(["a"]).unwrap();

    let (polled, future) = flagged();
    let mut waiter = mock(pool.spawn(["a"], future));
    assert_pending!(waiter.poll());
    assert_counts(&pool, &[("a", 1)], 1, 1);

    assert!(pool.close());
    assert!(waiter.is_woken(), "close did not wake the waiting spawn");
    assert_counts(&pool, &[("a", 1)], 1, 0);
    assert_eq!(pool.waiting_count(&"a"), 0);

    let error = assert_ready_err!(waiter.poll());
    assert!(
        !polled.load(Ordering::SeqCst),
        "a spawn failed by close was polled"
    );
    error.into_inner().await;
    assert!(polled.load(Ordering::SeqCst));

    // The permit admitted before close still counts, and releases normally.
    drop(held);
    assert_counts(&pool, &[("a", 0)], 0, 0);
}

#[test]
fn waiting_acquire_fails_on_close_with_acquire_error() {
    let pool = Pool::builder().max_tasks(1).build();
    let held = pool.try_acquire(["a"]).unwrap();

    let mut waiter = mock(pool.acquire(["b"]));
    assert_pending!(waiter.poll());
    assert_counts(&pool, &[("a", 1), ("b", 0)], 1, 1);

    pool.close();
    assert!(waiter.is_woken());
    let error: AcquireError = assert_ready_err!(waiter.poll());
    assert!(!error.to_string().is_empty());
    assert_counts(&pool, &[("a", 1), ("b", 0)], 1, 0);
    drop(held);
    assert_counts(&pool, &[("a", 0), ("b", 0)], 0, 0);
}

#[test]
fn every_waiter_fails_on_close() {
    let pool = Pool::builder().limit("a", 1).build();
    let held = pool.try_acquire(["a"]).unwrap();
    let mut waiters: Vec<_> = (0..5).map(|_| mock(pool.acquire(["a", "b"]))).collect();
    for waiter in &mut waiters {
        assert_pending!(waiter.poll());
    }
    assert_eq!(pool.waiting_len(), 5);
    pool.close();
    for waiter in &mut waiters {
        assert!(waiter.is_woken());
        let _: AcquireError = assert_ready_err!(waiter.poll());
    }
    // Dropping the failed futures changes nothing.
    drop(waiters);
    assert_counts(&pool, &[("a", 1), ("b", 0)], 1, 0);
    drop(held);
    assert_counts(&pool, &[("a", 0), ("b", 0)], 0, 0);
}

#[test]
fn waiters_holding_partial_reservations_give_them_back_on_close() {
    let pool = Pool::builder().limit("a", 1).limit("b", 1).build();
    let held = pool.try_acquire(["a"]).unwrap();

    // Takes the free slot of "b" as a reservation and queues on "a".
    let mut partial = mock(pool.acquire(["b", "a"]));
    assert_pending!(partial.poll());
    // Queues on "b" behind the reservation.
    let mut behind = mock(pool.acquire(["b"]));
    assert_pending!(behind.poll());
    assert_eq!(pool.waiting_count(&"a"), 1);
    assert_eq!(pool.waiting_count(&"b"), 2);
    assert_eq!(pool.stats(&"b").waiting, 2);
    assert_counts(&pool, &[("a", 1), ("b", 0)], 1, 2);
    assert!(pool.try_acquire(["b"]).unwrap_err().is_full());

    pool.close();
    assert!(partial.is_woken() && behind.is_woken());
    assert_eq!(pool.waiting_count(&"a"), 0);
    assert_eq!(pool.waiting_count(&"b"), 0);
    assert_eq!(pool.stats(&"b").waiting, 0);
    assert_eq!(pool.total_stats().waiting, 0);
    assert_counts(&pool, &[("a", 1), ("b", 0)], 1, 0);
    // The reservation went back to "b" and was not handed to the younger waiter.
    let _: AcquireError = assert_ready_err!(partial.poll());
    let _: AcquireError = assert_ready_err!(behind.poll());
    assert_counts(&pool, &[("a", 1), ("b", 0)], 1, 0);

    // Once reopened, "b" has its slot back.
    pool.reopen();
    let b = pool
        .try_acquire(["b"])
        .expect("the reservation of b was given back");
    assert_counts(&pool, &[("a", 1), ("b", 1)], 2, 0);
    drop((b, held));
    assert_counts(&pool, &[("a", 0), ("b", 0)], 0, 0);
}

#[test]
fn granted_but_unpolled_acquire_fails_after_close_and_releases_its_slots() {
    let pool = Pool::builder().limit("a", 1).build();
    let held = pool.try_acquire(["a"]).unwrap();
    let mut waiter = mock(pool.acquire(["a", "b"]));
    assert_pending!(waiter.poll());

    drop(held);
    assert!(waiter.is_woken());
    // Granted at release time: it counts, but its future has not returned the permit.
    assert_counts(&pool, &[("a", 1), ("b", 1)], 1, 0);

    // Closing releases the granted waiter's slots at once: `wait` does not depend on its
    // future being polled again.
    pool.close();
    assert_counts(&pool, &[("a", 0), ("b", 0)], 0, 0);
    let mut idle = mock(pool.wait());
    assert_ready!(idle.poll());

    let _: AcquireError = assert_ready_err!(waiter.poll());
    assert_counts(&pool, &[("a", 0), ("b", 0)], 0, 0);

    // The slots really are free once the pool reopens.
    pool.reopen();
    let _permit = pool.try_acquire(["a", "b"]).unwrap();
}

#[test]
fn granted_but_unpolled_acquire_dropped_after_close_releases_its_slots() {
    let pool = Pool::builder().limit("a", 1).build();
    let held = pool.try_acquire(["a"]).unwrap();
    let mut waiter = mock(pool.acquire(["a"]));
    assert_pending!(waiter.poll());
    drop(held);
    let mut idle = mock(pool.wait());
    assert_pending!(idle.poll(), "the pool is open");
    pool.close();
    assert_counts(&pool, &[("a", 0)], 0, 0);
    assert!(idle.is_woken());
    assert_ready!(idle.poll());
    drop(waiter);
    assert_counts(&pool, &[("a", 0)], 0, 0);
}

#[tokio::test]
async fn granted_but_unpolled_spawn_fails_after_close_with_its_future_unpolled() {
    let pool = Pool::builder().limit("a", 1).build();
    let held = pool.try_acquire(["a"]).unwrap();
    let (polled, future) = flagged();
    let mut waiter = mock(pool.spawn(["a"], future));
    assert_pending!(waiter.poll());
    drop(held);
    assert!(waiter.is_woken());
    assert_counts(&pool, &[("a", 1)], 1, 0);

    pool.close();
    let error = assert_ready_err!(waiter.poll());
    assert_counts(&pool, &[("a", 0)], 0, 0);
    assert!(
        !polled.load(Ordering::SeqCst),
        "the future was spawned after close"
    );
    error.into_inner().await;
    assert!(polled.load(Ordering::SeqCst));
}

/// `close` documents that *every* `spawn`/`acquire` future that has not completed yet fails,
/// "including one whose slots were granted but that was not polled since". A waiter that was
/// still missing a slot at `close` fails whatever happens later; one that was already granted
/// is not failed by `close` itself but only when its future is next polled, and only if the
/// pool is *still* closed then.
#[test]
fn granted_but_unpolled_acquire_fails_even_if_the_pool_is_reopened_before_it_is_polled() {
    let pool = Pool::builder().limit("a", 1).build();
    let held = pool.try_acquire(["a"]).unwrap();
    let mut granted = mock(pool.acquire(["a"]));
    assert_pending!(granted.poll());
    let mut queued = mock(pool.acquire(["b", "a"]));
    assert_pending!(queued.poll());
    drop(held);
    assert!(granted.is_woken());

    pool.close();
    pool.reopen();
    // The waiter that was still queued at close fails after the reopen ...
    let _: AcquireError = assert_ready_err!(queued.poll());
    // ... and so must the one that was granted but had not returned its permit.
    let outcome = assert_ready!(granted.poll());
    assert!(
        outcome.is_err(),
        "a granted acquire returned its permit although the pool was closed before it returned"
    );
    assert_counts(&pool, &[("a", 0), ("b", 0)], 0, 0);
}

/// A `spawn` or `acquire` future made before `close` and first polled after `reopen` fails
/// too: `close` fails every such future that has not completed, polled or not. One made after
/// the `close` (even while the pool is closed) is admitted once the pool is reopened.
#[tokio::test]
async fn futures_made_before_close_fail_even_if_first_polled_after_reopen() {
    let pool = Pool::new();
    let mut acquire = mock(pool.acquire(["a"]));
    let spawned = Arc::new(AtomicBool::new(false));
    let ran = Arc::clone(&spawned);
    let mut spawn = mock(pool.spawn(["a"], async move { ran.store(true, Ordering::SeqCst) }));
    pool.close();
    let mut made_while_closed = mock(pool.acquire(["a"]));
    pool.reopen();

    let _: AcquireError = assert_ready_err!(acquire.poll());
    let error = assert_ready_err!(spawn.poll());
    assert!(error.is_closed());
    drop(error.into_inner());
    assert!(
        !spawned.load(Ordering::SeqCst),
        "the future is handed back, never polled"
    );
    let permit = assert_ready_ok!(made_while_closed.poll());
    assert_eq!(pool.task_count(&"a"), 1);
    drop(permit);
    assert_counts(&pool, &[("a", 0)], 0, 0);
    assert_eq!(
        pool.total_stats().rejected,
        2,
        "both failed futures count as refused"
    );
}

#[tokio::test]
async fn reopen_admits_again() {
    let pool = Pool::builder().limit("a", 1).build();
    pool.close();
    assert!(pool.try_acquire(["a"]).unwrap_err().is_closed());
    assert!(pool.reopen());

    let permit = pool.try_acquire(["a"]).expect("a reopened pool admits");
    drop(permit);
    let task = admitted(pool.try_spawn(["a"], async { 7 }));
    assert_eq!(within("a task", task).await.unwrap(), 7);
    let task = within("spawn", pool.spawn(["a"], async { 8 }))
        .await
        .expect("a reopened pool spawns");
    assert_eq!(within("a task", task).await.unwrap(), 8);
    let permit = within("acquire", pool.acquire(["a"])).await.unwrap();

    // Waiting works again too, and so does closing it again.
    let mut waiter = mock(pool.acquire(["a"]));
    assert_pending!(waiter.poll());
    assert!(pool.close());
    let _: AcquireError = assert_ready_err!(waiter.poll());
    drop(permit);
    assert_counts(&pool, &[("a", 0)], 0, 0);
}

// ---------------------------------------------------------------------------------------------
// wait.
// ---------------------------------------------------------------------------------------------

#[test]
fn wait_is_pending_while_the_pool_is_open_even_if_empty() {
    let pool = Pool::new();
    let mut idle = mock(pool.wait());
    assert_pending!(idle.poll());
    assert!(!idle.is_woken());
    assert_pending!(idle.poll());
    // Admissions coming and going while open wake nobody.
    drop(pool.try_acquire(["a"]).unwrap());
    assert!(!idle.is_woken());
    assert_pending!(idle.poll());
    assert!(!pool.is_closed(), "wait closed the pool");

    pool.close();
    assert!(idle.is_woken());
    assert_ready!(idle.poll());
}

#[tokio::test(start_paused = true)]
async fn wait_is_pending_while_tasks_run_and_ready_once_the_last_one_ends() {
    let pool = Pool::new();
    let (first_tx, first) = gated(1);
    let (last_tx, last) = gated(2);
    let first = admitted(pool.try_spawn(["a"], first));
    let last = admitted(pool.try_spawn(["b"], last));

    let mut idle = mock(pool.wait());
    assert_pending!(idle.poll(), "open and running");
    pool.close();
    assert!(!idle.is_woken(), "close woke wait while tasks run");
    assert_pending!(idle.poll(), "closed and running");

    first_tx.send(()).unwrap();
    assert_eq!(within("the first task", first).await.unwrap(), 1);
    assert_eq!(pool.len(), 1);
    assert!(!idle.is_woken(), "woken while a task still runs");
    assert_pending!(idle.poll(), "closed, one task still running");

    last_tx.send(()).unwrap();
    assert_eq!(within("the last task", last).await.unwrap(), 2);
    assert!(pool.is_empty());
    assert!(idle.is_woken(), "the last task's end did not wake wait");
    assert_ready!(idle.poll());
}

#[tokio::test(start_paused = true)]
async fn wait_resolves_when_awaited_on_a_real_runtime() {
    let pool = Pool::new();
    for i in 0..10u64 {
        admitted(pool.try_spawn(["a"], async move {
            tokio::time::sleep(Duration::from_millis(10 * i)).await;
        }));
    }
    pool.close();
    within("wait", pool.wait()).await;
    assert!(pool.is_empty());
}

#[test]
fn wait_also_waits_for_permits() {
    let pool = Pool::new();
    let permit = pool.try_acquire(["a"]).unwrap();
    let mut idle = mock(pool.wait());
    pool.close();
    assert_pending!(idle.poll(), "resolved while a permit is held");
    assert!(!idle.is_woken());
    drop(permit);
    assert!(
        idle.is_woken(),
        "dropping the last permit did not wake wait"
    );
    assert_ready!(idle.poll());
}

#[test]
fn wait_is_ready_at_once_on_a_closed_empty_pool() {
    let pool = Pool::new();
    pool.close();
    let mut idle = mock(pool.wait());
    assert_ready!(idle.poll());
}

#[test]
fn wait_does_not_count_failed_waiters() {
    let pool = Pool::builder().max_tasks(0).build();
    let mut waiter = mock(pool.acquire(["a"]));
    assert_pending!(waiter.poll());
    let mut idle = mock(pool.wait());
    pool.close();
    // The waiter held no admission: the pool is empty, so wait is ready even before the
    // failed waiter is polled.
    assert_ready!(idle.poll());
    let _: AcquireError = assert_ready_err!(waiter.poll());
}

#[test]
fn every_wait_future_resolves() {
    let pool = Pool::new();
    let permit = pool.try_acquire(["a"]).unwrap();
    let mut polled: Vec<_> = (0..3).map(|_| mock(pool.wait())).collect();
    for idle in &mut polled {
        assert_pending!(idle.poll());
    }
    // Created before close, never polled before the pool is idle.
    let mut unpolled = mock(pool.wait());
    pool.close();
    // Created after close, while the permit is held.
    let mut late = mock(pool.wait());
    assert_pending!(late.poll());

    drop(permit);
    for idle in &mut polled {
        assert!(idle.is_woken());
        assert_ready!(idle.poll());
    }
    assert!(late.is_woken());
    assert_ready!(late.poll());
    assert_ready!(unpolled.poll());
}

#[test]
fn a_dropped_wait_future_leaves_no_trace() {
    let pool = Pool::new();
    let permit = pool.try_acquire(["a"]).unwrap();
    let mut dropped = mock(pool.wait());
    assert_pending!(dropped.poll());
    drop(dropped);
    // Many registrations dropped, polled or not.
    for i in 0..1000 {
        let mut idle = mock(pool.wait());
        if i % 2 == 0 {
            assert_pending!(idle.poll());
        }
    }

    let mut kept = mock(pool.wait());
    assert_pending!(kept.poll());
    pool.close();
    assert_pending!(kept.poll());
    drop(permit);
    assert!(kept.is_woken());
    assert_ready!(kept.poll());

    // A wait future dropped after the pool became idle does not disturb later ones either.
    let fired = mock(pool.wait());
    drop(fired);
    let mut again = mock(pool.wait());
    assert_ready!(again.poll());
    assert!(pool.is_closed() && pool.is_empty());
}

#[test]
fn wait_created_before_close_resolves_even_if_the_pool_is_reopened_before_it_is_polled() {
    let pool = Pool::new();
    let mut never_polled = mock(pool.wait());
    let mut polled = mock(pool.wait());
    assert_pending!(polled.poll());

    pool.close(); // closed and empty: both registrations fire
    assert!(polled.is_woken());
    pool.reopen();
    let _permit = pool.try_acquire(["a"]).unwrap();

    assert_ready!(never_polled.poll());
    assert_ready!(polled.poll());
    // A wait future created after the reopen waits for the next close.
    let mut fresh = mock(pool.wait());
    assert_pending!(fresh.poll());
}

#[test]
fn wait_fires_when_the_last_permit_drops_even_if_the_pool_is_reopened_before_it_is_polled() {
    let pool = Pool::new();
    let permit = pool.try_acquire(["a"]).unwrap();
    let mut idle = mock(pool.wait());
    assert_pending!(idle.poll());
    pool.close();
    drop(permit);
    assert!(idle.is_woken());
    pool.reopen();
    let _busy = pool.try_acquire(["a"]).unwrap();
    assert_ready!(idle.poll());
}

#[test]
fn wait_is_not_fired_by_a_close_reopen_cycle_while_work_runs() {
    let pool = Pool::new();
    let permit = pool.try_acquire(["a"]).unwrap();
    let mut idle = mock(pool.wait());
    assert_pending!(idle.poll());
    pool.close();
    pool.reopen();
    drop(permit); // empty, but open
    assert!(!idle.is_woken());
    assert_pending!(idle.poll());
    pool.close();
    assert!(idle.is_woken());
    assert_ready!(idle.poll());
}

// ---------------------------------------------------------------------------------------------
// abort_group and abort_all.
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn abort_group_aborts_only_that_group() {
    let pool = Pool::new();
    let stuck: Vec<_> = (0..2).map(|_| spawn_pending(&pool, &["bad"])).collect();
    let mut gates = Vec::new();
    let mut fine = Vec::new();
    for i in 0..3 {
        let (tx, future) = gated(i);
        gates.push(tx);
        fine.push(admitted(pool.try_spawn(["good"], future)));
    }
    // A task with no named group is in no group that can be aborted by key.
    let (loose_tx, loose) = gated(99);
    let loose = admitted(pool.try_spawn([], loose));
    tokio::task::yield_now().await; // every task has started

    assert_eq!(pool.abort_group(&"bad"), 2);
    for handle in stuck {
        assert_cancelled(handle).await;
    }
    assert_counts(&pool, &[("bad", 0), ("good", 3)], 4, 0);
    assert!(fine.iter().all(|handle| !handle.is_finished()));

    for tx in gates {
        tx.send(()).unwrap();
    }
    loose_tx.send(()).unwrap();
    for (i, handle) in fine.into_iter().enumerate() {
        assert_eq!(within("a task of another group", handle).await.unwrap(), i);
    }
    assert_eq!(within("a task in no group", loose).await.unwrap(), 99);
    assert!(pool.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_task_in_two_groups_is_aborted_when_either_group_is_aborted() {
    let pool = Pool::new();
    let first = spawn_pending(&pool, &["a", "b"]);
    let second = spawn_pending(&pool, &["a", "b"]);
    let only_a = spawn_pending(&pool, &["a"]);

    assert_eq!(pool.abort_group(&"b"), 2);
    assert_cancelled(first).await;
    assert_cancelled(second).await;
    assert_counts(&pool, &[("a", 1), ("b", 0)], 1, 0);
    assert!(!only_a.is_finished());

    let both = spawn_pending(&pool, &["a", "b"]);
    let only_b = spawn_pending(&pool, &["b"]);
    assert_eq!(pool.abort_group(&"a"), 2);
    assert_cancelled(both).await;
    assert_cancelled(only_a).await;
    assert_counts(&pool, &[("a", 0), ("b", 1)], 1, 0);
    assert!(!only_b.is_finished());
    only_b.abort();
    assert_cancelled(only_b).await;
    assert!(pool.is_empty());
}

#[tokio::test(start_paused = true)]
async fn counts_are_released_by_the_time_an_aborted_tasks_handle_resolves() {
    let pool = Pool::builder().limit("a", 1).build();
    let task = spawn_pending(&pool, &["a", "b"]);
    tokio::task::yield_now().await; // the task has been polled once
    let never_polled = spawn_pending(&pool, &["c"]);
    assert_eq!(pool.len(), 2);

    assert_eq!(pool.abort_all(), 2);
    assert_cancelled(task).await;
    assert_eq!(pool.task_count(&"a"), 0);
    assert_eq!(pool.task_count(&"b"), 0);
    assert_eq!(pool.stats(&"a").running, 0);
    assert_cancelled(never_polled).await;
    assert_counts(&pool, &[("a", 0), ("b", 0), ("c", 0)], 0, 0);
    assert_eq!(pool.total_stats().running, 0);
    // The slot is free again.
    let _permit = pool.try_acquire(["a"]).unwrap();
}

#[tokio::test]
async fn abort_group_of_an_unknown_group_returns_zero_and_aborts_nothing() {
    let pool = Pool::new();
    let task = spawn_pending(&pool, &["a"]);
    assert_eq!(pool.abort_group(&"nobody"), 0);
    // A group that only has an explicit limit has no tasks either.
    pool.set_limit("limited", 3);
    assert_eq!(pool.abort_group(&"limited"), 0);
    tokio::task::yield_now().await;
    assert!(!task.is_finished());
    assert_eq!(pool.len(), 1);
    task.abort();
    assert_cancelled(task).await;
    assert_eq!(
        pool.abort_group(&"a"),
        0,
        "a group reclaimed after its last task"
    );
}

#[tokio::test(start_paused = true)]
async fn abort_group_returns_the_number_of_tasks_signalled() {
    let pool = Pool::new();
    let in_a: Vec<_> = (0..3).map(|_| spawn_pending(&pool, &["a"])).collect();
    let in_b: Vec<_> = (0..2).map(|_| spawn_pending(&pool, &["b"])).collect();
    let in_both = spawn_pending(&pool, &["a", "b"]);
    // A finished task is no longer counted anywhere and not signalled.
    let done = admitted(pool.try_spawn(["a"], async {}));
    within("a finished task", done).await.unwrap();

    assert_eq!(pool.abort_group(&"a"), 4);
    for handle in in_a {
        assert_cancelled(handle).await;
    }
    assert_cancelled(in_both).await;
    assert_eq!(pool.abort_all(), 2);
    for handle in in_b {
        assert_cancelled(handle).await;
    }
    assert!(pool.is_empty());
    assert_eq!(pool.abort_all(), 0);
}

#[tokio::test(start_paused = true)]
async fn permits_are_not_aborted_and_keep_counting() {
    let pool = Pool::new();
    let permit = pool.try_acquire(["a"]).unwrap();
    let waited_permit = within("acquire", pool.acquire(["a", "b"])).await.unwrap();
    assert_eq!(pool.abort_group(&"a"), 0);
    assert_eq!(pool.abort_all(), 0);
    tokio::task::yield_now().await;
    assert_counts(&pool, &[("a", 2), ("b", 1)], 2, 0);

    let task = spawn_pending(&pool, &["a"]);
    assert_eq!(pool.abort_all(), 1, "only the task is signalled");
    assert_cancelled(task).await;
    assert_counts(&pool, &[("a", 2), ("b", 1)], 2, 0);

    drop(waited_permit);
    drop(permit);
    assert!(pool.is_empty());
}

#[tokio::test(start_paused = true)]
async fn abort_all_drains_a_thousand_pending_tasks() {
    const TASKS: usize = 1000;
    let pool = Pool::builder().default_limit(TASKS).build();
    let keys = ["k0", "k1", "k2", "k3", "k4"];
    let handles: Vec<_> = (0..TASKS)
        .map(|i| spawn_pending(&pool, &[keys[i % 5], keys[(i + 1) % 5]]))
        .collect();
    tokio::task::yield_now().await; // let some of them start
    assert_eq!(pool.len(), TASKS);

    assert_eq!(pool.abort_all(), TASKS);
    for handle in handles {
        assert_cancelled(handle).await;
    }
    assert_counts(&pool, &keys.map(|key| (key, 0)), 0, 0);
    assert_eq!(pool.abort_all(), 0);
    assert!(!pool.is_closed(), "abort_all closed the pool");
    let _permit = pool.try_acquire(["k0"]).unwrap();
}

#[tokio::test(start_paused = true)]
async fn tasks_spawned_through_waiting_spawn_are_aborted_too() {
    let pool = Pool::builder().limit("a", 1).build();

    // Admitted at the first poll.
    let immediate = within(
        "spawn",
        pool.spawn(["a", "b"], std::future::pending::<()>()),
    )
    .await
    .unwrap();
    // Queued, then granted when the first task is aborted.
    let mut waiter = mock(pool.spawn(["a", "b"], std::future::pending::<()>()));
    assert_pending!(waiter.poll());
    assert_eq!(
        pool.abort_group(&"b"),
        1,
        "a queued spawn is not a task yet"
    );
    assert_cancelled(immediate).await;
    assert!(waiter.is_woken());
    let queued = assert_ready_ok!(waiter.poll());
    assert_counts(&pool, &[("a", 1), ("b", 1)], 1, 0);

    assert_eq!(pool.abort_group(&"b"), 1);
    assert_cancelled(queued).await;
    assert!(pool.is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_aborted_task_hands_its_slot_to_the_next_waiter() {
    let pool = Pool::builder().limit("a", 1).build();
    let stuck = spawn_pending(&pool, &["a"]);
    let mut waiter = mock(pool.acquire(["a"]));
    assert_pending!(waiter.poll());
    assert_eq!(pool.abort_group(&"a"), 1);
    assert_cancelled(stuck).await;
    assert!(waiter.is_woken());
    let permit = assert_ready_ok!(waiter.poll());
    assert_counts(&pool, &[("a", 1)], 1, 0);
    drop(permit);
    assert!(pool.is_empty());
}

// ---------------------------------------------------------------------------------------------
// shutdown.
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn shutdown_aborts_tasks_closes_and_waits_for_permits() {
    let pool = Pool::builder().limit("a", 2).build();
    let tasks: Vec<_> = (0..3).map(|_| spawn_pending(&pool, &["b"])).collect();
    let permit = pool.try_acquire(["a"]).unwrap();
    let held = pool.try_acquire(["a"]).unwrap();
    let mut waiter = mock(pool.acquire(["a"]));
    assert_pending!(waiter.poll());

    let mut shutdown = mock(pool.shutdown());
    assert!(
        !pool.is_closed(),
        "shutdown did something before it was polled"
    );
    assert_pending!(shutdown.poll());
    assert!(pool.is_closed());
    assert!(pool.try_spawn(["c"], async {}).unwrap_err().is_closed());
    // The waiter fails; the tasks are aborted.
    assert!(waiter.is_woken());
    let _: AcquireError = assert_ready_err!(waiter.poll());
    for task in tasks {
        assert_cancelled(task).await;
    }
    assert_counts(&pool, &[("a", 2), ("b", 0)], 2, 0);
    assert!(!shutdown.is_woken());
    assert_pending!(shutdown.poll(), "finished while permits are held");

    drop(held);
    assert!(!shutdown.is_woken());
    assert_pending!(shutdown.poll(), "finished while a permit is held");
    drop(permit);
    assert!(shutdown.is_woken());
    assert_ready!(shutdown.poll());
    assert!(pool.is_closed() && pool.is_empty());
}

#[test]
fn shutdown_of_an_empty_pool_completes_at_once() {
    let pool = Pool::new();
    let mut shutdown = mock(pool.shutdown());
    assert_ready!(shutdown.poll());
    assert!(pool.is_closed());
    // Again, on a pool that is already closed.
    let mut again = mock(pool.shutdown());
    assert_ready!(again.poll());
}

#[tokio::test(start_paused = true)]
async fn shutdown_awaited_on_a_runtime_ends_every_task() {
    let pool = Pool::builder().default_limit(50).build();
    let mut handles = Vec::new();
    for i in 0..200usize {
        let key = ["a", "b", "c", "d"][i % 4];
        if i % 2 == 0 {
            handles.push(spawn_pending(&pool, &[key]));
        } else {
            handles.push(admitted(pool.try_spawn([key], async move {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            })));
        }
    }
    within("shutdown", pool.shutdown()).await;
    assert!(pool.is_closed() && pool.is_empty());
    for handle in handles {
        assert_cancelled(handle).await;
    }
}

#[test]
fn dropping_shutdown_before_polling_it_does_nothing() {
    let pool = Pool::new();
    let permit = pool.try_acquire(["a"]).unwrap();
    drop(pool.shutdown());
    assert!(!pool.is_closed());
    // Dropped after one poll: the pool stays closed, nothing else happens.
    let mut shutdown = mock(pool.shutdown());
    assert_pending!(shutdown.poll());
    drop(shutdown);
    assert!(pool.is_closed());
    assert_eq!(pool.len(), 1);
    drop(permit);
    assert!(pool.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Multi-threaded: shutdown and aborts racing with spawns.
// ---------------------------------------------------------------------------------------------

/// Generous bound for the multi-threaded tests, which run on a real clock.
const RACE_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_on_a_multi_thread_runtime_with_many_tasks_finishes() {
    let pool = Pool::builder().default_limit(500).max_tasks(1500).build();
    let keys = ["a", "b", "c", "d", "e"];
    let mut handles = Vec::new();
    for i in 0..1000usize {
        let groups = [keys[i % 5], keys[(i / 5) % 5]];
        handles.push(admitted(pool.try_spawn(groups, async move {
            loop {
                tokio::task::yield_now().await;
            }
        })));
    }
    // Waiting spawns from other tasks, some of which are admitted and some still queued.
    let mut spawners = Vec::new();
    for i in 0..600usize {
        let pool = pool.clone();
        let key = keys[i % 5];
        spawners.push(tokio::spawn(async move {
            pool.spawn([key], std::future::pending::<()>()).await
        }));
    }
    match tokio::time::timeout(RACE_TIMEOUT, pool.shutdown()).await {
        Ok(()) => {}
        Err(_) => panic!("shutdown hung: {pool:?}"),
    }
    assert!(pool.is_closed() && pool.is_empty());
    assert_eq!(pool.waiting_len(), 0);
    for handle in handles {
        let error = tokio::time::timeout(RACE_TIMEOUT, handle)
            .await
            .expect("an aborted task hung")
            .unwrap_err();
        assert!(error.is_cancelled());
    }
    for spawner in spawners {
        let outcome = tokio::time::timeout(RACE_TIMEOUT, spawner)
            .await
            .expect("a waiting spawn hung")
            .expect("a spawner panicked");
        if let Ok(task) = outcome {
            // Admitted before the pool closed: aborted by the shutdown.
            let error = tokio::time::timeout(RACE_TIMEOUT, task)
                .await
                .expect("an aborted task hung")
                .unwrap_err();
            assert!(error.is_cancelled());
        }
    }
    assert!(pool.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abort_all_racing_with_spawns_and_shutdown_drains_everything() {
    const SPAWNERS: usize = 3;
    const PER_SPAWNER: usize = 2000;
    let pool = Pool::builder().default_limit(64).max_tasks(128).build();
    let stop = Arc::new(AtomicBool::new(false));
    let signalled = Arc::new(AtomicUsize::new(0));

    let aborter = {
        let (pool, stop, signalled) = (pool.clone(), Arc::clone(&stop), Arc::clone(&signalled));
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                signalled.fetch_add(pool.abort_all(), Ordering::SeqCst);
                tokio::task::yield_now().await;
            }
        })
    };

    let mut spawners = Vec::new();
    for s in 0..SPAWNERS {
        let pool = pool.clone();
        spawners.push(tokio::spawn(async move {
            let keys = ["a", "b", "c", "d"];
            let mut handles = Vec::new();
            let mut closed = 0usize;
            for i in 0..PER_SPAWNER {
                let groups = [keys[(i + s) % 4], keys[(i / 4 + s) % 4]];
                if i % 2 == 0 {
                    match pool.try_spawn(groups, std::future::pending::<()>()) {
                        Ok(handle) => handles.push(handle),
                        Err(error) if error.is_closed() => closed += 1,
                        Err(_) => {}
                    }
                } else {
                    match pool.spawn(groups, std::future::pending::<()>()).await {
                        Ok(handle) => handles.push(handle),
                        Err(_) => closed += 1,
                    }
                }
                if i % 16 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            (handles, closed)
        }));
    }

    // Shut down while the spawners are (probably) still at work.
    tokio::time::sleep(Duration::from_millis(20)).await;
    match tokio::time::timeout(RACE_TIMEOUT, pool.shutdown()).await {
        Ok(()) => {}
        Err(_) => panic!("shutdown hung: {pool:?}"),
    }
    assert!(pool.is_closed() && pool.is_empty());

    let mut spawned = 0;
    for spawner in spawners {
        let (handles, _closed) = tokio::time::timeout(RACE_TIMEOUT, spawner)
            .await
            .expect("a spawner hung")
            .expect("a spawner panicked");
        for handle in handles {
            // Every task was pending for ever: it can only have ended by an abort, whether
            // from the aborter or from the shutdown.
            let error = tokio::time::timeout(RACE_TIMEOUT, handle)
                .await
                .expect("a task escaped every abort")
                .unwrap_err();
            assert!(error.is_cancelled());
            spawned += 1;
        }
    }
    stop.store(true, Ordering::SeqCst);
    tokio::time::timeout(RACE_TIMEOUT, aborter)
        .await
        .expect("the aborter hung")
        .unwrap();
    assert!(pool.is_closed() && pool.is_empty());
    assert_eq!(pool.waiting_len(), 0);
    assert_eq!(pool.total_stats().running, 0);
    assert!(spawned > 0, "no task was spawned before the shutdown");
    eprintln!(
        "spawned {spawned} tasks; abort_all signalled {} times",
        signalled.load(Ordering::SeqCst)
    );
}

#[tokio::test(start_paused = true)]
async fn abort_group_reaches_a_spawn_granted_but_not_yet_polled() {
    let pool = Pool::builder().limit("a", 1).build();
    let held = pool.try_acquire(["a"]).unwrap();
    let (polled, future) = flagged();
    let mut waiter = mock(pool.spawn(["a"], future));
    assert_pending!(waiter.poll());
    drop(held); // grants the waiting spawn under the releasing permit's lock
    assert_eq!(pool.task_count(&"a"), 1);

    assert_eq!(
        pool.abort_group(&"a"),
        1,
        "the granted spawn is a task already"
    );
    let task = assert_ready_ok!(waiter.poll());
    assert_cancelled(task).await;
    assert!(!polled.load(Ordering::SeqCst), "an aborted task ran");
    assert!(pool.is_empty());
}
