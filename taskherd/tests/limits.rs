//! Limits: defaults, `max_tasks`, explicit limits, `default_limit`, lowering and closing limits at
//! run time, and the behaviours of the aioxmpp task pool this crate started from (the "seed").
//!
//! Tasks that must stay running while counts are inspected wait on a `oneshot` receiver; the
//! matching sender releases them.

use taskherd::{Group, TaskPool};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

mod support;
use support::{admitted, refused};

/// Spawns a task in `groups` that runs until the returned sender is used (or dropped), then
/// returns `value`.
#[track_caller]
fn spawn_held<K, I>(
    pool: &TaskPool<K>,
    groups: I,
    value: u32,
) -> (oneshot::Sender<()>, JoinHandle<u32>)
where
    K: Eq + std::hash::Hash + Clone + Send + Sync + 'static,
    I: IntoIterator<Item = K>,
{
    let (tx, rx) = oneshot::channel::<()>();
    let handle = admitted(pool.try_spawn(groups, async move {
        let _ = rx.await;
        value
    }));
    (tx, handle)
}

/// Releases a held task and checks it completed normally with its own value.
async fn finish(held: (oneshot::Sender<()>, JoinHandle<u32>), expected: u32) {
    let (tx, handle) = held;
    tx.send(()).expect("the held task is still waiting");
    let value = handle.await.expect("the held task completed normally");
    assert_eq!(value, expected);
}

// ---------------------------------------------------------------------------------------------
// Defaults and getters
// ---------------------------------------------------------------------------------------------

#[test]
fn new_pool_has_no_limits_and_no_tasks() {
    let pool = TaskPool::<&'static str>::new();
    assert_eq!(pool.max_tasks(), None);
    assert_eq!(pool.default_limit(), None);
    assert_eq!(pool.limit(&"a"), None);
    assert_eq!(pool.effective_limit(&"a"), None);
    assert_eq!(pool.len(), 0);
    assert!(pool.is_empty());
    assert_eq!(pool.task_count(&"a"), 0);
}

#[test]
fn default_builder_has_no_limits() {
    let pool = TaskPool::<&'static str>::builder().build();
    assert_eq!(pool.max_tasks(), None);
    assert_eq!(pool.default_limit(), None);
    assert_eq!(pool.limit(&"a"), None);
    assert_eq!(pool.effective_limit(&"a"), None);
    assert!(pool.is_empty());
}

#[test]
fn builder_settings_are_reported_by_the_getters() {
    let pool = TaskPool::<&'static str>::builder()
        .max_tasks(7)
        .default_limit(3)
        .limit("a", 5)
        .limit("b", 0)
        .build();
    assert_eq!(pool.max_tasks(), Some(7));
    assert_eq!(pool.default_limit(), Some(3));
    assert_eq!(pool.limit(&"a"), Some(5));
    assert_eq!(pool.limit(&"b"), Some(0));
    assert_eq!(pool.limit(&"c"), None);
    assert_eq!(pool.effective_limit(&"a"), Some(5));
    assert_eq!(pool.effective_limit(&"b"), Some(0));
    assert_eq!(pool.effective_limit(&"c"), Some(3));
}

#[test]
fn builder_limit_given_twice_keeps_the_last() {
    let pool = TaskPool::<&'static str>::builder()
        .limit("a", 1)
        .limit("a", 3)
        .build();
    assert_eq!(pool.limit(&"a"), Some(3));
}

#[test]
fn set_limit_accepts_a_number_or_an_option() {
    let pool = TaskPool::<u32>::new();
    pool.set_limit(1, 4);
    pool.set_limit(2, Some(6));
    assert_eq!(pool.limit(&1), Some(4));
    assert_eq!(pool.limit(&2), Some(6));
    pool.set_limit(1, None);
    assert_eq!(pool.limit(&1), None);
    assert_eq!(pool.limit(&2), Some(6));
}

