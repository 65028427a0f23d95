//! Waiting across processes (two pools on one server stand for two processes): FIFO,
//! cancellation, crossing group sets.

mod support;

use std::sync::Arc;
use std::time::Duration;

use taskherd_redis::RedisPool;
use tokio::sync::Mutex;

use support::{Server, pool};

/// Waits until group `key` has `n` waiters, as Redis counts them.
async fn until_waiting(pool: &RedisPool<&'static str>, key: &'static str, n: usize) {
    for _ in 0..500 {
        if pool.stats(&key).await.unwrap().waiting == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("group {key} never had {n} waiters");
}

/// Issue #12, semantics 5: waiters of two processes are served in the order they queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_of_two_processes_are_served_first_come_first_served() {
    let server = Server::start();
    let one = pool(&server, "waiting", Duration::from_secs(5)).await;
    let two = pool(&server, "waiting", Duration::from_secs(5)).await;
    one.set_limit("db", 1).await.unwrap();
    let held = one.try_acquire(["db"]).await.unwrap();

    let order = Arc::new(Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for i in 0..6 {
        let pool = if i % 2 == 0 { one.clone() } else { two.clone() };
        let order = Arc::clone(&order);
        handles.push(tokio::spawn(async move {
            let permit = pool.acquire(["db"]).await.unwrap();
            order.lock().await.push(i);
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(permit);
        }));
        // Each one queued before the next one starts.
        until_waiting(&one, "db", i + 1).await;
    }
    drop(held);
    for handle in handles {
        handle.await.unwrap();
    }
    assert_eq!(*order.lock().await, vec![0, 1, 2, 3, 4, 5]);
}

/// No barging: a slot freed in a group goes to the oldest waiter queued on it, reserved for
/// it while it still waits for another group, and a `try_*` of any process finds no room
/// there (the waiter holds a partial reservation: `db` reserved, `other` queued).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_try_never_takes_a_slot_reserved_for_a_waiter() {
    let server = Server::start();
    let one = pool(&server, "waiting", Duration::from_secs(5)).await;
    let two = pool(&server, "waiting", Duration::from_secs(5)).await;
    one.set_limits(
        taskherd::LimitChanges::new()
            .limit("db", 1)
            .limit("other", 1),
    )
    .await
    .unwrap();
    let held_db = one.try_acquire(["db"]).await.unwrap();
    let held_other = one.try_acquire(["other"]).await.unwrap();
    let waiter = tokio::spawn({
        let one = one.clone();
        async move { one.acquire(["other", "db"]).await }
    });
    until_waiting(&one, "db", 1).await;

    drop(held_db);
    // The release has reached Redis: `db` has no admission, one reservation.
    one.flush().await;
    let db = two.stats(&"db").await.unwrap();
    assert_eq!((db.running, db.reserved, db.waiting), (0, 1, 1));
    let refused = two.try_acquire(["db"]).await.unwrap_err();
    assert_eq!(refused.full_group(), Some(&taskherd::Group::Key("db")));
    let refused = one.try_spawn(["db"], async {}).await.unwrap_err();
    assert!(refused.is_full());
    assert!(!waiter.is_finished(), "granted without `other`");

    drop(held_other);
    let permit = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter was never granted")
        .unwrap()
        .unwrap();
    let db = one.stats(&"db").await.unwrap();
    assert_eq!((db.running, db.reserved, db.waiting), (1, 0, 0));
    drop(permit);
}

