//! Wakers that re-enter the pool (issue 9, item 2).
//!
//! With an executor whose waker owns the task (the common `Arc<Task>` pattern), dropping the
//! last waker drops the task's future; if that future holds a `Permit`, its drop releases it,
//! which takes the pool's lock. So no waker may be dropped, cloned or woken while the pool
//! holds its lock: not when a waiting future is re-polled with another waker, not when it is
//! dropped, not when `close` fails it, not when a release grants it, not in `wait` futures.
//!
//! Each test runs its body on its own thread and fails with a clear message if the body does
//! not finish within a bound (a deadlock), so a hang fails the test instead of the suite.

use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Wake, Waker};
use std::thread;
use std::time::Duration;

use taskherd::{Permit, TaskPool};
use tokio_test::{assert_pending, assert_ready, assert_ready_err, assert_ready_ok};

type Pool = TaskPool<&'static str>;

/// How long a body may take before it is declared deadlocked.
const BOUND: Duration = Duration::from_secs(10);

/// Runs `body` on its own thread; fails if it panics or does not finish within [`BOUND`].
#[track_caller]
fn within_bound(what: &str, body: impl FnOnce() + Send + 'static) {
    let (done, finished) = mpsc::channel();
    let thread = thread::Builder::new()
        .name(what.to_owned())
        .spawn(move || {
            body();
            let _ = done.send(());
        })
        .expect("spawn the test thread");
    match finished.recv_timeout(BOUND) {
        Ok(()) => thread.join().expect("the body finished"),
        Err(RecvTimeoutError::Disconnected) => {
            // The body panicked: report its own message.
            if let Err(panic) = thread.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(RecvTimeoutError::Timeout) => panic!(
            "{what}: did not finish within {BOUND:?}: deadlock (a waker dropped, cloned or \
             woken under the pool's lock re-entered the pool)"
        ),
    }
}

/// What a waker owns: like a task that owns a future holding a permit of the pool. Dropping
/// it releases the permit (taking the pool's lock) after asking the pool for its length (the
/// lock again). Waking it asks the pool for its length too.
struct Task {
    pool: Pool,
    permit: Mutex<Option<Permit<&'static str>>>,
    marks: Arc<Marks>,
}

/// What happened to a [`Task`], seen from the test.
#[derive(Default)]
struct Marks {
    woken: AtomicUsize,
    dropped: AtomicBool,
}

impl Marks {
    fn woken(&self) -> usize {
        self.woken.load(Ordering::SeqCst)
    }

    fn dropped(&self) -> bool {
        self.dropped.load(Ordering::SeqCst)
    }
}

impl Wake for Task {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let _ = self.pool.len();
        self.marks.woken.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        let _ = self.pool.len();
        let permit = self.permit.lock().unwrap().take();
        drop(permit);
        self.marks.dropped.store(true, Ordering::SeqCst);
    }
}

/// A waker that owns `permit` (a permit of `pool`). The caller's waker is the only handle:
/// once the pool keeps a clone and the caller drops its own, the pool holds the last one.
fn task_waker(pool: &Pool, permit: Option<Permit<&'static str>>) -> (Waker, Arc<Marks>) {
    let marks = Arc::new(Marks::default());
    let task = Arc::new(Task {
        pool: pool.clone(),
        permit: Mutex::new(permit),
        marks: Arc::clone(&marks),
    });
    (Waker::from(task), marks)
}

/// A plain waker that counts its wake-ups.
#[derive(Default)]
struct Counter(AtomicUsize);

impl Wake for Counter {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counter() -> (Waker, Arc<Counter>) {
    let counter = Arc::new(Counter::default());
    (Waker::from(Arc::clone(&counter)), counter)
}

fn poll_with<F: Future + ?Sized>(future: Pin<&mut F>, waker: &Waker) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(waker))
}

