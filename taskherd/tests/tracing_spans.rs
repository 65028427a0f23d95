//! Tracing output: every spawned task runs inside a `DEBUG` span named `taskherd.task` that
//! names its groups (keys only with `Builder::log_keys`), and `close`, `reopen`, `abort_group`,
//! `abort_all`, refusals and limit changes are `DEBUG` events.
//!
//! Each test installs a capturing `fmt` subscriber for its own thread only
//! (`tracing::subscriber::set_default`) and runs on a current-thread runtime, so the tasks it
//! spawns run on the same thread and report to the same subscriber.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use taskherd::TaskPool;
use tracing_subscriber::filter::LevelFilter;

/// Keys distinctive enough that finding one in the output can only mean it was logged.
const TENANT: &str = "tenant-kiwi-4411";
const DB: &str = "db-lemon-9930";

type Pool = TaskPool<&'static str>;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// The one line that contains `marker`.
    #[track_caller]
    fn line(&self, marker: &str) -> String {
        let text = self.text();
        let mut lines = text.lines().filter(|line| line.contains(marker));
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("no line contains {marker:?}:\n{text}"))
            .to_owned();
        assert!(
            lines.next().is_none(),
            "several lines contain {marker:?}:\n{text}"
        );
        line
    }
}

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Installs a capturing subscriber at `level` on this thread; the guard uninstalls it.
fn capture(level: LevelFilter) -> (Capture, tracing::subscriber::DefaultGuard) {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .without_time()
        .with_writer(move || writer.clone())
        .finish();
    (capture, tracing::subscriber::set_default(subscriber))
}

/// Awaits `future`, failing the test if it hangs. The tests that use it run on a paused clock,
/// which jumps ahead as soon as the runtime is idle, so a hang fails at once.
async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(60), future).await {
        Ok(output) => output,
        Err(_) => panic!("{what} hung"),
    }
}

/// Spawns a task in `groups` that emits an `INFO` event with `marker`, and waits for it.
async fn log_in_task(pool: &Pool, groups: &[&'static str], marker: &'static str) {
    let task = match pool.try_spawn(groups.to_vec(), async move {
        tracing::info!("{marker}");
    }) {
        Ok(task) => task,
        Err(_) => panic!("the task was refused"),
    };
    within("the task", task).await.unwrap();
}

#[tokio::test]
async fn an_event_in_a_task_is_inside_the_task_span_with_its_keys_when_log_keys() {
    let (capture, _guard) = capture(LevelFilter::DEBUG);
    let pool = Pool::builder().log_keys().build();
    log_in_task(&pool, &[TENANT, DB], "marker-with-keys").await;

    let line = capture.line("marker-with-keys");
    assert!(line.contains("INFO"), "{line}");
    let expected = format!("taskherd.task{{groups=[{TENANT:?}, {DB:?}]}}");
    assert!(line.contains(&expected), "expected {expected} in:\n{line}");
}

#[tokio::test]
async fn without_log_keys_the_task_span_counts_its_groups_but_shows_no_key() {
    let (capture, _guard) = capture(LevelFilter::TRACE);
    let pool = Pool::new();
    log_in_task(&pool, &[TENANT, DB, TENANT], "marker-without-keys").await;

    let line = capture.line("marker-without-keys");
    assert!(line.contains("taskherd.task{groups="), "{line}");
    // A key named twice counts once.
    assert!(line.contains("2 groups"), "{line}");
    let text = capture.text();
    assert!(
        !text.contains(TENANT) && !text.contains(DB),
        "a key was logged without log_keys():\n{text}"
    );
}

#[tokio::test]
async fn a_task_in_no_group_still_runs_in_the_task_span() {
    let (capture, _guard) = capture(LevelFilter::DEBUG);
    let with_keys = Pool::builder().log_keys().build();
    log_in_task(&with_keys, &[], "marker-keys-no-group").await;
    let line = capture.line("marker-keys-no-group");
    assert!(line.contains("taskherd.task{groups=[]}"), "{line}");

    let without_keys = Pool::new();
    log_in_task(&without_keys, &[], "marker-no-group").await;
    let line = capture.line("marker-no-group");
    assert!(line.contains("taskherd.task{groups=0 groups"), "{line}");
}

#[tokio::test(start_paused = true)]
async fn a_task_spawned_after_waiting_runs_in_the_task_span() {
    let (capture, _guard) = capture(LevelFilter::DEBUG);
    let pool = Pool::builder().log_keys().limit(DB, 1).build();
    let held = pool.try_acquire([DB]).unwrap();
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move {
            pool.spawn([DB], async {
                tracing::info!("marker-after-waiting");
            })
            .await
        })
    };
    tokio::task::yield_now().await; // the spawn queues
    assert_eq!(pool.waiting_len(), 1);
    drop(held);
    let task = within("the waiting spawn", waiter)
        .await
        .unwrap()
        .expect("the pool is open");
    within("the task", task).await.unwrap();

    let line = capture.line("marker-after-waiting");
    assert!(
        line.contains(&format!("taskherd.task{{groups=[{DB:?}]}}")),
        "{line}"
    );
}

#[tokio::test]
async fn events_outside_tasks_are_not_in_the_task_span() {
    let (capture, _guard) = capture(LevelFilter::DEBUG);
    let pool = Pool::builder().log_keys().build();
    log_in_task(&pool, &[TENANT], "marker-inside").await;
    tracing::info!("marker-outside");
    assert!(capture.line("marker-inside").contains("taskherd.task"));
    let outside = capture.line("marker-outside");
    assert!(!outside.contains("taskherd.task"), "{outside}");
}