/// A dropped waiting future leaves the queue at once: the waiter behind it gets the slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_waiter_leaves_the_queue_and_the_next_one_gets_the_slot() {
    let server = Server::start();
    let one = pool(&server, "waiting", Duration::from_secs(5)).await;
    let two = pool(&server, "waiting", Duration::from_secs(5)).await;
    one.set_limit("db", 1).await.unwrap();
    let held = one.try_acquire(["db"]).await.unwrap();

    let first = tokio::spawn({
        let one = one.clone();
        async move { one.acquire(["db"]).await.map(drop) }
    });
    until_waiting(&one, "db", 1).await;
    let second = tokio::spawn({
        let two = two.clone();
        async move { two.acquire(["db"]).await }
    });
    until_waiting(&one, "db", 2).await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    until_waiting(&one, "db", 1).await;
    drop(held);
    let permit = second.await.unwrap().unwrap();
    assert_eq!(one.stats(&"db").await.unwrap().running, 1);
    assert_eq!(one.stats(&"db").await.unwrap().waiting, 0);
    drop(permit);
}

/// Crossing group sets ({a, b} and {b, a}, and a chain) all finish: no deadlock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossing_group_sets_all_finish() {
    let server = Server::start();
    let one = pool(&server, "waiting", Duration::from_secs(5)).await;
    let two = pool(&server, "waiting", Duration::from_secs(5)).await;
    one.set_limits(taskherd::LimitChanges::new().default_limit(1).max_tasks(2))
        .await
        .unwrap();
    let sets: [&[&'static str]; 4] = [&["a", "b"], &["b", "a"], &["b", "c"], &["c", "a"]];
    let mut handles = Vec::new();
    for round in 0..3 {
        for (i, set) in sets.iter().enumerate() {
            let pool = if (i + round) % 2 == 0 {
                one.clone()
            } else {
                two.clone()
            };
            let set: Vec<&'static str> = set.to_vec();
            handles.push(tokio::spawn(async move {
                let task = pool
                    .spawn(set, tokio::time::sleep(Duration::from_millis(5)))
                    .await
                    .unwrap();
                task.await.unwrap();
            }));
        }
    }
    let all = async {
        for handle in handles {
            handle.await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("crossing waiters deadlocked");
    one.flush().await;
    two.flush().await;
    let total = one.total_stats().await.unwrap();
    assert_eq!((total.running, total.waiting, total.admitted), (0, 0, 12));
    assert!(total.peak <= 2);
}

/// A raw connection that never times out a reply (for `BLPOP` with no timeout).
async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection_with_config(
            &redis::AsyncConnectionConfig::new().set_response_timeout(None),
        )
        .await
        .unwrap()
}

/// A grant notification that never reaches the process (here taken off its list by another
/// client, as a `BLPOP` reply lost with its connection would be) is made up for by the
/// process's poll of its waiters every second, even while it keeps being notified of other
/// things. (The poll used to run only after a whole second without any notification: a busy
/// process left such a waiter asleep, counted in Redis as a holder and renewed, for good.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_notification_is_made_up_for_in_a_busy_process() {
    let server = Server::start();
    let pool = pool(&server, "busy", Duration::from_secs(3)).await;
    pool.set_limit("g", 1).await.unwrap();
    let holder = pool.try_acquire(["g"]).await.unwrap();
    // Ids are `<process>-<counter>`; the process's list of wake-ups is `n:<process>`.
    let process = holder.id().split('-').next().unwrap().to_owned();
    let list = format!("taskherd:{{busy}}:n:{process}");
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire(["g"]).await.map(drop) }
    });
    until_waiting(&pool, "g", 1).await;

    // A thief blocked on the list takes items until the first that is not a "prime".
    let (taken_tx, mut taken) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn({
        let (url, list) = (server.url(), list.clone());
        async move {
            let mut conn = raw(&url).await;
            loop {
                let Ok((_, item)): redis::RedisResult<(String, String)> = redis::cmd("BLPOP")
                    .arg(&list)
                    .arg(0)
                    .query_async(&mut conn)
                    .await
                else {
                    return;
                };
                let prime = item.starts_with("prime");
                let _ = taken_tx.send(item);
                if !prime {
                    return;
                }
            }
        }
    });
    // Redis serves the clients blocked on a list oldest first: once the thief is blocked, push
    // primes until the process (not the thief) takes one, so that the thief is first in line
    // for the next item.
    while server
        .cmd(&["CLIENT", "LIST"])
        .unwrap()
        .matches("cmd=blpop")
        .count()
        < 2
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for n in 0.. {
        server.cmd(&["RPUSH", &list, &format!("prime{n}")]).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        if taken.try_recv().is_err() {
            break;
        }
    }
    // The holder goes: Redis grants the waiter and tells the list; the thief takes it.
    drop(holder);
    pool.flush().await;
    let stolen = tokio::time::timeout(Duration::from_secs(5), taken.recv())
        .await
        .expect("the grant was notified")
        .unwrap();
    assert!(!stolen.starts_with("prime"), "{stolen}");
    // The process keeps being notified (of ids it does not know), every 300 ms.
    let noise = tokio::spawn({
        let list = list.clone();
        let port = server.port;
        async move {
            loop {
                let _ = tokio::task::spawn_blocking({
                    let list = list.clone();
                    move || support::cmd_on(port, &["RPUSH", &list, "noise"])
                })
                .await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    });
    let woken = tokio::time::timeout(Duration::from_secs(10), waiter).await;
    noise.abort();
    woken
        .expect("the granted waiter was woken by the poll")
        .unwrap()
        .unwrap();
}

/// A pool `name` as a Redis user that may not run `BLPOP` (as under a common ACL hardening):
/// its notifications fail, so only the poll every second finds its waiters granted.
async fn without_blpop(server: &Server, name: &str, lease: Duration) -> RedisPool<&'static str> {
    denied(server, name, lease, &["-blpop"]).await
}

