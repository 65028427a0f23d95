//! Leases on the server's clock: expiry, renewal, loss, and Redis going away.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use taskherd_redis::RedisPool;

use support::{Server, poll_once, pool};

/// Issue #12, semantics 2 and 5: a holder whose process stops renewing loses its slot after
/// the lease, and a waiter of another process gets it (the reaper runs every 500 ms), while
/// a renewed holder keeps its slot for many leases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrenewed_lease_expires_and_its_slot_reaches_a_waiter_elsewhere() {
    let server = Server::start();
    let lease = Duration::from_millis(600);
    let dead = pool(&server, "leases", lease).await;
    let live = pool(&server, "leases", lease).await;
    live.set_limits(
        taskherd::LimitChanges::new()
            .limit("db", 1)
            .limit("renewed", 1),
    )
    .await
    .unwrap();

    let renewed = live.try_acquire(["renewed"]).await.unwrap();
    let stuck = dead.try_acquire(["db"]).await.unwrap();
    dead.stop_renewal();
    // The waiter is in the live process: it is renewed, and it gets the slot once the dead
    // holder's lease has expired and been reaped.
    let granted = tokio::time::timeout(Duration::from_secs(10), live.acquire(["db"]))
        .await
        .expect("the expired slot never reached the waiter")
        .unwrap();
    assert_eq!(live.stats(&"db").await.unwrap().running, 1);

    // Four leases later, the renewed holder still holds its slot.
    tokio::time::sleep(lease * 4).await;
    assert!(!renewed.is_lost());
    assert!(live.try_acquire(["renewed"]).await.unwrap_err().is_full());
    assert_eq!(live.lost_leases(), 0);
    drop((granted, stuck));
}

/// Issue #12, semantics 4: Redis forgets the leases (FLUSHALL, as a restart without
/// persistence would): the permit's `lost()` resolves, the spawned task is aborted, and the
/// pool counts both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_is_reported_and_its_task_aborted() {
    let server = Server::start();
    let pool = pool(&server, "leases", Duration::from_millis(600)).await;
    let permit = pool.try_acquire(["a"]).await.unwrap();
    let task = pool
        .try_spawn(["b"], std::future::pending::<()>())
        .await
        .unwrap();
    server.cmd(&["FLUSHALL"]).unwrap();
    tokio::time::timeout(Duration::from_secs(5), permit.lost())
        .await
        .expect("the lost lease was never noticed");
    assert!(permit.is_lost());
    let aborted = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the task kept running");
    assert!(aborted.unwrap_err().is_cancelled());
    assert_eq!(pool.lost_leases(), 2);
}

/// With `abort_on_lost(false)`, a task whose lease is lost keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_can_be_kept_running_when_its_lease_is_lost() {
    let server = Server::start();
    let pool: RedisPool<&str> = RedisPool::builder(&server.url(), "keep")
        .lease(Duration::from_millis(300))
        .abort_on_lost(false)
        .build()
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = pool
        .try_spawn(["a"], async move { rx.await.is_ok() })
        .await
        .unwrap();
    server.cmd(&["FLUSHALL"]).unwrap();
    while pool.lost_leases() == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tx.send(()).unwrap();
    assert!(task.await.unwrap(), "the task ran to its end");
}

/// Issue #12, semantics 6: with Redis down, admissions fail as unavailable (not full) with the
/// work handed back; once a server is back on the same port, the same pool admits again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_unavailable_and_the_pool_recovers_by_itself() {
    let mut server = Server::start();
    let port = server.port;
    let pool = pool(&server, "leases", Duration::from_secs(3)).await;
    pool.try_acquire(["a"]).await.map(drop).unwrap();
    server.stop();

    let err = pool.try_acquire(["a"]).await.unwrap_err();
    assert!(err.is_unavailable() && !err.is_full(), "{err:?}");
    let err = pool.try_spawn(["a"], async { 3 }).await.unwrap_err();
    assert!(err.is_unavailable() && !err.is_full());
    assert_eq!(err.into_inner().await, 3, "the work is handed back");
    assert!(pool.stats(&"a").await.is_err());

    let _server = Server::start_on(port);
    let mut recovered = None;
    for _ in 0..100 {
        match pool.try_acquire(["a"]).await {
            Ok(permit) => {
                recovered = Some(permit);
                break;
            }
            Err(err) => assert!(err.is_unavailable(), "{err:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recovered.is_some(), "the pool never recovered");
    assert_eq!(pool.stats(&"a").await.unwrap().running, 1);
}

/// A waiter whose lease Redis lost (FLUSHALL) queues again by itself and is admitted; its old
/// id holds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_whose_lease_is_lost_queues_again() {
    let server = Server::start();
    let pool = pool(&server, "leases", Duration::from_millis(600)).await;
    pool.set_limit("db", 1).await.unwrap();
    let held = pool.try_acquire(["db"]).await.unwrap();
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire(["db"]).await }
    });
    while pool.stats(&"db").await.unwrap().waiting == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.cmd(&["FLUSHALL"]).unwrap();
    // The limits went with everything else: whoever configures the fleet sets them again.
    pool.set_limit("db", 1).await.unwrap();
    let permit = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter never queued again")
        .unwrap()
        .unwrap();
    held.lost().await;
    pool.flush().await;
    let db = pool.stats(&"db").await.unwrap();
    assert_eq!((db.running, db.waiting), (1, 0));
    assert_eq!(
        pool.lost_waits(),
        1,
        "the waiter that queued again is counted"
    );
    drop(permit);
}

