//! User code that panics must not corrupt the pool: a key's `Clone`, `Eq`, `Hash` or `Drop`,
//! a waker's `clone` or `wake`. A key's or the caller's own waker's panic may fail the call it
//! happens in (it reaches the caller); another waiter's panicking `wake` does not (the other
//! wakers are still woken). Either way nothing is counted, queued or leaked, and no wake-up is
//! lost.

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Wake, Waker};
use std::time::Duration;

use taskherd::TaskPool;
use tokio_test::task::spawn as mock;
use tokio_test::{assert_pending, assert_ready, assert_ready_err, assert_ready_ok};

/// A key that panics when cloned while its switch is on. Equality and hashing use `id` only.
#[derive(Debug)]
struct Key {
    id: u32,
    panics: Arc<AtomicBool>,
}

impl Key {
    fn new(id: u32, panics: &Arc<AtomicBool>) -> Self {
        Self {
            id,
            panics: Arc::clone(panics),
        }
    }
}

impl Clone for Key {
    fn clone(&self) -> Self {
        assert!(
            !self.panics.load(Ordering::SeqCst),
            "Key::clone panics on purpose"
        );
        Self::new(self.id, &self.panics)
    }
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

#[tokio::test]
async fn a_clone_panic_during_try_acquire_counts_nothing() {
    let panics = Arc::new(AtomicBool::new(false));
    let pool: TaskPool<Key> = TaskPool::new();
    panics.store(true, Ordering::SeqCst);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        pool.try_acquire([Key::new(7, &panics)]).is_ok()
    }));
    panics.store(false, Ordering::SeqCst);
    assert!(outcome.is_err(), "the panic reaches the caller");
    assert_eq!(pool.len(), 0, "nothing is counted");
    assert_eq!(pool.task_count(&Key::new(7, &panics)), 0);
    pool.close();
    tokio::time::timeout(Duration::from_secs(10), pool.wait())
        .await
        .expect("nothing holds the closed pool open");
}

#[tokio::test]
async fn a_clone_panic_while_a_waiter_queues_leaves_no_waiter_behind() {
    let panics = Arc::new(AtomicBool::new(false));
    let full = Key::new(1, &panics);
    let pool: TaskPool<Key> = TaskPool::builder()
        .max_tasks(2)
        .limit(full.clone(), 0)
        .build();
    // `full` refuses, so the waiter queues, and the never-seen key 2 needs a new entry.
    panics.store(true, Ordering::SeqCst);
    let mut waiter = tokio_test::task::spawn(pool.acquire([full, Key::new(2, &panics)]));
    let outcome = catch_unwind(AssertUnwindSafe(|| waiter.poll()));
    panics.store(false, Ordering::SeqCst);
    assert!(outcome.is_err(), "the panic reaches the caller");
    drop(waiter);

    assert_eq!(pool.waiting_len(), 0, "no dead waiter stays queued");
    let _first = pool.try_acquire([]).expect("both total slots are free");
    let _second = pool.try_acquire([]).expect("both total slots are free");
    assert!(
        pool.close(),
        "closing does not trip over a half-made waiter"
    );
}

// ---------------------------------------------------------------------------------------------
// Issue 9, item 3: panics in a key's Eq, Hash and Drop, and in a waker's clone and wake. A
// panic may fail the call it happens in (it reaches the caller), but never leaks a slot, loses
// a wake-up, or leaves a waiter that nobody owns. Every waiting future is driven by hand.
// ---------------------------------------------------------------------------------------------

/// Switches shared by every copy of a [`Touchy`] key. Each is off at 0.
#[derive(Default)]
struct Switches {
    /// `n > 0`: the n-th call of `eq` from now panics (any key).
    eq_countdown: AtomicUsize,
    /// `n > 0`: the n-th call of `hash` from now panics (any key).
    hash_countdown: AtomicUsize,
    /// `id > 0`: the next drop of a key with this id panics (once).
    drop_panics: AtomicU32,
    /// Calls of `eq` and `hash`, to see that the switches were reached at all.
    eq_calls: AtomicUsize,
    hash_calls: AtomicUsize,
}

impl Switches {
    /// Counts down `counter`; `true` if this call is the one that must panic.
    fn fire(counter: &AtomicUsize) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok_and(|n| n == 1)
    }

    fn arm_eq(&self, n: usize) {
        self.eq_countdown.store(n, Ordering::SeqCst);
    }

    fn arm_hash(&self, n: usize) {
        self.hash_countdown.store(n, Ordering::SeqCst);
    }

    fn arm_drop(&self, id: u32) {
        self.drop_panics.store(id, Ordering::SeqCst);
    }

    fn disarm(&self) {
        self.eq_countdown.store(0, Ordering::SeqCst);
        self.hash_countdown.store(0, Ordering::SeqCst);
        self.drop_panics.store(0, Ordering::SeqCst);
    }
}

/// A key whose `Eq`, `Hash` and `Drop` panic when its [`Switches`] say so. Equality and
/// hashing use `id` only.
struct Touchy {
    id: u32,
    switches: Arc<Switches>,
}

impl Touchy {
    fn new(id: u32, switches: &Arc<Switches>) -> Self {
        Self {
            id,
            switches: Arc::clone(switches),
        }
    }
}

impl std::fmt::Debug for Touchy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Touchy({})", self.id)
    }
}

impl Clone for Touchy {
    fn clone(&self) -> Self {
        Self::new(self.id, &self.switches)
    }
}

impl PartialEq for Touchy {
    fn eq(&self, other: &Self) -> bool {
        self.switches.eq_calls.fetch_add(1, Ordering::SeqCst);
        if !std::thread::panicking() && Switches::fire(&self.switches.eq_countdown) {
            panic!("Touchy::eq panics on purpose");
        }
        self.id == other.id
    }
}

impl Eq for Touchy {}

