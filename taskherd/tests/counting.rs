//! A task counts in its groups and in the total from admission until it ends, whichever way it
//! ends: completion, an error value, a panic, an abort through its `JoinHandle`, or its runtime
//! shutting down. The release happens exactly once, and it has already happened when the
//! `JoinHandle` resolves: every test here checks the counts right after `handle.await`, with no
//! sleep or yield in between.

use std::future::{Future, pending};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use taskherd::{Group, TaskPool};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

mod support;
use support::{admitted, refused};

/// Spawns a task in `groups` that runs until the returned sender is used (or dropped).
#[track_caller]
fn spawn_held(
    pool: &TaskPool<&'static str>,
    groups: &[&'static str],
) -> (oneshot::Sender<()>, JoinHandle<()>) {
    let (tx, rx) = oneshot::channel::<()>();
    let handle = admitted(pool.try_spawn(groups.iter().copied(), async move {
        let _ = rx.await;
    }));
    (tx, handle)
}

fn assert_counts(pool: &TaskPool<&'static str>, groups: &[&'static str], expected: usize) {
    for key in groups {
        assert_eq!(pool.task_count(key), expected, "task_count({key:?})");
    }
}

/// Sets a flag when dropped, so a test can tell that the runtime really dropped the future.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Pending forever; returns `Pending` from its first poll and records that it was polled.
struct PendingForever {
    polled: Arc<AtomicBool>,
}

impl Future for PendingForever {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        self.polled.store(true, Ordering::SeqCst);
        Poll::Pending
    }
}

/// Panics with `message`; typed so that the async blocks that call it have a normal output type.
fn intentional_panic(message: &str) -> u32 {
    panic!("intentional panic: {message}")
}

const GROUPS: &[&str] = &["a", "b"];

// ---------------------------------------------------------------------------------------------
// Every way a task can end
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn count_is_held_while_the_task_runs() {
    let pool = TaskPool::<&'static str>::new();
    let (tx, handle) = spawn_held(&pool, GROUPS);
    assert_counts(&pool, GROUPS, 1);
    assert_eq!(pool.len(), 1);
    // Let the task run (and block on its receiver) a few times: still counted.
    for _ in 0..5 {
        tokio::task::yield_now().await;
    }
    assert_counts(&pool, GROUPS, 1);
    assert_eq!(pool.len(), 1);
    tx.send(()).unwrap();
    handle.await.unwrap();
    assert_counts(&pool, GROUPS, 0);
    assert!(pool.is_empty());
}

#[tokio::test]
async fn count_is_released_before_the_handle_resolves_on_completion() {
    let pool = TaskPool::<&'static str>::new();
    let handle = admitted(pool.try_spawn(GROUPS.iter().copied(), async { 3 }));
    assert_counts(&pool, GROUPS, 1);
    assert_eq!(handle.await.unwrap(), 3);
    assert_counts(&pool, GROUPS, 0);
    assert!(pool.is_empty());
}

#[tokio::test]
async fn count_is_released_on_completion_of_a_never_yielding_task_spawned_in_a_batch() {
    let pool = TaskPool::<&'static str>::new();
    let handles: Vec<_> = (0..10)
        .map(|i| admitted(pool.try_spawn(["a"], async move { i })))
        .collect();
    assert_eq!(pool.task_count(&"a"), 10);
    for (i, handle) in handles.into_iter().enumerate() {
        assert_eq!(handle.await.unwrap(), i);
        // The awaited task is released; at most the ones not yet awaited are still counted.
        assert!(pool.task_count(&"a") <= 9 - i, "task {i}");
    }
    assert_eq!(pool.task_count(&"a"), 0);
    assert!(pool.is_empty());
}

#[tokio::test]
async fn count_is_released_when_the_task_returns_an_error_value() {
    let pool = TaskPool::<&'static str>::new();
    let handle =
        admitted(pool.try_spawn(GROUPS.iter().copied(), async { Err::<(), _>("it failed") }));
    assert_counts(&pool, GROUPS, 1);
    let output = handle.await.expect("the task itself did not panic");
    assert_eq!(output, Err("it failed"));
    assert_counts(&pool, GROUPS, 0);
    assert!(pool.is_empty());
}

