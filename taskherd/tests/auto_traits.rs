//! Static assertions on the auto traits and common traits of every public type, and of the
//! futures the pool returns. Each helper takes a value, so the assertions are made on the types
//! the API actually returns, not on types spelled out by hand. A regression here is a compile
//! error.

use std::error::Error;
use std::fmt::{Debug, Display};
use std::hash::Hash;

use taskherd::{
    AcquireError, Builder, Group, GroupStats, LimitChanges, Permit, SpawnError, TaskPool,
    TryAcquireError, TrySpawnError,
};

fn assert_send<T: Send>(_: &T) {}
fn assert_sync<T: Sync>(_: &T) {}
fn assert_unpin<T: Unpin>(_: &T) {}
fn assert_static<T: 'static>(_: &T) {}
fn assert_clone<T: Clone>(_: &T) {}
fn assert_copy<T: Copy>(_: &T) {}
fn assert_debug<T: Debug>(_: &T) {}
fn assert_error<T: Error + Display + Send + Sync + 'static>(_: &T) {}
fn assert_future<T: Future>(_: &T) {}

/// Everything a handle shared between tasks needs.
fn assert_shareable<T: Send + Sync + Unpin + Clone + Debug + 'static>(value: &T) {
    assert_send(value);
    assert_sync(value);
    assert_unpin(value);
    assert_clone(value);
    assert_static(value);
}

#[test]
fn task_pool_is_send_sync_clone_unpin_and_debug() {
    let pool = TaskPool::<&'static str>::new();
    assert_shareable(&pool);
    assert_debug(&pool);
    let owned = TaskPool::<String>::builder().max_tasks(1).build();
    assert_shareable(&owned);
    let default: TaskPool<u64> = TaskPool::default();
    assert_shareable(&default);
    // A pool moves into a spawned thread and is used from there.
    let clone = pool.clone();
    std::thread::spawn(move || clone.set_limit("a", 1))
        .join()
        .unwrap();
    assert_eq!(pool.limit(&"a"), Some(1));
}

#[test]
fn builder_is_send_sync_unpin_and_debug() {
    let builder: Builder<&'static str> = TaskPool::builder().limit("a", 1).log_keys();
    assert_send(&builder);
    assert_sync(&builder);
    assert_unpin(&builder);
    assert_static(&builder);
    assert_debug(&builder);
    // It can be built on another thread.
    let pool = std::thread::spawn(move || builder.build()).join().unwrap();
    assert_eq!(pool.limit(&"a"), Some(1));
}

#[test]
fn permit_is_send_sync_unpin_and_debug() {
    let pool = TaskPool::new();
    let permit: Permit<&'static str> = pool.try_acquire(["a"]).unwrap();
    assert_send(&permit);
    assert_sync(&permit);
    assert_unpin(&permit);
    assert_static(&permit);
    assert_debug(&permit);
    // It can be dropped on another thread.
    std::thread::spawn(move || drop(permit)).join().unwrap();
    assert!(pool.is_empty());
}

#[tokio::test]
async fn try_spawn_error_is_send_and_sync_when_its_future_is() {
    let pool = TaskPool::builder().max_tasks(0).build();
    let error: TrySpawnError<&'static str, _> = match pool.try_spawn(["a"], async { 1u8 }) {
        Ok(_) => panic!("admitted beyond max_tasks 0"),
        Err(error) => error,
    };
    assert_send(&error);
    assert_sync(&error);
    assert_error(&error);
    assert!(error.is_full());
    // Unpin when the future is (an async block is not).
    let unpin = match pool.try_spawn(["a"], std::future::ready(0u8)) {
        Ok(_) => panic!("admitted beyond max_tasks 0"),
        Err(error) => error,
    };
    assert_unpin(&unpin);
    // Boxed as a thread-safe error, like `?` in a function returning `Box<dyn Error>` does.
    let boxed: Box<dyn Error + Send + Sync> = Box::new(error);
    assert!(boxed.to_string().contains("total"));

    let error = match pool.try_spawn_with(["a"], || async { 2u8 }) {
        Ok(_) => panic!("admitted beyond max_tasks 0"),
        Err(error) => error,
    };
    assert_send(&error);
    assert_sync(&error);
    assert_error(&error);
    assert_eq!(error.into_inner()().await, 2);

    // With a key type that is Send + Sync and a future that is Send but not Sync: the error
    // is still Send, so the refused future can be retried on another task.
    let pool = TaskPool::<String>::builder().max_tasks(0).build();
    let cell = std::cell::Cell::new(3u8);
    let error = match pool.try_spawn(["a".to_owned()], async move { cell.get() }) {
        Ok(_) => panic!("admitted beyond max_tasks 0"),
        Err(error) => error,
    };
    assert_send(&error);
    assert_eq!(
        tokio::spawn(error.into_inner()).await.unwrap(),
        3,
        "the refused future moves to another task"
    );
}

