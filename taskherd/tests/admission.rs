//! Admission: all-or-nothing across groups, refusal hands the future back unpolled, which group
//! the error names, duplicate keys, `try_spawn_with`, custom hashers and auto traits.

use std::collections::HashSet;
use std::future::Future;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher, Hasher, RandomState};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use taskherd::{Builder, Group, TaskPool, TrySpawnError};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

mod support;
use support::{admitted, refused};

/// Spawns a task in `groups` that runs until the returned sender is used (or dropped).
#[track_caller]
fn spawn_held<K, S, I>(pool: &TaskPool<K, S>, groups: I) -> Held
where
    K: Eq + std::hash::Hash + Clone + Send + Sync + 'static,
    S: BuildHasher + Clone + Send + Sync + 'static,
    I: IntoIterator<Item = K>,
{
    let (tx, rx) = oneshot::channel::<()>();
    let handle = admitted(pool.try_spawn(groups, async move {
        let _ = rx.await;
    }));
    (tx, handle)
}

/// A task held running by [`spawn_held`]: the sender that releases it, and its handle.
type Held = (oneshot::Sender<()>, JoinHandle<()>);

/// Releases a held task and waits for it; it must complete normally.
async fn finish(held: Held) {
    let (tx, handle) = held;
    tx.send(()).expect("the held task is still waiting");
    handle.await.expect("the held task completed normally");
}

/// A future that records whether it was ever polled. Deliberately not `Debug`.
struct FlagOnPoll {
    polled: Arc<AtomicBool>,
    payload: u64,
}

impl FlagOnPoll {
    fn new(payload: u64) -> (Self, Arc<AtomicBool>) {
        let polled = Arc::new(AtomicBool::new(false));
        let fut = FlagOnPoll {
            polled: Arc::clone(&polled),
            payload,
        };
        (fut, polled)
    }
}

impl Future for FlagOnPoll {
    type Output = u64;

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<u64> {
        self.polled.store(true, Ordering::SeqCst);
        Poll::Ready(self.payload)
    }
}

/// A key type with no `Debug` implementation.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Tenant(u32);

/// A hasher that gives every key the same hash: correctness must not depend on hash quality.
#[derive(Default, Clone, Copy)]
struct ConstHasher;

impl Hasher for ConstHasher {
    fn finish(&self) -> u64 {
        0
    }

    fn write(&mut self, _bytes: &[u8]) {}
}

type Terrible = BuildHasherDefault<ConstHasher>;
type Deterministic = BuildHasherDefault<DefaultHasher>;

/// A `BuildHasher` that counts how often it is used.
#[derive(Clone, Default)]
struct CountingState {
    builds: Arc<AtomicUsize>,
}

impl BuildHasher for CountingState {
    type Hasher = DefaultHasher;

    fn build_hasher(&self) -> DefaultHasher {
        self.builds.fetch_add(1, Ordering::SeqCst);
        DefaultHasher::new()
    }
}

// ---------------------------------------------------------------------------------------------
// Counting in every named group
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn task_counts_in_every_group_it_names_and_in_the_total() {
    let pool = TaskPool::<&'static str>::new();
    let held = spawn_held(&pool, ["a", "b", "c"]);
    assert_eq!(pool.task_count(&"a"), 1);
    assert_eq!(pool.task_count(&"b"), 1);
    assert_eq!(pool.task_count(&"c"), 1);
    assert_eq!(pool.task_count(&"d"), 0);
    assert_eq!(pool.len(), 1);
    assert!(!pool.is_empty());
    finish(held).await;
    for key in ["a", "b", "c"] {
        assert_eq!(pool.task_count(&key), 0);
    }
    assert!(pool.is_empty());
}

#[tokio::test]
async fn task_with_no_groups_counts_only_in_the_total() {
    let pool = TaskPool::<&'static str>::new();
    let held = spawn_held(&pool, []);
    assert_eq!(pool.len(), 1);
    assert_eq!(pool.task_count(&"a"), 0);
    finish(held).await;
    assert!(pool.is_empty());
}