impl Hash for Touchy {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.switches.hash_calls.fetch_add(1, Ordering::SeqCst);
        if !std::thread::panicking() && Switches::fire(&self.switches.hash_countdown) {
            panic!("Touchy::hash panics on purpose");
        }
        self.id.hash(state);
    }
}

impl Drop for Touchy {
    fn drop(&mut self) {
        // Panics once, and never while unwinding (that would abort the test binary).
        if !std::thread::panicking()
            && self
                .switches
                .drop_panics
                .compare_exchange(self.id, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            panic!("Touchy::drop panics on purpose");
        }
    }
}

type TouchyPool = TaskPool<Touchy>;

/// Runs `f`; `true` if it panicked. The panic message is printed by the default hook, which
/// is fine: it shows where the panic was raised.
fn panicked<R>(f: impl FnOnce() -> R) -> bool {
    catch_unwind(AssertUnwindSafe(f)).is_err()
}

/// Nothing is counted or queued, every group in `keys` admits a permit in all of them at once,
/// and closing resolves `wait`.
#[track_caller]
fn nothing_left_behind(pool: &TouchyPool, keys: &[Touchy]) {
    for key in keys {
        let stats = pool.stats(key);
        assert_eq!(
            (stats.running, stats.waiting),
            (0, 0),
            "group {key:?}: (running, waiting)"
        );
    }
    assert_eq!(pool.len(), 0, "len()");
    assert_eq!(
        pool.waiting_len(),
        0,
        "waiting_len(): no waiter nobody owns"
    );
    let permit = pool
        .try_acquire(keys.to_vec())
        .expect("every slot is free again");
    drop(permit);
    assert!(pool.close());
    let mut idle = mock(pool.wait());
    assert_ready!(idle.poll(), "nothing holds the closed pool open");
}

/// A key's `Eq` panics at each of its calls in turn while a waiter is polled for the first
/// time (it finds room in two groups and queues on a third, behind an older waiter): the
/// panic reaches the caller, and once the future is dropped nothing is left of it.
#[test]
fn an_eq_panic_while_a_waiter_queues_leaves_nothing_behind() {
    for n in 1..=200 {
        let switches = Arc::new(Switches::default());
        let key = |id| Touchy::new(id, &switches);
        let pool: TouchyPool = TaskPool::builder()
            .limit(key(1), 1)
            .limit(key(2), 2)
            .limit(key(3), 1)
            .build();
        let full = pool.try_acquire([key(3)]).unwrap();
        let mut older = mock(pool.acquire([key(3)]));
        assert_pending!(older.poll());
        let mut waiter = mock(pool.acquire([key(1), key(2), key(3), key(4)]));

        switches.arm_eq(n);
        let panic = panicked(|| waiter.poll());
        let fired = switches.eq_countdown.load(Ordering::SeqCst) == 0;
        switches.disarm();
        if !fired {
            // `n` is past the last call of `eq`: the waiter queued normally.
            assert!(!panic);
            assert!(n > 1, "Eq is called while a waiter queues");
            drop(waiter);
            drop(full);
            drop(assert_ready_ok!(older.poll()));
            nothing_left_behind(&pool, &[key(1), key(2), key(3), key(4)]);
            return;
        }
        assert!(
            panic,
            "call {n} of eq panicked: the panic reaches the caller"
        );
        drop(waiter);
        assert_eq!(
            pool.waiting_len(),
            1,
            "call {n}: only the older waiter waits"
        );
        for id in [1, 2, 4] {
            let stats = pool.stats(&key(id));
            assert_eq!(
                (stats.running, stats.waiting),
                (0, 0),
                "call {n}: group {id} keeps nothing of the dropped waiter"
            );
        }
        // The slot of group 3 goes to the older waiter, not to a ghost.
        drop(full);
        assert!(older.is_woken(), "call {n}");
        drop(assert_ready_ok!(older.poll()));
        nothing_left_behind(&pool, &[key(1), key(2), key(3), key(4)]);
    }
    panic!("eq was called more than 200 times for one waiter");
}

/// A key's `Hash` panics at each of its calls in turn while a permit is tried, and while a
/// waiting acquire is made and polled: nothing is counted.
#[test]
fn a_hash_panic_counts_nothing() {
    let switches = Arc::new(Switches::default());
    let key = |id| Touchy::new(id, &switches);
    let pool: TouchyPool = TaskPool::builder().limit(key(3), 0).build();

    for n in 1.. {
        switches.arm_hash(n);
        let panic = panicked(|| pool.try_acquire([key(1), key(2)]).map(drop));
        let fired = switches.hash_countdown.load(Ordering::SeqCst) == 0;
        switches.disarm();
        if !fired {
            assert!(!panic && n > 1);
            break;
        }
        assert!(
            panic,
            "try_acquire, call {n} of hash: the panic reaches the caller"
        );
        assert_eq!(
            (pool.len(), pool.waiting_len()),
            (0, 0),
            "try_acquire, call {n}"
        );
    }

    for n in 1.. {
        switches.arm_hash(n);
        let mut made = None;
        let panic = panicked(|| {
            let mut waiter = mock(pool.acquire([key(1), key(2), key(3)]));
            let poll = waiter.poll().is_pending();
            made = Some(waiter);
            poll
        });
        let fired = switches.hash_countdown.load(Ordering::SeqCst) == 0;
        switches.disarm();
        if !fired {
            assert!(!panic && n > 1);
            assert_eq!(pool.waiting_len(), 1, "the last one queued normally");
            drop(made);
            break;
        }
        assert!(
            panic,
            "acquire, call {n} of hash: the panic reaches the caller"
        );
        drop(made);
        assert_eq!(
            (pool.len(), pool.waiting_len()),
            (0, 0),
            "acquire, call {n}"
        );
    }

    // set_limit with a panicking hash changes nothing.
    switches.arm_hash(1);
    assert!(panicked(|| pool.set_limit(key(1), 0)));
    switches.disarm();
    assert_eq!(pool.limit(&key(1)), None);
    assert_eq!(pool.limit(&key(3)), Some(0));
    pool.clear_limit(&key(3));
    nothing_left_behind(&pool, &[key(1), key(2), key(3)]);
}