/// A lease lost between the admission and the spawn (here while `make` of `try_spawn_with`
/// runs): the task spawned afterwards is aborted like any other of a lost lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_lost_before_its_task_is_spawned_aborts_the_task() {
    let server = Server::start();
    let lease = Duration::from_millis(300);
    let pool = pool(&server, "attach", lease).await;
    let task = pool
        .try_spawn_with(["a"], || {
            server.cmd(&["FLUSHALL"]).unwrap();
            // The renewer (on the other worker) finds the lease gone meanwhile.
            std::thread::sleep(lease * 2);
            std::future::pending::<()>()
        })
        .await
        .unwrap();
    let aborted = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("a task whose lease was reported lost is still running");
    assert!(aborted.unwrap_err().is_cancelled());
    assert_eq!(pool.lost_leases(), 1);
}

/// A TCP proxy to the server that can be cut: a network partition between one process and
/// Redis, while the others still reach it. Cutting closes every connection through it and
/// refuses new ones.
async fn cuttable_proxy(port: u16) -> (u16, Arc<AtomicBool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap().port();
    let cut = Arc::new(AtomicBool::new(false));
    let cut_accept = Arc::clone(&cut);
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            if cut_accept.load(Ordering::SeqCst) {
                continue;
            }
            let cut = Arc::clone(&cut_accept);
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await
                else {
                    return;
                };
                let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                tokio::pin!(copy);
                while !cut.load(Ordering::SeqCst) {
                    tokio::select! {
                        _ = &mut copy => return,
                        () = tokio::time::sleep(Duration::from_millis(5)) => {}
                    }
                }
            });
        }
    });
    (local, cut)
}

/// A server, a pool cut off from it by a [`cuttable_proxy`] (not cut yet), and another pool
/// of the same name with a direct connection: a fleet where one process can be partitioned.
async fn partitioned(
    name: &str,
    lease: Duration,
) -> (
    Server,
    Arc<AtomicBool>,
    RedisPool<&'static str>,
    RedisPool<&'static str>,
) {
    let server = Server::start();
    let (port, cut) = cuttable_proxy(server.port).await;
    let cut_off = RedisPool::builder(&format!("redis://127.0.0.1:{port}/"), name)
        .lease(lease)
        .build()
        .await
        .unwrap();
    let other = pool(&server, name, lease).await;
    (server, cut, cut_off, other)
}

/// Fail closed: a process cut off from Redis cannot renew; once no renewal has been confirmed
/// for 90% of a lease it presumes its leases lost (its permit's `lost()` resolves, its task
/// is aborted), before the fleet can reap them and hand the slots to someone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_cut_off_from_redis_stops_its_work_before_its_lease_ends() {
    let lease = Duration::from_millis(1500);
    let (_server, cut, cut_off, other) = partitioned("partition", lease).await;
    other
        .set_limits(taskherd::LimitChanges::new().limit("db", 1).limit("job", 1))
        .await
        .unwrap();
    let permit = cut_off.try_acquire(["db"]).await.unwrap();
    let task = cut_off
        .try_spawn(["job"], std::future::pending::<()>())
        .await
        .unwrap();
    let permit = Arc::new(permit);
    let lost_at = tokio::spawn({
        let permit = Arc::clone(&permit);
        async move {
            permit.lost().await;
            tokio::time::Instant::now()
        }
    });

    cut.store(true, Ordering::SeqCst);
    let cut_at = tokio::time::Instant::now();
    // The other process gets both slots once the cut-off leases have expired in Redis.
    let db = tokio::time::timeout(lease * 4, other.acquire(["db"]))
        .await
        .expect("the cut-off process's slot never came back")
        .unwrap();
    let granted_at = tokio::time::Instant::now();
    let job = tokio::time::timeout(lease * 4, other.acquire(["job"]))
        .await
        .expect("the cut-off process's slot never came back")
        .unwrap();

    assert!(
        permit.is_lost(),
        "the cut-off permit still believes it holds its slot"
    );
    let lost_at = lost_at.await.unwrap();
    assert!(
        lost_at <= granted_at,
        "the cut-off permit learnt of its loss {:?} after the cut, {:?} after its slot went \
         to another process",
        lost_at - cut_at,
        lost_at - granted_at,
    );
    assert!(lost_at - cut_at < lease, "{:?}", lost_at - cut_at);
    let aborted = tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("the cut-off task kept running: two holders of a limit-1 group");
    assert!(aborted.unwrap_err().is_cancelled());
    assert_eq!(cut_off.lost_leases(), 2);
    assert_eq!(other.lost_leases(), 0);
    drop((db, job));
}