/// A pool `name` as a Redis user that may run every command but those `denied` (`-blpop`).
async fn denied(
    server: &Server,
    name: &str,
    lease: Duration,
    denied: &[&str],
) -> RedisPool<&'static str> {
    let mut user = vec![
        "ACL", "SETUSER", "limited", "on", ">pw", "~*", "&*", "+@all",
    ];
    user.extend(denied);
    assert!(server.cmd(&user).unwrap().contains("OK"));
    let url = format!("redis://limited:pw@127.0.0.1:{}/", server.port);
    RedisPool::builder(&url, name)
        .lease(lease)
        .build()
        .await
        .unwrap()
}

/// A pool `name` of a process whose Redis user may not run the commands `denied` (`-blpop`),
/// waiting for group `a` (limit 1), and granted it in Redis by the release of another
/// process's permit: the other pool, the limited one, and the waiting call.
async fn granted_in_a_limited_process(
    server: &Server,
    name: &'static str,
    denied_commands: &[&str],
) -> (
    RedisPool<&'static str>,
    RedisPool<&'static str>,
    tokio::task::JoinHandle<Result<(), taskherd::AcquireError>>,
) {
    let lease = Duration::from_secs(3);
    let other = pool(server, name, lease).await;
    other.set_limit("a", 1).await.unwrap();
    let limited = denied(server, name, lease, denied_commands).await;
    let held = other.try_acquire(["a"]).await.unwrap();
    let waiting = tokio::spawn({
        let limited = limited.clone();
        async move { limited.acquire(["a"]).await.map(drop) }
    });
    until_waiting(&other, "a", 1).await;
    drop(held);
    other.flush().await;
    // Granted in Redis: counted as running there.
    assert_eq!(other.stats(&"a").await.unwrap().running, 1);
    (other, limited, waiting)
}

/// A process whose notifications fail (here its Redis user may not run `BLPOP`, as under a
/// common ACL hardening; a connection that keeps timing out does the same) still finds its
/// waiters granted, by the once-a-second poll: a failed `BLPOP` skipped the poll, and the
/// granted waiter slept forever while its process renewed the slot it never used. Found by a
/// review.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_waiter_is_woken_when_notifications_fail() {
    let server = Server::start();
    let (other, limited, waiting) = granted_in_a_limited_process(&server, "acl", &["-blpop"]).await;
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the granted waiter was not woken (the poll runs every second)")
        .unwrap()
        .unwrap();
    limited.flush().await;
    assert_eq!(other.stats(&"a").await.unwrap().running, 0);
}

