//! This process's side of a pool's life (`close`, `reopen`, `wait`, `shutdown`, `local_len`)
//! and the fleet's counts (`len`, `effective_limit`, `waiting_count`, `waiting_len`), against a
//! real redis-server.

mod support;

use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Context, Waker};
use std::time::Duration;

use taskherd::LimitChanges;
use tokio::sync::oneshot;

use support::{Server, poll_once, pool};

/// Polls `future` once; whether it is ready. `wait` depends on this process's state only (no
/// I/O), so its readiness can be checked poll by poll.
fn ready(future: Pin<&mut impl Future<Output = ()>>) -> bool {
    future
        .poll(&mut Context::from_waker(Waker::noop()))
        .is_ready()
}

/// Polls an admission call once, which sends it to Redis; its reply needs a round trip, so it
/// is then in flight. Writes (scripts) are paused on `server` during that poll: on a loaded
/// machine, the polling thread could otherwise be preempted long enough for the admitter's
/// round trip to finish within it (seen once in CI).
fn send<T>(server: &Server, call: Pin<&mut impl Future<Output = T>>) {
    pause_writes(server);
    let first = call.poll(&mut Context::from_waker(Waker::noop()));
    unpause(server);
    assert!(first.is_pending(), "answered without a round trip");
}

/// `wait` resolves once the pool is closed here and neither a task nor a permit of it is held
/// here; not before, however empty the pool is while open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_resolves_once_closed_with_no_task_or_permit_left() {
    let server = Server::start();
    let pool = pool(&server, "wait", Duration::from_secs(5)).await;

    let mut idle = pin!(pool.wait());
    assert!(
        !ready(idle.as_mut()),
        "open and empty: wait does not resolve"
    );

    let (finish, finished) = oneshot::channel::<()>();
    let task = pool
        .try_spawn(["a"], async move {
            let _ = finished.await;
        })
        .await
        .unwrap();
    let permit = pool.try_acquire(["b"]).await.unwrap();
    assert_eq!(pool.local_len(), 2);
    let mut wait = pin!(pool.wait());
    assert!(!ready(wait.as_mut()));

    assert!(pool.close());
    assert!(
        !ready(wait.as_mut()),
        "closed, but a task and a permit are held"
    );
    drop(permit);
    assert_eq!(pool.local_len(), 1);
    assert!(!ready(wait.as_mut()), "closed, but a task runs");
    finish.send(()).unwrap();
    task.await.unwrap();
    assert_eq!(pool.local_len(), 0);
    assert!(ready(wait.as_mut()), "closed and nothing held");
    assert!(
        ready(idle.as_mut()),
        "a wait made before anything ran resolves too"
    );
    // A wait made now, while closed and empty, resolves at once.
    assert!(ready(pin!(pool.wait()).as_mut()));

    // The fleet gets the slots back once the releases are flushed.
    pool.flush().await;
    assert_eq!(pool.len().await.unwrap(), 0);
    assert!(pool.is_empty().await.unwrap());
}

/// A pool closed and empty at some moment after `wait` was called resolves it, even if it was
/// reopened and used since; `reopen` admits again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_remembers_a_moment_closed_and_empty_across_reopen() {
    let server = Server::start();
    let pool = pool(&server, "reopen", Duration::from_secs(5)).await;
    let permit = pool.try_acquire(["a"]).await.unwrap();
    let mut wait = pin!(pool.wait());
    assert!(pool.close());
    assert!(!pool.close(), "already closed");
    assert!(pool.try_acquire(["a"]).await.unwrap_err().is_closed());
    drop(permit);
    assert!(pool.reopen());
    assert!(!pool.reopen(), "already open");
    assert!(!pool.is_closed());
    let again = pool.try_acquire(["a"]).await.unwrap();
    assert!(
        ready(wait.as_mut()),
        "closed and empty for a moment after wait was called"
    );
    // A wait made now, open, does not resolve.
    assert!(!ready(pin!(pool.wait()).as_mut()));
    drop(again);
    pool.flush().await;
}

