//! `RedisPermit::lost()` is polled on every frame of a response body by `taskherd-tower`: a
//! poll with the same waker as the last one allocates nothing (a review found one allocation
//! per poll: the panic-catching waker was made anew each time, and tokio re-registered it).
//! In a binary of its own: it counts allocations with a global allocator.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Wake, Waker};
use std::time::Duration;

use support::{Server, pool};

/// Counts this thread's allocations while `COUNTING` is set.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to `System`; the counter is thread-local.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            COUNT.with(|count| count.set(count.get() + 1));
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

struct Nothing;

impl Wake for Nothing {
    fn wake(self: Arc<Self>) {}
}

#[test]
fn polling_lost_again_with_the_same_waker_does_not_allocate() {
    let server = Server::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let pool = rt.block_on(pool(&server, "lost-allocations", Duration::from_secs(30)));
    let permit = rt.block_on(pool.try_acquire(["a"])).unwrap();
    let mut lost = Box::pin(permit.lost());
    let waker = Waker::from(Arc::new(Nothing));
    let mut cx = Context::from_waker(&waker);
    assert!(lost.as_mut().poll(&mut cx).is_pending());
    COUNTING.with(|counting| counting.set(true));
    for _ in 0..1000 {
        assert!(lost.as_mut().poll(&mut cx).is_pending());
    }
    COUNTING.with(|counting| counting.set(false));
    let allocations = COUNT.with(Cell::get);
    assert_eq!(
        allocations, 0,
        "{allocations} allocations in 1,000 polls of lost()"
    );
    drop(lost);
    drop(permit);
}
