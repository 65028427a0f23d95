//! Admission across groups, against a real redis-server.

mod support;

use std::time::Duration;

use taskherd::Group;
use taskherd_redis::RedisPool;

use support::{Server, poll_once, pool};

/// Issue #12, semantics 1: a refusal names the first full group (the total first, then the
/// caller's order) and takes no slot anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_names_the_first_full_group_and_takes_no_slot() {
    let server = Server::start();
    let pool = pool(&server, "atomic", Duration::from_secs(5)).await;
    pool.set_limits(
        taskherd::LimitChanges::new()
            .max_tasks(3)
            .limit("a", 1)
            .limit("b", 1),
    )
    .await
    .unwrap();

    let a = pool.try_acquire(["a"]).await.unwrap();
    // "c" has room, "a" does not: refused by "a", and "c" takes nothing.
    let err = pool.try_acquire(["c", "a", "b"]).await.unwrap_err();
    assert_eq!(err.full_group(), Some(&Group::Key("a")));
    assert_eq!(pool.task_count(&"c").await.unwrap(), 0);
    assert_eq!(pool.task_count(&"b").await.unwrap(), 0);
    assert_eq!(pool.total_stats().await.unwrap().running, 1);

    // A key named twice counts once.
    let b = pool.try_acquire(["b", "b"]).await.unwrap();
    assert_eq!(pool.stats(&"b").await.unwrap().running, 1);
    let c = pool.try_acquire(["c"]).await.unwrap();
    // The total is full: it is named before any group, even a full one.
    let err = pool.try_acquire(["a"]).await.unwrap_err();
    assert_eq!(err.full_group(), Some(&Group::Total));
    let total = pool.total_stats().await.unwrap();
    assert_eq!(
        (total.running, total.rejected, total.limit),
        (3, 2, Some(3))
    );
    let a_stats = pool.stats(&"a").await.unwrap();
    assert_eq!(
        (a_stats.running, a_stats.rejected, a_stats.admitted),
        (1, 1, 1)
    );

    // A spawned task is refused with its future handed back.
    let err = pool.try_spawn(["d"], async { 7 }).await.unwrap_err();
    assert!(err.is_full());
    assert_eq!(err.into_inner().await, 7);

    drop((a, b, c));
    // Releases go out in the background; `flush` waits for them.
    pool.flush().await;
    assert_eq!(pool.total_stats().await.unwrap().running, 0);
    let task = pool.try_spawn(["a", "b"], async { 5 }).await.unwrap();
    assert_eq!(task.await.unwrap(), 5);
    pool.flush().await;
    // Nothing is left of the holders, and idle groups keep no counts or statistics.
    for key in ["h", "hg", "run", "res", "wl", "qt", "qg"] {
        let reply = server
            .cmd(&["EXISTS", &format!("taskherd:{{atomic}}:{key}")])
            .unwrap();
        assert_eq!(reply, ":0\r\n", "key {key} left behind");
    }
    let fields = server.cmd(&["HKEYS", "taskherd:{atomic}:st"]).unwrap();
    assert!(
        !fields.contains("g:d"),
        "an idle group kept its statistics: {fields:?}"
    );
}

/// Two pools with different names share nothing; two handles on one name share everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_of_one_name_share_their_limits_and_others_do_not() {
    let server = Server::start();
    let one = pool(&server, "shared", Duration::from_secs(5)).await;
    let two = pool(&server, "shared", Duration::from_secs(5)).await;
    let other = pool(&server, "other", Duration::from_secs(5)).await;
    one.set_limit("db", 1).await.unwrap();
    assert_eq!(two.limit(&"db").await.unwrap(), Some(1));
    assert_eq!(other.limit(&"db").await.unwrap(), None);
    let _held = one.try_acquire(["db"]).await.unwrap();
    assert!(two.try_acquire(["db"]).await.unwrap_err().is_full());
    let _free = other.try_acquire(["db"]).await.unwrap();
}

