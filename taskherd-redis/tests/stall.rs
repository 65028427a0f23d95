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