/// The poll every second reads all of a process's waiters in one call, which failed whole
/// when one waiter's record could not be read (here overwritten with a string: `WRONGTYPE`):
/// a process whose notifications fail (`BLPOP` forbidden, as above) then never found its other
/// waiters granted, and they slept on slots the fleet counted as theirs. Now the others are
/// found granted, and the waiter whose record is unreadable fails with Redis's error; the
/// releases of its group go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_unreadable_waiter_record_does_not_hide_the_other_grants() {
    let server = Server::start();
    let other = pool(&server, "unreadable", Duration::from_secs(30)).await;
    other.set_limit("a", 1).await.unwrap();
    other.set_limit("b", 1).await.unwrap();
    let limited = without_blpop(&server, "unreadable", Duration::from_secs(30)).await;
    let held = (
        other.try_acquire(["a"]).await.unwrap(),
        other.try_acquire(["b"]).await.unwrap(),
    );
    let broken = tokio::spawn({
        let limited = limited.clone();
        async move { limited.acquire(["b"]).await.map(drop) }
    });
    until_waiting(&other, "b", 1).await;
    let records = server.cmd(&["KEYS", "taskherd:{unreadable}:w:*"]).unwrap();
    let record = records
        .lines()
        .find(|line| line.starts_with("taskherd:"))
        .expect("the waiter's record")
        .to_owned();
    let granted = tokio::spawn({
        let limited = limited.clone();
        async move { limited.acquire(["a"]).await.map(drop) }
    });
    until_waiting(&other, "a", 1).await;
    assert!(
        server
            .cmd(&["SET", &record, "not a hash"])
            .unwrap()
            .starts_with("+OK")
    );
    drop(held.0);
    other.flush().await;
    assert_eq!(
        other.stats(&"a").await.unwrap().running,
        1,
        "granted in Redis"
    );
    tokio::time::timeout(Duration::from_secs(5), granted)
        .await
        .expect("the granted waiter was not found by the poll")
        .unwrap()
        .unwrap();
    let error = tokio::time::timeout(Duration::from_secs(5), broken)
        .await
        .expect("the waiter whose record is unreadable was not told")
        .unwrap()
        .expect_err("its record cannot be read");
    assert!(error.to_string().contains("WRONGTYPE"), "{error}");
    // Releases, reaps and pumps that meet the unreadable record go on (they failed with
    // `WRONGTYPE`, so `b`'s holder could never be released and `b` stayed full): the queue
    // place is dropped, and the id is no longer counted as waiting.
    drop(held.1);
    other.flush().await;
    assert_eq!(other.stats(&"b").await.unwrap().running, 0);
    drop(other.try_acquire(["b"]).await.unwrap());
    limited.flush().await;
    other.flush().await;
    assert_eq!(other.waiting_len().await.unwrap(), 0);
}

/// Overwrites the only waiter record of pool `name` with a string.
fn overwrite_the_waiter_record(server: &Server, name: &str) {
    let records = server
        .cmd(&["KEYS", &format!("taskherd:{{{name}}}:w:*")])
        .unwrap();
    let record = records
        .lines()
        .find(|line| line.starts_with("taskherd:"))
        .expect("the waiter's record");
    assert!(
        server
            .cmd(&["SET", record, "not a hash"])
            .unwrap()
            .starts_with("+OK")
    );
}

/// Waits for `waiter` to fail because its record cannot be read.
async fn fails_unreadable(waiter: tokio::task::JoinHandle<Result<(), taskherd::AcquireError>>) {
    let error = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter whose record is unreadable was not told")
        .unwrap()
        .expect_err("its record cannot be read");
    assert!(error.to_string().contains("WRONGTYPE"), "{error}");
}