/// Limit reads need nothing but scripts: a Redis user without the transaction commands
/// (`-@transaction`, as an ACL may leave them out) reads them. (A first version read them in
/// a `MULTI`/`EXEC`, refused there: the reads failed, and the client's panic on the refusal
/// broke the shared connection in debug builds; found by a review.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_read_without_transactions() {
    let server = Server::start();
    let user = [
        "ACL",
        "SETUSER",
        "notx",
        "on",
        ">pw",
        "~*",
        "&*",
        "+@all",
        "-@transaction",
    ];
    assert!(server.cmd(&user).unwrap().contains("OK"));
    let url = format!("redis://notx:pw@127.0.0.1:{}/", server.port);
    let pool: RedisPool<&'static str> = RedisPool::builder(&url, "notx")
        .lease(Duration::from_secs(5))
        .build()
        .await
        .unwrap();
    pool.set_limits(taskherd::LimitChanges::new().max_tasks(3).limit("db", 1))
        .await
        .unwrap();
    let (limit, max_tasks, default, len) = tokio::join!(
        pool.limit(&"db"),
        pool.max_tasks(),
        pool.default_limit(),
        pool.len()
    );
    assert_eq!(limit.unwrap(), Some(1));
    assert_eq!(max_tasks.unwrap(), Some(3));
    assert_eq!(default.unwrap(), None);
    assert_eq!(len.unwrap(), 0);
}

/// Credentials never appear in `Debug`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_output_redacts_credentials() {
    let server = Server::start();
    let builder = RedisPool::<&str>::builder(
        &format!("redis://user:s3cret@127.0.0.1:{}/", server.port),
        "p",
    );
    let shown = format!("{builder:?}");
    assert!(
        !shown.contains("s3cret") && !shown.contains("user"),
        "{shown}"
    );
    // The server has no such user: the error says so, without the credentials.
    let err = builder.build().await.unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    let pool = pool(&server, "p", Duration::from_secs(5)).await;
    assert!(!format!("{pool:?}").contains("s3cret"));
    // A password written with a `/`, `?` or `#` (not percent-encoded) is redacted too.
    for password in ["s3c/ret", "s3c?ret", "s3c#ret"] {
        let url = format!("redis://user:{password}@127.0.0.1:{}/0", server.port);
        let shown = format!("{:?}", RedisPool::<&str>::builder(&url, "p"));
        assert!(!shown.contains("s3c"), "{shown}");
    }
}

/// `abort_group` reaches only that group's tasks (their slots come back); `close` fails the
/// waiting calls of this pool, which leave their queues, and refuses new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_group_and_close() {
    let server = Server::start();
    // Another process on the same pool.
    let other = pool(&server, "abort", Duration::from_secs(5)).await;
    let pool = pool(&server, "abort", Duration::from_secs(5)).await;
    pool.set_limit("db", 1).await.unwrap();
    let a = pool
        .try_spawn(["a"], std::future::pending::<()>())
        .await
        .unwrap();
    let db = pool
        .try_spawn(["db"], std::future::pending::<()>())
        .await
        .unwrap();
    assert_eq!(pool.abort_group(&"a"), 1);
    assert!(a.await.unwrap_err().is_cancelled());
    pool.flush().await;
    assert_eq!(pool.task_count(&"a").await.unwrap(), 0);
    assert_eq!(pool.task_count(&"db").await.unwrap(), 1);

    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire(["db"]).await.map(drop) }
    });
    while pool.stats(&"db").await.unwrap().waiting == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(pool.close());
    assert!(!pool.close(), "already closed");
    assert!(waiter.await.unwrap().unwrap_err().is_closed());
    pool.flush().await;
    assert_eq!(
        pool.stats(&"db").await.unwrap().waiting,
        0,
        "it left the queue"
    );
    assert!(pool.try_acquire(["b"]).await.unwrap_err().is_closed());
    // Another process is not closed.
    assert!(other.try_acquire(["b"]).await.is_ok());
    assert_eq!(pool.abort_all(), 1);
    assert!(db.await.unwrap_err().is_cancelled());
}