/// A key whose `Drop` panics once it is armed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Bomb(&'static str);

impl taskherd_redis::RedisKey for Bomb {
    fn segment(&self) -> std::borrow::Cow<'_, str> {
        std::borrow::Cow::Borrowed(self.0)
    }
}

impl Drop for Bomb {
    fn drop(&mut self) {
        if self.0 == "bomb" && !std::thread::panicking() {
            panic!("a key's Drop panicked");
        }
    }
}

/// Invariant 8: a key whose `Drop` panics when the task's record is forgotten fails that task
/// (it ends in a panic, as in-process) but gives its slot back, at once: the task's guard
/// queues the release before it drops the keys. (It used to skip the release, and the slot
/// stayed held in the fleet, renewed by this process, for as long as it lived.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_whose_drop_panics_still_gives_the_task_slot_back() {
    let server = Server::start();
    let pool: RedisPool<Bomb> = RedisPool::builder(&server.url(), "bomb")
        .build()
        .await
        .unwrap();
    let Ok(task) = pool.try_spawn([Bomb("bomb")], async {}).await else {
        panic!("refused")
    };
    assert!(task.await.unwrap_err().is_panic());
    assert_eq!(pool.local_len(), 0);
    pool.flush().await;
    assert_eq!(
        pool.len().await.unwrap(),
        0,
        "the task's slot is still held"
    );
}

/// A lease of `Duration::MAX` ("never expires") is cut to a year: the background tasks that
/// add it to the time now do not overflow, and releases still reach Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_of_duration_max_works() {
    let server = Server::start();
    let pool = pool(&server, "forever", Duration::MAX).await;
    let permit = pool.try_acquire(["a"]).await.unwrap();
    let task = pool.try_spawn(["a"], async { 1 }).await.unwrap();
    assert_eq!(task.await.unwrap(), 1);
    drop(permit);
    tokio::time::timeout(Duration::from_secs(10), pool.flush())
        .await
        .expect("flush returns");
    assert_eq!(pool.len().await.unwrap(), 0);
    let long = format!(
        "{:?}",
        RedisPool::<&str>::builder("redis://h/", "p").lease(Duration::MAX)
    );
    assert!(long.contains("31536000s"), "{long}");
}

/// Polls `pool`'s statistics of `group` until `ready` holds for them (or fails the test).
async fn until_stats(
    pool: &RedisPool<&'static str>,
    group: &'static str,
    ready: impl Fn(&taskherd::GroupStats) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats = pool.stats(&group).await.unwrap();
        if ready(&stats) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{stats:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A caller whose future does not run for several leases after Redis answered its admission
/// (a busy worker thread, a `select!` branch not polled) still holds its slot: the lease is
/// renewed from the moment the answer arrives, not from when the caller reads it. (Renewals
/// covered only what callers had read: the slot was reaped, another process was admitted in
/// its place, and the late caller then got a permit too: two holders under a limit of 1.)
// One thread: the admission loop cannot answer within the first poll (which would read it).
#[tokio::test(flavor = "current_thread")]
async fn an_admission_read_late_keeps_its_slot() {
    let server = Server::start();
    let lease = Duration::from_millis(600);
    let late = pool(&server, "read-late", lease).await;
    let other = pool(&server, "read-late", lease).await;
    other.set_limit("db", 1).await.unwrap();
    let mut call = Box::pin(late.try_acquire(["db"]));
    assert!(poll_once(&mut call).is_pending(), "answered without Redis");
    until_stats(&other, "db", |stats| stats.running == 1).await;
    tokio::time::sleep(lease * 4).await;
    let refused = other.try_acquire(["db"]).await.map(drop);
    assert!(
        refused.is_err_and(|error| error.is_full()),
        "the late caller's slot was reaped and given to another process"
    );
    let permit = call.await.unwrap();
    assert!(!permit.is_lost());
    assert_eq!(late.lost_leases(), 0);
    assert_eq!(other.stats(&"db").await.unwrap().running, 1);
}

/// The same for a waiter: queued, then not polled for several leases, it keeps its place (it
/// lost it, and was to queue again behind everyone), and gets the slot once it frees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_not_polled_keeps_its_place() {
    let server = Server::start();
    let lease = Duration::from_millis(600);
    let late = pool(&server, "wait-late", lease).await;
    let other = pool(&server, "wait-late", lease).await;
    other.set_limit("db", 1).await.unwrap();
    let held = other.try_acquire(["db"]).await.unwrap();
    let mut call = Box::pin(late.acquire(["db"]));
    assert!(poll_once(&mut call).is_pending());
    until_stats(&other, "db", |stats| stats.waiting == 1).await;
    tokio::time::sleep(lease * 4).await;
    assert_eq!(
        other.stats(&"db").await.unwrap().waiting,
        1,
        "the waiter's place was reaped"
    );
    drop(held);
    let permit = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the freed slot never reached the waiter")
        .unwrap();
    assert!(!permit.is_lost());
    assert_eq!(late.lost_waits(), 0);
}

/// A grant read later than a lease can be trusted without a renewal (here the process was
/// cut off from Redis after its waiter was granted, the future not polled) is a lost lease as
/// soon as its caller reads it: the permit says so at once, rather than a tenth of a lease
/// later, when Redis has already reaped the slot and another process holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_read_after_its_lease_expired_is_lost_at_once() {
    let (late, _taken, outcome) =
        read_after_its_lease_expired("grant-late", |late| Box::pin(late.acquire(["db"]))).await;
    let permit = outcome.unwrap();
    assert!(
        permit.is_lost(),
        "a permit whose slot another process holds was handed out as held"
    );
    assert_eq!(late.lost_leases(), 1);
}