#[test]
fn set_limit_is_idempotent() {
    let pool = TaskPool::<&'static str>::new();
    pool.set_limit("a", 2);
    pool.set_limit("a", 2);
    assert_eq!(pool.limit(&"a"), Some(2));
    pool.set_limit("a", 3);
    assert_eq!(pool.limit(&"a"), Some(3));
    pool.set_limit("a", 3);
    assert_eq!(pool.limit(&"a"), Some(3));
}

#[test]
fn set_limit_none_clears_the_limit() {
    let pool = TaskPool::<&'static str>::new();
    pool.set_limit("a", 2);
    pool.set_limit("a", None);
    assert_eq!(pool.limit(&"a"), None);
    assert_eq!(pool.effective_limit(&"a"), None);
}

#[test]
fn clear_limit_is_idempotent_and_harmless_on_unknown_groups() {
    let pool = TaskPool::<&'static str>::new();
    pool.clear_limit(&"never-seen");
    assert_eq!(pool.limit(&"never-seen"), None);
    pool.set_limit("a", 2);
    pool.set_limit("b", 5);
    pool.clear_limit(&"a");
    pool.clear_limit(&"a");
    assert_eq!(pool.limit(&"a"), None);
    assert_eq!(
        pool.limit(&"b"),
        Some(5),
        "clearing one group leaves the others alone"
    );
}

#[test]
fn set_max_tasks_and_default_limit_accept_numbers_and_none() {
    let pool = TaskPool::<&'static str>::new();
    pool.set_max_tasks(4);
    pool.set_default_limit(Some(2));
    assert_eq!(pool.max_tasks(), Some(4));
    assert_eq!(pool.default_limit(), Some(2));
    pool.set_max_tasks(Some(9));
    pool.set_default_limit(3);
    assert_eq!(pool.max_tasks(), Some(9));
    assert_eq!(pool.default_limit(), Some(3));
    pool.set_max_tasks(None);
    pool.set_default_limit(None);
    assert_eq!(pool.max_tasks(), None);
    assert_eq!(pool.default_limit(), None);
}

#[test]
fn unknown_groups_count_zero() {
    let pool = TaskPool::<String>::new();
    assert_eq!(pool.task_count(&"nobody".to_string()), 0);
    pool.set_limit("limited".to_string(), 3);
    assert_eq!(
        pool.task_count(&"limited".to_string()),
        0,
        "a limit alone is not a task"
    );
}

// ---------------------------------------------------------------------------------------------
// max_tasks (the total group)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn max_tasks_limits_the_total() {
    let pool = TaskPool::<&'static str>::builder().max_tasks(2).build();
    let first = spawn_held(&pool, [], 1);
    let second = spawn_held(&pool, ["a"], 2);
    assert_eq!(pool.len(), 2);

    let error = refused(pool.try_spawn(["b"], async {}));
    assert!(error.is_full());
    assert_eq!(error.full_group(), Some(&Group::Total));
    let error = refused(pool.try_spawn([], async {}));
    assert_eq!(error.full_group(), Some(&Group::Total));
    assert_eq!(pool.len(), 2);

    finish(first, 1).await;
    assert_eq!(pool.len(), 1);
    let third = spawn_held(&pool, [], 3);
    assert_eq!(pool.len(), 2);
    finish(second, 2).await;
    finish(third, 3).await;
    assert!(pool.is_empty());
}

#[tokio::test]
async fn set_max_tasks_at_run_time_limits_the_total() {
    let pool = TaskPool::<&'static str>::new();
    let first = spawn_held(&pool, [], 1);
    pool.set_max_tasks(1);
    assert_eq!(pool.max_tasks(), Some(1));
    let error = refused(pool.try_spawn([], async {}));
    assert_eq!(error.full_group(), Some(&Group::Total));

    pool.set_max_tasks(None);
    let second = spawn_held(&pool, [], 2);
    assert_eq!(pool.len(), 2);
    finish(first, 1).await;
    finish(second, 2).await;
}

#[tokio::test]
async fn max_tasks_zero_refuses_every_task() {
    let pool = TaskPool::<&'static str>::builder().max_tasks(0).build();
    let error = refused(pool.try_spawn([], async {}));
    assert_eq!(error.full_group(), Some(&Group::Total));
    let error = refused(pool.try_spawn(["a"], async {}));
    assert_eq!(error.full_group(), Some(&Group::Total));
    assert!(pool.is_empty());
    assert_eq!(pool.task_count(&"a"), 0);
}

