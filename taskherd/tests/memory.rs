//! Memory is bounded by live state, not by the number of keys ever seen (DESIGN.md, invariant 4):
//! attacker-chosen keys must not grow the pool.
//!
//! This binary installs a counting global allocator. Only allocations made on a thread that is
//! "measuring" are counted, so the test harness's own threads do not disturb the numbers, and the
//! tests take turns through a mutex. Everything runs on a current-thread runtime built on the
//! measuring thread, so every allocation of the pool and of its tasks is seen.
//!
//! Each measurement is taken after a warm-up that grows tokio's own structures (its run queue
//! keeps its capacity) to the size the measured phase needs, so growth seen after the warm-up is
//! the pool's.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicIsize, Ordering};

use taskherd::TaskPool;

/// Bytes allocated and not yet freed by measuring threads.
static LIVE: AtomicIsize = AtomicIsize::new(0);

thread_local! {
    static MEASURING: Cell<bool> = const { Cell::new(false) };
}

fn measuring() -> bool {
    MEASURING.try_with(Cell::get).unwrap_or(false)
}

struct CountingAllocator;

// SAFETY: every call is forwarded unchanged to `System`; the bookkeeping only reads a
// thread-local flag (const-initialised, no destructor, never allocates) and updates an atomic.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() && measuring() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() && measuring() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) };
        if measuring() {
            LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let new_ptr = unsafe { System.realloc(ptr, layout, new_size) };
        if !new_ptr.is_null() && measuring() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        new_ptr
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// The tests in this binary measure one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Counts this thread's allocations while alive.
struct Measuring;

impl Measuring {
    fn start() -> Self {
        MEASURING.with(|m| m.set(true));
        Measuring
    }
}

impl Drop for Measuring {
    fn drop(&mut self) {
        MEASURING.with(|m| m.set(false));
    }
}

fn live_bytes() -> isize {
    LIVE.load(Ordering::SeqCst)
}

/// Growth allowed between the two measurements: small and independent of the number of keys.
const SLACK: isize = 64 * 1024;

const BATCH: usize = 10_000;

/// 1,000,000 one-off keys in release builds; 200,000 in debug builds, so that the test stays well
/// under a minute on two cores without optimisations (the table is grown to the same 10,000 live
/// keys per batch either way).
const BATCHES: usize = if cfg!(debug_assertions) { 20 } else { 100 };

/// Keys alive at the same time in the shrink test.
const LIVE_KEYS: usize = 100_000;

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("building a current-thread runtime")
}

/// Spawns `count` tasks, each in its own fresh group, all alive at once; then awaits them all.
async fn run_one_off_groups(pool: &TaskPool<u64>, next_key: &mut u64, count: usize) {
    let mut handles = Vec::with_capacity(count);
    for _ in 0..count {
        let key = *next_key;
        *next_key += 1;
        match pool.try_spawn([key], async move { key }) {
            Ok(handle) => handles.push((key, handle)),
            Err(_) => panic!("a task in a fresh group {key} was refused"),
        }
    }
    assert_eq!(
        pool.len(),
        count,
        "all tasks of the batch are alive at once"
    );
    for (key, handle) in handles {
        assert_eq!(handle.await.unwrap(), key);
    }
    assert!(pool.is_empty());
}

/// Spawns `count` tasks in no group, all alive at once; then awaits them all.
async fn run_ungrouped(pool: &TaskPool<u64>, count: usize) {
    let mut handles = Vec::with_capacity(count);
    for i in 0..count {
        match pool.try_spawn([], async move { i }) {
            Ok(handle) => handles.push(handle),
            Err(_) => panic!("an ungrouped task was refused"),
        }
    }
    assert_eq!(pool.len(), count);
    for (i, handle) in handles.into_iter().enumerate() {
        assert_eq!(handle.await.unwrap(), i);
    }
    assert!(pool.is_empty());
}

#[test]
fn one_off_groups_do_not_grow_memory() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let _measuring = Measuring::start();
    let rt = current_thread_runtime();
    let pool = TaskPool::<u64>::builder().default_limit(2).build();

    rt.block_on(async {
        let mut next_key = 0;
        // Warm-up: one full batch grows tokio's run queue and anything sized by live state.
        run_one_off_groups(&pool, &mut next_key, BATCH).await;
        let before = live_bytes();

        for _ in 0..BATCHES {
            run_one_off_groups(&pool, &mut next_key, BATCH).await;
        }
        let after = live_bytes();
        println!(
            "one-off groups: {} keys in batches of {BATCH}: live bytes {before} before, {after} \
             after, growth {}",
            BATCH * BATCHES,
            after - before
        );
        assert_eq!(next_key as usize, BATCH * (BATCHES + 1));
        assert!(
            after - before < SLACK,
            "memory grew by {} bytes over {} one-off groups (before {before}, after {after})",
            after - before,
            BATCH * BATCHES
        );
        // The pool still knows nothing about any of those keys.
        assert_eq!(pool.task_count(&0), 0);
        assert_eq!(pool.limit(&0), None);
        assert_eq!(pool.effective_limit(&0), Some(2));
    });
}

#[test]
fn memory_returns_to_baseline_after_many_live_keys_finish() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let _measuring = Measuring::start();
    let rt = current_thread_runtime();
    let pool = TaskPool::<u64>::builder().default_limit(2).build();

    rt.block_on(async {
        // Warm-up: as many tasks in no group as keyed tasks later, so tokio's structures (and any
        // per-task bookkeeping of the pool) already have the size they will need; plus a few
        // keyed tasks.
        run_ungrouped(&pool, LIVE_KEYS).await;
        let mut next_key = 1_000_000_000;
        run_one_off_groups(&pool, &mut next_key, 16).await;
        let before = live_bytes();

        // LIVE_KEYS groups alive at once, each with its own key.
        let mut handles = Vec::with_capacity(LIVE_KEYS);
        for key in 0..LIVE_KEYS as u64 {
            match pool.try_spawn([key], async move { key }) {
                Ok(handle) => handles.push(handle),
                Err(_) => panic!("a task in a fresh group {key} was refused"),
            }
        }
        assert_eq!(pool.len(), LIVE_KEYS);
        assert_eq!(pool.task_count(&0), 1);
        assert_eq!(pool.task_count(&(LIVE_KEYS as u64 - 1)), 1);
        let peak = live_bytes();
        for (key, handle) in handles.into_iter().enumerate() {
            assert_eq!(handle.await.unwrap(), key as u64);
        }
        assert!(pool.is_empty());
        assert_eq!(pool.task_count(&0), 0);

        let after = live_bytes();
        println!(
            "{LIVE_KEYS} live keys: live bytes {before} before, {peak} at the peak, {after} after \
             they finished, growth {}",
            after - before
        );
        assert!(
            after - before < SLACK,
            "memory did not return to baseline after {LIVE_KEYS} live groups finished: \
             grew by {} bytes (before {before}, peak {peak}, after {after})",
            after - before
        );
    });
}