/// An admission that Redis grants after `close` (here: a `try_spawn` in flight when the pool is
/// closed) fails as closed, hands its future back and gives its slot back: nothing is
/// admitted here once `wait` could have resolved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admission_granted_after_close_fails_and_gives_its_slot_back() {
    let server = Server::start();
    let pool = pool(&server, "inflight", Duration::from_secs(5)).await;
    let mut attempt = pin!(pool.try_spawn(["a"], async { 7 }));
    send(&server, attempt.as_mut());
    assert!(pool.close());
    assert!(
        ready(pin!(pool.wait()).as_mut()),
        "nothing is held here: wait resolves at once"
    );
    let err = attempt.await.unwrap_err();
    assert!(err.is_closed(), "{err:?}");
    assert_eq!(err.into_inner().await, 7, "the future is handed back");
    assert_eq!(pool.local_len(), 0);
    pool.flush().await;
    let total = pool.total_stats().await.unwrap();
    assert_eq!(
        total.running, 0,
        "the slot granted after close was given back"
    );
}

/// A `try_*` call in flight when the pool is closed fails as closed even when Redis answers
/// that a group is full (as every admission call that has not returned yet). Redis is held
/// with `CLIENT PAUSE` so that the call is sent, and waits there, when `close` runs. A refusal
/// by this process's close, decided here and never sent, is not counted in the fleet's
/// statistics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_in_flight_when_closed_fails_as_closed_even_if_redis_found_it_full() {
    let server = Server::start();
    let pool = pool(&server, "inflight-full", Duration::from_secs(5)).await;
    pool.set_limit("a", 0).await.unwrap();
    pause_writes(&server);
    let attempt = tokio::spawn({
        let pool = pool.clone();
        async move { pool.try_acquire(["a"]).await.map(drop) }
    });
    // Long enough for the call to be sent (it then waits in Redis until the pause ends).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!attempt.is_finished(), "answered during the pause");
    assert!(pool.close());
    unpause(&server);
    let err = attempt.await.unwrap().unwrap_err();
    assert!(err.is_closed(), "in flight at close(), yet: {err:?}");

    let rejected = pool.total_stats().await.unwrap().rejected;
    let closed = pool.try_acquire(["b"]).await.unwrap_err();
    assert!(closed.is_closed(), "{closed:?}");
    assert_eq!(
        pool.total_stats().await.unwrap().rejected,
        rejected,
        "a refusal by this process's close never reaches Redis"
    );
}

/// A call made before `close` fails as closed even if the pool is reopened before it
/// returns, as in the in-process pool: a future made before (not polled yet), a call in flight
/// that Redis grants, and a waiter queued before. Their slots go back, and a call made after
/// `reopen` is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_made_before_close_fails_even_if_the_pool_is_reopened() {
    let server = Server::start();
    let pool = pool(&server, "reopened", Duration::from_secs(5)).await;
    pool.set_limit("a", 1).await.unwrap();

    // Made, not polled.
    let made = pool.try_spawn(["b"], async { 7 });
    // In flight, granted by Redis. Writes paused while it is sent: on a loaded machine, the
    // thread polling it could otherwise be preempted long enough for the admitter's round trip
    // to finish within that first poll.
    let mut in_flight = pin!(pool.try_acquire(["c"]));
    send(&server, in_flight.as_mut());
    // Queued.
    let held = pool.try_acquire(["a"]).await.unwrap();
    let queued = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire(["a"]).await.map(drop) }
    });
    for _ in 0..500 {
        if pool.waiting_count(&"a").await.unwrap() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(pool.waiting_count(&"a").await.unwrap(), 1);

    // No await in between: none of them runs until the pool is open again.
    assert!(pool.close());
    assert!(pool.reopen());

    let err = made.await.unwrap_err();
    assert!(err.is_closed(), "made before close: {err:?}");
    assert_eq!(err.into_inner().await, 7, "the future is handed back");
    let err = in_flight.await.unwrap_err();
    assert!(err.is_closed(), "in flight at close: {err:?}");
    drop(held);
    let outcome = tokio::time::timeout(Duration::from_secs(5), queued)
        .await
        .expect("the waiter neither failed nor was granted")
        .unwrap();
    assert!(outcome.is_err(), "a waiter from before close() was granted");

    // Every slot went back; a call made after reopen is served.
    pool.flush().await;
    assert_eq!(pool.local_len(), 0);
    let permit = tokio::time::timeout(Duration::from_secs(5), pool.acquire(["a"]))
        .await
        .expect("the slot of a went back")
        .unwrap();
    assert_eq!(pool.waiting_count(&"a").await.unwrap(), 0);
    assert_eq!(pool.total_stats().await.unwrap().running, 1);
    drop(permit);
}