#[tokio::test]
async fn the_task_span_is_at_debug_level() {
    let (capture, _guard) = capture(LevelFilter::INFO);
    let pool = Pool::builder().log_keys().build();
    log_in_task(&pool, &[TENANT], "marker-info-only").await;
    let line = capture.line("marker-info-only");
    assert!(!line.contains("taskherd.task"), "{line}");
    // Nor does the pool emit any event at INFO.
    pool.close();
    let text = capture.text();
    assert_eq!(text.lines().count(), 1, "{text}");
}

#[tokio::test]
async fn close_and_reopen_emit_events_only_when_they_change_the_state() {
    let (capture, _guard) = capture(LevelFilter::DEBUG);
    let pool = Pool::new();
    assert!(pool.close());
    assert!(!pool.close());
    assert!(pool.reopen());
    assert!(!pool.reopen());
    let text = capture.text();
    let closed: Vec<_> = text
        .lines()
        .filter(|line| line.contains("pool closed"))
        .collect();
    assert_eq!(closed.len(), 1, "{text}");
    assert!(closed[0].contains("DEBUG"), "{text}");
    let reopened = capture.line("pool reopened");
    assert!(reopened.contains("DEBUG"), "{reopened}");
}

#[tokio::test(start_paused = true)]
async fn close_reports_how_many_waiters_it_failed() {
    let (capture, _guard) = capture(LevelFilter::DEBUG);
    let pool = Pool::builder().max_tasks(0).build();
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.acquire([TENANT]).await })
        })
        .collect();
    tokio::task::yield_now().await;
    assert_eq!(pool.waiting_len(), 2);
    pool.close();
    for waiter in waiters {
        assert!(within("a failed waiter", waiter).await.unwrap().is_err());
    }
    let line = capture.line("pool closed");
    assert!(line.contains("woken=2"), "{line}");
}

#[tokio::test(start_paused = true)]
async fn abort_group_and_abort_all_emit_events() {
    let (capture, _guard) = capture(LevelFilter::DEBUG);
    let pool = Pool::builder().log_keys().build();
    let stuck = pool
        .try_spawn([TENANT], std::future::pending::<()>())
        .unwrap();
    let other = pool.try_spawn([DB], std::future::pending::<()>()).unwrap();
    assert_eq!(pool.abort_group(&TENANT), 1);
    assert!(
        within("an aborted task", stuck)
            .await
            .unwrap_err()
            .is_cancelled()
    );
    assert_eq!(pool.abort_all(), 1);
    assert!(
        within("an aborted task", other)
            .await
            .unwrap_err()
            .is_cancelled()
    );

    let line = capture.line("group aborted");
    assert!(line.contains("DEBUG"), "{line}");
    assert!(line.contains(TENANT), "{line}");
    assert!(line.contains("signalled=1"), "{line}");
    let line = capture.line("all tasks aborted");
    assert!(line.contains("DEBUG"), "{line}");
    assert!(line.contains("signalled=1"), "{line}");
}

#[tokio::test(start_paused = true)]
async fn abort_group_events_hide_the_key_without_log_keys() {
    let (capture, _guard) = capture(LevelFilter::DEBUG);
    let pool = Pool::new();
    let stuck = pool
        .try_spawn([TENANT], std::future::pending::<()>())
        .unwrap();
    assert_eq!(pool.abort_group(&TENANT), 1);
    assert!(
        within("an aborted task", stuck)
            .await
            .unwrap_err()
            .is_cancelled()
    );
    assert_eq!(pool.abort_group(&DB), 0);

    let text = capture.text();
    let aborted: Vec<_> = text
        .lines()
        .filter(|line| line.contains("group aborted"))
        .collect();
    assert_eq!(aborted.len(), 2, "{text}");
    assert!(aborted[0].contains("signalled=1"), "{text}");
    assert!(aborted[1].contains("signalled=0"), "{text}");
    assert!(!text.contains(TENANT) && !text.contains(DB), "{text}");
}

#[tokio::test]
async fn refusals_and_limit_changes_emit_debug_events() {
    let (capture, _guard) = capture(LevelFilter::DEBUG);
    let pool = Pool::builder().log_keys().build();
    pool.set_limit(DB, 0);
    assert!(pool.try_acquire([TENANT, DB]).unwrap_err().is_full());
    pool.set_max_tasks(5);
    pool.set_default_limit(2);
    pool.close();
    assert!(pool.try_acquire([TENANT]).unwrap_err().is_closed());

    let text = capture.text();
    let full = capture.line("task refused: group full");
    assert!(full.contains("DEBUG") && full.contains(DB), "{full}");
    let closed = capture.line("task refused: pool closed");
    assert!(closed.contains("DEBUG"), "{closed}");
    let changes: Vec<_> = text
        .lines()
        .filter(|line| line.contains("limits changed"))
        .collect();
    assert_eq!(changes.len(), 3, "{text}");
    assert!(
        changes[0].contains(&format!("{DB:?}: Some(0)")) && changes[0].contains("DEBUG"),
        "{text}"
    );
    assert!(changes[1].contains("total: Some(5)"), "{text}");
    assert!(changes[2].contains("default: Some(2)"), "{text}");
}