#[tokio::test]
async fn groups_accept_any_into_iterator() {
    let pool = TaskPool::<String>::new();
    let from_vec = spawn_held(&pool, vec!["v".to_string()]);
    let from_option = spawn_held(&pool, Some("o".to_string()));
    let from_set = spawn_held(&pool, HashSet::from(["s".to_string()]));
    let from_iter = spawn_held(&pool, (0..3).map(|i| format!("i{i}")));
    let from_empty = spawn_held(&pool, std::iter::empty());
    for key in ["v", "o", "s", "i0", "i1", "i2"] {
        assert_eq!(pool.task_count(&key.to_string()), 1, "group {key}");
    }
    assert_eq!(pool.len(), 5);
    for held in [from_vec, from_option, from_set, from_iter, from_empty] {
        finish(held).await;
    }
    assert!(pool.is_empty());
}

#[tokio::test]
async fn admitted_task_runs_and_returns_its_output() {
    let pool = TaskPool::<u8>::new();
    let handle = admitted(pool.try_spawn([1, 2], async { "done" }));
    assert_eq!(handle.await.unwrap(), "done");
}

// ---------------------------------------------------------------------------------------------
// All-or-nothing and refusal
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn refused_task_changes_no_count_in_groups_with_room() {
    let pool = TaskPool::<&'static str>::new();
    pool.set_limit("a", 1);
    pool.set_limit("b", 1);
    let in_b = spawn_held(&pool, ["b"]);

    let error = refused(pool.try_spawn(["a", "b"], async {}));
    assert_eq!(error.full_group(), Some(&Group::Key("b")));
    assert_eq!(
        pool.task_count(&"a"),
        0,
        "a refused task leaves no count behind in a"
    );
    assert_eq!(pool.task_count(&"b"), 1);
    assert_eq!(pool.len(), 1);

    // The single slot in `a` is still free: nothing was taken and left behind.
    let in_a = spawn_held(&pool, ["a"]);
    assert_eq!(pool.task_count(&"a"), 1);
    finish(in_a).await;
    finish(in_b).await;
    assert!(pool.is_empty());
}

#[tokio::test]
async fn refused_task_leaves_groups_without_limits_unknown() {
    let pool = TaskPool::<&'static str>::new();
    pool.set_limit("full", 0);
    let error = refused(pool.try_spawn(["x", "full", "y"], async {}));
    assert_eq!(error.full_group(), Some(&Group::Key("full")));
    for key in ["x", "y", "full"] {
        assert_eq!(pool.task_count(&key), 0);
    }
    assert_eq!(pool.limit(&"x"), None);
    assert_eq!(pool.limit(&"y"), None);
    assert!(pool.is_empty());
}

#[tokio::test]
async fn refused_task_does_not_take_a_slot_in_the_total() {
    let pool = TaskPool::<&'static str>::builder().max_tasks(2).build();
    pool.set_limit("b", 0);
    let first = spawn_held(&pool, []);
    refused(pool.try_spawn(["b"], async {}));
    refused(pool.try_spawn(["b"], async {}));
    assert_eq!(pool.len(), 1);
    // The second slot of the total is still free.
    let second = spawn_held(&pool, []);
    assert_eq!(pool.len(), 2);
    finish(first).await;
    finish(second).await;
}

#[tokio::test]
async fn refused_future_is_never_polled_and_is_handed_back() {
    let pool = TaskPool::<&'static str>::new();
    pool.set_limit("a", 0);
    let (fut, polled) = FlagOnPoll::new(42);
    let error = refused(pool.try_spawn(["a"], fut));
    // Give any task that might have been spawned by mistake a chance to run.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(
        !polled.load(Ordering::SeqCst),
        "a refused future was polled"
    );

    let fut = error.into_inner();
    assert_eq!(
        fut.payload, 42,
        "into_inner hands back the very future that was refused"
    );
    assert!(!polled.load(Ordering::SeqCst));
    // It is still a perfectly good future that the caller can run.
    assert_eq!(fut.await, 42);
    assert!(polled.load(Ordering::SeqCst));
}

#[tokio::test]
async fn refused_task_never_runs_and_pool_len_is_unchanged() {
    let pool = TaskPool::<&'static str>::builder().max_tasks(1).build();
    let held = spawn_held(&pool, ["a"]);
    let ran = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&ran);
    let error = refused(pool.try_spawn(["b"], async move {
        flag.store(true, Ordering::SeqCst);
    }));
    assert_eq!(pool.len(), 1);
    assert_eq!(pool.task_count(&"b"), 0);
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!ran.load(Ordering::SeqCst));
    assert_eq!(pool.len(), 1);
    drop(error);
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(
        !ran.load(Ordering::SeqCst),
        "dropping the error must not run the future"
    );
    finish(held).await;
}

