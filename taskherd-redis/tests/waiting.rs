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