#[test]
fn try_acquire_error_is_an_error_that_is_send_sync_unpin_and_clone() {
    let pool = TaskPool::builder().limit("a", 0).build();
    let error: TryAcquireError<&'static str> = pool.try_acquire(["a"]).unwrap_err();
    assert_send(&error);
    assert_sync(&error);
    assert_unpin(&error);
    assert_clone(&error);
    assert_error(&error);
    assert_eq!(error.clone(), error);
    let boxed: Box<dyn Error + Send + Sync> = Box::new(error);
    assert!(!boxed.to_string().is_empty());
}

#[tokio::test]
async fn spawn_error_and_acquire_error_are_errors_that_are_send_sync_and_unpin() {
    let pool = TaskPool::<&'static str>::new();
    pool.close();

    let spawn_error: SpawnError<_> = pool.spawn(["a"], async { 5u8 }).await.unwrap_err();
    assert_send(&spawn_error);
    assert_sync(&spawn_error);
    assert_error(&spawn_error);
    assert_debug(&spawn_error);
    assert!(!spawn_error.to_string().is_empty());
    assert_eq!(spawn_error.into_inner().await, 5);
    // Unpin when the future is (an async block is not).
    let unpin = pool
        .spawn(["a"], std::future::ready(6u8))
        .await
        .unwrap_err();
    assert_unpin(&unpin);
    assert_eq!(unpin.into_inner().await, 6);

    let acquire_error: AcquireError = pool.acquire(["a"]).await.unwrap_err();
    assert_send(&acquire_error);
    assert_sync(&acquire_error);
    assert_unpin(&acquire_error);
    assert_static(&acquire_error);
    assert_error(&acquire_error);
    let boxed: Box<dyn Error + Send + Sync + 'static> = Box::new(acquire_error);
    assert!(!boxed.to_string().is_empty());
}

#[test]
fn group_is_send_sync_clone_copy_and_comparable() {
    let total: Group<&'static str> = Group::Total;
    let key = Group::Key("a");
    assert_send(&key);
    assert_sync(&key);
    assert_unpin(&key);
    assert_copy(&key);
    assert_debug(&key);
    fn assert_ordered<T: Eq + Ord + Hash + Display>(_: &T) {}
    assert_ordered(&key);
    assert!(total < key);
    let owned = Group::Key(String::from("a"));
    assert_send(&owned);
    assert_sync(&owned);
    assert_clone(&owned);
}

#[test]
fn group_stats_is_copy_send_sync_and_comparable() {
    let pool = TaskPool::<&'static str>::new();
    let stats: GroupStats = pool.stats(&"a");
    assert_send(&stats);
    assert_sync(&stats);
    assert_unpin(&stats);
    assert_copy(&stats);
    assert_debug(&stats);
    fn assert_value<T: Eq + Hash + Default>(_: &T) {}
    assert_value(&stats);
    let copy = stats;
    assert_eq!(copy, stats);
    assert_eq!(pool.total_stats(), GroupStats::default());
}