/// Polls `future` with `waker` until it is ready, at most `n` times (a pending poll must have
/// been followed by a wake-up, or the grant was lost).
#[track_caller]
fn ready_within<F: Future + ?Sized>(
    mut future: Pin<&mut F>,
    waker: &Waker,
    counter: &Counter,
    n: usize,
) -> F::Output {
    for _ in 0..n {
        let woken_before = counter.0.load(Ordering::SeqCst);
        match poll_with(future.as_mut(), waker) {
            Poll::Ready(output) => return output,
            Poll::Pending => assert!(
                counter.0.load(Ordering::SeqCst) > woken_before,
                "pending without a wake-up to come: a lost wake-up"
            ),
        }
    }
    panic!("not ready after {n} polls");
}

// ---------------------------------------------------------------------------------------------
// Waiting acquire and spawn.
// ---------------------------------------------------------------------------------------------

/// A waiting acquire re-polled with another waker: the stale one is dropped; it owned the
/// permit the waiter was waiting for, so its drop grants the waiter, which must be woken
/// through the new waker.
#[test]
fn a_stale_waker_replaced_on_repoll_re_enters_the_pool() {
    within_bound("replace a stale waker (acquire)", || {
        let pool = Pool::builder().limit("g", 1).build();
        let blocking = pool.try_acquire(["g"]).unwrap();
        let mut waiter = Box::pin(pool.acquire(["g"]));
        let (old, marks) = task_waker(&pool, Some(blocking));
        assert_pending!(poll_with(waiter.as_mut(), &old));
        drop(old);
        assert!(!marks.dropped(), "the pool keeps the waker");

        let (new, counter) = counter();
        let permit = match poll_with(waiter.as_mut(), &new) {
            Poll::Ready(permit) => permit.unwrap(),
            Poll::Pending => {
                assert!(marks.dropped(), "the stale waker was dropped");
                ready_within(waiter.as_mut(), &new, &counter, 2).unwrap()
            }
        };
        assert!(marks.dropped());
        assert_eq!(pool.task_count(&"g"), 1);
        drop(permit);
        assert_eq!((pool.len(), pool.waiting_len()), (0, 0));
    });
}

/// The same with a waker whose drop only reads the pool (`len`), and a waiter that stays
/// waiting.
#[test]
fn a_stale_waker_that_reads_the_pool_on_drop() {
    within_bound("replace a stale waker that calls len()", || {
        let pool = Pool::builder().limit("g", 0).build();
        let mut waiter = Box::pin(pool.acquire(["g", "h"]));
        let (old, marks) = task_waker(&pool, None);
        assert_pending!(poll_with(waiter.as_mut(), &old));
        drop(old);
        let (new, counter) = counter();
        assert_pending!(poll_with(waiter.as_mut(), &new));
        assert!(marks.dropped(), "the stale waker was dropped");
        pool.set_limit("g", 1);
        assert_eq!(
            counter.0.load(Ordering::SeqCst),
            1,
            "the new waker is the one woken"
        );
        drop(assert_ready_ok!(poll_with(waiter.as_mut(), &new)));
        assert_eq!((pool.len(), pool.waiting_len()), (0, 0));
    });
}

/// A waiting spawn re-polled with another waker.
#[test]
fn a_stale_waker_replaced_on_repoll_of_a_waiting_spawn() {
    within_bound("replace a stale waker (spawn)", || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _entered = runtime.enter();
        let pool = Pool::builder().limit("g", 1).build();
        let blocking = pool.try_acquire(["g"]).unwrap();
        let mut job = Box::pin(pool.spawn(["g"], async { 5 }));
        let (old, marks) = task_waker(&pool, Some(blocking));
        assert_pending!(poll_with(job.as_mut(), &old));
        drop(old);
        let (new, counter) = counter();
        let handle = match poll_with(job.as_mut(), &new) {
            Poll::Ready(handle) => handle,
            Poll::Pending => ready_within(job.as_mut(), &new, &counter, 2),
        };
        let handle = match handle {
            Ok(handle) => handle,
            Err(_) => panic!("the pool is open"),
        };
        assert!(marks.dropped());
        assert_eq!(runtime.block_on(handle).unwrap(), 5);
        assert_eq!((pool.len(), pool.waiting_len()), (0, 0));
    });
}