/// A waiting `spawn` fails on `close` and does not hold `wait` up; `shutdown` aborts the tasks
/// this process spawned, waits for them, and flushes their releases to Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_aborts_waits_and_flushes() {
    let server = Server::start();
    let pool = pool(&server, "shutdown", Duration::from_secs(5)).await;
    pool.set_limit("a", 1).await.unwrap();
    let running = pool
        .try_spawn(["a"], std::future::pending::<()>())
        .await
        .unwrap();
    let waiting = tokio::spawn({
        let pool = pool.clone();
        async move { pool.spawn(["a"], async {}).await.map(drop) }
    });
    // The waiter is queued in Redis before the shutdown.
    while pool.waiting_len().await.unwrap() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(pool.waiting_count(&"a").await.unwrap(), 1);

    pool.shutdown().await;
    assert!(pool.is_closed());
    assert_eq!(pool.local_len(), 0);
    // No flush needed: shutdown waited for the task's release to reach Redis.
    assert_eq!(pool.len().await.unwrap(), 0);
    assert!(running.await.unwrap_err().is_cancelled());
    let failed = waiting.await.unwrap().unwrap_err();
    assert!(failed.is_closed(), "{failed:?}");
    // The waiter left its queue when it failed (it is not counted here, so shutdown did not
    // wait for it).
    pool.flush().await;
    assert_eq!(pool.waiting_len().await.unwrap(), 0);
}

/// The fleet's counts: every process's tasks and permits, the limit in force, the waiters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_counts_cover_every_process() {
    let server = Server::start();
    let here = pool(&server, "counts", Duration::from_secs(5)).await;
    // Another process: a pool of the same name, built on its own.
    let there = pool(&server, "counts", Duration::from_secs(5)).await;
    here.set_limits(LimitChanges::new().default_limit(1).limit("b", 3))
        .await
        .unwrap();
    assert_eq!(here.effective_limit(&"a").await.unwrap(), Some(1));
    assert_eq!(here.effective_limit(&"b").await.unwrap(), Some(3));
    assert_eq!(here.limit(&"a").await.unwrap(), None, "no explicit limit");

    let a = there.try_acquire(["a"]).await.unwrap();
    let b = here.try_acquire(["b"]).await.unwrap();
    assert_eq!(here.len().await.unwrap(), 2);
    assert!(!here.is_empty().await.unwrap());
    assert_eq!((here.local_len(), there.local_len()), (1, 1));

    let waiter = tokio::spawn({
        let here = here.clone();
        async move { here.acquire(["a", "b"]).await.map(drop) }
    });
    while here.waiting_len().await.unwrap() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(there.waiting_len().await.unwrap(), 1);
    assert_eq!(there.waiting_count(&"a").await.unwrap(), 1);
    assert_eq!(there.waiting_count(&"c").await.unwrap(), 0);
    drop(a);
    waiter.await.unwrap().unwrap();
    drop(b);
    here.flush().await;
    there.flush().await;
    assert_eq!(here.len().await.unwrap(), 0);
    assert_eq!(here.waiting_len().await.unwrap(), 0);
}

/// The invariant under concurrency: callers spawn in a loop on both worker threads (`try_spawn`
/// and waiting `spawn`, with a limit so that some wait) while the pool is closed; once `wait`
/// has resolved, no task of the pool starts in this process, every call ends, and nothing is
/// left counted in Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_starts_after_wait_resolved() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let server = Server::start();
    let pool = pool(&server, "race", Duration::from_secs(5)).await;
    pool.set_limit("a", 4).await.unwrap();
    let waited = Arc::new(AtomicBool::new(false));
    let (started, late) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let callers: Vec<_> = (0..16)
        .map(|caller| {
            let (pool, waited) = (pool.clone(), Arc::clone(&waited));
            let (started, late) = (Arc::clone(&started), Arc::clone(&late));
            tokio::spawn(async move {
                loop {
                    let (waited, started, late) =
                        (Arc::clone(&waited), Arc::clone(&started), Arc::clone(&late));
                    let task = async move {
                        if waited.load(Ordering::SeqCst) {
                            late.fetch_add(1, Ordering::SeqCst);
                        }
                        started.fetch_add(1, Ordering::SeqCst);
                    };
                    let closed = if caller % 2 == 0 {
                        match pool.try_spawn(["a"], task).await {
                            Ok(_) => false,
                            Err(err) => err.is_closed(),
                        }
                    } else {
                        match pool.spawn(["a"], task).await {
                            Ok(_) => false,
                            Err(err) => err.is_closed(),
                        }
                    };
                    if closed {
                        return;
                    }
                }
            })
        })
        .collect();
    while started.load(Ordering::SeqCst) < 100 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    pool.close();
    pool.wait().await;
    waited.store(true, Ordering::SeqCst);
    for caller in callers {
        caller.await.unwrap();
    }
    // Give any task that slipped through the time to start and be counted.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(late.load(Ordering::SeqCst), 0, "a task started after wait");
    assert_eq!(pool.local_len(), 0);
    pool.flush().await;
    let total = pool.total_stats().await.unwrap();
    assert_eq!((total.running, total.waiting), (0, 0));
}

