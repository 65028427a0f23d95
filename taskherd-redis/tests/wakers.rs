//! Invariant 8: no user code runs under the engine's lock. A waker woken (or dropped) under
//! it that drops a permit of the same pool (as an executor's waker that owns a task holding a
//! permit would) re-enters the lock: the pool would deadlock for good.

mod support;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};
use std::time::{Duration, Instant};

use taskherd_redis::{RedisPermit, RedisPool};

use support::{Server, pool};

/// A waker that, once armed, drops a permit of the pool when woken.
struct DropOnWake {
    armed: AtomicBool,
    permit: Mutex<Option<RedisPermit<&'static str>>>,
}

impl DropOnWake {
    fn new(permit: RedisPermit<&'static str>, armed: bool) -> Arc<Self> {
        Arc::new(Self {
            armed: AtomicBool::new(armed),
            permit: Mutex::new(Some(permit)),
        })
    }

    fn dropped(&self) -> bool {
        self.permit.lock().unwrap().is_none()
    }
}

impl Wake for DropOnWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.armed.load(Ordering::SeqCst) {
            let permit = self.permit.lock().unwrap().take();
            // RedisPermit::drop takes the engine's lock.
            drop(permit);
        }
    }
}

/// Runs `f` on a thread of its own; `false` if it has not returned within 5 s (it is then
/// left blocked: the test fails, and the process ends with the test binary).
fn returns_in_time(f: impl FnOnce() + Send + 'static) -> bool {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    rx.recv_timeout(Duration::from_secs(5)).is_ok()
}

/// Whether the engine's lock can be taken (`Debug` takes it).
fn lock_is_free(pool: &RedisPool<&'static str>) -> bool {
    let pool = pool.clone();
    returns_in_time(move || drop(format!("{pool:?}")))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A renewal finds a lease lost: the permit's `lost()` waker is woken after the lock is
/// released, so it may drop another permit.
#[test]
fn a_waker_woken_by_a_lost_lease_may_drop_a_permit() {
    let server = Server::start();
    let rt = runtime();
    let pool = rt.block_on(pool(&server, "wakers", Duration::from_millis(300)));
    let watched = rt.block_on(pool.try_acquire(["a"])).unwrap();
    let other = rt.block_on(pool.try_acquire(["b"])).unwrap();
    let state = DropOnWake::new(other, true);
    let waker = Waker::from(Arc::clone(&state));
    let mut lost = Box::pin(watched.lost());
    assert!(
        lost.as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending()
    );

    // The next renewal (every 100 ms) finds both leases gone.
    server.cmd(&["FLUSHALL"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !state.dropped() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(state.dropped(), "the lost lease never woke its waiter");
    if !lock_is_free(&pool) {
        // A worker thread is blocked for good on the lock: dropping the runtime would wait
        // for it. Leave everything behind.
        std::mem::forget(lost);
        std::mem::forget((watched, pool, rt));
        panic!("deadlock: the waker was woken under the engine's lock");
    }
    assert!(
        lost.as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_ready()
    );
    assert!(watched.is_lost());
}

/// `close()` wakes the waiting acquires after the lock is released, so a waker may drop a
/// permit.
#[test]
fn a_waker_woken_by_close_may_drop_a_permit() {
    let server = Server::start();
    let rt = runtime();
    let pool = rt.block_on(pool(&server, "wakers", Duration::from_secs(5)));
    rt.block_on(pool.set_limit("db", 1)).unwrap();
    let held = rt.block_on(pool.try_acquire(["db"])).unwrap();
    let other = rt.block_on(pool.try_acquire(["b"])).unwrap();
    let state = DropOnWake::new(other, false);
    let waker = Waker::from(Arc::clone(&state));
    let mut cx = Context::from_waker(&waker);
    let mut waiting = Box::pin(pool.acquire(["db"]));
    assert!(waiting.as_mut().poll(&mut cx).is_pending());
    let deadline = Instant::now() + Duration::from_secs(5);
    while rt.block_on(pool.stats(&"db")).unwrap().waiting == 0 {
        assert!(Instant::now() < deadline, "the acquire never queued");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Its admission call has answered: polled again, it waits on its wake-up.
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(50));
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
    }
    state.armed.store(true, Ordering::SeqCst);

    let closer = pool.clone();
    if !returns_in_time(move || {
        closer.close();
    }) || !lock_is_free(&pool)
    {
        std::mem::forget(waiting);
        std::mem::forget((held, pool, rt));
        panic!("deadlock: close() woke a waiter under the engine's lock");
    }
    assert!(state.dropped(), "close() woke the waiting acquire");
    let closed = waiting.as_mut().poll(&mut cx);
    assert!(
        matches!(closed, std::task::Poll::Ready(Err(_))),
        "{closed:?}"
    );
    drop(held);
}

/// A foreign waker that panics when woken (user code: an executor's, a combinator's).
struct PanicOnWake;

impl Wake for PanicOnWake {
    fn wake(self: Arc<Self>) {
        panic!("a foreign waker panics when woken");
    }
}

/// Polls `future` once with a [`PanicOnWake`] waker; it must be pending.
fn arm<F: Future>(future: &mut std::pin::Pin<Box<F>>) {
    let waker = Waker::from(Arc::new(PanicOnWake));
    assert!(
        future
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending()
    );
}

/// Another permit's `lost()` waker panics when its lease is presumed lost by this permit's
/// `is_lost()` (a pause longer than the lease): the panic is the other waiter's, and must not
/// come out of this call (found by a review: `is_lost()` panicked).
#[tokio::test(flavor = "current_thread")]
async fn a_panicking_waker_of_another_lost_lease_does_not_fail_is_lost() {
    let server = Server::start();
    let lease = Duration::from_secs(1);
    let pool = pool(&server, "panic-is-lost", lease).await;
    let a = pool.try_acquire(["a"]).await.unwrap();
    let b = pool.try_acquire(["b"]).await.unwrap();
    let mut b_lost = Box::pin(b.lost());
    arm(&mut b_lost);
    // Paused (the runtime's only thread blocked) for a lease.
    std::thread::sleep(lease);
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| a.is_lost()));
    assert!(
        matches!(checked, Ok(true)),
        "a.is_lost() panicked with B's waker's panic"
    );
    assert!(b.is_lost());
    assert_eq!(pool.lost_leases(), 2);
}

