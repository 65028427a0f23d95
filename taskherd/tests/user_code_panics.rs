//! A key whose `Clone` panics must not corrupt the pool: the panic reaches the caller, and
//! nothing is counted, queued or leaked.

use std::hash::{Hash, Hasher};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use taskherd::TaskPool;

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