#[tokio::test]
async fn refusal_reports_full_and_not_closed() {
    let pool = TaskPool::<&'static str>::builder()
        .max_tasks(1)
        .limit("zero", 0)
        .build();
    let error = refused(pool.try_spawn(["zero"], async {}));
    assert!(error.is_full());
    assert!(!error.is_closed());
    let held = spawn_held(&pool, []);
    let error = refused(pool.try_spawn([], async {}));
    assert!(error.is_full());
    assert!(!error.is_closed());
    finish(held).await;
}

// ---------------------------------------------------------------------------------------------
// Which group the error names
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn full_group_names_total_first_when_total_and_a_key_are_full() {
    let pool = TaskPool::<&'static str>::builder()
        .max_tasks(1)
        .limit("a", 1)
        .build();
    let held = spawn_held(&pool, ["a"]);
    let error = refused(pool.try_spawn(["a"], async {}));
    assert_eq!(error.full_group(), Some(&Group::Total));
    pool.set_limit("b", 0);
    let error = refused(pool.try_spawn(["b", "a"], async {}));
    assert_eq!(error.full_group(), Some(&Group::Total));
    finish(held).await;
}

#[tokio::test]
async fn full_group_names_total_when_only_the_total_is_full() {
    let pool = TaskPool::<&'static str>::builder().max_tasks(1).build();
    let held = spawn_held(&pool, []);
    let error = refused(pool.try_spawn(["a", "b"], async {}));
    assert_eq!(error.full_group(), Some(&Group::Total));
    finish(held).await;
}