/// Dropping a waiting acquire (cancel) drops its waker; the waker's permit is released, and
/// the reservation the waiter held is handed on to the next waiter.
#[test]
fn dropping_a_waiting_acquire_drops_its_waker_outside_the_lock() {
    within_bound("cancel a waiting acquire", || {
        let pool = Pool::builder().limit("g", 1).limit("h", 0).build();
        let side = pool.try_acquire(["side"]).unwrap();
        // Reserves g, queues on h.
        let mut waiter = Box::pin(pool.acquire(["g", "h"]));
        let (waker, marks) = task_waker(&pool, Some(side));
        assert_pending!(poll_with(waiter.as_mut(), &waker));
        drop(waker);
        let mut next = tokio_test::task::spawn(pool.acquire(["g"]));
        assert_pending!(next.poll());

        drop(waiter);
        assert!(marks.dropped(), "the waker was dropped with the future");
        assert_eq!(
            pool.task_count(&"side"),
            0,
            "the waker's permit was released"
        );
        assert!(next.is_woken(), "g's slot went on to the next waiter");
        drop(assert_ready_ok!(next.poll()));
        assert_eq!((pool.len(), pool.waiting_len()), (0, 0));
    });
}

/// Dropping a waiting spawn (cancel) drops its waker.
#[test]
fn dropping_a_waiting_spawn_drops_its_waker_outside_the_lock() {
    within_bound("cancel a waiting spawn", || {
        let pool = Pool::builder().limit("g", 0).build();
        let side = pool.try_acquire(["side"]).unwrap();
        let mut job = Box::pin(pool.spawn(["g"], async {}));
        let (waker, marks) = task_waker(&pool, Some(side));
        assert_pending!(poll_with(job.as_mut(), &waker));
        drop(waker);
        drop(job);
        assert!(marks.dropped());
        assert_eq!((pool.len(), pool.waiting_len()), (0, 0));
    });
}

/// `close` fails a waiting acquire: its waker is woken and (being the last handle) dropped,
/// which releases a permit and reads the pool.
#[test]
fn close_failing_a_waiting_acquire_wakes_and_drops_its_waker_outside_the_lock() {
    within_bound("close fails a waiter", || {
        let pool = Pool::builder().limit("g", 1).build();
        let blocking = pool.try_acquire(["g"]).unwrap();
        let side = pool.try_acquire(["side"]).unwrap();
        let mut waiter = Box::pin(pool.acquire(["g"]));
        let (waker, marks) = task_waker(&pool, Some(side));
        assert_pending!(poll_with(waiter.as_mut(), &waker));
        drop(waker);

        assert!(pool.close());
        assert_eq!(marks.woken(), 1, "the failed waiter was woken");
        assert!(marks.dropped(), "and its waker dropped");
        assert_eq!(pool.len(), 1, "the waker's permit was released");
        let (plain, _) = counter();
        assert_ready_err!(poll_with(waiter.as_mut(), &plain));
        drop(waiter);
        drop(blocking);
        let mut idle = tokio_test::task::spawn(pool.wait());
        assert_ready!(idle.poll());
    });
}

/// A waiter granted by a release: its waker is woken, then dropped (the pool held the last
/// handle); its drop releases a permit that grants a second waiter, whose waker re-enters
/// the pool as well.
#[test]
fn a_waiter_granted_by_a_release_wakes_and_drops_its_waker_outside_the_lock() {
    within_bound("a release grants a waiter", || {
        let pool = Pool::builder().limit("g", 1).limit("h", 1).build();
        let on_g = pool.try_acquire(["g"]).unwrap();
        let on_h = pool.try_acquire(["h"]).unwrap();
        let mut first = Box::pin(pool.acquire(["g"]));
        let (first_waker, first_marks) = task_waker(&pool, Some(on_h));
        assert_pending!(poll_with(first.as_mut(), &first_waker));
        drop(first_waker);
        let mut second = Box::pin(pool.acquire(["h"]));
        let (second_waker, second_marks) = task_waker(&pool, None);
        assert_pending!(poll_with(second.as_mut(), &second_waker));
        drop(second_waker);

        drop(on_g);
        assert_eq!(first_marks.woken(), 1);
        assert!(first_marks.dropped(), "woken, then dropped");
        assert_eq!(
            second_marks.woken(),
            1,
            "the released h went to the second waiter"
        );
        assert!(second_marks.dropped());
        let (plain, _) = counter();
        drop(assert_ready_ok!(poll_with(first.as_mut(), &plain)));
        drop(assert_ready_ok!(poll_with(second.as_mut(), &plain)));
        assert_eq!((pool.len(), pool.waiting_len()), (0, 0));
    });
}

