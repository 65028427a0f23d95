//! Waiters and the per-group lists that thread through them.
//!
//! Every waiting admission is one [`Waiter`] record. A waiter has one [`Link`] per group it
//! asked for (slot 0 is the total group, slot `i + 1` the `i`-th of its named groups). In each
//! group a waiter is in exactly one of three places ([`Place`]): nowhere (it does not need the
//! group yet: only the total, before the waiter holds every named group), in the group's queue
//! (waiting for a slot), or holding a slot reserved for it while it waits for another group.
//! Queues are doubly linked lists threaded through the links, so pushing, popping and
//! unlinking anywhere (cancellation, take-back) are O(1), and a waiter's membership in n groups
//! costs n links, not n allocations. Holding a slot is only a mark on the link and a count in
//! the group: the hot paths never walk the holders; a lowered limit, which must find the
//! youngest of them, scans the waiters instead.

use std::task::Waker;

use smallvec::SmallVec;

use super::records::Records;
use super::tasks::TaskRef;
use crate::group_set::GroupSet;

/// One waiter's link in one group: the waiter's index and which of its groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LinkRef {
    pub(crate) waiter: usize,
    /// 0 for the total group, `i + 1` for the waiter's `i`-th named group.
    pub(crate) slot: usize,
}

impl LinkRef {
    /// No neighbour (a list's end). Saves the 8 bytes an `Option` would take per pointer.
    const NIL: Self = Self {
        waiter: usize::MAX,
        slot: usize::MAX,
    };

    fn get(self) -> Option<Self> {
        (self != Self::NIL).then_some(self)
    }
}

/// Where a waiter is in one of its groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Place {
    /// Not in the group's lists (the total, until the waiter holds every named group).
    #[default]
    Outside,
    /// In the group's queue, waiting for a slot.
    Queued,
    /// Holds a slot of the group, counted in its `reserved`.
    Reserved,
}

/// A waiter's state in one of its groups.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Link {
    prev: LinkRef,
    next: LinkRef,
    pub(crate) place: Place,
}

impl Default for Link {
    fn default() -> Self {
        Self {
            prev: LinkRef::NIL,
            next: LinkRef::NIL,
            place: Place::Outside,
        }
    }
}

/// Where a waiter is in its life. The full state machine is in the core's docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Still missing a slot in at least one group.
    Waiting,
    /// Holds a slot in every group; its slots are counted as running. Only its future can
    /// take it out (on poll) or give the slots back (on drop).
    Granted,
    /// The pool was closed while it waited; it holds nothing.
    Closed,
}

/// One waiting admission.
pub(crate) struct Waiter<K> {
    /// The groups it asked for (the total is implicit), with the serials of their entries.
    /// Moved into a task record when a waiter for a task to be spawned is granted.
    pub(crate) groups: GroupSet<K>,
    /// The waiter is for a task to be spawned: on grant, its groups become a task record at
    /// once, so `abort_group` reaches it before its future has even seen the grant.
    pub(crate) track: bool,
    /// The task record made on grant (only with `track`).
    pub(crate) task: Option<TaskRef>,
    /// Arrival order across the pool (the record's id): waiters that become ready for the
    /// total in the same transition join its queue oldest first.
    pub(crate) ticket: u64,
    /// One per group: the total first, then `groups` in order.
    pub(crate) links: SmallVec<[Link; 5]>,
    /// How many of `links` are not [`Place::Reserved`].
    pub(crate) missing: usize,
    pub(crate) waker: Option<Waker>,
    pub(crate) phase: Phase,
}

impl<K> Waiter<K> {
    pub(crate) fn new(groups: GroupSet<K>, waker: Waker, track: bool) -> Self {
        let slots = groups.len() + 1;
        Self {
            groups,
            track,
            task: None,
            ticket: 0,
            links: smallvec::smallvec![Link::default(); slots],
            missing: slots,
            waker: Some(waker),
            phase: Phase::Waiting,
        }
    }

    /// Holds a slot of every named group and is not yet queued for (or holding) the total.
    pub(crate) fn ready_for_total(&self) -> bool {
        self.phase == Phase::Waiting && self.missing == 1 && self.links[0].place == Place::Outside
    }

    /// Rewrites the links of this waiter that point at moved waiters (after a compaction).
    pub(crate) fn relink(&mut self, moved: impl Fn(LinkRef) -> LinkRef) {
        for link in &mut self.links {
            if link.prev != LinkRef::NIL {
                link.prev = moved(link.prev);
            }
            if link.next != LinkRef::NIL {
                link.next = moved(link.next);
            }
        }
    }
}

