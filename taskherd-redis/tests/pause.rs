//! A process paused longer than its leases, resuming on a multi-threaded runtime: the expirer
//! takes the overdue holders out of the map under the pool's lock, then tells them (signal,
//! abort) after unlocking; meanwhile another worker may poll one of their tasks. That task
//! must not take a step, and a permit must not read as held, in between. In a test binary of
//! its own: it installs a global `tracing` subscriber that widens the window (it stalls the
//! expirer in its warning, as a slow log writer would, after waking the task).

mod slow_writer;
mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use support::{Server, pool};

/// Woken by the subscriber, from a thread outside the runtime, when the leases are presumed
/// lost.
static WAKE: OnceLock<Arc<tokio::sync::Notify>> = OnceLock::new();
static STALLED: AtomicBool = AtomicBool::new(false);

/// At the first "presumed lost" warning: wakes the task and stalls the thread that warns for
/// 300 ms.
fn wake_and_stall() {
    STALLED.store(true, Ordering::SeqCst);
    let wake = Arc::clone(WAKE.get().expect("set before the pause"));
    std::thread::spawn(move || wake.notify_one())
        .join()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
}

/// Found by a review of the first version of the check, which read a holder already taken out
/// of the map as "not lost": the task ran a step, and `is_lost()` said `false` in it, while
/// the fleet reaped the leases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_takes_no_step_while_its_loss_is_being_told() {
    let wake = Arc::new(tokio::sync::Notify::new());
    WAKE.set(Arc::clone(&wake)).unwrap();
    slow_writer::slow_writer("presumed lost", wake_and_stall);
    let server = Server::start();
    let lease = Duration::from_secs(1);
    let pool = pool(&server, "pause", lease).await;
    let permit = Arc::new(pool.try_acquire(["p"]).await.unwrap());
    let steps = Arc::new(AtomicUsize::new(0));
    let held_said = Arc::new(AtomicUsize::new(0));
    let task = pool
        .try_spawn(["job"], {
            let (steps, held_said, permit) = (
                Arc::clone(&steps),
                Arc::clone(&held_said),
                Arc::clone(&permit),
            );
            async move {
                loop {
                    wake.notified().await;
                    steps.fetch_add(1, Ordering::SeqCst);
                    if !permit.is_lost() {
                        held_said.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        })
        .await
        .unwrap();
    // Paused: every worker blocked for a lease (the renewer would be paused too).
    pool.stop_renewal();
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let blockers: Vec<_> = (0..2)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait();
                std::thread::sleep(lease);
            })
        })
        .collect();
    for blocker in blockers {
        blocker.await.unwrap();
    }
    let ended = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the task was never aborted");
    assert!(ended.unwrap_err().is_cancelled());
    assert!(STALLED.load(Ordering::SeqCst), "the window was not widened");
    assert_eq!(
        (
            steps.load(Ordering::SeqCst),
            held_said.load(Ordering::SeqCst)
        ),
        (0, 0),
        "(steps run after the lease was presumed lost, of which is_lost() said false)"
    );
    assert!(permit.is_lost());
}