#[tokio::test]
async fn lowering_max_tasks_below_running_count_lets_running_tasks_finish() {
    let pool = TaskPool::<&'static str>::new();
    let held: Vec<_> = (0..3).map(|i| spawn_held(&pool, [], i)).collect();
    pool.set_max_tasks(1);
    assert_eq!(pool.len(), 3, "lowering the total limit cancels nothing");

    let mut held = held.into_iter();
    for (i, running_after) in [(0, 2), (1, 1)] {
        finish(held.next().unwrap(), i).await;
        assert_eq!(pool.len(), running_after);
        let error = refused(pool.try_spawn([], async {}));
        assert_eq!(error.full_group(), Some(&Group::Total));
    }
    finish(held.next().unwrap(), 2).await;
    assert!(pool.is_empty());
    let handle = admitted(pool.try_spawn([], async { 9 }));
    assert_eq!(handle.await.unwrap(), 9);
}

// ---------------------------------------------------------------------------------------------
// Explicit limits on named groups
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn limit_on_a_group_refuses_tasks_beyond_it() {
    let pool = TaskPool::<&'static str>::new();
    pool.set_limit("a", 2);
    let first = spawn_held(&pool, ["a"], 1);
    let second = spawn_held(&pool, ["a"], 2);
    let error = refused(pool.try_spawn(["a"], async {}));
    assert_eq!(error.full_group(), Some(&Group::Key("a")));
    assert_eq!(pool.task_count(&"a"), 2);

    let other = spawn_held(&pool, ["b"], 3);
    assert_eq!(
        pool.task_count(&"b"),
        1,
        "other groups are not limited by a's limit"
    );

    finish(first, 1).await;
    let third = spawn_held(&pool, ["a"], 4);
    assert_eq!(pool.task_count(&"a"), 2);
    finish(second, 2).await;
    finish(third, 4).await;
    finish(other, 3).await;
    assert!(pool.is_empty());
}

#[tokio::test]
async fn lowering_a_limit_below_running_count_lets_running_tasks_finish() {
    let pool = TaskPool::<&'static str>::new();
    pool.set_limit("a", 3);
    let held: Vec<_> = (0..3).map(|i| spawn_held(&pool, ["a"], i)).collect();
    pool.set_limit("a", 1);
    assert_eq!(pool.task_count(&"a"), 3, "lowering a limit cancels nothing");

    let mut held = held.into_iter();
    // Each running task completes normally with its own value; until the count is below the new
    // limit of 1 (i.e. 0), new tasks in `a` are refused.
    for (i, running_after) in [(0, 2), (1, 1)] {
        finish(held.next().unwrap(), i).await;
        assert_eq!(pool.task_count(&"a"), running_after);
        let error = refused(pool.try_spawn(["a"], async {}));
        assert_eq!(error.full_group(), Some(&Group::Key("a")));
    }
    finish(held.next().unwrap(), 2).await;
    assert_eq!(pool.task_count(&"a"), 0);
    let again = spawn_held(&pool, ["a"], 7);
    let error = refused(pool.try_spawn(["a"], async {}));
    assert_eq!(
        error.full_group(),
        Some(&Group::Key("a")),
        "the new limit of 1 holds"
    );
    finish(again, 7).await;
}

#[tokio::test]
async fn raising_a_limit_admits_new_tasks_immediately() {
    let pool = TaskPool::<&'static str>::new();
    pool.set_limit("a", 1);
    let first = spawn_held(&pool, ["a"], 1);
    refused(pool.try_spawn(["a"], async {}));
    pool.set_limit("a", 2);
    let second = spawn_held(&pool, ["a"], 2);
    assert_eq!(pool.task_count(&"a"), 2);
    finish(first, 1).await;
    finish(second, 2).await;
}