#[tokio::test]
async fn count_is_released_when_the_task_panics() {
    let pool = TaskPool::<&'static str>::new();
    let (tx, rx) = oneshot::channel::<()>();
    let handle = admitted(pool.try_spawn(GROUPS.iter().copied(), async move {
        let _ = rx.await;
        intentional_panic("count_is_released_when_the_task_panics")
    }));
    assert_counts(&pool, GROUPS, 1);
    tx.send(()).unwrap();
    let error = handle.await.expect_err("the task panicked");
    assert!(error.is_panic());
    assert_counts(&pool, GROUPS, 0);
    assert!(pool.is_empty());
}

#[tokio::test]
async fn count_is_released_when_the_task_panics_on_its_first_poll() {
    let pool = TaskPool::<&'static str>::builder().limit("a", 1).build();
    let handle = admitted(pool.try_spawn(["a"], async {
        intentional_panic("count_is_released_when_the_task_panics_on_its_first_poll")
    }));
    assert!(handle.await.unwrap_err().is_panic());
    assert_eq!(pool.task_count(&"a"), 0);
    // The slot is really free again.
    let handle = admitted(pool.try_spawn(["a"], async { 1 }));
    assert_eq!(handle.await.unwrap(), 1);
}

#[tokio::test]
async fn count_is_released_when_a_running_task_is_aborted() {
    let pool = TaskPool::<&'static str>::new();
    let dropped = Arc::new(AtomicBool::new(false));
    let guard = SetOnDrop(Arc::clone(&dropped));
    let handle = admitted(pool.try_spawn(GROUPS.iter().copied(), async move {
        let _guard = guard;
        pending::<()>().await;
    }));
    // Let it start and block.
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
    assert_counts(&pool, GROUPS, 1);
    handle.abort();
    let error = handle.await.expect_err("the task was aborted");
    assert!(error.is_cancelled());
    assert!(dropped.load(Ordering::SeqCst));
    assert_counts(&pool, GROUPS, 0);
    assert!(pool.is_empty());
}

#[tokio::test]
async fn count_is_released_when_a_task_is_aborted_before_its_first_poll() {
    let pool = TaskPool::<&'static str>::new();
    let polled = Arc::new(AtomicBool::new(false));
    let handle = admitted(pool.try_spawn(
        GROUPS.iter().copied(),
        PendingForever {
            polled: Arc::clone(&polled),
        },
    ));
    assert_counts(&pool, GROUPS, 1);
    handle.abort();
    let error = handle.await.expect_err("the task was aborted");
    assert!(error.is_cancelled());
    assert!(!polled.load(Ordering::SeqCst), "aborted before it ever ran");
    assert_counts(&pool, GROUPS, 0);
    assert!(pool.is_empty());
}

#[tokio::test]
async fn count_is_released_when_aborted_through_an_abort_handle() {
    let pool = TaskPool::<&'static str>::new();
    let handle = admitted(pool.try_spawn(["a"], pending::<()>()));
    let abort = handle.abort_handle();
    tokio::task::yield_now().await;
    assert_eq!(pool.task_count(&"a"), 1);
    abort.abort();
    assert!(handle.await.unwrap_err().is_cancelled());
    assert_eq!(pool.task_count(&"a"), 0);
}

#[tokio::test]
async fn dropping_the_join_handle_does_not_release_the_task() {
    let pool = TaskPool::<&'static str>::new();
    let (tx, handle) = spawn_held(&pool, GROUPS);
    drop(handle);
    for _ in 0..5 {
        tokio::task::yield_now().await;
    }
    assert_counts(&pool, GROUPS, 1);
    assert_eq!(pool.len(), 1);

    // Once the detached task finishes, it is released.
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let watcher = pool.clone();
    tx.send(()).unwrap();
    tokio::spawn(async move {
        while !watcher.is_empty() {
            tokio::task::yield_now().await;
        }
        let _ = done_tx.send(());
    });
    tokio::time::timeout(Duration::from_secs(30), done_rx)
        .await
        .expect("the detached task was never released")
        .unwrap();
    assert_counts(&pool, GROUPS, 0);
}

#[tokio::test]
async fn tasks_outlive_every_handle_to_the_pool() {
    let pool = TaskPool::<&'static str>::builder().limit("a", 1).build();
    let (tx, handle) = spawn_held(&pool, ["a"].as_slice());
    drop(pool);
    tokio::task::yield_now().await;
    tx.send(()).unwrap();
    handle
        .await
        .expect("the task completes normally without any pool handle left");
}

// ---------------------------------------------------------------------------------------------
// Runtime shutdown
// ---------------------------------------------------------------------------------------------