#[tokio::test]
async fn full_group_names_the_first_full_group_in_the_callers_order() {
    let pool = TaskPool::<&'static str>::builder()
        .limit("a", 1)
        .limit("b", 1)
        .limit("c", 1)
        .build();
    let in_b = spawn_held(&pool, ["b"]);
    let in_c = spawn_held(&pool, ["c"]);

    let cases: [(&[&'static str], &'static str); 5] = [
        (&["a", "b", "c"], "b"),
        (&["a", "c", "b"], "c"),
        (&["c", "b"], "c"),
        (&["b", "c", "a"], "b"),
        (&["a", "d", "c"], "c"),
    ];
    for (groups, expected) in cases {
        let error = refused(pool.try_spawn(groups.iter().copied(), async {}));
        assert_eq!(
            error.full_group(),
            Some(&Group::Key(expected)),
            "groups {groups:?} should be refused by {expected}"
        );
    }
    assert_eq!(pool.task_count(&"a"), 0);
    assert_eq!(pool.len(), 2);
    finish(in_b).await;
    finish(in_c).await;
}

#[tokio::test]
async fn full_group_names_a_group_full_by_default_limit() {
    let pool = TaskPool::<&'static str>::builder().default_limit(1).build();
    let held = spawn_held(&pool, ["x"]);
    let error = refused(pool.try_spawn(["y", "x", "z"], async {}));
    assert_eq!(error.full_group(), Some(&Group::Key("x")));
    finish(held).await;
}

#[test]
fn group_is_comparable_hashable_cloneable_and_debug() {
    let total: Group<&str> = Group::Total;
    let key = Group::Key("a");
    assert_ne!(total, key);
    assert_eq!(key.clone(), Group::Key("a"));
    assert_ne!(Group::Key("a"), Group::Key("b"));
    let set: HashSet<Group<&str>> = [Group::Total, Group::Key("a"), Group::Key("a")].into();
    assert_eq!(set.len(), 2);
    assert_eq!(format!("{key:?}"), "Key(\"a\")");
    assert_eq!(format!("{total:?}"), "Total");
}

// ---------------------------------------------------------------------------------------------
// Duplicate keys
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn key_named_twice_counts_once() {
    let pool = TaskPool::<&'static str>::new();
    let held = spawn_held(&pool, ["a", "b", "a", "a"]);
    assert_eq!(pool.task_count(&"a"), 1);
    assert_eq!(pool.task_count(&"b"), 1);
    assert_eq!(pool.len(), 1);
    finish(held).await;
    assert_eq!(
        pool.task_count(&"a"),
        0,
        "a key named twice is released once, to zero"
    );
    assert!(pool.is_empty());
}

#[tokio::test]
async fn key_named_twice_counts_once_in_a_group_that_already_has_tasks() {
    let pool = TaskPool::<&'static str>::new();
    let first = spawn_held(&pool, ["a"]);
    let second = spawn_held(&pool, ["a", "a", "b", "a"]);
    assert_eq!(pool.task_count(&"a"), 2);
    assert_eq!(pool.task_count(&"b"), 1);
    assert_eq!(pool.len(), 2);
    finish(second).await;
    assert_eq!(
        pool.task_count(&"a"),
        1,
        "the duplicate key was released once"
    );
    assert_eq!(pool.task_count(&"b"), 0);
    finish(first).await;
    assert_eq!(pool.task_count(&"a"), 0);
    assert!(pool.is_empty());
}

#[tokio::test]
async fn duplicates_among_many_groups_count_once() {
    // Enough groups that a small inline de-duplication would not cover them all.
    let pool = TaskPool::<u32>::new();
    let mut keys: Vec<u32> = (0..40).collect();
    keys.extend((0..40).rev());
    keys.extend((0..40).step_by(3));
    let existing = spawn_held(&pool, [0, 17, 39]);
    let held = spawn_held(&pool, keys);
    for key in 0..40 {
        let expected = if [0, 17, 39].contains(&key) { 2 } else { 1 };
        assert_eq!(pool.task_count(&key), expected, "key {key}");
    }
    assert_eq!(pool.len(), 2);
    finish(held).await;
    for key in 0..40 {
        let expected = usize::from([0, 17, 39].contains(&key));
        assert_eq!(pool.task_count(&key), expected, "key {key}");
    }
    finish(existing).await;
    assert!(pool.is_empty());
}

#[tokio::test]
async fn duplicates_among_many_groups_count_once_with_a_terrible_hasher() {
    let pool = TaskPool::<u32, Terrible>::with_hasher(Terrible::default());
    pool.set_default_limit(1);
    let keys: Vec<u32> = (0..30).chain(0..30).chain((0..30).rev()).collect();
    let held = spawn_held(&pool, keys);
    for key in 0..30 {
        assert_eq!(pool.task_count(&key), 1, "key {key}");
    }
    let error = refused(pool.try_spawn([100, 29], async {}));
    assert_eq!(error.full_group(), Some(&Group::Key(29)));
    finish(held).await;
    for key in 0..30 {
        assert_eq!(pool.task_count(&key), 0, "key {key}");
    }
}

#[tokio::test]
async fn full_group_order_holds_among_many_groups_with_duplicates() {
    let pool = TaskPool::<u32>::new();
    pool.set_limit(25, 0);
    pool.set_limit(31, 0);
    // 0..40 with every key repeated right after itself; 25 comes before 31.
    let keys: Vec<u32> = (0..40).flat_map(|k| [k, k]).collect();
    let error = refused(pool.try_spawn(keys.clone(), async {}));
    assert_eq!(error.full_group(), Some(&Group::Key(25)));
    let reversed: Vec<u32> = keys.into_iter().rev().collect();
    let error = refused(pool.try_spawn(reversed, async {}));
    assert_eq!(error.full_group(), Some(&Group::Key(31)));
    for key in 0..40 {
        assert_eq!(pool.task_count(&key), 0, "key {key}");
    }
}

#[tokio::test]
async fn key_named_twice_is_admitted_under_a_limit_of_one() {
    let pool = TaskPool::<&'static str>::builder().limit("a", 1).build();
    let held = spawn_held(&pool, ["a", "a"]);
    assert_eq!(pool.task_count(&"a"), 1);
    let error = refused(pool.try_spawn(["a"], async {}));
    assert_eq!(error.full_group(), Some(&Group::Key("a")));
    finish(held).await;
    // Released exactly once: the slot is free again, and only one slot.
    let again = spawn_held(&pool, ["a", "a"]);
    refused(pool.try_spawn(["a"], async {}));
    finish(again).await;
}

#[tokio::test]
async fn key_named_twice_is_admitted_under_a_default_limit_of_one() {
    let pool = TaskPool::<&'static str>::builder().default_limit(1).build();
    let held = spawn_held(&pool, ["a", "b", "a", "b"]);
    assert_eq!(pool.task_count(&"a"), 1);
    assert_eq!(pool.task_count(&"b"), 1);
    finish(held).await;
    assert_eq!(pool.task_count(&"a"), 0);
    assert_eq!(pool.task_count(&"b"), 0);
}

#[tokio::test]
async fn key_named_twice_and_refused_changes_no_count() {
    let pool = TaskPool::<&'static str>::builder().limit("full", 0).build();
    let error = refused(pool.try_spawn(["a", "full", "a"], async {}));
    assert_eq!(error.full_group(), Some(&Group::Key("full")));
    assert_eq!(pool.task_count(&"a"), 0);
    assert!(pool.is_empty());
}

// ---------------------------------------------------------------------------------------------
// try_spawn_with
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn try_spawn_with_calls_make_once_when_admitted() {
    let pool = TaskPool::<&'static str>::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let handle = admitted(pool.try_spawn_with(["a"], move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async { 11 }
    }));
    assert_eq!(handle.await.unwrap(), 11);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(pool.task_count(&"a"), 0);
}