#[tokio::test]
async fn clearing_a_limit_admits_new_tasks_immediately() {
    let pool = TaskPool::<&'static str>::new();
    pool.set_limit("a", 1);
    let first = spawn_held(&pool, ["a"], 1);
    refused(pool.try_spawn(["a"], async {}));
    pool.clear_limit(&"a");
    let second = spawn_held(&pool, ["a"], 2);
    let third = spawn_held(&pool, ["a"], 3);
    assert_eq!(pool.task_count(&"a"), 3);
    finish(first, 1).await;
    finish(second, 2).await;
    finish(third, 3).await;
}

#[tokio::test]
async fn set_limit_zero_refuses_all_new_tasks_in_the_group() {
    let pool = TaskPool::<&'static str>::new();
    let running = spawn_held(&pool, ["a"], 1);
    pool.set_limit("a", 0);
    assert_eq!(pool.limit(&"a"), Some(0));
    assert_eq!(pool.task_count(&"a"), 1, "closing a group cancels nothing");

    for groups in [vec!["a"], vec!["b", "a"], vec!["a", "b"]] {
        let error = refused(pool.try_spawn(groups, async {}));
        assert!(error.is_full());
        assert_eq!(error.full_group(), Some(&Group::Key("a")));
    }
    // Tasks outside `a` are unaffected.
    let outside = spawn_held(&pool, ["b"], 2);
    assert_eq!(pool.task_count(&"b"), 1);

    finish(running, 1).await;
    assert_eq!(pool.task_count(&"a"), 0);
    refused(pool.try_spawn(["a"], async {}));

    pool.set_limit("a", 1);
    let reopened = spawn_held(&pool, ["a"], 3);
    assert_eq!(pool.task_count(&"a"), 1);
    finish(outside, 2).await;
    finish(reopened, 3).await;
}

// ---------------------------------------------------------------------------------------------
// default_limit
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn default_limit_applies_to_every_named_group_without_a_limit() {
    let pool = TaskPool::<&'static str>::builder().default_limit(1).build();
    let a = spawn_held(&pool, ["a"], 1);
    let b = spawn_held(&pool, ["b"], 2);
    let error = refused(pool.try_spawn(["a"], async {}));
    assert_eq!(error.full_group(), Some(&Group::Key("a")));
    let error = refused(pool.try_spawn(["b"], async {}));
    assert_eq!(error.full_group(), Some(&Group::Key("b")));
    let error = refused(pool.try_spawn(["c", "b"], async {}));
    assert_eq!(error.full_group(), Some(&Group::Key("b")));
    assert_eq!(pool.task_count(&"c"), 0);
    let c = spawn_held(&pool, ["c"], 3);
    assert_eq!(pool.len(), 3);
    finish(a, 1).await;
    finish(b, 2).await;
    finish(c, 3).await;
}

#[tokio::test]
async fn default_limit_does_not_limit_the_total() {
    let pool = TaskPool::<&'static str>::builder().default_limit(1).build();
    let held: Vec<_> = (0..5).map(|i| spawn_held(&pool, [], i)).collect();
    assert_eq!(
        pool.len(),
        5,
        "tasks with no groups are not limited by default_limit"
    );
    assert_eq!(
        pool.max_tasks(),
        None,
        "default_limit is not reported as max_tasks"
    );
    for (i, task) in held.into_iter().enumerate() {
        finish(task, i as u32).await;
    }
    assert!(pool.is_empty());
}

#[tokio::test]
async fn set_default_limit_does_not_limit_the_total() {
    let pool = TaskPool::<&'static str>::new();
    pool.set_default_limit(0);
    let handle = admitted(pool.try_spawn([], async { 5 }));
    assert_eq!(handle.await.unwrap(), 5);
    let error = refused(pool.try_spawn(["a"], async {}));
    assert_eq!(error.full_group(), Some(&Group::Key("a")));
}

#[tokio::test]
async fn explicit_limit_higher_than_default_overrides_it() {
    let pool = TaskPool::<&'static str>::builder()
        .default_limit(1)
        .limit("a", 3)
        .build();
    let held: Vec<_> = (0..3).map(|i| spawn_held(&pool, ["a"], i)).collect();
    assert_eq!(pool.task_count(&"a"), 3);
    let error = refused(pool.try_spawn(["a"], async {}));
    assert_eq!(error.full_group(), Some(&Group::Key("a")));
    for (i, task) in held.into_iter().enumerate() {
        finish(task, i as u32).await;
    }
}

