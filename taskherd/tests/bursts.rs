//! After a burst, the pool's records are compacted (moved to fill the gaps) so memory comes
//! back (issue 9, item 5). Moving waiters must not disturb them: the survivors keep their
//! place in every queue, the slots reserved for them, and their futures still find them.

use std::task::Poll;

use taskherd::TaskPool;
use tokio_test::task::{Spawn, spawn as mock};
use tokio_test::{assert_pending, assert_ready_ok};

type Pool = TaskPool<u32>;

/// 1,000 waiters crossing three groups; all but every tenth are cancelled, which compacts
/// the waiter records several times while the survivors hold reservations and queue places.
/// Then the survivors are served strictly in arrival order, and everything drains.
#[test]
fn survivors_of_a_compaction_keep_their_turn_and_their_reservations() {
    // `a` and `b` are full; `c` has room for every waiter, so each survivor holds a slot of
    // `c` (reserved) while it queues on `a` and `b`.
    let pool = Pool::builder().limit(1, 1).limit(2, 1).build();
    let held = pool.try_acquire([1, 2]).unwrap();
    let mut waiters: Vec<Option<Spawn<_>>> = (0..1000)
        .map(|_| {
            let mut waiter = mock(pool.acquire([3, 1, 2]));
            assert_pending!(waiter.poll());
            Some(waiter)
        })
        .collect();
    assert_eq!(pool.stats(&3).reserved, 1000);
    for (i, waiter) in waiters.iter_mut().enumerate() {
        if i % 10 != 9 {
            *waiter = None;
        }
    }
    let survivors: Vec<usize> = (0..1000).filter(|i| i % 10 == 9).collect();
    assert_eq!(pool.waiting_len(), survivors.len());
    assert_eq!(
        pool.stats(&3).reserved,
        survivors.len(),
        "reservations survived"
    );
    assert_eq!(pool.waiting_count(&1), survivors.len());

    // Each release of the held slots grants exactly the oldest survivor.
    drop(held);
    for (n, &i) in survivors.iter().enumerate() {
        for &later in &survivors[n + 1..] {
            let waiter = waiters[later].as_mut().unwrap();
            assert!(
                !waiter.is_woken(),
                "waiter {later} woken before the older waiter {i}"
            );
        }
        let waiter = waiters[i].as_mut().unwrap();
        assert!(waiter.is_woken(), "waiter {i} is next and was woken");
        let permit = assert_ready_ok!(waiter.poll());
        assert_eq!(pool.task_count(&1), 1);
        assert_eq!(pool.waiting_len(), survivors.len() - n - 1);
        drop(permit);
    }
    assert!(pool.is_empty());
    assert_eq!(pool.waiting_len(), 0);
    assert_eq!(pool.stats(&3).reserved, 0);
}

/// Waiters re-polled with their own waker after a compaction find their records again, and
/// cancelling them after it gives back exactly what they hold.
#[test]
fn futures_find_their_waiters_after_a_compaction() {
    let pool = Pool::builder().limit(1, 1).build();
    let held = pool.try_acquire([1]).unwrap();
    let mut waiters: Vec<Spawn<_>> = (0..2000)
        .map(|_| {
            let mut waiter = mock(pool.acquire([1]));
            assert_pending!(waiter.poll());
            waiter
        })
        .collect();
    // Cancel the oldest 1,990: the 10 youngest, at the end of the records, are moved down.
    let survivors = waiters.split_off(1990);
    drop(waiters);
    let mut survivors = survivors;
    for waiter in &mut survivors {
        assert_pending!(waiter.poll());
    }
    assert_eq!(pool.waiting_count(&1), 10);
    // Cancel every other survivor, then serve the rest in order.
    let mut kept: Vec<Spawn<_>> = survivors
        .into_iter()
        .enumerate()
        .filter_map(|(i, waiter)| (i % 2 == 0).then_some(waiter))
        .collect();
    assert_eq!(pool.waiting_count(&1), 5);
    drop(held);
    for i in 0..kept.len() {
        let permit = match kept[i].poll() {
            Poll::Ready(permit) => permit.unwrap(),
            Poll::Pending => panic!("survivor {i} was not granted in turn"),
        };
        for later in &mut kept[i + 1..] {
            assert_pending!(later.poll());
        }
        drop(permit);
    }
    assert!(pool.is_empty());
    assert_eq!(pool.waiting_len(), 0);
}