/// Found by a review: a waiter whose record became unreadable gave back neither its
/// reservations (`b`, limit 1, stayed full with nobody in it) nor its queue places (a later
/// waiter queued behind its place in `a`, which nobody pumped since nobody waited, and was
/// never granted though `a` had room).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_waiter_gives_back_its_reservations_and_places() {
    let server = Server::start();
    let pool = pool(&server, "unreadable-places", Duration::from_secs(30)).await;
    let limits = taskherd::LimitChanges::new()
        .limit("a", 1)
        .limit("b", 1)
        .limit("c", 1);
    pool.set_limits(limits).await.unwrap();
    let held = (
        pool.try_acquire(["a"]).await.unwrap(),
        pool.try_acquire(["c"]).await.unwrap(),
    );
    let broken = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire(["a", "b"]).await.map(drop) }
    });
    until_waiting(&pool, "a", 1).await;
    assert_eq!(pool.stats(&"b").await.unwrap().reserved, 1);
    overwrite_the_waiter_record(&server, "unreadable-places");
    fails_unreadable(broken).await;
    pool.flush().await;
    drop(pool.try_acquire(["b"]).await.unwrap());
    drop(held.0);
    pool.flush().await;
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire(["c", "a"]).await.map(drop) }
    });
    until_waiting(&pool, "c", 1).await;
    drop(held.1);
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter queued behind the unreadable one's place was not granted")
        .unwrap()
        .unwrap();
    pool.flush().await;
    assert_eq!(
        server
            .cmd(&["EXISTS", "taskherd:{unreadable-places}:res"])
            .unwrap(),
        ":0\r\n"
    );
}

/// Found by a review: a waiting admission whose own id's record was written by something else
/// (a string) failed only after it had counted a reservation and queued (the reservation in
/// `b` leaked); it now fails before it writes anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admission_over_an_unreadable_record_writes_nothing() {
    let server = Server::start();
    let pool = pool(&server, "unreadable-own", Duration::from_secs(30)).await;
    let limits = taskherd::LimitChanges::new().limit("a", 1).limit("b", 1);
    pool.set_limits(limits).await.unwrap();
    let held = pool.try_acquire(["a"]).await.unwrap();
    let first = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire(["a"]).await.map(drop) }
    });
    until_waiting(&pool, "a", 1).await;
    // The next ids this process gives its waiters (`<process>-<counter>`).
    let records = server
        .cmd(&["KEYS", "taskherd:{unreadable-own}:w:*"])
        .unwrap();
    let record = records
        .lines()
        .find(|line| line.starts_with("taskherd:"))
        .unwrap();
    let (base, n) = record.rsplit_once('-').unwrap();
    let n: u64 = n.parse().unwrap();
    for k in 1..=3 {
        server
            .cmd(&["SET", &format!("{base}-{}", n + k), "not a hash"])
            .unwrap();
    }
    let error = tokio::time::timeout(Duration::from_secs(5), pool.acquire(["b", "a"]))
        .await
        .expect("answered")
        .unwrap_err();
    assert!(error.to_string().contains("WRONGTYPE"), "{error}");
    // Neither a queue place in `a` nor a reservation in `b` was written.
    assert_eq!(pool.stats(&"a").await.unwrap().waiting, 1);
    assert_eq!(pool.stats(&"b").await.unwrap().reserved, 0);
    first.abort();
    drop(held);
    pool.flush().await;
    drop(pool.try_acquire(["b"]).await.unwrap());
}

/// Found by a review: the notifier's poll failing whole with an error Redis repeats (here the
/// Redis user may not `DEL`, which the poll of a granted waiter does) left a granted waiter
/// asleep for ever, on a slot the fleet counted as its; it is woken, polls itself, and fails
/// with the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_that_fails_whole_wakes_its_waiters() {
    let server = Server::start();
    let (_other, _limited, waiting) =
        granted_in_a_limited_process(&server, "poll-fails", &["-blpop", "-del"]).await;
    let error = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the granted waiter was never woken")
        .unwrap()
        .expect_err("its poll fails");
    assert!(
        error.to_string().contains("can't run this command"),
        "{error}"
    );
}
