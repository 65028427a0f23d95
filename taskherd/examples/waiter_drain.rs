//! Drains N waiters queued on one group and prints the time per waiter, for N = 10,000 and
//! 100,000, to show that waking is linear in the number of waiters (no "wake everyone on every
//! release" trap, where 20,000 waiters took 14 s in futures-intrusive #24).
//!
//! Each waiter is a tokio task blocked in `pool.acquire(["hot"])` on a group with limit 1;
//! every release hands the slot to exactly the oldest waiter.
//!
//! Run with: `cargo run --release -p taskherd --example waiter_drain`

use std::time::{Duration, Instant};

use taskherd::TaskPool;

/// Queues `waiters` tasks on one group with limit 1, then measures how long they take to pass
/// through it one by one.
async fn drain(waiters: usize) -> Duration {
    let pool = TaskPool::builder().limit("hot", 1).build();
    let gate = pool.try_acquire(["hot"]).expect("the group starts empty");
    let mut tasks = Vec::with_capacity(waiters);
    for _ in 0..waiters {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let permit = pool
                .acquire(["hot"])
                .await
                .expect("the pool is never closed");
            drop(permit);
        }));
    }
    // Let every task queue up behind the gate.
    while pool.waiting_len() < waiters {
        tokio::task::yield_now().await;
    }
    let start = Instant::now();
    drop(gate);
    for task in tasks {
        task.await.expect("waiter task panicked");
    }
    let elapsed = start.elapsed();
    assert!(
        pool.is_empty() && pool.waiting_len() == 0,
        "the pool drained"
    );
    elapsed
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(async {
        drain(1_000).await; // warm-up
        let mut rows = Vec::new();
        for waiters in [10_000, 100_000] {
            let mut best = Duration::MAX;
            for _ in 0..3 {
                best = best.min(drain(waiters).await);
            }
            rows.push((waiters, best));
        }
        println!(
            "{:>9}  {:>12}  {:>12}",
            "waiters", "drain (ms)", "ns / waiter"
        );
        for (waiters, elapsed) in &rows {
            let per = elapsed.as_nanos() as f64 / *waiters as f64;
            println!(
                "{waiters:>9}  {:>12.2}  {per:>12.0}",
                elapsed.as_secs_f64() * 1e3
            );
        }
        let ratio = rows[1].1.as_secs_f64() / rows[0].1.as_secs_f64();
        println!("100,000 / 10,000 drain time: {ratio:.1}x (10x = linear)");
    });
}