/// Admissions that come together share script calls (the admitter batches them): each still
/// gets its own answer, all or nothing, and the limit holds across the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_admissions_each_get_their_own_answer() {
    let server = Server::start();
    let pool = pool(&server, "batch", Duration::from_secs(30)).await;
    pool.set_limits(taskherd::LimitChanges::new().limit("g", 5).limit("h", 50))
        .await
        .unwrap();
    server.cmd(&["CONFIG", "RESETSTAT"]).unwrap();
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(64));
    let mut tasks = Vec::new();
    for i in 0..64usize {
        let (pool, start) = (pool.clone(), std::sync::Arc::clone(&start));
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            // Half name only "h" (room for all of them), half name "g" too (room for 5).
            let groups: Vec<&'static str> = if i % 2 == 0 {
                vec!["h"]
            } else {
                vec!["h", "g"]
            };
            (i, pool.try_acquire(groups).await)
        }));
    }
    let mut held = Vec::new();
    let (mut only_h, mut with_g) = (0, 0);
    for task in tasks {
        let (i, result) = task.await.unwrap();
        match result {
            Ok(permit) => {
                if i % 2 == 0 {
                    only_h += 1;
                } else {
                    with_g += 1;
                }
                held.push(permit);
            }
            Err(err) => {
                assert_eq!(i % 2, 1, "a request naming only \"h\" was refused: {err:?}");
                assert_eq!(err.full_group(), Some(&Group::Key("g")));
            }
        }
    }
    assert_eq!((only_h, with_g), (32, 5));
    assert_eq!(pool.stats(&"g").await.unwrap().running, 5);
    assert_eq!(pool.stats(&"h").await.unwrap().running, 37);
    let stats = server.cmd(&["INFO", "commandstats"]).unwrap();
    let calls: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    // Never more than one call per admission (fewer when they were batched; how many fewer
    // depends on the scheduling, so it is only printed).
    assert!(calls <= 64 + 2, "{calls} script calls for 64 admissions");
    println!("64 concurrent admissions took {calls} script calls");
    drop(held);
    pool.flush().await;
    assert_eq!(pool.total_stats().await.unwrap().running, 0);
}