#[tokio::test]
async fn explicit_limit_lower_than_default_overrides_it() {
    let pool = TaskPool::<&'static str>::builder().default_limit(3).build();
    pool.set_limit("a", 1);
    let first = spawn_held(&pool, ["a"], 1);
    let error = refused(pool.try_spawn(["a"], async {}));
    assert_eq!(error.full_group(), Some(&Group::Key("a")));
    // Another group still gets the default of 3.
    let others: Vec<_> = (0..3).map(|i| spawn_held(&pool, ["b"], i)).collect();
    refused(pool.try_spawn(["b"], async {}));
    finish(first, 1).await;
    for (i, task) in others.into_iter().enumerate() {
        finish(task, i as u32).await;
    }
}

#[tokio::test]
async fn explicit_limit_zero_overrides_default() {
    let pool = TaskPool::<&'static str>::builder().default_limit(5).build();
    pool.set_limit("a", 0);
    let error = refused(pool.try_spawn(["a"], async {}));
    assert_eq!(error.full_group(), Some(&Group::Key("a")));
    let handle = admitted(pool.try_spawn(["b"], async { 1 }));
    assert_eq!(handle.await.unwrap(), 1);
}

#[test]
fn limit_reports_only_the_explicit_limit_and_effective_limit_falls_back_to_default() {
    let pool = TaskPool::<&'static str>::new();
    pool.set_default_limit(4);
    pool.set_limit("a", 2);
    assert_eq!(pool.limit(&"a"), Some(2));
    assert_eq!(pool.effective_limit(&"a"), Some(2));
    assert_eq!(pool.limit(&"b"), None, "limit() never reports the default");
    assert_eq!(pool.effective_limit(&"b"), Some(4));

    pool.clear_limit(&"a");
    assert_eq!(pool.limit(&"a"), None);
    assert_eq!(
        pool.effective_limit(&"a"),
        Some(4),
        "a cleared group falls back to the default"
    );

    pool.set_default_limit(None);
    assert_eq!(pool.effective_limit(&"a"), None);
    assert_eq!(pool.effective_limit(&"b"), None);
}

#[tokio::test]
async fn clearing_an_explicit_limit_falls_back_to_default_limit() {
    let pool = TaskPool::<&'static str>::builder()
        .default_limit(1)
        .limit("a", 5)
        .build();
    let first = spawn_held(&pool, ["a"], 1);
    let second = spawn_held(&pool, ["a"], 2);
    pool.clear_limit(&"a");
    let error = refused(pool.try_spawn(["a"], async {}));
    assert_eq!(error.full_group(), Some(&Group::Key("a")));
    finish(first, 1).await;
    finish(second, 2).await;
    let third = spawn_held(&pool, ["a"], 3);
    refused(pool.try_spawn(["a"], async {}));
    finish(third, 3).await;
}

#[tokio::test]
async fn changing_default_limit_at_run_time_applies_to_groups_with_running_tasks() {
    let pool = TaskPool::<&'static str>::new();
    let first = spawn_held(&pool, ["a"], 1);
    let second = spawn_held(&pool, ["a"], 2);
    pool.set_default_limit(2);
    let error = refused(pool.try_spawn(["a"], async {}));
    assert_eq!(error.full_group(), Some(&Group::Key("a")));
    pool.set_default_limit(3);
    let third = spawn_held(&pool, ["a"], 3);
    pool.set_default_limit(None);
    let fourth = spawn_held(&pool, ["a"], 4);
    assert_eq!(pool.task_count(&"a"), 4);
    finish(first, 1).await;
    finish(second, 2).await;
    finish(third, 3).await;
    finish(fourth, 4).await;
}