/// A key's `Drop` panics during a release that grants a waiter (the released permit's group
/// entry goes away and drops its key): the granted waiter is still woken and granted.
#[test]
fn a_key_drop_panic_during_a_release_still_wakes_the_granted_waiter() {
    let switches = Arc::new(Switches::default());
    let key = |id| Touchy::new(id, &switches);
    let pool: TouchyPool = TaskPool::builder().limit(key(1), 1).build();
    // Group 2 has no explicit limit: its entry goes away when the permit is released.
    let permit = pool.try_acquire([key(1), key(2)]).unwrap();
    let mut waiter = mock(pool.acquire([key(1)]));
    assert_pending!(waiter.poll());

    switches.arm_drop(2);
    let panic = panicked(|| drop(permit));
    let fired = switches.drop_panics.load(Ordering::SeqCst) == 0;
    switches.disarm();
    assert!(
        fired && panic,
        "a key was dropped by the release, and its panic reached the caller"
    );
    assert!(waiter.is_woken(), "the granted waiter is woken");
    let granted = assert_ready_ok!(waiter.poll());
    assert_eq!(pool.task_count(&key(1)), 1);
    assert_eq!(pool.task_count(&key(2)), 0, "the permit was released");
    assert_eq!(pool.len(), 1);
    drop(granted);
    pool.clear_limit(&key(1));
    nothing_left_behind(&pool, &[key(1), key(2)]);
}

/// A key's `Drop` panics while a dropped waiter gives back its reservation: the next waiter
/// still gets the slot and is woken.
#[test]
fn a_key_drop_panic_during_a_cancel_still_wakes_the_next_waiter() {
    let switches = Arc::new(Switches::default());
    let key = |id| Touchy::new(id, &switches);
    let pool: TouchyPool = TaskPool::builder()
        .limit(key(1), 1)
        .limit(key(2), 0)
        .build();
    // Reserves 1, queues on 2.
    let mut first = mock(pool.acquire([key(1), key(2)]));
    assert_pending!(first.poll());
    let mut second = mock(pool.acquire([key(1)]));
    assert_pending!(second.poll());

    switches.arm_drop(2);
    let _ = panicked(|| drop(first));
    switches.disarm();
    assert!(
        second.is_woken(),
        "the slot went on to the next waiter, which was woken"
    );
    let granted = assert_ready_ok!(second.poll());
    assert_eq!(pool.waiting_len(), 0);
    drop(granted);
    pool.clear_limit(&key(1));
    pool.clear_limit(&key(2));
    nothing_left_behind(&pool, &[key(1), key(2)]);
}

/// A key's `Drop` panics in `close` (the failed waiter's group is left empty, and its entry's
/// key is dropped): the panic reaches the caller of `close`, as its `# Panics` says, and the
/// pool is closed all the same, every waiter woken and failed, nothing left behind.
#[test]
fn a_key_drop_panic_in_close_still_fails_and_wakes_every_waiter() {
    let switches = Arc::new(Switches::default());
    let key = |id| Touchy::new(id, &switches);
    let pool: TouchyPool = TaskPool::builder().max_tasks(0).build();
    // Group 2 has no explicit limit: its entry exists for the waiters, and goes with them.
    let mut first = mock(pool.acquire([key(2)]));
    assert_pending!(first.poll());
    let mut second = mock(pool.acquire([key(1), key(2)]));
    assert_pending!(second.poll());

    switches.arm_drop(2);
    let panic = panicked(|| pool.close());
    let fired = switches.drop_panics.load(Ordering::SeqCst) == 0;
    switches.disarm();
    assert!(
        fired && panic,
        "close dropped a key, and its panic reached the caller"
    );
    assert!(pool.is_closed());
    assert!(
        first.is_woken() && second.is_woken(),
        "every waiter is woken"
    );
    assert!(assert_ready_err!(first.poll()).is_closed());
    assert!(assert_ready_err!(second.poll()).is_closed());
    assert_eq!(pool.waiting_len(), 0);
    pool.reopen();
    pool.set_max_tasks(None);
    nothing_left_behind(&pool, &[key(1), key(2)]);
}

/// The key passed to `set_limit` panics when dropped, while the raised limit grants a waiter:
/// the waiter is still woken and granted, and the limit is set.
#[test]
fn a_key_drop_panic_in_set_limit_still_wakes_the_granted_waiter() {
    let switches = Arc::new(Switches::default());
    let key = |id| Touchy::new(id, &switches);
    let pool: TouchyPool = TaskPool::builder().limit(key(1), 0).build();
    let mut waiter = mock(pool.acquire([key(1)]));
    assert_pending!(waiter.poll());

    let new_limit = key(1);
    switches.arm_drop(1);
    let _ = panicked(|| pool.set_limit(new_limit, 1));
    switches.disarm();
    assert_eq!(pool.limit(&key(1)), Some(1));
    assert!(waiter.is_woken(), "the granted waiter is woken");
    drop(assert_ready_ok!(waiter.poll()));
    pool.clear_limit(&key(1));
    nothing_left_behind(&pool, &[key(1)]);
}

// Wakers that panic.

/// The data of a hand-made waker whose `clone` or `wake` panic while switched on.
#[derive(Default)]
struct Fragile {
    clone_panics: AtomicBool,
    wake_panics: AtomicBool,
    /// The next drop of a handle panics (once).
    drop_panics: AtomicBool,
    wakes: AtomicUsize,
}

static FRAGILE_VTABLE: RawWakerVTable = RawWakerVTable::new(
    fragile_clone,
    fragile_wake,
    fragile_wake_by_ref,
    fragile_drop,
);