/// `shutdown` aborts a task admitted before it began but registered after its `abort_all`
/// (here `try_spawn_with`'s `make` runs while `shutdown` goes on another thread): the task is
/// aborted as soon as it is registered. It used to run on, and `shutdown` waited for it for
/// ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_aborts_a_task_admitted_before_it_began() {
    let server = Server::start();
    let pool = pool(&server, "sd-race", Duration::from_secs(5)).await;
    let (go, gone) = oneshot::channel::<()>();
    let shutdown = tokio::spawn({
        let pool = pool.clone();
        async move {
            gone.await.unwrap();
            pool.shutdown().await;
        }
    });
    let watcher = pool.clone();
    let task = pool
        .try_spawn_with(["a"], move || {
            // Admitted (counted here); `shutdown` starts on the other worker thread.
            go.send(()).unwrap();
            while !watcher.is_closed() {
                std::thread::sleep(Duration::from_millis(1));
            }
            // Its `abort_all` runs right after the close, while this still blocks.
            std::thread::sleep(Duration::from_millis(200));
            std::future::pending::<()>()
        })
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), shutdown)
        .await
        .expect("shutdown returns")
        .unwrap();
    assert!(task.await.unwrap_err().is_cancelled());
    assert_eq!(pool.len().await.unwrap(), 0);
}

/// Once `shutdown` has returned, no waiter of this process is queued in Redis, whether or not
/// its future ran since (its release used to be queued only when it did, so `shutdown`'s
/// flush could miss it and a process exiting then left a ghost waiter that the next free slot
/// was granted to, lost for a lease).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_shutdown_no_waiter_of_this_process_is_queued() {
    let server = Server::start();
    let pool = pool(&server, "sd-wait", Duration::from_secs(30)).await;
    let other = support::pool(&server, "sd-wait", Duration::from_secs(30)).await;
    other.set_limit("a", 1).await.unwrap();
    let _held = other.try_acquire(["a"]).await.unwrap();
    for round in 0..20 {
        let waiter = tokio::spawn({
            let pool = pool.clone();
            async move { pool.acquire(["a"]).await.map(drop) }
        });
        while other.waiting_count(&"a").await.unwrap() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        pool.shutdown().await;
        assert_eq!(
            other.waiting_count(&"a").await.unwrap(),
            0,
            "round {round}: a waiter is still queued in Redis after shutdown"
        );
        assert!(waiter.await.unwrap().unwrap_err().is_closed());
        assert!(pool.reopen());
    }
}

/// The same seen from the fleet: a process that calls `shutdown` and exits (its runtime
/// dropped at once) while one of its `acquire`s waits leaves no waiter that the next free slot
/// would go to.
#[test]
fn a_process_exiting_after_shutdown_leaves_no_ghost_waiter() {
    let server = Server::start();
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    };
    let main = runtime();
    let other = main.block_on(pool(&server, "ghost", Duration::from_secs(30)));
    main.block_on(other.set_default_limit(1)).unwrap();
    for round in 0..10 {
        let group: &'static str = Box::leak(format!("g{round}").into_boxed_str());
        let held = main.block_on(other.try_acquire([group])).unwrap();
        // Another process: its own runtime, dropped right after `shutdown` returned.
        let process = runtime();
        process.block_on(async {
            let pool = pool(&server, "ghost", Duration::from_secs(30)).await;
            tokio::spawn({
                let pool = pool.clone();
                async move { pool.acquire([group]).await.map(drop) }
            });
            while other.waiting_count(&group).await.unwrap() == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            pool.shutdown().await;
        });
        drop(process);
        drop(held);
        main.block_on(other.flush());
        assert!(
            main.block_on(other.try_acquire([group])).is_ok(),
            "round {round}: {group}'s free slot went to the waiter of a process that exited"
        );
    }
}

