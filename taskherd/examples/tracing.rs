//! What a [`TaskPool`] reports through `tracing`.
//!
//! Installs a `tracing_subscriber::fmt` subscriber at `DEBUG` level and builds a pool with
//! [`Builder::log_keys`](taskherd::Builder::log_keys), so group keys appear in the output (they
//! are hidden by default, since keys may be peer addresses or tenant names). It then:
//!
//! - spawns a few tasks that log with `tracing::info!`: each line is printed inside the
//!   `taskherd.task{groups=[..]}` span the pool puts around every task it spawns;
//! - gets a task refused because its group is full (a `DEBUG` event naming the group);
//! - changes limits (events for a group's limit, `max_tasks` and the default limit);
//! - closes the pool, gets a task refused because it is closed, and aborts a group and then
//!   every task (events with the number of tasks signalled).
//!
//! The pool's events have targets under `taskherd`, so a filter can select them. Without
//! `log_keys`, the span reads `groups=2 groups (keys shown with Builder::log_keys)` and
//! events name no key. It finishes in well under a second.
//!
//! Run it with:
//!
//!     cargo run -p taskherd --example tracing

use std::io::IsTerminal;
use std::time::Duration;

use taskherd::TaskPool;
use tracing::Level;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    tracing_subscriber::fmt()
        .with_max_level(Level::DEBUG)
        .with_ansi(std::io::stdout().is_terminal())
        .init();

    let pool = TaskPool::builder()
        .log_keys()
        .max_tasks(10)
        .default_limit(2)
        .limit("db", 1)
        .build();

    // Tasks that log: their lines carry the task span with their groups.
    let mut tasks = Vec::new();
    for (request, groups) in [
        (1, vec!["tenant-a", "db"]),
        (2, vec!["tenant-a"]),
        (3, vec!["tenant-b"]),
    ] {
        let task = pool.try_spawn(groups, async move {
            tracing::info!(request, "handling request");
            tokio::time::sleep(Duration::from_millis(20)).await;
            tracing::info!(request, "done");
        });
        tasks.push(task.expect("there is room for the first three requests"));
    }

    // A refusal: tenant-a already runs its default limit of 2.
    let refused = pool.try_spawn(["tenant-a"], async {});
    assert!(refused.is_err_and(|error| error.is_full()));

    for task in tasks {
        task.await.expect("the request task completed");
    }

    // Limit changes.
    pool.set_limit("tenant-a", 5);
    pool.set_max_tasks(20);
    pool.set_default_limit(3);

    // Tasks that will be aborted.
    let stuck = pool
        .try_spawn(["tenant-c"], std::future::pending::<()>())
        .expect("room for tenant-c");
    let also_stuck = pool
        .try_spawn(["tenant-d", "db"], std::future::pending::<()>())
        .expect("room for tenant-d");
    tokio::task::yield_now().await;

    // Close: new work is refused as closed; running tasks carry on until aborted.
    pool.close();
    let refused = pool.try_spawn(["tenant-e"], async {});
    assert!(refused.is_err_and(|error| error.is_closed()));

    assert_eq!(pool.abort_group(&"tenant-c"), 1);
    assert!(stuck.await.expect_err("aborted").is_cancelled());
    assert_eq!(pool.abort_all(), 1);
    assert!(also_stuck.await.expect_err("aborted").is_cancelled());

    pool.wait().await;
    assert!(pool.is_empty());
    tracing::info!(stats = ?pool.total_stats(), "pool drained");
}