/// The same for a waiting `spawn`: its task would be aborted before its first poll, so the
/// call fails as unavailable and hands its future back, as its `# Errors` says of a Redis
/// unreachable for 90% of the lease. (It returned `Ok`, a task cancelled before it ran, its
/// future dropped: the work lost. Found by a review.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawn_whose_grant_is_read_after_its_lease_expired_hands_its_future_back() {
    let ran = Arc::new(AtomicBool::new(false));
    let work = {
        let ran = Arc::clone(&ran);
        async move { ran.store(true, Ordering::SeqCst) }
    };
    let (late, _taken, outcome) =
        read_after_its_lease_expired("spawn-late", |late| Box::pin(late.spawn(["db"], work))).await;
    let error = match outcome {
        Ok(task) => panic!(
            "a task whose lease was lost before it started: {:?}, its work ran: {}",
            task.await,
            ran.load(Ordering::SeqCst)
        ),
        Err(error) => error,
    };
    assert!(error.is_unavailable(), "{error:?}");
    error.into_inner().await;
    assert!(
        ran.load(Ordering::SeqCst),
        "the future handed back is the work"
    );
    assert_eq!(late.lost_leases(), 1);
    assert_eq!(late.local_len(), 0, "nothing held in the cut-off process");
}

/// A waiting call, made by `call` on a process that is cut off from Redis after Redis granted
/// it and the notifier recorded the grant, and first polled again once Redis has reaped its
/// lease and another process holds the slot (limit 1 on `db`): the cut-off pool, the other
/// process's permit, and what the call returned.
async fn read_after_its_lease_expired<T: std::fmt::Debug>(
    name: &str,
    call: impl for<'a> FnOnce(
        &'a RedisPool<&'static str>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + 'a>>,
) -> (
    RedisPool<&'static str>,
    taskherd_redis::RedisPermit<&'static str>,
    T,
) {
    let lease = Duration::from_millis(1500);
    let (_server, cut, late, other) = partitioned(name, lease).await;
    other.set_limit("db", 1).await.unwrap();
    let held = other.try_acquire(["db"]).await.unwrap();
    let outcome = {
        let mut call = call(&late);
        assert!(poll_once(&mut call).is_pending());
        until_stats(&other, "db", |stats| stats.waiting == 1).await;
        drop(held);
        until_stats(&other, "db", |stats| {
            stats.waiting == 0 && stats.running == 1
        })
        .await;
        // The notifier's poll (once a second) finds the grant and keeps it for the future.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        cut.store(true, Ordering::SeqCst);
        // The grant's lease expires in Redis, which reaps it: the other process gets the slot.
        let taken = tokio::time::timeout(lease * 4, other.acquire(["db"]))
            .await
            .expect("the cut-off waiter's slot never came back")
            .unwrap();
        match poll_once(&mut call) {
            std::task::Poll::Ready(outcome) => (taken, outcome),
            std::task::Poll::Pending => panic!("the grant was not read"),
        }
    };
    (late, outcome.0, outcome.1)
}

/// A waiter granted at once by a call the admission loop sent late (its runtime busy, here
/// a thread blocked for most of a lease after the waiter registered) holds a lease Redis set
/// when the call ran: it is not lost. (Its lease was counted from the waiter's registration,
/// and presumed lost at once.)
#[tokio::test(flavor = "current_thread")]
async fn a_grant_sent_late_is_not_lost() {
    let server = Server::start();
    let lease = Duration::from_millis(600);
    let pool = pool(&server, "sent-late", lease).await;
    let mut call = Box::pin(pool.acquire(["a"]));
    assert!(poll_once(&mut call).is_pending());
    // Blocks the only thread: the admission loop sends the call after this.
    std::thread::sleep(Duration::from_millis(560));
    let permit = call.await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(!permit.is_lost(), "a grant Redis just made handed out lost");
    assert_eq!(pool.lost_leases(), 0);
}