/// No admission reaches Redis after `close()` returns, even one the admission loop had
/// already taken when `close()` was called, while it waited for a release call in flight
/// (here held up by a Redis paused for writes). It was sent: counted in the fleet's
/// statistics and holding a slot until its release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admission_waiting_behind_a_release_is_not_sent_after_close() {
    let server = Server::start();
    let pool = pool(&server, "close-behind", Duration::from_secs(30)).await;
    let (admitted, call) = held_behind_a_release(&server, &pool).await;
    assert!(pool.close());
    unpause(&server);
    let refused = call.await.map(drop).unwrap_err();
    assert!(refused.is_closed(), "{refused:?}");
    pool.flush().await;
    assert_eq!(
        pool.total_stats().await.unwrap().admitted,
        admitted,
        "an admission reached Redis after close()"
    );
    assert_eq!(pool.task_count(&"y").await.unwrap(), 0);
}

/// An admission whose caller went away while the admission loop held it back (behind a
/// release call in flight) is not sent: it was, taking the group's only slot until its
/// release (a caller sent in the same call was refused for it), and the fleet counted an
/// admission nobody made. The loop looked for callers that went away only before it waited.
/// Found by a review.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admission_whose_caller_left_while_held_back_is_not_sent() {
    let server = Server::start();
    let pool = pool(&server, "left-behind", Duration::from_secs(30)).await;
    pool.set_limit("y", 1).await.unwrap();
    let (admitted, left) = held_behind_a_release(&server, &pool).await;
    let mut later = Box::pin(pool.try_acquire(["y"]));
    assert!(poll_once(&mut later).is_pending());
    drop(left);
    unpause(&server);
    let permit = later
        .await
        .expect("refused for the slot of a caller that left");
    pool.flush().await;
    assert_eq!(pool.total_stats().await.unwrap().admitted, admitted + 1);
    drop(permit);
}

/// `shutdown` leaves nothing of this process counted in Redis, not even an admission Redis
/// answered whose future has not run since (the admission is recorded as the answer arrives,
/// and renewed: it stayed counted for as long as the future lived), in wait or try mode.
// One thread: the admission loop cannot answer within the first poll (which would read it).
#[tokio::test(flavor = "current_thread")]
async fn shutdown_gives_back_admissions_answered_but_not_read() {
    let server = Server::start();
    let lease = Duration::from_millis(600);
    let pool = pool(&server, "unread-shutdown", lease).await;
    let observer = support::pool(&server, "unread-shutdown", lease).await;
    let mut waiting = Box::pin(pool.acquire(["a"]));
    let mut trying = Box::pin(pool.try_acquire(["b"]));
    assert!(poll_once(&mut waiting).is_pending());
    assert!(poll_once(&mut trying).is_pending());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while observer.len().await.unwrap() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "never admitted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pool.shutdown().await;
    assert_eq!(
        observer.len().await.unwrap(),
        0,
        "left counted after shutdown"
    );
    // Not renewed either: still nothing counted several leases later.
    tokio::time::sleep(lease * 3).await;
    assert_eq!(observer.len().await.unwrap(), 0);
    // Read now, they fail as closed.
    assert!(waiting.await.map(drop).unwrap_err().is_closed());
    assert!(trying.await.map(drop).unwrap_err().is_closed());
    assert_eq!(pool.lost_leases(), 0);
}

