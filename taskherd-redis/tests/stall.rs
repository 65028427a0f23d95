//! A Redis that stops answering without closing the connection (here `CLIENT PAUSE`, as a
//! frozen server or a network dropping packets does): each admission fails as unavailable after
//! the connection's response timeout, not after two of them behind the give-back of an
//! earlier one.

mod support;

use std::time::{Duration, Instant};

use support::{Server, pool};

/// Calls made one after another during the stall each take one response timeout (2 s with a
/// lease of 6 s): the give-back of the first call's id, sent on its own as that call failed,
/// held each later call back for a whole timeout more (found by a review of the README: about
/// 10 s a request with the default lease, where it says 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_call_during_a_stall_fails_after_one_response_timeout() {
    let server = Server::start();
    let pool = pool(&server, "stall", Duration::from_secs(6)).await;
    pool.set_limit("g", 8).await.unwrap();
    let paused = Instant::now();
    assert!(
        server
            .cmd(&["CLIENT", "PAUSE", "9000", "ALL"])
            .unwrap()
            .starts_with("+OK")
    );
    let mut took = Vec::new();
    for _ in 0..3 {
        let asked = Instant::now();
        let error = pool.try_acquire(["g"]).await.expect_err("Redis is paused");
        assert!(error.is_unavailable(), "{error}");
        took.push(asked.elapsed());
    }
    tokio::time::sleep(Duration::from_millis(9_100).saturating_sub(paused.elapsed())).await;
    // One timeout is 2 s; two are 4 s. The bound between them leaves room for a loaded
    // machine.
    for (call, one) in took.iter().enumerate() {
        assert!(
            *one < Duration::from_millis(3_300),
            "call {call} took {one:?} (all: {took:?})"
        );
    }
    // Redis back: the ids of the failed calls are given back, nothing stays counted.
    pool.flush().await;
    assert_eq!(pool.task_count(&"g").await.unwrap(), 0);
}

/// The releaser's backoff ends when Redis answers again: a `flush` right after the stall
/// returns at once, not when the backoff that calls failing one after another had grown to
/// (up to 5 s) is over (found by a review of the backoff: 2.9 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_redis_answers_again_a_flush_does_not_wait_for_the_backoff() {
    let server = Server::start();
    let pool = pool(&server, "backoff", Duration::from_secs(6)).await;
    pool.set_limit("g", 64).await.unwrap();
    let paused = Instant::now();
    assert!(
        server
            .cmd(&["CLIENT", "PAUSE", "11000", "ALL"])
            .unwrap()
            .starts_with("+OK")
    );
    // Calls failing one after another (2 s each) grow the backoff to seconds.
    while paused.elapsed() < Duration::from_millis(8_500) {
        let error = pool.try_acquire(["g"]).await.expect_err("Redis is paused");
        assert!(error.is_unavailable(), "{error}");
    }
    tokio::time::sleep(Duration::from_millis(11_200).saturating_sub(paused.elapsed())).await;
    let asked = Instant::now();
    pool.flush().await;
    let took = asked.elapsed();
    // Back to back with Redis answering, a flush takes a round trip or two.
    assert!(took < Duration::from_millis(1_000), "flush took {took:?}");
    drop(pool.try_acquire(["g"]).await.expect("Redis answers again"));
}