#[tokio::test]
async fn spawn_acquire_and_wait_futures_are_send_and_static() {
    let pool = TaskPool::<&'static str>::new();

    // Unpin even when the task's future is not (an async block): it is only moved, never
    // polled in place, so these can be polled in `select!` without pinning them first.
    let spawn = pool.spawn(["a"], async { 1u8 });
    assert_future(&spawn);
    assert_send(&spawn);
    assert_static(&spawn);
    assert_unpin(&spawn);

    let acquire = pool.acquire(["a"]);
    assert_future(&acquire);
    assert_send(&acquire);
    assert_static(&acquire);
    assert_unpin(&acquire);

    let wait = pool.wait();
    assert_future(&wait);
    assert_send(&wait);
    assert_static(&wait);

    // They do not borrow the pool: every handle can be gone before they are awaited, and they
    // can be moved into spawned tasks.
    drop(pool);
    let task = tokio::spawn(spawn).await.unwrap().unwrap();
    assert_eq!(task.await.unwrap(), 1);
    let permit = tokio::spawn(acquire).await.unwrap().unwrap();
    assert_eq!(permit.groups().copied().collect::<Vec<_>>(), ["a"]);
    // The only way left to close the pool is gone, so `wait` must stay pending.
    let waiting = tokio::spawn(wait);
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());
    waiting.abort();
    drop(permit);
}

#[tokio::test]
async fn shutdown_future_is_send_and_borrows_the_pool() {
    let pool = TaskPool::<&'static str>::new();
    let shutdown = pool.shutdown();
    assert_future(&shutdown);
    assert_send(&shutdown);
    shutdown.await;
    assert!(pool.is_closed());

    // Send, so it can run in a spawned task that owns a clone.
    let pool = TaskPool::<String>::new();
    let clone = pool.clone();
    tokio::spawn(async move { clone.shutdown().await })
        .await
        .unwrap();
    assert!(pool.is_closed());
}

#[tokio::test]
async fn futures_are_send_for_owned_keys_and_custom_hashers() {
    use std::collections::hash_map::DefaultHasher;
    use std::hash::BuildHasherDefault;

    let pool = TaskPool::<String, _>::with_hasher(BuildHasherDefault::<DefaultHasher>::default());
    assert_shareable(&pool);
    let spawn = pool.spawn(["a".to_owned()], async {});
    let acquire = pool.acquire(["a".to_owned()]);
    let wait = pool.wait();
    let shutdown = pool.shutdown();
    assert_send(&spawn);
    assert_static(&spawn);
    assert_send(&acquire);
    assert_static(&acquire);
    assert_send(&wait);
    assert_static(&wait);
    assert_send(&shutdown);
    let permit = acquire.await.unwrap();
    assert_send(&permit);
    assert_sync(&permit);
    drop(permit);
    drop(spawn);
    shutdown.await;
    wait.await;
}

#[test]
fn limit_changes_are_send_sync_clone_unpin_default_and_debug() {
    let changes: LimitChanges<String> = LimitChanges::default()
        .max_tasks(4)
        .limit("db".to_owned(), 1);
    assert_shareable(&changes);
    assert_debug(&changes);
    assert!(format!("{changes:?}").contains("\"db\""));
    // A batch built on one thread is applied on another.
    let pool = TaskPool::<String>::new();
    let remote = pool.clone();
    std::thread::spawn(move || remote.set_limits(changes))
        .join()
        .unwrap();
    assert_eq!(
        (pool.max_tasks(), pool.limit(&"db".to_owned())),
        (Some(4), Some(1))
    );
}

/// The futures of `spawn` and `acquire` own their hashed keys and never hold the iterator of
/// groups they were given, so they are `'static` even when that iterator borrowed (found by a
/// review: the returned `impl Future` captured the iterator's type, and a future made from
/// `keys.iter().copied()` could not be passed to `tokio::spawn`).
#[tokio::test]
async fn spawn_and_acquire_futures_are_static_when_the_groups_iterator_borrowed() {
    let pool = TaskPool::<u32>::new();
    let spawn = {
        let keys = [1u32, 2, 3];
        pool.spawn(keys.iter().copied(), async {})
    };
    assert_static(&spawn);
    assert_send(&spawn);
    assert_debug(&spawn);
    tokio::spawn(spawn).await.unwrap().unwrap().await.unwrap();
    let acquire = {
        let keys = [1u32, 2, 3];
        pool.acquire(keys.iter().copied())
    };
    assert_static(&acquire);
    assert_send(&acquire);
    assert_debug(&acquire);
    let permit = tokio::spawn(acquire).await.unwrap().unwrap();
    assert_eq!(pool.task_count(&2), 1);
    drop(permit);
}