/// The expirer presumes a lease lost whose `lost()` waker panics: it must go on telling the
/// others and keep running, so that later losses still abort their tasks (found by a review:
/// the expirer died of the panic and a task whose lease expired later ran on for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_waker_of_a_lost_lease_does_not_stop_the_expirer() {
    let server = Server::start();
    let lease = Duration::from_millis(600);
    let pool = pool(&server, "panic-expirer", lease).await;
    let b = pool.try_acquire(["b"]).await.unwrap();
    let mut b_lost = Box::pin(b.lost());
    arm(&mut b_lost);
    // Cut off from Redis: the expirer presumes the lease lost.
    pool.stop_renewal();
    tokio::time::sleep(lease * 2).await;
    assert!(b.is_lost());
    assert_eq!(pool.lost_leases(), 1);
    let task = pool
        .try_spawn(["c"], std::future::pending::<()>())
        .await
        .unwrap();
    let ended = tokio::time::timeout(lease * 4, task)
        .await
        .expect("the task was never aborted: the expirer died of B's waker's panic");
    assert!(ended.unwrap_err().is_cancelled());
}

/// A granted waiter's waker panics when the notifier wakes it: the notifier must keep
/// running, so that the next waiter granted is woken too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_waker_of_a_granted_waiter_does_not_stop_the_notifier() {
    let server = Server::start();
    let pool = pool(&server, "panic-notifier", Duration::from_secs(3)).await;
    pool.set_limit("a", 1).await.unwrap();
    pool.set_limit("b", 1).await.unwrap();
    let a = pool.try_acquire(["a"]).await.unwrap();
    let b = pool.try_acquire(["b"]).await.unwrap();
    let mut first = Box::pin(pool.acquire(["a"]));
    // Queued in Redis (its admission answered `wait`), with a waker that panics.
    let deadline = Instant::now() + Duration::from_secs(5);
    while pool.waiting_count(&"a").await.unwrap() < 1 && Instant::now() < deadline {
        arm(&mut first);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire(["b"]).await.map(drop) }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Granted: its waker panics in whatever wakes it.
    drop(a);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(b);
    let second = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("the second waiter was never woken: its waker's panic stopped the notifier");
    if let Err(error) = second.unwrap() {
        panic!("the second waiter failed: {error}");
    }
    drop(first);
}