/// A Redis that stops answering without closing the connection (paused here; a frozen
/// server or a black-holed path alike) makes an admission fail as unavailable within seconds,
/// whatever the lease: every call waited a third of the lease, twenty minutes with a lease of
/// an hour, holding back every admission, `flush` and `shutdown` of the process meanwhile.
/// Found by a review.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_is_unavailable_within_seconds_whatever_the_lease() {
    let server = Server::start();
    let pool = pool(&server, "stalled", Duration::from_secs(3600)).await;
    drop(pool.try_acquire(["a"]).await.unwrap());
    assert!(
        server
            .cmd(&["CLIENT", "PAUSE", "60000", "ALL"])
            .unwrap()
            .starts_with("+OK")
    );
    let started = std::time::Instant::now();
    let refused = tokio::time::timeout(Duration::from_secs(30), pool.try_acquire(["a"]))
        .await
        .expect("still waiting for Redis after 30 s")
        .map(drop)
        .unwrap_err();
    assert!(refused.is_unavailable(), "{refused:?}");
    eprintln!("unavailable after {:?}", started.elapsed());
}

/// Redis unreachable across two renewals but back well within the lease (a restart that kept
/// its data, a short network cut): the leases are renewed as soon as Redis answers again and
/// nothing is lost. A failed renewal was retried only at the next one, a third of a lease
/// later, after the process had already presumed its leases lost (90% of a lease): every
/// running job of `taskherd run --redis` was killed as `lease-lost` by a few seconds'
/// outage. Found by a review.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_survive_an_outage_shorter_than_the_lease() {
    let server = Server::start();
    let lease = Duration::from_secs(3);
    let (port, cut) = cuttable_proxy(server.port).await;
    let pool: RedisPool<&'static str> =
        RedisPool::builder(&format!("redis://127.0.0.1:{port}/"), "outage")
            .lease(lease)
            .build()
            .await
            .unwrap();
    let permit = pool.try_acquire(["db"]).await.unwrap();
    // Renewals every second from the pool's start: the cut spans the next two.
    tokio::time::sleep(Duration::from_millis(400)).await;
    cut.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1800)).await;
    cut.store(false, Ordering::SeqCst);
    // Past the moment the lease would have been presumed lost without a renewal since the cut.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !permit.is_lost(),
        "the lease was presumed lost after a short outage"
    );
    assert_eq!(pool.lost_leases(), 0);
    assert_eq!(pool.task_count(&"db").await.unwrap(), 1);
}

/// A waiter cut off from Redis fails closed as a holder does: once no renewal of its lease has
/// been confirmed for 90% of a lease, it gives up its place (its id is released when Redis is
/// reachable again) and queues again, which fails while Redis is unreachable: `spawn` returns
/// `is_unavailable()` with the future handed back. It used to wait through any outage without
/// a word, against its documented `# Errors`. Found by a review.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_cut_off_from_redis_fails_with_its_work_handed_back() {
    let lease = Duration::from_millis(1500);
    let (_server, cut, cut_off, other) = partitioned("waiter-outage", lease).await;
    other.set_limit("db", 0).await.unwrap();
    let waiter = tokio::spawn({
        let cut_off = cut_off.clone();
        async move { cut_off.spawn(["db"], async { 7 }).await.map(drop) }
    });
    while other.stats(&"db").await.unwrap().waiting == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cut.store(true, Ordering::SeqCst);
    let cut_at = tokio::time::Instant::now();
    let failed = tokio::time::timeout(lease * 3, waiter)
        .await
        .expect("the waiter kept waiting with Redis unreachable")
        .unwrap()
        .unwrap_err();
    assert!(failed.is_unavailable(), "{failed:?}");
    assert!(
        cut_at.elapsed() >= lease * 8 / 10,
        "gave up {:?} after the cut, before its lease could be presumed lost",
        cut_at.elapsed()
    );
    assert_eq!(failed.into_inner().await, 7, "the work is handed back");
    assert_eq!(cut_off.lost_waits(), 1);

    // Back in touch: the old waiter holds nothing, and takes nobody's place.
    cut.store(false, Ordering::SeqCst);
    cut_off.flush().await;
    other.set_limit("db", 1).await.unwrap();
    let permit = tokio::time::timeout(lease, other.acquire(["db"]))
        .await
        .expect("a waiter that gave up still held the slot")
        .unwrap();
    assert_eq!(other.stats(&"db").await.unwrap().waiting, 0);
    drop(permit);
}