#[tokio::test]
async fn try_spawn_with_counts_the_task_while_it_runs() {
    let pool = TaskPool::<&'static str>::builder().limit("a", 1).build();
    let (tx, rx) = oneshot::channel::<()>();
    let handle = admitted(pool.try_spawn_with(["a", "b"], move || async move {
        let _ = rx.await;
    }));
    assert_eq!(pool.task_count(&"a"), 1);
    assert_eq!(pool.task_count(&"b"), 1);
    let error = refused(pool.try_spawn_with(["a"], || async {}));
    assert_eq!(error.full_group(), Some(&Group::Key("a")));
    tx.send(()).unwrap();
    handle.await.unwrap();
    assert_eq!(pool.task_count(&"a"), 0);
    assert_eq!(pool.task_count(&"b"), 0);
}

#[tokio::test]
async fn try_spawn_with_does_not_call_make_when_refused() {
    let pool = TaskPool::<&'static str>::new();
    pool.set_limit("a", 0);
    let called = Arc::new(AtomicBool::new(false));
    let (fut, polled) = FlagOnPoll::new(5);
    let flag = Arc::clone(&called);
    let make = move || {
        flag.store(true, Ordering::SeqCst);
        fut
    };
    let error = refused(pool.try_spawn_with(["b", "a"], make));
    assert!(error.is_full());
    assert_eq!(error.full_group(), Some(&Group::Key("a")));
    assert!(
        !called.load(Ordering::SeqCst),
        "make was called for a refused task"
    );
    assert_eq!(pool.task_count(&"b"), 0);
    assert!(pool.is_empty());

    // The closure comes back untouched and still works.
    let make = error.into_inner();
    assert!(!called.load(Ordering::SeqCst));
    let fut = make();
    assert!(called.load(Ordering::SeqCst));
    assert!(!polled.load(Ordering::SeqCst));
    assert_eq!(fut.await, 5);
}

#[tokio::test]
async fn try_spawn_with_reports_total_first() {
    let pool = TaskPool::<&'static str>::builder()
        .max_tasks(0)
        .limit("a", 0)
        .build();
    let error = refused(pool.try_spawn_with(["a"], || async {}));
    assert_eq!(error.full_group(), Some(&Group::Total));
}

// ---------------------------------------------------------------------------------------------
// Keys without Debug; error traits
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn keys_need_not_implement_debug() {
    let pool = TaskPool::<Tenant>::builder()
        .limit(Tenant(2), 1)
        .default_limit(4)
        .build();
    let held = spawn_held(&pool, [Tenant(1), Tenant(2)]);
    assert_eq!(pool.task_count(&Tenant(2)), 1);
    assert_eq!(pool.limit(&Tenant(2)), Some(1));
    assert_eq!(pool.effective_limit(&Tenant(1)), Some(4));
    let error = refused(pool.try_spawn([Tenant(1), Tenant(2)], async {}));
    assert!(matches!(error.full_group(), Some(Group::Key(Tenant(2)))));
    assert!(error.full_group() == Some(&Group::Key(Tenant(2))));
    finish(held).await;
    assert_eq!(pool.task_count(&Tenant(2)), 0);
}