/// A waiter granted by a raised limit: same as a release.
#[test]
fn a_waiter_granted_by_a_limit_change_wakes_and_drops_its_waker_outside_the_lock() {
    within_bound("a limit change grants a waiter", || {
        let pool = Pool::builder().limit("g", 0).build();
        let side = pool.try_acquire(["side"]).unwrap();
        let mut waiter = Box::pin(pool.acquire(["g"]));
        let (waker, marks) = task_waker(&pool, Some(side));
        assert_pending!(poll_with(waiter.as_mut(), &waker));
        drop(waker);
        pool.set_limit("g", 1);
        assert_eq!(marks.woken(), 1);
        assert!(marks.dropped());
        let (plain, _) = counter();
        drop(assert_ready_ok!(poll_with(waiter.as_mut(), &plain)));
        assert_eq!((pool.len(), pool.waiting_len()), (0, 0));
    });
}

// ---------------------------------------------------------------------------------------------
// wait() futures.
// ---------------------------------------------------------------------------------------------

/// A `wait` future re-polled with another waker drops the stale one.
#[test]
fn a_wait_future_repolled_with_a_new_waker_drops_the_old_one_outside_the_lock() {
    within_bound("re-poll a wait future", || {
        let pool = Pool::new();
        let permit = pool.try_acquire(["a"]).unwrap();
        let mut idle = Box::pin(pool.wait());
        let (old, marks) = task_waker(&pool, Some(permit));
        assert_pending!(poll_with(idle.as_mut(), &old));
        drop(old);
        let (new, counter) = counter();
        assert_pending!(poll_with(idle.as_mut(), &new), "the pool is open");
        assert!(marks.dropped(), "the stale waker was dropped");
        assert_eq!(pool.len(), 0, "its permit was released");
        pool.close();
        assert_eq!(
            counter.0.load(Ordering::SeqCst),
            1,
            "closing an empty pool wakes wait()"
        );
        assert_ready!(poll_with(idle.as_mut(), &new));
    });
}

/// A dropped `wait` future drops its waker.
#[test]
fn a_dropped_wait_future_drops_its_waker_outside_the_lock() {
    within_bound("drop a wait future", || {
        let pool = Pool::new();
        let permit = pool.try_acquire(["a"]).unwrap();
        let mut idle = Box::pin(pool.wait());
        let (waker, marks) = task_waker(&pool, Some(permit));
        assert_pending!(poll_with(idle.as_mut(), &waker));
        drop(waker);
        drop(idle);
        assert!(marks.dropped());
        assert_eq!(pool.len(), 0);
        pool.close();
        let mut idle = tokio_test::task::spawn(pool.wait());
        assert_ready!(idle.poll());
    });
}

/// A `wait` future fired by the last release of a closed pool: its waker is woken and dropped.
#[test]
fn a_wait_future_fired_by_the_last_release_wakes_and_drops_its_waker_outside_the_lock() {
    within_bound("the last release fires wait()", || {
        let pool = Pool::new();
        let permit = pool.try_acquire(["a"]).unwrap();
        let mut idle = Box::pin(pool.wait());
        let (waker, marks) = task_waker(&pool, None);
        assert_pending!(poll_with(idle.as_mut(), &waker));
        drop(waker);
        pool.close();
        drop(permit);
        assert_eq!(marks.woken(), 1);
        assert!(marks.dropped());
        let (plain, _) = counter();
        assert_ready!(poll_with(idle.as_mut(), &plain));
    });
}

// ---------------------------------------------------------------------------------------------
// A waker whose clone re-enters the pool (a hand-made RawWaker).
// ---------------------------------------------------------------------------------------------