/// A process paused longer than its lease (SIGSTOP, a VM frozen, a thread blocked): when it
/// resumes, the work it guarded may run again before the pool's background tasks do. The
/// permit tells the truth at once: `is_lost()` is `true` and `lost()` is ready on its first
/// poll, before the expirer has run (here it cannot: the runtime's only thread was blocked for
/// the whole lease, and nothing has yielded to it since). A caller that checks before
/// committing its work (as `taskherd-tower` does before it answers) stops it.
#[tokio::test(flavor = "current_thread")]
async fn a_permit_knows_its_lease_is_lost_as_soon_as_its_process_resumes() {
    let server = Server::start();
    let lease = Duration::from_secs(1);
    let pool = pool(&server, "paused", lease).await;
    let permit = pool.try_acquire(["db"]).await.unwrap();
    let mut lost = Box::pin(permit.lost());
    assert!(poll_once(&mut lost).is_pending());
    assert!(!permit.is_lost());

    // Paused: the renewer, the expirer and the reaper wait for this thread.
    std::thread::sleep(lease);
    assert!(
        poll_once(&mut lost).is_ready(),
        "lost() not ready after a pause longer than the lease"
    );
    assert!(
        permit.is_lost(),
        "a permit held through a pause longer than its lease"
    );
    assert_eq!(pool.lost_leases(), 1);
    // A future made now, and `is_lost()` called first, agree.
    let permit = pool.try_acquire(["db"]).await.unwrap();
    std::thread::sleep(lease);
    assert!(permit.is_lost());
    assert!(poll_once(&mut Box::pin(permit.lost())).is_ready());
    assert_eq!(pool.lost_leases(), 2);
}

/// The README's pattern: work raced against `lost()` in a `biased` `select!`, `lost()`
/// first. After a pause longer than the lease, with the work ready too, the loss wins every
/// time (the README's example was unbiased: a review found the work finishing uncounted in 8
/// and 10 of 16 runs).
#[tokio::test(flavor = "current_thread")]
async fn work_raced_against_lost_as_the_readme_shows_stops_after_a_pause() {
    let server = Server::start();
    let lease = Duration::from_millis(150);
    let pool = pool(&server, "readme-select", lease).await;
    let mut finished = 0;
    for _ in 0..16 {
        let permit = pool.try_acquire(["db"]).await.unwrap();
        let (go, resume) = tokio::sync::oneshot::channel::<()>();
        let work = async move {
            let _ = resume.await;
        };
        let task = tokio::spawn(async move {
            tokio::select! {
                biased;
                _ = permit.lost() => false,
                () = work => true,
            }
        });
        tokio::task::yield_now().await;
        // Paused; then the work is woken as well.
        std::thread::sleep(lease);
        go.send(()).unwrap();
        finished += usize::from(task.await.unwrap());
    }
    assert_eq!(
        finished, 0,
        "the work finished after the pause in {finished} of 16 runs"
    );
}

/// The same for a spawned task: woken after a pause longer than its lease, it is aborted
/// before its next step runs (it would run uncounted), even if it is scheduled before the
/// expirer; a pool that keeps such tasks running lets it go on, its lease counted lost.
#[tokio::test(flavor = "current_thread")]
async fn a_task_does_not_go_on_after_a_pause_longer_than_its_lease() {
    let server = Server::start();
    let lease = Duration::from_secs(1);
    for abort_on_lost in [true, false] {
        let pool = RedisPool::builder(&server.url(), "paused")
            .lease(lease)
            .abort_on_lost(abort_on_lost)
            .build()
            .await
            .unwrap();
        let (go, resume) = tokio::sync::oneshot::channel::<()>();
        let went_on = Arc::new(AtomicBool::new(false));
        let task = pool
            .try_spawn(["job"], {
                let went_on = Arc::clone(&went_on);
                async move {
                    let _ = resume.await;
                    went_on.store(true, Ordering::SeqCst);
                }
            })
            .await
            .unwrap();
        tokio::task::yield_now().await;

        // Paused; then the task is woken first (the expirer waits for the timer driver).
        std::thread::sleep(lease);
        go.send(()).unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the task never ended");
        if abort_on_lost {
            assert!(ended.unwrap_err().is_cancelled(), "the task went on");
            assert!(!went_on.load(Ordering::SeqCst), "a step ran uncounted");
        } else {
            ended.unwrap();
            assert!(went_on.load(Ordering::SeqCst));
        }
        assert_eq!(pool.lost_leases(), 1);
    }
}

/// A `lost()` future made before its permit was dropped resolves only for a loss found before
/// the drop: a permit given back, then a pause longer than the lease, is not a loss (its holder
/// left the map because it was given back, not lost).
#[tokio::test(flavor = "current_thread")]
async fn a_permit_given_back_before_a_pause_is_not_lost() {
    let server = Server::start();
    let lease = Duration::from_secs(1);
    let pool = pool(&server, "given-back", lease).await;
    let permit = pool.try_acquire(["db"]).await.unwrap();
    let mut lost = Box::pin(permit.lost());
    drop(permit);
    std::thread::sleep(lease);
    assert!(
        poll_once(&mut lost).is_pending(),
        "a permit given back read as lost"
    );
    tokio::time::sleep(lease / 5).await;
    assert!(poll_once(&mut lost).is_pending());
    assert_eq!(pool.lost_leases(), 0);
}