/// A caller that goes away while its admission is queued or in flight gives back whatever the
/// call gave it at once, not when the lease expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_admission_gives_its_slot_back_promptly() {
    let server = Server::start();
    // A lease far longer than the test waits: the slot must come back by release.
    let pool = pool(&server, "dropped", Duration::from_secs(60)).await;
    pool.set_limits(taskherd::LimitChanges::new().limit("one", 1))
        .await
        .unwrap();
    // Many rounds: the caller's own release of its id usually reaches Redis after the
    // admission; the rounds where it comes first are the ones this test is for.
    for _ in 0..100 {
        // Polled once (the request is sent), then dropped before the answer arrives.
        let attempt = tokio::time::timeout(Duration::ZERO, pool.try_acquire(["one"])).await;
        if let Ok(permit) = attempt {
            drop(permit);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let permit = loop {
            match pool.try_acquire(["one"]).await {
                Ok(permit) => break permit,
                Err(err) => {
                    assert!(err.is_full(), "{err:?}");
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "the dropped admission's slot did not come back"
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        drop(permit);
        pool.flush().await;
    }
    pool.flush().await;
    let holders = server.cmd(&["EXISTS", "taskherd:{dropped}:h"]).unwrap();
    assert_eq!(holders, ":0\r\n", "a holder was left behind");
}

/// The empty key is a group like any other: a permit in it gives its slot back when dropped
/// (its segment used to be empty, which the scripts dropped from the holder's groups: the
/// slot leaked for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_empty_key_gives_its_slot_back() {
    let server = Server::start();
    let pool = pool(&server, "empty", Duration::from_secs(5)).await;
    pool.set_limit("", 1).await.unwrap();
    assert_eq!(pool.limit(&"").await.unwrap(), Some(1));
    let permit = pool.try_acquire(["", "a"]).await.unwrap();
    let full = pool.try_acquire(["b", ""]).await.unwrap_err();
    assert_eq!(full.full_group(), Some(&Group::Key("")));
    drop(permit);
    pool.flush().await;
    assert_eq!(
        pool.stats(&"").await.unwrap().running,
        0,
        "the slot of \"\" leaked"
    );
    assert_eq!(pool.total_stats().await.unwrap().running, 0);
    let again = pool
        .try_acquire([""])
        .await
        .expect("\"\" stays full for ever");
    drop(again);
}

/// A waiter on the empty key (with another group) is granted, and gives back its slot and
/// its reservation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_on_the_empty_key_is_granted_and_released() {
    let server = Server::start();
    let pool = pool(&server, "empty", Duration::from_secs(5)).await;
    pool.set_limit("", 1).await.unwrap();
    let first = pool.try_acquire([""]).await.unwrap();
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire(["", "b"]).await }
    });
    while pool.stats(&"").await.unwrap().waiting == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(first);
    let permit = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter on \"\" was never granted")
        .unwrap()
        .unwrap();
    drop(permit);
    pool.flush().await;
    let empty = pool.stats(&"").await.unwrap();
    assert_eq!((empty.running, empty.reserved, empty.waiting), (0, 0, 0));
    assert_eq!(pool.stats(&"b").await.unwrap().running, 0);
}

/// A custom key whose segment is empty (or has a control character) is refused with a clear
/// error, the work handed back, nothing admitted and nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_key_with_an_invalid_segment_is_an_error() {
    use std::borrow::Cow;
    use taskherd_redis::RedisKey;

    #[derive(Debug, Clone, PartialEq, Eq, Hash)]
    struct Raw(&'static str);
    impl RedisKey for Raw {
        fn segment(&self) -> Cow<'_, str> {
            Cow::Borrowed(self.0)
        }
    }

    let server = Server::start();
    let pool: RedisPool<Raw> = RedisPool::builder(&server.url(), "custom")
        .build()
        .await
        .unwrap();
    for bad in ["", "a\nb"] {
        let err = pool
            .try_spawn([Raw("ok"), Raw(bad)], async { 5 })
            .await
            .unwrap_err();
        assert!(err.is_unavailable() && !err.is_full(), "{err:?}");
        let source = std::error::Error::source(&err)
            .and_then(|source| source.downcast_ref::<taskherd_redis::UnavailableError>())
            .expect("the source is an UnavailableError");
        assert!(source.is_invalid_key(), "{source}");
        assert!(source.to_string().contains("invalid group key"), "{source}");
        assert_eq!(err.into_inner().await, 5, "the work is handed back");

        let err = pool.acquire([Raw(bad)]).await.unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        let err = pool.set_limit(Raw(bad), 1).await.unwrap_err();
        assert!(err.is_invalid_key(), "{err}");
        assert!(pool.stats(&Raw(bad)).await.unwrap_err().is_invalid_key());
    }
    let total = pool.total_stats().await.unwrap();
    assert_eq!((total.running, total.waiting, total.admitted), (0, 0, 0));
    assert_eq!(server.cmd(&["DBSIZE"]).unwrap().trim(), ":0");
}