#[test]
fn count_is_released_when_the_runtime_drops_a_task_that_never_ran() {
    let pool = TaskPool::<&'static str>::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let polled = Arc::new(AtomicBool::new(false));
    let handle = {
        let _enter = rt.enter();
        admitted(pool.try_spawn(
            GROUPS.iter().copied(),
            PendingForever {
                polled: Arc::clone(&polled),
            },
        ))
    };
    assert_counts(&pool, GROUPS, 1);
    assert_eq!(pool.len(), 1);
    drop(rt);
    assert!(!polled.load(Ordering::SeqCst));
    assert_counts(&pool, GROUPS, 0);
    assert!(pool.is_empty());
    drop(handle);
}

#[test]
fn count_is_released_when_the_runtime_drops_a_pending_task() {
    let pool = TaskPool::<&'static str>::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let dropped = Arc::new(AtomicBool::new(false));
    let guard = SetOnDrop(Arc::clone(&dropped));
    let polled = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&polled);
    rt.block_on(async {
        admitted(pool.try_spawn(GROUPS.iter().copied(), async move {
            let _guard = guard;
            flag.store(true, Ordering::SeqCst);
            pending::<()>().await;
        }));
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
    });
    assert!(
        polled.load(Ordering::SeqCst),
        "the task started before the runtime went away"
    );
    assert!(!dropped.load(Ordering::SeqCst));
    assert_counts(&pool, GROUPS, 1);
    assert_eq!(pool.len(), 1);
    drop(rt);
    assert!(
        dropped.load(Ordering::SeqCst),
        "the runtime dropped the task"
    );
    assert_counts(&pool, GROUPS, 0);
    assert!(pool.is_empty());
}

#[test]
fn count_is_released_when_a_multi_thread_runtime_drops_pending_tasks() {
    let pool = TaskPool::<&'static str>::new();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
    for i in 0..8 {
        let started = started_tx.clone();
        let groups: &[&'static str] = if i % 2 == 0 { &["a"] } else { &["a", "b"] };
        let _enter = rt.enter();
        admitted(pool.try_spawn(groups.iter().copied(), async move {
            let _ = started.send(());
            pending::<()>().await;
        }));
    }
    for _ in 0..8 {
        started_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("every task started");
    }
    assert_eq!(pool.task_count(&"a"), 8);
    assert_eq!(pool.task_count(&"b"), 4);
    assert_eq!(pool.len(), 8);
    drop(rt);
    assert_eq!(pool.task_count(&"a"), 0);
    assert_eq!(pool.task_count(&"b"), 0);
    assert!(pool.is_empty());
}

#[test]
fn pool_is_usable_from_a_new_runtime_after_the_old_one_dropped_its_tasks() {
    let pool = TaskPool::<&'static str>::builder().limit("a", 1).build();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    {
        let _enter = rt.enter();
        admitted(pool.try_spawn(["a"], pending::<()>()));
        refused(pool.try_spawn(["a"], async {}));
    }
    drop(rt);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let value = rt.block_on(async {
        let handle = admitted(pool.try_spawn(["a"], async { 4 }));
        handle.await.unwrap()
    });
    assert_eq!(value, 4);
    assert_eq!(pool.task_count(&"a"), 0);
}

// ---------------------------------------------------------------------------------------------
// Exactly once
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn release_happens_exactly_once_per_task() {
    let pool = TaskPool::<&'static str>::builder().limit("a", 2).build();
    let held = spawn_held(&pool, ["a"].as_slice());
    let quick = admitted(pool.try_spawn(["a"], async {}));
    assert_eq!(pool.task_count(&"a"), 2);
    quick.await.unwrap();
    // Released once: exactly one task (the held one) is still counted.
    assert_eq!(pool.task_count(&"a"), 1);
    assert_eq!(pool.len(), 1);
    let second = spawn_held(&pool, ["a"].as_slice());
    assert_eq!(pool.task_count(&"a"), 2);
    let error = refused(pool.try_spawn(["a"], async {}));
    assert_eq!(error.full_group(), Some(&Group::Key("a")));
    for (tx, handle) in [held, second] {
        tx.send(()).unwrap();
        handle.await.unwrap();
    }
    assert_eq!(pool.task_count(&"a"), 0);
}

#[tokio::test]
async fn abort_after_completion_does_not_release_twice() {
    let pool = TaskPool::<&'static str>::new();
    let finished = admitted(pool.try_spawn(["a"], async {}));
    let abort = finished.abort_handle();
    finished.await.unwrap();
    let held = spawn_held(&pool, ["a"].as_slice());
    abort.abort();
    tokio::task::yield_now().await;
    assert_eq!(
        pool.task_count(&"a"),
        1,
        "aborting a finished task releases nothing"
    );
    assert_eq!(pool.len(), 1);
    let (tx, handle) = held;
    tx.send(()).unwrap();
    handle.await.unwrap();
    assert_eq!(pool.task_count(&"a"), 0);
}

