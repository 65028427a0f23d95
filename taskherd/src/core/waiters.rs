//! Waiters and the per-group FIFO queues that thread through them.
//!
//! Every waiting admission is one [`Waiter`] in a slab. A waiter is a member of one queue per
//! group it still needs (slot 0 is the total group, slot `i + 1` the `i`-th of its named
//! groups). Queues are doubly linked lists threaded through the waiters' [`Link`]s, so pushing,
//! popping and unlinking a waiter from the middle of a queue (cancellation) are O(1), and a
//! waiter's membership in n groups costs n links, not n allocations.

use std::task::Waker;

use slab::Slab;
use smallvec::SmallVec;

use super::tasks::TaskRef;
use crate::group_set::GroupSet;

/// One waiter's place in one group's queue: the waiter and which of its groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LinkRef {
    pub(crate) waiter: usize,
    /// 0 for the total group, `i + 1` for the waiter's `i`-th named group.
    pub(crate) slot: usize,
}

/// A waiter's state in one of its groups.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Link {
    prev: Option<LinkRef>,
    next: Option<LinkRef>,
    /// In this group's queue, waiting for a slot.
    pub(crate) queued: bool,
    /// Holds a slot of this group, counted in the group's `reserved`.
    pub(crate) reserved: bool,
}

/// Where a waiter is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Still missing a slot in at least one group.
    Waiting,
    /// Holds a slot in every group; its slots are counted as running. Only its future can
    /// take it out of the slab (on poll) or give the slots back (on drop).
    Granted,
    /// The pool was closed while it waited; it holds nothing.
    Closed,
}

/// One waiting admission.
pub(crate) struct Waiter<K> {
    /// The groups it asked for (the total is implicit). Moved into `task` when a waiter for a
    /// task to be spawned is granted.
    pub(crate) groups: GroupSet<K>,
    /// The waiter is for a task to be spawned: on grant, its groups become a task record at
    /// once, so `abort_group` reaches it before its future has even seen the grant.
    pub(crate) track: bool,
    /// The task record made on grant (only with `track`).
    pub(crate) task: Option<TaskRef>,
    /// Arrival order across the pool: waiters that become ready for the total in the same
    /// transition join its queue oldest first.
    pub(crate) ticket: u64,
    /// One per group: the total first, then `groups` in order.
    pub(crate) links: SmallVec<[Link; 5]>,
    /// How many of `links` are not yet reserved.
    pub(crate) missing: usize,
    pub(crate) waker: Option<Waker>,
    pub(crate) phase: Phase,
}

impl<K> Waiter<K> {
    pub(crate) fn new(groups: GroupSet<K>, waker: Waker, track: bool, ticket: u64) -> Self {
        let slots = groups.len() + 1;
        Self {
            groups,
            track,
            task: None,
            ticket,
            links: smallvec::smallvec![Link::default(); slots],
            missing: slots,
            waker: Some(waker),
            phase: Phase::Waiting,
        }
    }
}

/// A FIFO queue of waiters for one group, linked through the waiters' [`Link`]s.
///
/// Waiters are pushed in arrival order, so every queue is ordered by arrival.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    head: Option<LinkRef>,
    tail: Option<LinkRef>,
    len: usize,
}

impl Queue {
    pub(crate) fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    /// The number of waiters in the queue.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn push_back<K>(&mut self, waiters: &mut Slab<Waiter<K>>, at: LinkRef) {
        let link = &mut waiters[at.waiter].links[at.slot];
        debug_assert!(!link.queued, "a waiter is queued on a group twice");
        link.queued = true;
        link.prev = self.tail;
        link.next = None;
        match self.tail {
            Some(tail) => waiters[tail.waiter].links[tail.slot].next = Some(at),
            None => self.head = Some(at),
        }
        self.tail = Some(at);
        self.len += 1;
    }

    /// Removes and returns the oldest waiter in the queue.
    pub(crate) fn pop_front<K>(&mut self, waiters: &mut Slab<Waiter<K>>) -> Option<LinkRef> {
        let head = self.head?;
        self.unlink(waiters, head);
        Some(head)
    }

    /// Removes `at` from the queue, wherever it is.
    pub(crate) fn unlink<K>(&mut self, waiters: &mut Slab<Waiter<K>>, at: LinkRef) {
        let link = &mut waiters[at.waiter].links[at.slot];
        debug_assert!(link.queued, "unlinking a waiter that is not queued");
        let (prev, next) = (link.prev.take(), link.next.take());
        link.queued = false;
        match prev {
            Some(prev) => waiters[prev.waiter].links[prev.slot].next = next,
            None => self.head = next,
        }
        match next {
            Some(next) => waiters[next.waiter].links[next.slot].prev = prev,
            None => self.tail = prev,
        }
        self.len -= 1;
    }
}
