//! Panics in user code on the paths where a waiting future finishes.
//!
//! - A key's `Drop` that panics while a closed waiter's record is dropped, after the future
//!   has seen that it is closed: the future must already know it holds nothing, so that its
//!   own drop (after that panic, or during its unwinding when the future's owner unwinds too)
//!   does not try to give back a waiter that is gone. Before the fix it hit a debug
//!   assertion while panicking, which aborts the process. A test that aborts would take the
//!   whole test binary down, so the scenario runs in a child process (this binary, re-run on
//!   one test) and the parent checks how it ended.
//! - Another waiter's waker that panics when a release wakes it must not fail the released
//!   task: its output still reaches its `JoinHandle`.

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::pin;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Waker};

use taskherd::TaskPool;

/// A key whose drop panics once when armed (never while unwinding).
#[derive(Clone)]
struct Key {
    id: u32,
    armed: Arc<AtomicBool>,
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for Key {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        if !std::thread::panicking() && self.armed.swap(false, Ordering::SeqCst) {
            panic!("Key::drop panics on purpose");
        }
    }
}

const CHILD: &str = "TASKHERD_PANIC_TEST_CHILD";

/// Runs test `name` of this binary in a child process with `CHILD` set; returns whether it
/// exited normally (passed) and its stderr.
fn run_child(name: &str) -> (bool, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The scenario: a waiting `acquire` is failed by `close`; its next poll removes its record
/// and drops its keys after unlocking; a key's drop panics. The panic must fail that poll,
/// and nothing else: dropping the future afterwards (here while the panic unwinds) must not
/// panic again.
fn closed_waiter_key_drop_panic() {
    let armed = Arc::new(AtomicBool::new(false));
    let key = |id| Key {
        id,
        armed: Arc::clone(&armed),
    };
    let pool: TaskPool<Key> = TaskPool::builder().limit(key(1), 0).build();
    let polled = catch_unwind(AssertUnwindSafe(|| {
        let mut waiter = pin!(pool.acquire([key(1)]));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(waiter.as_mut().poll(&mut cx).is_pending());
        assert!(pool.close());
        // Only the keys still in the waiter's record are dropped by the next poll: the
        // group's entry keeps its own key (it has an explicit limit).
        armed.store(true, Ordering::SeqCst);
        let _ = waiter.as_mut().poll(&mut cx);
    }));
    assert!(polled.is_err(), "the key's panic reaches the caller");
    assert!(!armed.load(Ordering::SeqCst), "the key was dropped");
    assert_eq!((pool.len(), pool.waiting_len()), (0, 0));
}

#[test]
fn a_key_drop_panic_when_a_closed_waiter_is_polled_does_not_abort() {
    if std::env::var_os(CHILD).is_some() {
        closed_waiter_key_drop_panic();
        return;
    }
    let (ok, stderr) = run_child("a_key_drop_panic_when_a_closed_waiter_is_polled_does_not_abort");
    assert!(
        ok,
        "the child process did not end normally (a panic while panicking aborts it):\n{stderr}"
    );
}

/// A waker whose `wake` panics.
struct PanickyWake;

impl std::task::Wake for PanickyWake {
    fn wake(self: Arc<Self>) {
        panic!("PanickyWake::wake panics on purpose");
    }
}

/// Task A completes normally; its release grants a waiter that belongs to somebody else and
/// whose waker panics when woken. `Deferred::finish` re-raises that panic from A's
/// `TaskAdmission::drop`, which runs inside A's future: A's output is dropped and its
/// `JoinHandle` reports a panic that A never had. (The same happens to whoever drops a
/// `Permit`.) The waiter is still woken and granted; only the innocent releaser is failed.
#[tokio::test(flavor = "current_thread")]
async fn a_foreign_wakers_panic_does_not_fail_the_task_whose_release_woke_it() {
    let pool = TaskPool::builder().limit("g", 1).build();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = pool
        .try_spawn(["g"], async move {
            rx.await.ok();
            42
        })
        .unwrap();
    let mut waiter = Box::pin(pool.acquire(["g"]));
    let waker = Waker::from(Arc::new(PanickyWake));
    assert!(
        waiter
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending()
    );
    drop(waker);
    tx.send(()).unwrap();
    let joined = task.await;
    assert!(
        matches!(joined, Ok(42)),
        "task A returned 42, but its JoinHandle says {joined:?}"
    );
    drop(waiter);
}