/// A waiter that Redis grants, woken by the notifier's `BLPOP`, checks its status with a poll
/// of its own; an outage that starts right then, far shorter than 90% of its lease, must not
/// make it fail (and give back the slot it was granted): the docs promise that such an outage
/// keeps its place (found by a review: it failed at once, "broken pipe").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_waiter_keeps_its_place_through_an_outage_shorter_than_its_lease() {
    let lease = Duration::from_secs(3);
    let (server, cut, cut_off, other) = partitioned("outage-grant", lease).await;
    other.set_limit("g", 1).await.unwrap();
    let held = other.try_acquire(["g"]).await.unwrap();
    let mut call = Box::pin(cut_off.acquire(["g"]));
    assert!(poll_once(&mut call).is_pending());
    while other.waiting_len().await.unwrap() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(poll_once(&mut call).is_pending());
    }
    drop(held);
    other.flush().await;
    assert_eq!(other.waiting_len().await.unwrap(), 0, "granted in Redis");
    // The notifier has popped the wake-up (its list is empty) ...
    loop {
        let lists = server
            .cmd(&["KEYS", "taskherd:{outage-grant}:n:*"])
            .unwrap();
        if lists.starts_with("*0") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // ... and the outage starts before the woken waiter polls: 300 ms, far below 2.7 s.
    cut.store(true, Ordering::SeqCst);
    tokio::spawn({
        let cut = Arc::clone(&cut);
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            cut.store(false, Ordering::SeqCst);
        }
    });
    let outcome = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the waiter neither got its permit nor failed");
    match outcome {
        Ok(permit) => assert!(!permit.is_lost()),
        Err(error) => panic!("a 300 ms outage made a granted waiter fail: {error}"),
    }
}

/// A waiting `acquire` of a process cut off from Redis (lease 60 s) that Redis granted while
/// it was cut off: returns the server, the cut (still cut: the waiter has not polled), the other
/// process's pool and the call, spawned.
async fn granted_while_cut_off(
    name: &str,
) -> (
    Server,
    Arc<AtomicBool>,
    RedisPool<&'static str>,
    tokio::task::JoinHandle<Result<(), taskherd::AcquireError>>,
) {
    let (server, cut, cut_off, other) = partitioned(name, Duration::from_secs(60)).await;
    other.set_limit("g", 1).await.unwrap();
    let held = other.try_acquire(["g"]).await.unwrap();
    let call = tokio::spawn(async move { cut_off.acquire(["g"]).await.map(drop) });
    while other.waiting_len().await.unwrap() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cut.store(true, Ordering::SeqCst);
    drop(held);
    other.flush().await;
    assert_eq!(other.waiting_len().await.unwrap(), 0, "granted in Redis");
    (server, cut, other, call)
}

/// Only a poll that cannot reach Redis is retried: one that Redis answers with an error that
/// will not go away (here `WRONGTYPE`, as a key overwritten by something else; `NOPERM` after an
/// ACL change is the same) fails the call at once, with Redis's error, not after 90% of the
/// lease of retries every 200 ms (54 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiters_poll_that_redis_refuses_fails_the_call_at_once() {
    let (server, cut, other, call) = granted_while_cut_off("poll-refused").await;
    // Overwritten before the waiter can poll.
    let waiters = server
        .cmd(&["KEYS", "taskherd:{poll-refused}:w:*"])
        .unwrap();
    let record = waiters
        .lines()
        .find(|line| line.starts_with("taskherd:"))
        .expect("one waiter record");
    assert!(
        server
            .cmd(&["SET", record, "not a hash"])
            .unwrap()
            .starts_with("+OK")
    );
    // The grant's wake-up again: the cut may have closed the notifier's connection after
    // Redis popped the first one for it but before the answer got through; the poll every
    // second would wake the waiter too (its record unreadable), but up to a second later.
    // (A second wake-up is harmless.)
    let id = record.rsplit(":w:").next().unwrap();
    let process = id.split('-').next().unwrap();
    let list = format!("taskherd:{{poll-refused}}:n:{process}");
    assert!(server.cmd(&["RPUSH", &list, id]).unwrap().starts_with(':'));
    cut.store(false, Ordering::SeqCst);
    let outcome = tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .expect("a poll refused by Redis was retried as if Redis were unreachable")
        .unwrap();
    let error = outcome.expect_err("the poll cannot succeed");
    assert!(error.is_unavailable(), "{error}");
    assert!(error.to_string().contains("WRONGTYPE"), "{error}");
    // Nothing is lost: the failed call's id is released (its grant given back), long before
    // its lease would have ended.
    let permit = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Ok(permit) = other.try_acquire(["g"]).await {
                break permit;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the slot granted to the failed call was not given back");
    drop(permit);
}