/// Sets its flag when woken.
#[derive(Default)]
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A `wait()` whose waker panics when the pool becomes idle: `close()` must neither panic
/// nor stop before it tells the waiting calls that the pool closed (found by a review: the
/// panic came out of `close()` before it woke them, and a queued `acquire` hung for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_waker_of_wait_does_not_fail_close_nor_strand_waiters() {
    let server = Server::start();
    let pool = pool(&server, "panic-close", Duration::from_secs(3)).await;
    pool.set_limit("a", 0).await.unwrap();
    let waiting = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire(["a"]).await.map(drop) }
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while pool.waiting_count(&"a").await.unwrap() < 1 {
        assert!(Instant::now() < deadline, "the acquire never queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut wait = Box::pin(pool.wait());
    arm(&mut wait);
    let closed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pool.close()));
    assert!(
        matches!(closed, Ok(true)),
        "close() panicked with wait()'s waker's panic"
    );
    let told = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the waiting acquire was never told that the pool closed");
    assert!(told.unwrap().is_err());
}

/// One `lost()` watcher's waker panics when the lease is lost: every other watcher of the
/// lease is still woken (found by a review: tokio's wake loop dropped the rest of its batch,
/// 8 of 64 watchers slept on, their work running uncounted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_lost_waker_does_not_leave_the_other_watchers_asleep() {
    let server = Server::start();
    let lease = Duration::from_millis(600);
    let pool = pool(&server, "panic-watchers", lease).await;
    let b = pool.try_acquire(["b"]).await.unwrap();
    let mut panicking = Box::pin(b.lost());
    arm(&mut panicking);
    let mut others = Vec::new();
    for _ in 0..64 {
        let flag = Arc::new(Flag::default());
        let mut lost = Box::pin(b.lost());
        let waker = Waker::from(Arc::clone(&flag));
        assert!(
            lost.as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        others.push((flag, lost));
    }
    pool.stop_renewal();
    tokio::time::sleep(lease * 3).await;
    assert_eq!(pool.lost_leases(), 1);
    let asleep = others
        .iter()
        .filter(|(flag, _)| !flag.0.load(Ordering::SeqCst))
        .count();
    assert_eq!(asleep, 0, "{asleep} of 64 lost() watchers were never woken");
}

/// A call that waits on Redis's answer from the caller's task (statistics, limits) is woken by
/// the Redis client's connection task, which reads every answer of the connection: a caller's
/// waker that panics there must not end that task, and with it every other call in flight on
/// the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_waker_of_a_statistics_call_does_not_fail_the_others_in_flight() {
    let server = Server::start();
    let pool = pool(&server, "panic-stats", Duration::from_secs(3)).await;
    pool.set_limit("a", 3).await.unwrap();
    // Answers held back, so that both calls are in flight when they come.
    assert!(
        server
            .cmd(&["CLIENT", "PAUSE", "500", "ALL"])
            .unwrap()
            .starts_with("+OK")
    );
    let mut stats = Box::pin(pool.stats(&"a"));
    arm(&mut stats);
    let other = tokio::spawn({
        let pool = pool.clone();
        async move { pool.limit(&"a").await }
    });
    let answered = tokio::time::timeout(Duration::from_secs(10), other)
        .await
        .expect("no answer")
        .unwrap();
    match answered {
        Ok(limit) => assert_eq!(limit, Some(3)),
        Err(error) => panic!("the other call failed with the caller's waker's panic: {error}"),
    }
    assert_eq!(pool.limit(&"a").await.unwrap(), Some(3));
    drop(stats);
}