#[tokio::test]
async fn panic_and_abort_mix_release_exactly_once_each() {
    let pool = TaskPool::<&'static str>::builder()
        .limit("a", 4)
        .max_tasks(4)
        .build();
    let survivor = spawn_held(&pool, ["a"].as_slice());
    let panicking = admitted(pool.try_spawn(["a"], async {
        intentional_panic("panic_and_abort_mix_release_exactly_once_each")
    }));
    let aborted = admitted(pool.try_spawn(["a"], pending::<()>()));
    let failing = admitted(pool.try_spawn(["a"], async { Err::<(), ()>(()) }));
    assert_eq!(pool.task_count(&"a"), 4);
    refused(pool.try_spawn([], async {}));

    aborted.abort();
    assert!(panicking.await.unwrap_err().is_panic());
    assert!(aborted.await.unwrap_err().is_cancelled());
    assert_eq!(failing.await.unwrap(), Err(()));
    assert_eq!(pool.task_count(&"a"), 1);
    assert_eq!(pool.len(), 1);

    // Exactly three slots came back.
    let refill: Vec<_> = (0..3)
        .map(|_| spawn_held(&pool, ["a"].as_slice()))
        .collect();
    refused(pool.try_spawn(["a"], async {}));
    for (tx, handle) in refill.into_iter().chain([survivor]) {
        tx.send(()).unwrap();
        handle.await.unwrap();
    }
    assert!(pool.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_is_released_before_the_handle_resolves_on_a_multi_thread_runtime() {
    let pool = TaskPool::<&'static str>::builder().limit("a", 1).build();
    for i in 0..1_000 {
        let handle = admitted(pool.try_spawn(["a", "b"], async move {
            tokio::task::yield_now().await;
            i
        }));
        assert_eq!(handle.await.unwrap(), i);
        assert_eq!(pool.task_count(&"a"), 0, "iteration {i}");
        assert_eq!(pool.task_count(&"b"), 0, "iteration {i}");
        assert!(pool.is_empty(), "iteration {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_is_released_before_the_handle_resolves_after_a_panic_on_a_multi_thread_runtime() {
    let pool = TaskPool::<&'static str>::new();
    for i in 0..20 {
        let handle = admitted(pool.try_spawn(["a"], async move {
            tokio::task::yield_now().await;
            intentional_panic(&format!("multi-thread counting test, iteration {i}"))
        }));
        assert!(handle.await.unwrap_err().is_panic());
        assert_eq!(pool.task_count(&"a"), 0, "iteration {i}");
    }
}

/// More groups than an admission keeps inline (four), with a duplicate: refused at the first
/// full group in the caller's order, whole or not at all, then admitted and counted in each
/// group once, by `try_spawn` and by a waiting `spawn`, and released from each.
#[tokio::test]
async fn a_task_naming_many_groups_counts_in_each_once() {
    let groups = ["a", "b", "c", "d", "e", "f", "c"];
    let pool = TaskPool::builder().limit("e", 1).limit("f", 1).build();
    let (block, blocker) = spawn_held(&pool, &["f"]);

    let error = pool.try_spawn(groups, async {}).unwrap_err();
    assert_eq!(error.full_group(), Some(&Group::Key("f")));
    for group in ["a", "b", "c", "d", "e"] {
        assert_eq!(pool.task_count(&group), 0, "nothing taken in {group}");
    }

    let waiting = tokio::spawn({
        let pool = pool.clone();
        async move { pool.spawn(groups, async {}).await.unwrap().await }
    });
    tokio::task::yield_now().await;
    assert_eq!(pool.waiting_count(&"f"), 1);
    block.send(()).unwrap();
    blocker.await.unwrap();
    waiting.await.unwrap().unwrap();

    let (done, held) = spawn_held(&pool, &groups);
    for group in ["a", "b", "c", "d", "e", "f"] {
        assert_eq!(pool.task_count(&group), 1, "counted once in {group}");
    }
    done.send(()).unwrap();
    held.await.unwrap();
    assert!(pool.is_empty());
    for group in ["a", "b", "c", "d", "e", "f"] {
        assert_eq!(pool.task_count(&group), 0, "released from {group}");
    }
}