fn assert_error<E: std::error::Error>() {}
fn assert_send<T: Send>() {}
fn assert_sync<T: Sync>() {}
fn assert_clone<T: Clone>() {}

#[test]
fn try_spawn_error_is_an_error_when_the_key_is_debug_even_if_the_future_is_not() {
    assert_error::<TrySpawnError<&'static str, FlagOnPoll>>();
    assert_error::<TrySpawnError<String, FlagOnPoll>>();
}

#[tokio::test]
async fn try_spawn_error_formats_and_converts_to_a_boxed_error() {
    let pool = TaskPool::<&'static str>::builder().limit("a", 0).build();
    let (fut, polled) = FlagOnPoll::new(1);
    let error = refused(pool.try_spawn(["a"], fut));
    assert!(!format!("{error}").is_empty());
    assert!(!format!("{error:?}").is_empty());
    let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(error);
    assert!(!boxed.to_string().is_empty());
    drop(boxed);
    assert!(
        !polled.load(Ordering::SeqCst),
        "formatting or dropping polls nothing"
    );
}

#[test]
fn task_pool_is_send_sync_and_clone() {
    assert_send::<TaskPool<String>>();
    assert_sync::<TaskPool<String>>();
    assert_clone::<TaskPool<String>>();
    assert_send::<TaskPool<Tenant>>();
    assert_sync::<TaskPool<Tenant>>();
    assert_clone::<TaskPool<Tenant>>();
    assert_send::<TaskPool<u64, Terrible>>();
    assert_sync::<TaskPool<u64, Terrible>>();
    assert_clone::<TaskPool<u64, Terrible>>();
    assert_send::<TaskPool<Vec<u8>, RandomState>>();
    assert_send::<Builder<String>>();
}

#[test]
fn try_spawn_error_is_send_when_its_parts_are() {
    assert_send::<TrySpawnError<String, FlagOnPoll>>();
    assert_send::<TrySpawnError<Tenant, std::future::Ready<()>>>();
    assert_send::<TrySpawnError<u64, Pin<Box<dyn Future<Output = ()> + Send>>>>();
    assert_sync::<TrySpawnError<String, FlagOnPoll>>();
}

#[test]
fn group_is_send_and_sync_when_the_key_is() {
    assert_send::<Group<String>>();
    assert_sync::<Group<String>>();
    assert_send::<Group<Tenant>>();
}

// ---------------------------------------------------------------------------------------------
// Custom hashers
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn with_hasher_uses_the_given_hasher() {
    let state = CountingState::default();
    let builds = Arc::clone(&state.builds);
    let pool = TaskPool::<String, CountingState>::with_hasher(state);
    pool.set_limit("a".to_string(), 1);
    let held = spawn_held(&pool, ["a".to_string(), "b".to_string()]);
    assert!(
        builds.load(Ordering::SeqCst) > 0,
        "the custom BuildHasher was never used"
    );
    assert_eq!(pool.task_count(&"a".to_string()), 1);
    refused(pool.try_spawn(["a".to_string()], async {}));
    finish(held).await;
    assert_eq!(pool.task_count(&"a".to_string()), 0);
}

#[tokio::test]
async fn with_deterministic_hasher_enforces_limits() {
    let pool = TaskPool::<u64, Deterministic>::with_hasher(Deterministic::default());
    pool.set_default_limit(2);
    pool.set_limit(7, 1);
    let a = spawn_held(&pool, [7, 8]);
    let b = spawn_held(&pool, [8]);
    let error = refused(pool.try_spawn([8], async {}));
    assert_eq!(error.full_group(), Some(&Group::Key(8)));
    let error = refused(pool.try_spawn([9, 7], async {}));
    assert_eq!(error.full_group(), Some(&Group::Key(7)));
    assert_eq!(pool.task_count(&9), 0);
    finish(a).await;
    finish(b).await;
    assert!(pool.is_empty());
}