/// `make` of `try_spawn_with` panics after the admission: the slot goes back (it used to stay
/// held, renewed, for the life of the process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_make_gives_its_slot_back() {
    let server = Server::start();
    let pool = pool(&server, "make", Duration::from_secs(5)).await;
    let spawning = tokio::spawn({
        let pool = pool.clone();
        async move {
            let made = pool
                .try_spawn_with(["a"], || -> std::future::Ready<()> {
                    panic!("make failed")
                })
                .await;
            drop(made);
        }
    });
    assert!(spawning.await.unwrap_err().is_panic());
    pool.flush().await;
    assert_eq!(pool.total_stats().await.unwrap().running, 0);
    assert_eq!(pool.stats(&"a").await.unwrap().running, 0);
}

/// An admission may name thousands of groups, as in-process: the scripts pass their fields to
/// Redis in chunks (Lua's `unpack` fails past about 8,000 values, and a script that fails
/// halfway keeps its earlier writes: here the counts, taken before the holder was recorded,
/// which nobody could ever have released). The release deletes every idle group's statistics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admission_may_name_thousands_of_groups() {
    let server = Server::start();
    let pool: RedisPool<String> = RedisPool::builder(&server.url(), "many")
        .build()
        .await
        .unwrap();
    let groups: Vec<String> = (0..5000).map(|i| format!("g{i}")).collect();
    let permit = pool.try_acquire(groups.clone()).await.unwrap();
    for key in ["g0", "g4999"] {
        assert_eq!(pool.task_count(&key.to_owned()).await.unwrap(), 1);
    }
    // A second one fills nothing (no limit) and is refused by nothing: both count.
    let task = pool.try_spawn(groups, async { 3 }).await.unwrap();
    assert_eq!(task.await.unwrap(), 3);
    drop(permit);
    pool.flush().await;
    assert_eq!(pool.len().await.unwrap(), 0);
    assert_eq!(pool.task_count(&"g2500".to_owned()).await.unwrap(), 0);
    // Only the total's statistics are left (admitted and peak).
    let fields = server.cmd(&["HLEN", "taskherd:{many}:st"]).unwrap();
    assert_eq!(fields, ":2\r\n", "idle groups kept their statistics");
}

/// A limit of 10^14 or more (`usize::MAX` for "no real limit" included) reads back whole from
/// `stats`, as from `limit`: the script returns it as stored, not through a Lua number
/// (whose `tostring` gives `1e+14`, read as no limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_report_large_limits_whole() {
    let server = Server::start();
    let pool = pool(&server, "large", Duration::from_secs(5)).await;
    let big = 100_000_000_000_000;
    pool.set_limits(
        taskherd::LimitChanges::new()
            .max_tasks(big)
            .limit("a", usize::MAX)
            .default_limit(big + 1),
    )
    .await
    .unwrap();
    assert_eq!(pool.limit(&"a").await.unwrap(), Some(usize::MAX));
    assert_eq!(pool.stats(&"a").await.unwrap().limit, Some(usize::MAX));
    assert_eq!(pool.effective_limit(&"b").await.unwrap(), Some(big + 1));
    assert_eq!(pool.total_stats().await.unwrap().limit, Some(big));
    let _permit = pool.try_acquire(["a", "b"]).await.unwrap();
    let stats = pool.stats(&"a").await.unwrap();
    assert_eq!((stats.running, stats.admitted, stats.peak), (1, 1, 1));
}

/// What this process gave back is free for its next admission, as in `TaskPool`: a permit
/// dropped, or a task awaited, then the same group asked for again at once, with limit 1, is
/// never refused (found by a review of `taskherd-tower`: a client sending one request at a
/// time was refused now and then, its previous request's release still queued behind the next
/// admission).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_this_process_gave_back_is_free_for_its_next_admission() {
    let server = Server::start();
    let pool = pool(&server, "ordered", Duration::from_secs(15)).await;
    pool.set_limit("a", Some(1)).await.unwrap();
    let mut refused = (0, 0, 0);
    for _ in 0..200 {
        match pool.try_acquire(["a"]).await {
            Ok(permit) => drop(permit),
            Err(_) => refused.0 += 1,
        }
    }
    for _ in 0..200 {
        match pool.try_spawn(["a"], async {}).await {
            Ok(task) => task.await.unwrap(),
            Err(_) => refused.1 += 1,
        }
    }
    // A waiting admission whose call is in flight, dropped: what Redis gave it goes back
    // before the next admission of this process.
    for _ in 0..100 {
        let mut waiting = Box::pin(pool.acquire(["a"]));
        let polled = poll_once(&mut waiting);
        // Answered already (the thread was descheduled for a round trip): nothing in flight.
        if let std::task::Poll::Ready(permit) = polled {
            drop(permit);
            continue;
        }
        drop(waiting);
        if pool.try_acquire(["a"]).await.is_err() {
            refused.2 += 1;
        }
    }
    assert_eq!(
        refused,
        (0, 0, 0),
        "refused: after a permit, a task, a dropped wait"
    );
}

