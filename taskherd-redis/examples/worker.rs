//! One worker of a fleet: runs 12 fake jobs against 3 databases, at most 1 job per database
//! and 2 in all **across every worker** sharing the pool, waiting its turn (FIFO) when full.
//!
//! Start a Redis (`redis-server --save '' --appendonly no`), then run two workers at once, in
//! two terminals or in the background:
//!
//! ```sh
//! cargo run -p taskherd-redis --example worker -- redis://127.0.0.1:6379/ one &
//! cargo run -p taskherd-redis --example worker -- redis://127.0.0.1:6379/ two
//! ```
//!
//! Each line shows how many jobs run on that database and in all, counted by Redis for the
//! whole fleet: never more than 1 and 2.

use std::time::Duration;

use taskherd::LimitChanges;
use taskherd_redis::RedisPool;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "redis://127.0.0.1:6379/".to_owned());
    let name = args.next().unwrap_or_else(|| "worker".to_owned());

    let pool: RedisPool<String> = RedisPool::builder(&url, "example-fleet")
        .lease(Duration::from_secs(10))
        // Written by the first worker into a pool without limits, and again by any worker
        // that finds them lost (Redis restarted without its data); `set_limits` changes them.
        .restore_limits(LimitChanges::new().max_tasks(2).default_limit(1))
        .build()
        .await?;

    let mut jobs = Vec::new();
    for job in 0..12 {
        let db = format!("db-{}", job % 3);
        let (pool2, name2, db2) = (pool.clone(), name.clone(), db.clone());
        let task = pool
            .spawn(vec![db.clone()], async move {
                let here = pool2.stats(&db2).await.map(|s| s.running).unwrap_or(0);
                let all = pool2.total_stats().await.map(|s| s.running).unwrap_or(0);
                println!("{name2}: job {job:2} on {db2} ({here} on {db2}, {all} in all)");
                tokio::time::sleep(Duration::from_millis(300)).await;
            })
            .await?;
        jobs.push(task);
    }
    for job in jobs {
        job.await?;
    }
    // Releases go out in the background: close this process's share, wait for it, and hand
    // the last slots back before exiting.
    pool.shutdown().await;
    println!("{name}: done");
    Ok(())
}