pub(crate) type Waiters<K> = Records<Waiter<K>>;

/// The queue of waiters for one group, linked through the waiters' [`Link`]s, oldest first
/// (a waiter whose reserved slot was taken back returns to the front, ahead of every younger
/// waiter).
#[derive(Debug)]
pub(crate) struct List {
    head: LinkRef,
    tail: LinkRef,
    len: usize,
}

impl Default for List {
    fn default() -> Self {
        Self {
            head: LinkRef::NIL,
            tail: LinkRef::NIL,
            len: 0,
        }
    }
}

impl List {
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The number of waiters in the list.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn push_back<K>(&mut self, waiters: &mut Waiters<K>, at: LinkRef) {
        let link = &mut waiters[at.waiter].links[at.slot];
        debug_assert_eq!(link.place, Place::Outside, "a link is in two places");
        link.place = Place::Queued;
        link.prev = self.tail;
        link.next = LinkRef::NIL;
        match self.tail.get() {
            Some(tail) => waiters[tail.waiter].links[tail.slot].next = at,
            None => self.head = at,
        }
        self.tail = at;
        self.len += 1;
    }

    pub(crate) fn push_front<K>(&mut self, waiters: &mut Waiters<K>, at: LinkRef) {
        let link = &mut waiters[at.waiter].links[at.slot];
        debug_assert_eq!(link.place, Place::Outside, "a link is in two places");
        link.place = Place::Queued;
        link.prev = LinkRef::NIL;
        link.next = self.head;
        match self.head.get() {
            Some(head) => waiters[head.waiter].links[head.slot].prev = at,
            None => self.tail = at,
        }
        self.head = at;
        self.len += 1;
    }

    /// Removes and returns the oldest member.
    pub(crate) fn pop_front<K>(&mut self, waiters: &mut Waiters<K>) -> Option<LinkRef> {
        let head = self.head.get()?;
        self.unlink(waiters, head);
        Some(head)
    }

    /// Removes `at` from the list, wherever it is.
    pub(crate) fn unlink<K>(&mut self, waiters: &mut Waiters<K>, at: LinkRef) {
        let link = &mut waiters[at.waiter].links[at.slot];
        debug_assert_eq!(
            link.place,
            Place::Queued,
            "unlinking a link that is not queued"
        );
        let (prev, next) = (link.prev, link.next);
        link.prev = LinkRef::NIL;
        link.next = LinkRef::NIL;
        link.place = Place::Outside;
        match prev.get() {
            Some(prev) => waiters[prev.waiter].links[prev.slot].next = next,
            None => self.head = next,
        }
        match next.get() {
            Some(next) => waiters[next.waiter].links[next.slot].prev = prev,
            None => self.tail = prev,
        }
        self.len -= 1;
    }

    /// Points the neighbours of `at` back at it, after its waiter moved there and its own
    /// links were rewritten (a compaction); returns whether `at` is the first / last of its
    /// list, whose ends the caller fixes with [`relink_end`](Self::relink_end).
    pub(crate) fn relink_neighbours<K>(waiters: &mut Waiters<K>, at: LinkRef) -> (bool, bool) {
        let link = &waiters[at.waiter].links[at.slot];
        let (prev, next) = (link.prev, link.next);
        if let Some(prev) = prev.get() {
            waiters[prev.waiter].links[prev.slot].next = at;
        }
        if let Some(next) = next.get() {
            waiters[next.waiter].links[next.slot].prev = at;
        }
        (prev == LinkRef::NIL, next == LinkRef::NIL)
    }

    /// Points the list's ends at a waiter that moved from `from` to `to` (after a compaction).
    pub(crate) fn relink_end(&mut self, slot: usize, from: usize, to: usize) {
        if self.head == (LinkRef { waiter: from, slot }) {
            self.head.waiter = to;
        }
        if self.tail == (LinkRef { waiter: from, slot }) {
            self.tail.waiter = to;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A waiter record's size for a 16-byte key: five links inline (the total and four
    /// groups), four groups inline with their hashes and serials, the waker. It was 424 bytes
    /// with 56-byte links; a link is 40 bytes now that a list end is a sentinel, not an
    /// `Option`, which pays for the serials.
    #[test]
    fn a_waiter_record_stays_small() {
        let size = std::mem::size_of::<Waiter<&'static str>>();
        assert!(size <= 408, "Waiter<&str> is {size} bytes");
        assert_eq!(std::mem::size_of::<Link>(), 40);
    }
}