/// A release queued while admissions are on their way rides in their call, or, if none takes
/// it (the admissions went away unsent, or were sent before it), the releaser sends it: with
/// no later admission and no `flush`, it still reaches Redis at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_left_to_admissions_still_reaches_redis_without_them() {
    let server = Server::start();
    let pool = pool(&server, "left", Duration::from_secs(15)).await;
    for round in 0..50 {
        let held = pool.try_acquire(["a"]).await.unwrap();
        // Admissions on their way when the permit is dropped: one answered, one whose caller
        // goes away at once.
        let answered = pool.try_acquire(["b"]);
        let mut abandoned = Box::pin(pool.try_acquire(["c"]));
        let _ = poll_once(&mut abandoned);
        drop(held);
        drop(abandoned);
        drop(answered.await.unwrap());
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while pool.task_count(&"a").await.unwrap() != 0 || pool.task_count(&"b").await.unwrap() != 0
        {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: a release was left unsent"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// `flush` waits for what an admission call in flight gave a caller that went away: once it
/// returns, Redis has it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_gives_back_what_a_call_in_flight_gave_a_caller_that_left() {
    let server = Server::start();
    let pool = pool(&server, "left-flush", Duration::from_secs(15)).await;
    for round in 0..100 {
        let mut call = Box::pin(pool.try_acquire(["a"]));
        drop(poll_once(&mut call));
        drop(call);
        pool.flush().await;
        assert_eq!(pool.task_count(&"a").await.unwrap(), 0, "round {round}");
    }
}

/// However late its caller drops an admission's future (before the call is sent, while it
/// is in flight, just after the answer arrived and was recorded, or after it was read), the
/// slot goes back and nothing of it stays recorded here: after `flush`, Redis counts nothing,
/// and nothing is renewed (still nothing counted several leases later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admission_dropped_at_any_moment_leaves_nothing_behind() {
    let server = Server::start();
    let lease = Duration::from_millis(600);
    let pool = pool(&server, "dropped-any", lease).await;
    for round in 0..200u64 {
        let mut waiting = Box::pin(pool.acquire(["a"]));
        let mut trying = Box::pin(pool.try_acquire(["b"]));
        let waiting_done = poll_once(&mut waiting).is_ready();
        let trying_done = poll_once(&mut trying).is_ready();
        // From nothing to a few round trips: the drops land at every stage.
        tokio::time::sleep(Duration::from_micros(round * 13 % 1_500)).await;
        if round % 3 == 0 {
            // Some read their answer (a permit, dropped at once).
            if !waiting_done {
                drop(poll_once(&mut waiting));
            }
            if !trying_done {
                drop(poll_once(&mut trying));
            }
        }
        drop((waiting, trying));
    }
    pool.flush().await;
    assert_eq!(pool.len().await.unwrap(), 0, "a slot stayed counted");
    assert_eq!(
        pool.waiting_len().await.unwrap(),
        0,
        "a waiter stayed queued"
    );
    tokio::time::sleep(lease * 3).await;
    assert_eq!(pool.len().await.unwrap(), 0, "a slot stayed renewed");
}