// ---------------------------------------------------------------------------------------------
// Keys are opaque (seed: "The structure of the key is not relevant")
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn vec_keys_are_opaque_a_prefix_is_a_different_group() {
    let pool = TaskPool::<Vec<&'static str>>::new();
    pool.set_limit(vec!["a", "b"], 0);
    assert_eq!(pool.limit(&vec!["a"]), None);
    assert_eq!(pool.limit(&vec!["b"]), None);
    assert_eq!(pool.limit(&vec!["a", "b"]), Some(0));

    let held = spawn_held(&pool, [vec!["a"]], 1);
    assert_eq!(pool.task_count(&vec!["a"]), 1);
    assert_eq!(pool.task_count(&vec!["a", "b"]), 0);
    let error = refused(pool.try_spawn([vec!["a", "b"]], async {}));
    assert_eq!(error.full_group(), Some(&Group::Key(vec!["a", "b"])));

    // And the other way round: a limit on the shorter key says nothing about the longer one.
    pool.set_limit(vec!["a"], 1);
    refused(pool.try_spawn([vec!["a"]], async {}));
    pool.set_limit(vec!["a", "b"], None);
    let longer = spawn_held(&pool, [vec!["a", "b"]], 2);
    assert_eq!(pool.task_count(&vec!["a", "b"]), 1);
    assert_eq!(pool.task_count(&vec!["a"]), 1);
    finish(held, 1).await;
    finish(longer, 2).await;
}

#[tokio::test]
async fn tuple_keys_are_opaque_sharing_a_component_means_nothing() {
    let pool = TaskPool::<(&'static str, Option<&'static str>)>::new();
    pool.set_limit(("a", Some("b")), 1);
    assert_eq!(pool.limit(&("a", None)), None);

    let wide = spawn_held(&pool, [("a", Some("b"))], 1);
    let narrow = spawn_held(&pool, [("a", None)], 2);
    let narrow2 = spawn_held(&pool, [("a", None)], 3);
    assert_eq!(pool.task_count(&("a", None)), 2);
    assert_eq!(pool.task_count(&("a", Some("b"))), 1);
    assert_eq!(pool.task_count(&("a", Some("c"))), 0);
    let error = refused(pool.try_spawn([("a", Some("b"))], async {}));
    assert_eq!(error.full_group(), Some(&Group::Key(("a", Some("b")))));
    finish(wide, 1).await;
    finish(narrow, 2).await;
    finish(narrow2, 3).await;
}

// ---------------------------------------------------------------------------------------------
// Clones share one pool
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn clones_share_limits() {
    let pool = TaskPool::<&'static str>::new();
    let clone = pool.clone();
    clone.set_limit("a", 3);
    clone.set_max_tasks(10);
    clone.set_default_limit(2);
    assert_eq!(pool.limit(&"a"), Some(3));
    assert_eq!(pool.max_tasks(), Some(10));
    assert_eq!(pool.default_limit(), Some(2));
    pool.clear_limit(&"a");
    assert_eq!(clone.limit(&"a"), None);
}

#[tokio::test]
async fn clones_share_counts_and_enforce_limits_together() {
    let pool = TaskPool::<&'static str>::builder().limit("a", 2).build();
    let clone = pool.clone();
    let first = spawn_held(&pool, ["a"], 1);
    let second = spawn_held(&clone, ["a"], 2);
    assert_eq!(pool.task_count(&"a"), 2);
    assert_eq!(clone.task_count(&"a"), 2);
    assert_eq!(pool.len(), 2);
    assert_eq!(clone.len(), 2);
    refused(pool.try_spawn(["a"], async {}));
    refused(clone.try_spawn(["a"], async {}));
    drop(clone);
    finish(first, 1).await;
    finish(second, 2).await;
    assert!(pool.is_empty());
}

#[tokio::test]
async fn dropping_one_clone_keeps_the_running_tasks_counted() {
    let pool = TaskPool::<&'static str>::builder().limit("a", 1).build();
    let observer = pool.clone();
    let held = spawn_held(&pool, ["a"], 1);
    drop(pool);
    assert_eq!(observer.task_count(&"a"), 1);
    refused(observer.try_spawn(["a"], async {}));
    finish(held, 1).await;
    assert_eq!(observer.task_count(&"a"), 0);
}