/// The other side: Redis answering `BUSY` (a script of someone else's running past the
/// server's threshold) is an outage, not an error the waiter's poll should give up on; the
/// waiter keeps its place and gets its permit once the script is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiters_poll_answered_busy_keeps_its_place() {
    let (server, cut, _other, call) = granted_while_cut_off("poll-busy").await;
    // Kept busy before the waiter can poll.
    assert!(
        server
            .cmd(&["CONFIG", "SET", "busy-reply-threshold", "20"])
            .unwrap()
            .starts_with("+OK")
    );
    let port = server.port;
    let busy = std::thread::spawn(move || {
        support::cmd_on(port, &["EVAL", "while true do end", "0"]).unwrap_or_default()
    });
    while !server
        .cmd(&["PING"])
        .is_ok_and(|reply| reply.starts_with("-BUSY"))
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    cut.store(false, Ordering::SeqCst);
    // Long enough for the woken waiter to poll and be answered `BUSY` a few times.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !call.is_finished(),
        "the waiter gave up while Redis was busy"
    );
    assert!(server.cmd(&["SCRIPT", "KILL"]).unwrap().starts_with("+OK"));
    let killed = busy.join().unwrap();
    assert!(killed.starts_with('-'), "the busy script ended: {killed}");
    let outcome = tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .expect("the waiter neither got its permit nor failed")
        .unwrap();
    if let Err(error) = outcome {
        panic!("a busy Redis made a granted waiter fail: {error}");
    }
}

/// A waker that panics once armed.
struct PanicOnWake(AtomicBool);

impl std::task::Wake for PanicOnWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        if self.0.load(Ordering::SeqCst) {
            panic!("the caller's waker panicked");
        }
    }
}

/// A woken waiter whose poll failed retries on a timer, which tokio's time driver wakes with
/// others: a panic of the caller's waker there must not abort the process (found by a review
/// of the retry: on a multi-thread runtime, "worker thread panicking; aborting process").
#[test]
fn a_panicking_waker_of_a_retrying_waiter_does_not_abort_the_process() {
    use std::future::Future;
    use std::task::{Context, Waker};

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let lease = Duration::from_secs(3);
    let (server, cut, cut_off, other) = rt.block_on(partitioned("retry-panic", lease));
    rt.block_on(other.set_limit("g", 1)).unwrap();
    let held = rt.block_on(other.try_acquire(["g"])).unwrap();
    let state = Arc::new(PanicOnWake(AtomicBool::new(false)));
    let waker = Waker::from(Arc::clone(&state));
    let mut call = Box::pin(cut_off.acquire(["g"]));
    let _guard = rt.enter();
    let mut poll = || {
        call.as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending()
    };
    assert!(poll());
    while rt.block_on(other.waiting_len()).unwrap() == 0 {
        std::thread::sleep(Duration::from_millis(5));
        assert!(poll());
    }
    drop(held);
    rt.block_on(other.flush());
    // The notifier popped the wake-up; the woken waiter's own poll then fails.
    while !server
        .cmd(&["KEYS", "taskherd:{retry-panic}:n:*"])
        .unwrap()
        .starts_with("*0")
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    cut.store(true, Ordering::SeqCst);
    for _ in 0..20 {
        assert!(poll());
        std::thread::sleep(Duration::from_millis(5));
    }
    state.0.store(true, Ordering::SeqCst);
    // The 200 ms retry timer fires with the armed waker.
    std::thread::sleep(Duration::from_millis(500));
    cut.store(false, Ordering::SeqCst);
    assert!(
        rt.block_on(other.try_acquire(["h"])).is_ok(),
        "the runtime still runs"
    );
}

/// A holder that Redis holds as a waiter only (a failover that lost the grant's write, after
/// which the id is queued again) is lost at the next renewal: the renewal found the id among
/// the waiters and renewed it as live, so the work ran on uncounted while Redis would grant
/// the same id again later (found by a review; a rollback is simulated by moving the id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_redis_holds_as_a_waiter_is_lost_at_the_next_renewal() {
    let server = Server::start();
    let lease = Duration::from_millis(900);
    let pool = pool(&server, "rolled-back", lease).await;
    let permit = pool.try_acquire(["a"]).await.unwrap();
    let held = server
        .cmd(&["ZRANGE", "taskherd:{rolled-back}:h", "0", "-1"])
        .unwrap();
    let id = held.lines().nth(2).expect("one holder").to_owned();
    let far = "99999999999999";
    server
        .cmd(&["ZREM", "taskherd:{rolled-back}:h", &id])
        .unwrap();
    server
        .cmd(&["ZADD", "taskherd:{rolled-back}:wl", far, &id])
        .unwrap();
    // Renewals come every third of the lease.
    let lost = tokio::time::timeout(lease * 2, permit.lost()).await;
    assert!(
        lost.is_ok(),
        "a holder that Redis holds as a waiter was renewed as live"
    );
    assert_eq!(pool.lost_leases(), 1);
}
