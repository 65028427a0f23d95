//! A renewal that finds some of this process's leases gone in Redis and renews the others:
//! the others' renewal must be on record before the losses are told (logged, signalled,
//! aborted), or a check made meanwhile reads a lease whose renewal Redis confirmed as overdue
//! and presumes it lost (found by a review: the losses were told first). In a test binary of
//! its own: it installs a global `tracing` subscriber that widens the window (it stalls the
//! renewer in its "leases lost" warning, as a slow log writer would).

mod slow_writer;
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::{Server, pool};

static STALLED: AtomicBool = AtomicBool::new(false);
static UNSTALLED: AtomicBool = AtomicBool::new(false);

/// The renewer's "leases lost" warning takes 450 ms, once.
fn stall() {
    STALLED.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(450));
    UNSTALLED.store(true, Ordering::SeqCst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_renewed_by_the_renewal_that_found_another_gone_is_not_presumed_lost() {
    slow_writer::slow_writer("leases lost:", stall);
    let server = Server::start();
    // Renewed every 200 ms, presumed lost 540 ms after its last confirmed renewal was sent.
    let lease = Duration::from_millis(600);
    let pool = pool(&server, "renewal", lease).await;
    let a = pool.try_acquire(["a"]).await.unwrap();
    let b = pool.try_acquire(["b"]).await.unwrap();
    tokio::time::sleep(lease).await;
    // Redis forgets A only: the next renewal finds A gone and renews B.
    let removed = server
        .cmd(&["ZREM", "taskherd:{renewal}:h", a.id()])
        .unwrap();
    assert!(removed.starts_with(":1"), "{removed}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !STALLED.load(Ordering::SeqCst) {
        assert!(std::time::Instant::now() < deadline, "A's loss never found");
        std::thread::sleep(Duration::from_millis(5));
    }
    // B's renewal was confirmed when the warning began; 400 ms on, with the renewer still
    // in it, B's lease (600 ms) is not overdue.
    std::thread::sleep(Duration::from_millis(400));
    assert!(!UNSTALLED.load(Ordering::SeqCst), "the window was missed");
    assert!(
        !b.is_lost(),
        "B, whose renewal Redis confirmed 400 ms ago, presumed lost"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(a.is_lost());
    assert!(!b.is_lost());
    assert_eq!(pool.lost_leases(), 1);
}