/// A `shutdown` racing with a `reopen` gives back only what was asked before its `close`: a
/// waiting call made after the `reopen` keeps its place and is served (it was taken out of
/// the queues with the others, and waited for ever), and nothing is left counted in Redis
/// for nobody (a waiter queued after being taken out was granted a slot nobody renewed).
#[tokio::test(flavor = "current_thread")]
async fn a_wait_made_after_a_reopen_racing_with_shutdown_is_served() {
    for yields in [0, 10] {
        let server = Server::start();
        let lease = Duration::from_secs(5);
        let pool = pool(&server, "reopen-race", lease).await;
        let other = support::pool(&server, "reopen-race", lease).await;
        other.set_limit("a", 1).await.unwrap();
        let held = other.try_acquire(["a"]).await.unwrap();
        let mut shutdown = Box::pin(pool.shutdown());
        // Closed; the barrier sent (and, after the yields, answered).
        assert!(poll_once(&mut shutdown).is_pending());
        for _ in 0..yields {
            tokio::task::yield_now().await;
        }
        assert!(pool.reopen());
        let mut waiting = Box::pin(pool.acquire(["a"]));
        assert!(poll_once(&mut waiting).is_pending());
        shutdown.await;
        assert!(!pool.is_closed());
        drop(held);
        other.flush().await;
        let permit = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap_or_else(|_| panic!("({yields} yields) a wait made after reopen hangs"))
            .unwrap();
        assert!(!permit.is_lost());
        assert_eq!(other.len().await.unwrap(), 1);
        drop(permit);
        pool.flush().await;
        assert_eq!(other.len().await.unwrap(), 0, "({yields} yields)");
    }
}

/// A call made before a `close` is never sent after it, even if the pool is reopened before
/// the admission loop gets to it (here it waited for a release call in flight, Redis paused
/// for writes): it was sent, counted in `admitted`, and its slot renewed for as long as its
/// future lived unread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admission_from_before_close_is_not_sent_after_close_and_reopen() {
    let server = Server::start();
    let pool = pool(&server, "close-reopen-behind", Duration::from_secs(30)).await;
    let (admitted, call) = held_behind_a_release(&server, &pool).await;
    assert!(pool.close());
    assert!(pool.reopen());
    unpause(&server);
    // Once the release call is answered, the admission loop has dealt with the call (it
    // waited for the same lock as this flush, before it); the future is not polled meanwhile.
    pool.flush().await;
    let held = pool.task_count(&"y").await.unwrap();
    let sent = pool.total_stats().await.unwrap().admitted - admitted;
    assert!(call.await.map(drop).unwrap_err().is_closed());
    assert_eq!((sent, held), (0, 0), "sent after close() returned");
}

/// A `reopen` racing with the first steps of `shutdown` (its close, marking the shutdown,
/// taking the moment to wait for) neither hangs the shutdown (its wait found the pool open
/// and waited for a later close) nor leaves the reopened pool aborting every task it spawns
/// (the shutdown's mark set after the `reopen` cleared it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopen_racing_with_the_start_of_shutdown() {
    let server = Server::start();
    let pool = pool(&server, "reopen-shutting", Duration::from_secs(30)).await;
    let (mut hung, mut aborted) = (0, 0);
    for _ in 0..200 {
        let other = pool.clone();
        let reopener = std::thread::spawn(move || {
            while !other.is_closed() {
                std::hint::spin_loop();
            }
            assert!(other.reopen());
        });
        std::thread::sleep(Duration::from_micros(50));
        let done = tokio::time::timeout(Duration::from_secs(2), pool.shutdown()).await;
        reopener.join().unwrap();
        hung += usize::from(done.is_err());
        assert!(!pool.is_closed());
        let Ok(handle) = pool.try_spawn(["a"], async { 7 }).await else {
            panic!("the reopened pool refused a task")
        };
        aborted += usize::from(handle.await.is_err());
    }
    assert_eq!((hung, aborted), (0, 0), "(shutdowns hung, tasks aborted)");
}

/// A `try_acquire(["y"])` of `pool` taken by the admission loop and held back behind a release
/// call in flight (Redis paused for writes until the caller calls [`unpause`], at most
/// 5 s); returns the fleet's `admitted` count before it, and the call, polled once.
async fn held_behind_a_release<'a>(
    server: &Server,
    pool: &'a taskherd_redis::RedisPool<&'static str>,
) -> (
    u64,
    std::pin::Pin<
        Box<
            impl Future<
                Output = Result<
                    taskherd_redis::RedisPermit<&'static str>,
                    taskherd::TryAcquireError<&'static str>,
                >,
            > + 'a,
        >,
    >,
) {
    let permit = pool.try_acquire(["x"]).await.unwrap();
    let admitted = pool.total_stats().await.unwrap().admitted;
    // Paused until the test unpauses it: no deadline that a loaded machine could pass before
    // `close()`.
    pause_writes(server);
    // The release call goes out and waits in Redis: a paused client shows as blocked, with
    // the command it waits to run (the notifier's BLPOP may be paused beside it).
    drop(permit);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let clients = server.cmd(&["CLIENT", "LIST"]).unwrap();
        if clients
            .lines()
            .any(|client| client.contains(" flags=b ") && client.contains(" cmd=evalsha "))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the release call never reached Redis: {clients}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut call = Box::pin(pool.try_acquire(["y"]));
    assert!(poll_once(&mut call).is_pending());
    // Time for the admission loop to take the call (had it not, `close()` refuses it anyway).
    tokio::time::sleep(Duration::from_millis(100)).await;
    (admitted, call)
}

