//! Keys appear in tracing events only when the pool was built with `Builder::log_keys` (keys may
//! be personal data such as a peer's address or a tenant's name).
//!
//! Each test installs a capturing subscriber at TRACE level for its own thread only, and runs the
//! pool on a current-thread runtime on that thread.

use std::io;
use std::sync::{Arc, Mutex};

use taskherd::TaskPool;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::util::SubscriberInitExt;

const SECRET: &str = "zebra-key-7781";

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
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

/// Returns the capture and a guard that keeps the subscriber installed on this thread.
fn capture_trace() -> (Capture, impl Sized) {
    let capture = Capture::default();
    let writer = capture.clone();
    let guard = tracing_subscriber::fmt()
        .with_max_level(LevelFilter::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish()
        .set_default();
    (capture, guard)
}

/// Exercises everything that might log: limits, an admission, a refusal, a release.
async fn exercise(pool: &TaskPool<&'static str>) {
    pool.set_limit(SECRET, 1);
    let handle = match pool.try_spawn([SECRET], async {}) {
        Ok(handle) => handle,
        Err(_) => panic!("the first task was refused"),
    };
    let held = match pool.try_spawn([SECRET], async {}) {
        Ok(_) => panic!("the second task was admitted beyond the limit of 1"),
        Err(error) => error,
    };
    drop(held);
    handle.await.unwrap();
    assert_eq!(pool.task_count(&SECRET), 0);
    pool.set_limit(SECRET, 0);
    let Err(_) = pool.try_spawn([SECRET], async {}) else {
        panic!("a task was admitted in a group with limit 0");
    };
    pool.clear_limit(&SECRET);
}

#[tokio::test]
async fn keys_are_not_logged_by_default() {
    let (capture, _guard) = capture_trace();
    let pool = TaskPool::<&'static str>::builder().max_tasks(10).build();
    exercise(&pool).await;
    let text = capture.text();
    assert!(
        !text.contains(SECRET),
        "a key was logged without log_keys():\n{text}"
    );
}

#[tokio::test]
async fn log_keys_makes_events_print_keys() {
    let (capture, _guard) = capture_trace();
    let pool = TaskPool::<&'static str>::builder()
        .max_tasks(10)
        .log_keys()
        .build();
    exercise(&pool).await;
    let text = capture.text();
    assert!(
        text.contains(SECRET),
        "no tracing event printed the key although log_keys() was set; captured:\n{text}"
    );
}

/// Without `log_keys`, a refusal names the full group by its position among the task's groups,
/// as `Builder::log_keys` documents (found by a review: every refusal logged the same
/// placeholder, whichever group was full).
#[tokio::test]
async fn without_log_keys_a_refusal_names_the_position_of_the_full_group() {
    let (capture, _guard) = capture_trace();
    let pool = TaskPool::<&'static str>::builder().limit(SECRET, 0).build();
    assert!(pool.try_acquire([SECRET, "free"]).is_err());
    assert!(pool.try_acquire(["free", "other", SECRET]).is_err());
    let text = capture.text();
    assert!(!text.contains(SECRET), "a key was logged:\n{text}");
    let refusals: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("task refused"))
        .collect();
    assert_eq!(refusals.len(), 2, "{text}");
    assert!(refusals[0].contains("position 0"), "{text}");
    assert!(refusals[1].contains("position 2"), "{text}");
}