unsafe fn fragile_clone(data: *const ()) -> RawWaker {
    // SAFETY: `data` came from `Arc::into_raw` of an `Arc<Fragile>` whose count this handle
    // owns; the handle is borrowed here.
    let fragile = std::mem::ManuallyDrop::new(unsafe { Arc::from_raw(data.cast::<Fragile>()) });
    assert!(
        !fragile.clone_panics.load(Ordering::SeqCst),
        "Waker::clone panics on purpose"
    );
    RawWaker::new(Arc::into_raw(Arc::clone(&fragile)).cast(), &FRAGILE_VTABLE)
}

unsafe fn fragile_wake(data: *const ()) {
    // SAFETY: as in `fragile_clone`; this consumes the handle (also when it panics).
    let fragile = unsafe { Arc::from_raw(data.cast::<Fragile>()) };
    fragile.wakes.fetch_add(1, Ordering::SeqCst);
    assert!(
        !fragile.wake_panics.load(Ordering::SeqCst),
        "Waker::wake panics on purpose"
    );
}

unsafe fn fragile_wake_by_ref(data: *const ()) {
    // SAFETY: as in `fragile_clone`.
    let fragile = std::mem::ManuallyDrop::new(unsafe { Arc::from_raw(data.cast::<Fragile>()) });
    fragile.wakes.fetch_add(1, Ordering::SeqCst);
    assert!(
        !fragile.wake_panics.load(Ordering::SeqCst),
        "Waker::wake panics on purpose"
    );
}

unsafe fn fragile_drop(data: *const ()) {
    // SAFETY: as in `fragile_clone`; this consumes the handle (also when it panics).
    let fragile = unsafe { Arc::from_raw(data.cast::<Fragile>()) };
    if !std::thread::panicking() && fragile.drop_panics.swap(false, Ordering::SeqCst) {
        panic!("Waker::drop panics on purpose");
    }
}

fn fragile_waker() -> (Waker, Arc<Fragile>) {
    let fragile = Arc::new(Fragile::default());
    let raw = RawWaker::new(Arc::into_raw(Arc::clone(&fragile)).cast(), &FRAGILE_VTABLE);
    // SAFETY: the vtable keeps the `Arc` count right and is thread safe.
    (unsafe { Waker::from_raw(raw) }, fragile)
}

fn poll_with<F: Future + ?Sized>(future: Pin<&mut F>, waker: &Waker) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(waker))
}

/// A plain waker that counts its wake-ups.
#[derive(Default)]
struct Counter(AtomicUsize);