#[tokio::test]
async fn builder_hasher_builds_a_pool_with_that_hasher() {
    let state = CountingState::default();
    let builds = Arc::clone(&state.builds);
    let pool: TaskPool<u64, CountingState> = TaskPool::<u64>::builder()
        .hasher(state)
        .max_tasks(3)
        .default_limit(2)
        .limit(1, 1)
        .build();
    assert_eq!(pool.max_tasks(), Some(3));
    assert_eq!(pool.default_limit(), Some(2));
    assert_eq!(pool.limit(&1), Some(1));
    let held = spawn_held(&pool, [1]);
    refused(pool.try_spawn([1], async {}));
    assert!(
        builds.load(Ordering::SeqCst) > 0,
        "the builder's hasher was never used"
    );
    finish(held).await;
}

#[tokio::test]
async fn builder_limits_set_before_the_hasher_are_kept() {
    let pool: TaskPool<u64, Terrible> = TaskPool::<u64>::builder()
        .limit(1, 1)
        .limit(2, 0)
        .max_tasks(5)
        .hasher(Terrible::default())
        .build();
    assert_eq!(pool.limit(&1), Some(1));
    assert_eq!(pool.limit(&2), Some(0));
    assert_eq!(pool.max_tasks(), Some(5));
    let held = spawn_held(&pool, [1]);
    refused(pool.try_spawn([1], async {}));
    refused(pool.try_spawn([2], async {}));
    finish(held).await;
}

#[tokio::test]
async fn terrible_hasher_where_every_key_collides_keeps_groups_apart() {
    const KEYS: u64 = 64;
    let pool = TaskPool::<u64, Terrible>::with_hasher(Terrible::default());
    let limit_of = |key: u64| (key % 3 + 1) as usize;
    for key in 0..KEYS {
        pool.set_limit(key, limit_of(key));
    }

    // Fill every group to its limit.
    let mut held: Vec<(u64, Held)> = Vec::new();
    for key in 0..KEYS {
        for _ in 0..limit_of(key) {
            held.push((key, spawn_held(&pool, [key])));
        }
    }
    for key in 0..KEYS {
        assert_eq!(pool.task_count(&key), limit_of(key), "key {key}");
        assert_eq!(pool.limit(&key), Some(limit_of(key)), "key {key}");
        let error = refused(pool.try_spawn([key], async {}));
        assert_eq!(error.full_group(), Some(&Group::Key(key)));
    }
    assert_eq!(pool.task_count(&KEYS), 0);
    assert_eq!(pool.limit(&KEYS), None);

    // Finish every task of the even keys (removing table entries among colliding ones) and make
    // sure the odd keys are still found with their counts.
    let (even, odd): (Vec<_>, Vec<_>) = held.into_iter().partition(|(key, _)| key % 2 == 0);
    for (_, task) in even {
        finish(task).await;
    }
    for key in 0..KEYS {
        let expected = if key % 2 == 0 { 0 } else { limit_of(key) };
        assert_eq!(pool.task_count(&key), expected, "key {key}");
    }

    // Limits survive the tasks, and the even groups can be filled again.
    pool.clear_limit(&0);
    let again = spawn_held(&pool, [0, 2]);
    assert_eq!(pool.task_count(&0), 1);
    assert_eq!(pool.task_count(&2), 1);
    for (_, task) in odd {
        finish(task).await;
    }
    finish(again).await;
    for key in 0..=KEYS {
        assert_eq!(pool.task_count(&key), 0, "key {key}");
    }
    assert!(pool.is_empty());
}

#[tokio::test]
async fn terrible_hasher_keeps_all_or_nothing_across_colliding_groups() {
    let pool = TaskPool::<u64, Terrible>::with_hasher(Terrible::default());
    pool.set_default_limit(1);
    let held = spawn_held(&pool, [3]);
    let error = refused(pool.try_spawn([1, 2, 3, 4], async {}));
    assert_eq!(error.full_group(), Some(&Group::Key(3)));
    for key in [1, 2, 4] {
        assert_eq!(pool.task_count(&key), 0, "key {key}");
    }
    let others = spawn_held(&pool, [1, 2, 4, 1]);
    for key in [1, 2, 3, 4] {
        assert_eq!(pool.task_count(&key), 1, "key {key}");
    }
    finish(held).await;
    finish(others).await;
    assert!(pool.is_empty());
}