/// Pauses `server` for writes (scripts included) until [`unpause`], at most 5 s.
fn pause_writes(server: &Server) {
    assert!(
        server
            .cmd(&["CLIENT", "PAUSE", "5000", "WRITE"])
            .unwrap()
            .starts_with("+OK")
    );
}

/// Ends the pause [`pause_writes`] started.
fn unpause(server: &Server) {
    assert!(
        server
            .cmd(&["CLIENT", "UNPAUSE"])
            .unwrap()
            .starts_with("+OK")
    );
}

/// `shutdown` takes this process's waiters out of Redis's queues even if its future is dropped
/// after its first poll (a `timeout`, a `select!`): its docs say dropping it stops only the
/// waiting (found by a review: the waiter stayed queued, and renewed, for as long as its
/// future lived).
#[tokio::test(flavor = "current_thread")]
async fn a_shutdown_dropped_after_its_first_poll_still_takes_the_waiters_out() {
    let server = Server::start();
    let lease = Duration::from_millis(900);
    let pool = pool(&server, "shutdown-dropped", lease).await;
    let other = support::pool(&server, "shutdown-dropped", lease).await;
    other.set_limit("a", 1).await.unwrap();
    let _held = other.try_acquire(["a"]).await.unwrap();
    let mut waiting = Box::pin(pool.acquire(["a"]));
    assert!(poll_once(&mut waiting).is_pending());
    while other.waiting_len().await.unwrap() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut shutdown = Box::pin(pool.shutdown());
    assert!(poll_once(&mut shutdown).is_pending());
    drop(shutdown);
    assert!(pool.is_closed());
    // Several leases: a waiter left queued would be renewed all along.
    tokio::time::sleep(lease * 4).await;
    pool.flush().await;
    assert_eq!(
        other.waiting_len().await.unwrap(),
        0,
        "the waiter of a process whose shutdown was dropped is still queued in Redis"
    );
    drop(waiting);
}

/// A Redis set to evict keys without an expiry when full (`maxmemory` with an `allkeys-*`
/// policy) may drop a key of the pool (a limit, a count), which no process could tell from a
/// key never written: the pool says so when it is built. Redis's default (`noeviction`), a
/// `volatile-*` policy (only the notification lists expire) and an `allkeys-*` policy without
/// `maxmemory` (nothing is ever evicted) are not said.
#[tokio::test]
async fn a_redis_that_evicts_keys_is_said() {
    let cases: [(&[&str], bool); 4] = [
        (&[], false),
        (
            &["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"],
            true,
        ),
        (
            &["--maxmemory", "64mb", "--maxmemory-policy", "volatile-lru"],
            false,
        ),
        (&["--maxmemory-policy", "allkeys-random"], false),
    ];
    for (args, evicts) in cases {
        let server = Server::start_args(args);
        let pool = pool(&server, "evict", Duration::from_secs(5)).await;
        assert_eq!(pool.redis_evicts_keys(), evicts, "{args:?}");
    }
    // A Redis user that may not read `INFO` (`-@dangerous`) builds its pool all the same.
    let server = Server::start_args(cases[1].0);
    let user = [
        "ACL",
        "SETUSER",
        "noinfo",
        "on",
        ">pw",
        "~*",
        "&*",
        "+@all",
        "-@dangerous",
    ];
    assert!(server.cmd(&user).unwrap().contains("OK"));
    let url = format!("redis://noinfo:pw@127.0.0.1:{}/", server.port);
    let pool = taskherd_redis::RedisPool::<&'static str>::builder(&url, "evict")
        .build()
        .await
        .unwrap();
    assert!(!pool.redis_evicts_keys());
    drop(pool.try_acquire(["db"]).await.unwrap());
    pool.flush().await;
}