impl Wake for Counter {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

type StrPool = TaskPool<&'static str>;

/// Nothing is counted or waiting in `keys`, every slot is free, closing resolves `wait`.
#[track_caller]
fn str_pool_is_clean(pool: &StrPool, keys: &[&'static str]) {
    for key in keys {
        let stats = pool.stats(key);
        assert_eq!((stats.running, stats.waiting), (0, 0), "group {key:?}");
    }
    assert_eq!(
        (pool.len(), pool.waiting_len()),
        (0, 0),
        "(len, waiting_len)"
    );
    drop(
        pool.try_acquire(keys.to_vec())
            .expect("every slot is free again"),
    );
    assert!(pool.close());
    let mut idle = mock(pool.wait());
    assert_ready!(idle.poll());
}

/// A waker whose `clone` panics on a waiting future's first poll (it reserves h and would
/// queue on g): the panic reaches the caller; nothing is left once the future is dropped.
#[test]
fn a_waker_clone_panic_on_the_first_poll_leaks_nothing() {
    let pool = StrPool::builder().limit("g", 1).limit("h", 1).build();
    let held = pool.try_acquire(["g"]).unwrap();
    let mut waiter = Box::pin(pool.acquire(["h", "g"]));
    let (waker, fragile) = fragile_waker();
    fragile.clone_panics.store(true, Ordering::SeqCst);
    assert!(
        panicked(|| poll_with(waiter.as_mut(), &waker).is_pending()),
        "the panic reaches the caller"
    );
    fragile.clone_panics.store(false, Ordering::SeqCst);
    drop(waiter);
    assert_eq!(pool.waiting_len(), 0);
    assert_eq!(pool.stats(&"h").waiting, 0);
    drop(held);
    drop(waker);
    assert_eq!(
        Arc::strong_count(&fragile),
        1,
        "no clone of the waker is kept"
    );
    str_pool_is_clean(&pool, &["g", "h"]);
}

/// A waker whose `clone` panics when a waiting future (holding a reservation in h, queued on
/// g) is re-polled with it: nothing is left once the future is dropped, and g's slot goes to
/// the next waiter, not to the abandoned one.
#[test]
fn a_waker_clone_panic_on_a_repoll_leaks_nothing() {
    let pool = StrPool::builder().limit("g", 1).limit("h", 1).build();
    let held = pool.try_acquire(["g"]).unwrap();
    let mut waiter = Box::pin(pool.acquire(["h", "g"]));
    let counter = Arc::new(Counter::default());
    let plain = Waker::from(Arc::clone(&counter));
    assert_pending!(poll_with(waiter.as_mut(), &plain));
    assert_eq!(pool.stats(&"h").waiting, 1);
    let mut next = mock(pool.acquire(["g"]));
    assert_pending!(next.poll());

    let (waker, fragile) = fragile_waker();
    fragile.clone_panics.store(true, Ordering::SeqCst);
    assert!(
        panicked(|| poll_with(waiter.as_mut(), &waker).is_pending()),
        "the panic reaches the caller"
    );
    fragile.clone_panics.store(false, Ordering::SeqCst);
    drop(waiter);
    assert_eq!(pool.waiting_len(), 1, "only the next waiter waits");
    assert_eq!(
        pool.stats(&"h").waiting,
        0,
        "h's reservation was given back"
    );
    assert!(pool.try_acquire(["h"]).is_ok_and(|p| {
        drop(p);
        true
    }));

    drop(held);
    assert!(next.is_woken(), "g's slot goes to the next waiter");
    drop(assert_ready_ok!(next.poll()));
    drop(waker);
    assert_eq!(
        Arc::strong_count(&fragile),
        1,
        "no clone of the waker is kept"
    );
    str_pool_is_clean(&pool, &["g", "h"]);
}

/// One release grants two waiters; the `wake` of one of them panics. The other is still woken
/// (whichever the pool wakes first), both are granted, and the panic does not fail the release
/// (another waiter's waker is not the releasing caller's fault; the panic hook reports it).
#[test]
fn a_panicking_wake_does_not_stop_the_other_wake_ups() {
    for panicking_first in [true, false] {
        let pool = StrPool::builder().limit("a", 1).limit("b", 1).build();
        let both = pool.try_acquire(["a", "b"]).unwrap();
        let mut first = Box::pin(pool.acquire(["a"]));
        let mut second = Box::pin(pool.acquire(["b"]));
        let (fragile_waker, fragile) = fragile_waker();
        let counter = Arc::new(Counter::default());
        let plain = Waker::from(Arc::clone(&counter));
        let (first_waker, second_waker) = if panicking_first {
            (&fragile_waker, &plain)
        } else {
            (&plain, &fragile_waker)
        };
        assert_pending!(poll_with(first.as_mut(), first_waker));
        assert_pending!(poll_with(second.as_mut(), second_waker));

        fragile.wake_panics.store(true, Ordering::SeqCst);
        let panic = panicked(|| drop(both));
        fragile.wake_panics.store(false, Ordering::SeqCst);
        assert!(
            !panic,
            "panicking_first: {panicking_first}: another waiter's panic does not fail the release"
        );
        assert_eq!(
            fragile.wakes.load(Ordering::SeqCst),
            1,
            "panicking_first: {panicking_first}"
        );
        assert_eq!(
            counter.0.load(Ordering::SeqCst),
            1,
            "panicking_first: {panicking_first}: the other waiter is still woken"
        );
        drop(assert_ready_ok!(poll_with(first.as_mut(), &plain)));
        drop(assert_ready_ok!(poll_with(second.as_mut(), &plain)));
        drop((first, second, fragile_waker));
        assert_eq!(
            Arc::strong_count(&fragile),
            1,
            "no clone of the waker is kept"
        );
        str_pool_is_clean(&pool, &["a", "b"]);
    }
}

/// `close` fails two waiters; the `wake` of one panics: the other is still woken, and `close`
/// does not fail.
#[test]
fn a_panicking_wake_in_close_does_not_stop_the_other_wake_ups() {
    for panicking_first in [true, false] {
        let pool = StrPool::builder().limit("a", 0).build();
        let mut first = Box::pin(pool.acquire(["a"]));
        let mut second = Box::pin(pool.acquire(["a"]));
        let (fragile_waker, fragile) = fragile_waker();
        let counter = Arc::new(Counter::default());
        let plain = Waker::from(Arc::clone(&counter));
        let (first_waker, second_waker) = if panicking_first {
            (&fragile_waker, &plain)
        } else {
            (&plain, &fragile_waker)
        };
        assert_pending!(poll_with(first.as_mut(), first_waker));
        assert_pending!(poll_with(second.as_mut(), second_waker));

        fragile.wake_panics.store(true, Ordering::SeqCst);
        let panic = panicked(|| pool.close());
        fragile.wake_panics.store(false, Ordering::SeqCst);
        assert!(
            !panic,
            "panicking_first: {panicking_first}: another waiter's panic does not fail close"
        );
        assert!(pool.is_closed());
        assert_eq!(
            counter.0.load(Ordering::SeqCst),
            1,
            "panicking_first: {panicking_first}: the other waiter is still woken"
        );
        assert_ready_err!(poll_with(first.as_mut(), &plain));
        assert_ready_err!(poll_with(second.as_mut(), &plain));
        assert_eq!((pool.len(), pool.waiting_len()), (0, 0));
        let mut idle = mock(pool.wait());
        assert_ready!(idle.poll());
    }
}

/// A waker whose drop panics when the pool replaces it (a re-poll with another waker) while
/// the future holds a reservation in g and queues on h. The panic reaches the caller; the
/// future still owns its place in the queues (it can be polled again: the new waker is the
/// one kept), and once dropped its reservation goes on to the next waiter, which is woken.
#[test]
fn a_waker_drop_panic_on_a_repoll_loses_nothing() {
    let pool = StrPool::builder().limit("g", 1).limit("h", 0).build();
    let mut waiter = Box::pin(pool.acquire(["g", "h"]));
    let (waker, fragile) = fragile_waker();
    assert_pending!(poll_with(waiter.as_mut(), &waker));
    drop(waker);
    let mut next = mock(pool.acquire(["g"]));
    assert_pending!(next.poll());
    let counter = Arc::new(Counter::default());
    let plain = Waker::from(Arc::clone(&counter));

    fragile.drop_panics.store(true, Ordering::SeqCst);
    let panic = panicked(|| poll_with(waiter.as_mut(), &plain).is_pending());
    assert!(
        !fragile.drop_panics.load(Ordering::SeqCst),
        "the stale waker was dropped"
    );
    assert!(panic, "the panic reaches the caller");
    assert_eq!(
        Arc::strong_count(&fragile),
        1,
        "no clone of the stale waker is kept"
    );
    // The waiter is still queued, owned by its future, and woken through the waker it was
    // last polled with.
    assert_eq!(pool.waiting_len(), 2);
    assert_eq!(pool.stats(&"h").waiting, 1);
    assert_pending!(poll_with(waiter.as_mut(), &plain));
    pool.set_limit("h", 1);
    assert_eq!(
        counter.0.load(Ordering::SeqCst),
        1,
        "woken through the new waker"
    );
    drop(assert_ready_ok!(poll_with(waiter.as_mut(), &plain)));
    // Its g went on to the next waiter, which was woken.
    assert_eq!(pool.waiting_len(), 0, "no waiter nobody owns");
    assert!(
        next.is_woken(),
        "g's slot went on to the next waiter, which was woken"
    );
    drop(assert_ready_ok!(next.poll()));
    drop(waiter);
    pool.clear_limit(&"h");
    str_pool_is_clean(&pool, &["g", "h"]);
}

/// A waker whose drop panics when its waiting future is dropped (cancel) while the future holds
/// a reservation: the reservation still goes to the next waiter, which is woken.
#[test]
fn a_waker_drop_panic_on_cancel_loses_no_wake_up() {
    let pool = StrPool::builder().limit("g", 1).limit("h", 0).build();
    // Reserves g, queues on h.
    let mut waiter = Box::pin(pool.acquire(["g", "h"]));
    let (waker, fragile) = fragile_waker();
    assert_pending!(poll_with(waiter.as_mut(), &waker));
    drop(waker);
    let mut next = mock(pool.acquire(["g"]));
    assert_pending!(next.poll());

    fragile.drop_panics.store(true, Ordering::SeqCst);
    let _ = panicked(|| drop(waiter));
    assert!(
        !fragile.drop_panics.load(Ordering::SeqCst),
        "the waker was dropped"
    );
    assert_eq!(Arc::strong_count(&fragile), 1);
    assert!(
        next.is_woken(),
        "g's slot went on to the next waiter, which was woken"
    );
    drop(assert_ready_ok!(next.poll()));
    pool.clear_limit(&"h");
    str_pool_is_clean(&pool, &["g", "h"]);
}

/// `Eq` panics at each of its calls in turn while `set_limits` applies a batch that lowers one
/// group (taking a reservation back) and raises another: whatever part was applied, the pool
/// stays consistent: clearing the limits afterwards grants every waiter, and nothing leaks.
#[test]
fn an_eq_panic_while_applying_a_batch_leaves_the_pool_consistent() {
    for n in 1..=200 {
        let switches = Arc::new(Switches::default());
        let key = |id| Touchy::new(id, &switches);
        let pool: TouchyPool = TaskPool::builder()
            .limit(key(1), 2)
            .limit(key(2), 1)
            .limit(key(3), 0)
            .build();
        let held = pool.try_acquire([key(1), key(2)]).unwrap();
        // Reserves 1, queues on 2.
        let mut first = mock(pool.acquire([key(1), key(2)]));
        assert_pending!(first.poll());
        let mut second = mock(pool.acquire([key(3)]));
        assert_pending!(second.poll());

        switches.arm_eq(n);
        let panic = panicked(|| {
            pool.set_limits(
                taskherd::LimitChanges::new()
                    .limit(key(1), 0)
                    .limit(key(3), 1)
                    .limit(key(4), 7),
            )
        });
        let fired = switches.eq_countdown.load(Ordering::SeqCst) == 0;
        switches.disarm();
        assert_eq!(panic, fired, "call {n}");
        if !fired {
            assert!(n > 1, "Eq is called while a batch is applied");
            assert_eq!(pool.limit(&key(1)), Some(0));
            assert_eq!(pool.limit(&key(4)), Some(7));
            assert!(second.is_woken(), "3 was raised");
        }
        for id in 1..=4 {
            let stats = pool.stats(&key(id));
            if let Some(limit) = stats.limit {
                if stats.reserved > 0 {
                    assert!(
                        stats.running + stats.reserved <= limit,
                        "call {n}: {id}: {stats:?}"
                    );
                }
                if stats.waiting > stats.reserved {
                    assert!(
                        stats.running + stats.reserved >= limit,
                        "call {n}: {id}: {stats:?}"
                    );
                }
            }
        }

        drop(held);
        pool.set_limits(
            taskherd::LimitChanges::new()
                .clear_limit(key(1))
                .clear_limit(key(2))
                .clear_limit(key(3))
                .clear_limit(key(4)),
        );
        drop(assert_ready_ok!(first.poll()));
        drop(assert_ready_ok!(second.poll()));
        nothing_left_behind(&pool, &[key(1), key(2), key(3), key(4)]);
        if !fired {
            return;
        }
    }
    panic!("eq was called more than 200 times for one batch");
}

/// A key whose `Eq` panics when armed and whose `Drop`, once the pool is set, checks from
/// another thread that the pool's lock is free (it is never taken twice by one thread: a drop
/// under the lock that reached the pool would deadlock).
struct Probe {
    id: u32,
    probe: Arc<ProbeState>,
}

#[derive(Default)]
struct ProbeState {
    eq_panics: AtomicBool,
    pool: std::sync::OnceLock<TaskPool<Probe>>,
    dropped_under_lock: AtomicUsize,
}

impl PartialEq for Probe {
    fn eq(&self, other: &Self) -> bool {
        assert!(
            !self.probe.eq_panics.load(Ordering::SeqCst),
            "Probe::eq panics on purpose"
        );
        self.id == other.id
    }
}

impl Eq for Probe {}

impl Hash for Probe {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

impl Clone for Probe {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            probe: Arc::clone(&self.probe),
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let Some(pool) = self.probe.pool.get() else {
            return;
        };
        let pool = pool.clone();
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = pool.len();
            let _ = done.send(());
        });
        if finished.recv_timeout(Duration::from_secs(2)).is_err() {
            self.probe.dropped_under_lock.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Invariant 8: when `Eq` panics while a batch is applied, the batch's keys are dropped after
/// the lock is released, not while unwinding under it.
#[test]
fn a_batch_whose_eq_panics_drops_its_keys_after_unlocking() {
    let probe = Arc::new(ProbeState::default());
    let key = |id| Probe {
        id,
        probe: Arc::clone(&probe),
    };
    let pool = TaskPool::builder().limit(key(1), 2).build();
    assert!(probe.pool.set(pool.clone()).is_ok());
    probe.eq_panics.store(true, Ordering::SeqCst);
    // Key 1 has an entry: looking it up compares keys, and the comparison panics.
    let panic = panicked(|| {
        pool.set_limits(
            taskherd::LimitChanges::new()
                .limit(key(2), 5)
                .limit(key(1), 3),
        )
    });
    probe.eq_panics.store(false, Ordering::SeqCst);
    assert!(panic, "Eq panicked in a lookup");
    assert_eq!(
        probe.dropped_under_lock.load(Ordering::SeqCst),
        0,
        "a key of the batch was dropped while the pool's lock was held"
    );
    assert_eq!(pool.limit(&key(1)), Some(2), "nothing of the batch applied");
    assert_eq!(pool.limit(&key(2)), None);
    // The pool inside the probe state refers to itself through its keys: break the cycle.
    pool.clear_limit(&key(1));
}

/// `Hash` panics at each of its calls in turn while a batch is made and applied: nothing of the
/// batch is applied (keys are hashed before anything changes).
#[test]
fn a_hash_panic_in_a_batch_applies_nothing() {
    let switches = Arc::new(Switches::default());
    let key = |id| Touchy::new(id, &switches);
    let pool: TouchyPool = TaskPool::builder().limit(key(1), 1).build();
    for n in 1.. {
        switches.arm_hash(n);
        let panic = panicked(|| {
            pool.set_limits(
                taskherd::LimitChanges::new()
                    .max_tasks(3)
                    .limit(key(1), 5)
                    .limit(key(2), 2),
            )
        });
        let fired = switches.hash_countdown.load(Ordering::SeqCst) == 0;
        switches.disarm();
        if !fired {
            assert!(!panic && n > 1);
            assert_eq!(pool.limit(&key(1)), Some(5));
            break;
        }
        assert!(panic, "call {n}: the panic reaches the caller");
        assert_eq!(pool.max_tasks(), None, "call {n}: nothing applied");
        assert_eq!(pool.limit(&key(1)), Some(1), "call {n}: nothing applied");
        assert_eq!(pool.limit(&key(2)), None, "call {n}: nothing applied");
    }
    pool.set_limits(
        taskherd::LimitChanges::new()
            .max_tasks(None)
            .clear_limit(key(1))
            .clear_limit(key(2)),
    );
    nothing_left_behind(&pool, &[key(1), key(2)]);
}

/// A waker whose drop panics in the poll that admits at once (the copy of the waker taken in
/// case the call had to queue is dropped as the poll ends): the admission is given back in the
/// unwinding, not leaked, and the future is over (polled again, it panics). Before, the waker
/// copy was dropped as `poll` returned its result, and a value being returned is not dropped
/// when a local's destructor panics: the slot stayed taken for good.
#[tokio::test]
async fn a_waker_drop_panic_in_the_admitting_poll_gives_the_slot_back() {
    /// Polls `admit` (admitted at once in `g`) with a waker whose drop panics, then again.
    fn check<F: Future>(pool: &StrPool, admit: F, what: &str) {
        let (waker, fragile) = fragile_waker();
        let mut admit = Box::pin(admit);
        fragile.drop_panics.store(true, Ordering::SeqCst);
        assert!(panicked(|| poll_with(admit.as_mut(), &waker).is_pending()));
        assert_eq!(
            (pool.len(), pool.task_count(&"g")),
            (0, 0),
            "{what}: the slot given back"
        );
        assert!(
            panicked(|| poll_with(admit.as_mut(), &waker).is_pending()),
            "{what}: polled after it completed"
        );
    }

    let pool = StrPool::builder().limit("g", 1).build();
    check(&pool, pool.acquire(["g"]), "acquire");
    check(&pool, pool.spawn(["g"], async { 5u8 }), "spawn");
    str_pool_is_clean(&pool, &["g"]);
}

/// What `TaskPool`'s "Keys that panic" section promises for the calls not covered above: a
/// `Hash` panic in `try_spawn` and `try_spawn_with` counts nothing and drops the future (or
/// `make`) unpolled; an `Eq` panic in a lookup (`stats`, `task_count`, `waiting_count`,
/// `limit`, `effective_limit`, `abort_group`) changes nothing. Found missing from the docs by
/// a review.
#[tokio::test(flavor = "current_thread")]
async fn a_key_panic_in_try_spawn_or_a_lookup_changes_nothing() {
    let switches = Arc::new(Switches::default());
    let key = |id| Touchy::new(id, &switches);
    let pool: TouchyPool = TaskPool::builder().limit(key(1), 2).build();
    let polled = Arc::new(AtomicBool::new(false));
    let future = || {
        let polled = Arc::clone(&polled);
        async move { polled.store(true, Ordering::SeqCst) }
    };

    switches.arm_hash(1);
    assert!(panicked(|| pool.try_spawn([key(1), key(2)], future())));
    switches.arm_hash(2);
    assert!(panicked(|| pool.try_spawn_with([key(1), key(2)], future)));
    switches.disarm();
    tokio::task::yield_now().await;
    assert!(!polled.load(Ordering::SeqCst), "the future was polled");
    assert_eq!(pool.len(), 0, "a task was counted");

    let permit = pool.try_acquire([key(1)]).unwrap();
    type Lookup<'a> = Box<dyn Fn(&TouchyPool) + 'a>;
    let lookups: [(&str, Lookup<'_>); 6] = [
        ("stats", Box::new(|pool| _ = pool.stats(&key(1)))),
        ("task_count", Box::new(|pool| _ = pool.task_count(&key(1)))),
        (
            "waiting_count",
            Box::new(|pool| _ = pool.waiting_count(&key(1))),
        ),
        ("limit", Box::new(|pool| _ = pool.limit(&key(1)))),
        (
            "effective_limit",
            Box::new(|pool| _ = pool.effective_limit(&key(1))),
        ),
        (
            "abort_group",
            Box::new(|pool| _ = pool.abort_group(&key(1))),
        ),
    ];
    for (name, lookup) in &lookups {
        switches.arm_eq(1);
        let panic = panicked(|| lookup(&pool));
        let fired = switches.eq_countdown.load(Ordering::SeqCst) == 0;
        switches.disarm();
        assert!(fired && panic, "{name}: the Eq panic reaches the caller");
        let stats = pool.stats(&key(1));
        assert_eq!((stats.running, stats.limit), (1, Some(2)), "{name}");
    }
    drop(permit);
    nothing_left_behind(&pool, &[key(1), key(2)]);
}

/// `clear_limit` clones its key: a `Clone` panic leaves the limit as it was.
#[test]
fn a_clone_panic_in_clear_limit_leaves_the_limit() {
    let panics = Arc::new(AtomicBool::new(false));
    let pool: TaskPool<Key> = TaskPool::builder().limit(Key::new(8, &panics), 1).build();
    panics.store(true, Ordering::SeqCst);
    let outcome = catch_unwind(AssertUnwindSafe(|| pool.clear_limit(&Key::new(8, &panics))));
    panics.store(false, Ordering::SeqCst);
    assert!(outcome.is_err(), "the panic reaches the caller");
    assert_eq!(pool.limit(&Key::new(8, &panics)), Some(1));
}

/// `try_acquire` clones the keys of groups without an entry before it locks; if another
/// caller made the entry meanwhile, the spare clone is dropped unused. A panic in that drop
/// must give the admission back: a value being returned is not dropped when a local's
/// destructor panics (rust-lang/rust#47949), and the spares were dropped as `try_admit`
/// returned (found by a review: the total kept counting a permit nobody held, and `wait()`
/// never resolved after `close()`).
#[test]
fn a_spare_key_drop_panic_in_try_acquire_gives_the_slot_back() {
    use std::cell::{Cell, RefCell};

    thread_local! {
        static POOL: RefCell<Option<TaskPool<Spare>>> = const { RefCell::new(None) };
        static ARMED: Cell<bool> = const { Cell::new(false) };
    }

    /// A key whose armed clone makes the group's entry (as another caller would, in the
    /// moment no lock is held) and comes out as a clone whose drop panics.
    struct Spare {
        id: u32,
        bomb: bool,
    }
    impl PartialEq for Spare {
        fn eq(&self, other: &Self) -> bool {
            self.id == other.id
        }
    }
    impl Eq for Spare {}
    impl Hash for Spare {
        fn hash<H: Hasher>(&self, state: &mut H) {
            self.id.hash(state);
        }
    }
    impl Clone for Spare {
        fn clone(&self) -> Self {
            let armed = ARMED.with(|armed| armed.replace(false));
            if armed {
                POOL.with(|pool| {
                    let key = Spare {
                        id: self.id,
                        bomb: false,
                    };
                    pool.borrow().as_ref().unwrap().set_limit(key, 5);
                });
            }
            Spare {
                id: self.id,
                bomb: armed,
            }
        }
    }
    impl Drop for Spare {
        fn drop(&mut self) {
            if std::mem::take(&mut self.bomb) {
                panic!("Spare::drop panics on purpose");
            }
        }
    }

    let pool = TaskPool::<Spare>::new();
    POOL.with(|slot| *slot.borrow_mut() = Some(pool.clone()));
    ARMED.with(|armed| armed.set(true));
    let key = || Spare { id: 1, bomb: false };
    let outcome = catch_unwind(AssertUnwindSafe(|| pool.try_acquire([key()]).is_ok()));
    assert!(outcome.is_err(), "the spare key's drop panicked");
    assert_eq!(pool.len(), 0, "the total counts a permit nobody holds");
    assert_eq!(
        pool.task_count(&key()),
        0,
        "the group counts a permit nobody holds"
    );
    assert!(pool.close());
    let mut wait = mock(pool.wait());
    assert_ready!(wait.poll(), "wait() never resolves: a slot nobody holds");
    POOL.with(|slot| *slot.borrow_mut() = None);
}

/// A key whose drop panics, once, if it is the bomb. Equality and hashing use `id` only.
struct Bomb {
    id: u32,
    bomb: bool,
}

impl PartialEq for Bomb {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for Bomb {}

impl Hash for Bomb {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

impl Clone for Bomb {
    fn clone(&self) -> Self {
        Bomb {
            id: self.id,
            bomb: false,
        }
    }
}

impl Drop for Bomb {
    fn drop(&mut self) {
        if std::mem::take(&mut self.bomb) {
            panic!("Bomb::drop panics on purpose");
        }
    }
}

/// Sets its flag when dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// As documented under "Keys that panic": a key dropped by `try_spawn` (one no new entry
/// keeps) that panics gives the admission back and drops the future unpolled, admitted or
/// refused (refused, the future is dropped in the unwinding, not leaked with the error).
#[tokio::test]
async fn a_key_drop_panic_in_try_spawn_gives_everything_back() {
    let pool = TaskPool::<Bomb>::new();
    // The entries exist: the keys passed in are dropped, not kept.
    pool.set_limit(Bomb { id: 1, bomb: false }, 5);
    pool.set_limit(Bomb { id: 2, bomb: false }, 0);
    // Admitted (group 3 is new: its key is kept), then refused at group 2; the bomb is
    // group 1's key, dropped by the call either way.
    for groups in [[3, 1], [2, 1]] {
        let ran = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicBool::new(false));
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let (ran, flag) = (Arc::clone(&ran), DropFlag(Arc::clone(&dropped)));
            let keys = [
                Bomb {
                    id: groups[0],
                    bomb: false,
                },
                Bomb {
                    id: groups[1],
                    bomb: true,
                },
            ];
            let _ = pool.try_spawn(keys, async move {
                let _flag = flag;
                ran.store(true, Ordering::SeqCst);
            });
        }));
        assert!(outcome.is_err(), "the key's drop panicked");
        tokio::task::yield_now().await;
        assert!(!ran.load(Ordering::SeqCst), "the task ran ({groups:?})");
        assert!(
            dropped.load(Ordering::SeqCst),
            "the future leaked ({groups:?})"
        );
        assert_eq!(pool.len(), 0);
        assert_eq!(pool.task_count(&Bomb { id: 1, bomb: false }), 0);
    }
}