/// The data of a hand-made waker: its `clone`, `wake` and `drop` all read the pool.
struct Probe {
    pool: Pool,
    clones: AtomicUsize,
    wakes: AtomicUsize,
}

static PROBE_VTABLE: RawWakerVTable =
    RawWakerVTable::new(probe_clone, probe_wake, probe_wake_by_ref, probe_drop);

unsafe fn probe_clone(data: *const ()) -> RawWaker {
    // SAFETY: `data` came from `Arc::into_raw` of an `Arc<Probe>` whose count this handle owns.
    let probe = ManuallyDrop::new(unsafe { Arc::from_raw(data.cast::<Probe>()) });
    probe.clones.fetch_add(1, Ordering::SeqCst);
    let _ = probe.pool.len();
    let copy = Arc::clone(&probe);
    RawWaker::new(Arc::into_raw(copy).cast(), &PROBE_VTABLE)
}

unsafe fn probe_wake(data: *const ()) {
    // SAFETY: as in `probe_clone`; this consumes the handle.
    let probe = unsafe { Arc::from_raw(data.cast::<Probe>()) };
    probe.wakes.fetch_add(1, Ordering::SeqCst);
    let _ = probe.pool.len();
}

unsafe fn probe_wake_by_ref(data: *const ()) {
    // SAFETY: as in `probe_clone`.
    let probe = ManuallyDrop::new(unsafe { Arc::from_raw(data.cast::<Probe>()) });
    probe.wakes.fetch_add(1, Ordering::SeqCst);
    let _ = probe.pool.len();
}

unsafe fn probe_drop(data: *const ()) {
    // SAFETY: as in `probe_clone`; this consumes the handle.
    let probe = unsafe { Arc::from_raw(data.cast::<Probe>()) };
    let _ = probe.pool.len();
}

fn probe_waker(pool: &Pool) -> (Waker, Arc<Probe>) {
    let probe = Arc::new(Probe {
        pool: pool.clone(),
        clones: AtomicUsize::new(0),
        wakes: AtomicUsize::new(0),
    });
    let raw = RawWaker::new(Arc::into_raw(Arc::clone(&probe)).cast(), &PROBE_VTABLE);
    // SAFETY: the vtable's functions keep the `Arc` count right and are thread safe.
    (unsafe { Waker::from_raw(raw) }, probe)
}

/// The pool clones the waker of a waiting future on its first poll and on a re-poll with a
/// different waker; the clone must not happen under the lock.
#[test]
fn a_waker_whose_clone_re_enters_the_pool() {
    within_bound("clone a waker that re-enters", || {
        let pool = Pool::builder().limit("g", 0).build();
        let mut waiter = Box::pin(pool.acquire(["g", "h"]));
        let (first, first_probe) = probe_waker(&pool);
        assert_pending!(poll_with(waiter.as_mut(), &first));
        assert!(
            first_probe.clones.load(Ordering::SeqCst) >= 1,
            "the pool kept a clone"
        );
        let (second, second_probe) = probe_waker(&pool);
        assert_pending!(poll_with(waiter.as_mut(), &second));
        assert!(second_probe.clones.load(Ordering::SeqCst) >= 1);
        drop(first);
        assert_eq!(
            Arc::strong_count(&first_probe),
            1,
            "the stale waker was dropped"
        );

        pool.set_limit("g", 1);
        assert_eq!(second_probe.wakes.load(Ordering::SeqCst), 1);
        drop(assert_ready_ok!(poll_with(waiter.as_mut(), &second)));
        drop(second);
        assert_eq!(Arc::strong_count(&second_probe), 1, "no waker leaked");

        // A wait() future too.
        let mut idle = Box::pin(pool.wait());
        let (third, third_probe) = probe_waker(&pool);
        assert_pending!(poll_with(idle.as_mut(), &third));
        pool.close();
        assert_eq!(third_probe.wakes.load(Ordering::SeqCst), 1);
        assert_ready!(poll_with(idle.as_mut(), &third));
        drop((idle, waiter, third));
        assert_eq!(Arc::strong_count(&third_probe), 1, "no waker leaked");
    });
}
