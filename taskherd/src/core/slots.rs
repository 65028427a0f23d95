//! Slab-like storage that grows without copying: records live in chunks that never move.
//!
//! [`Records`](super::records::Records) keeps task records, waiters and `wait` registrations
//! here, under the pool's lock. A `Vec`-backed slab grows by doubling, which copies every
//! live record into the new allocation: in a burst of 200,000 spawns the last doubling was one
//! critical section of about 10 ms (25 MB copied), during which every other thread waited for
//! the lock (measured with `examples/lock_hold.rs`). Here the first chunk grows like a `Vec`
//! up to [`CHUNK`] slots, so a small pool stays small and the largest copy is of
//! `CHUNK / 2` records; every later chunk is allocated once with exactly [`CHUNK`] slots and
//! never reallocated. Growing past the first chunk adds a chunk and copies nothing but the
//! chunk list (one header per 4,096 slots). Chunks are large so that a slot is found with a
//! shift and a mask, and so that allocating them is rare: each large `malloc` costs tens of
//! thousands of instructions in glibc while freed task cells sit in its fast bins (chunks of
//! 256 slots made that 150 instructions per spawn; chunks doubling in size cost more per
//! lookup).
//!
//! Like a slab: O(1) insert, lookup and removal by index. Freed slots are reused, from the
//! lowest chunk that has one (most recently freed first within it), so records gather in the
//! low chunks and the last chunk empties as they end. A chunk left empty is freed at once
//! (never the first): the last one is dropped, one below it keeps its place as a dead chunk
//! (a header without slots, so that indexes above it keep their meaning) until a value needs
//! it again or the chunks above it go. A burst drained oldest first, the order in which its
//! tasks usually end, so gives its memory back chunk by chunk without moving a value (its
//! low chunks empty first; before dead chunks, its survivors all moved down, 9,212 moves per
//! 80,000 tasks in `examples/compare.rs`). Memory of scattered survivors comes back by moving
//! them:
//! [`compact_step`](Slots::compact_step) empties the last chunk into holes below it, at most
//! [`STEP_MOVES`] values per step (no critical section grows with the table: draining a burst
//! of 200,000 tasks held the lock 6.4 ms in the one compaction that moved every survivor, and
//! still 0.6 to 1.5 ms when a step emptied a whole chunk of 4,096), or packs a lone first chunk
//! ([`compact`](Slots::compact), which can also pack everything at once).

use std::mem;

/// Slots per chunk (a power of two).
pub(crate) const CHUNK: usize = 4096;
const SHIFT: u32 = CHUNK.trailing_zeros();
const MASK: usize = CHUNK - 1;

/// No slot (end of a free list).
const NONE: usize = usize::MAX;

/// Values moved, and slots looked at, by one [`compact_step`](Slots::compact_step) at most.
pub(crate) const STEP_MOVES: usize = 256;
const STEP_SLOTS: usize = 8 * STEP_MOVES;

enum Slot<T> {
    /// Free; the offset of the next free slot of the same chunk (`NONE`: none).
    Vacant(usize),
    Occupied(T),
}

struct Chunk<T> {
    slots: Vec<Slot<T>>,
    /// The chunk's most recently freed slot (`NONE`: none).
    free: usize,
    /// Occupied slots.
    live: usize,
}

impl<T> Chunk<T> {
    /// Whether the chunk was freed while chunks above it lived on (see [`Slots::kill`]).
    #[inline]
    fn is_dead(&self) -> bool {
        self.slots.capacity() == 0
    }

    fn new(capacity: usize) -> Self {
        Self {
            slots: Vec::with_capacity(capacity),
            free: NONE,
            live: 0,
        }
    }
}

/// See the [module documentation](self).
pub(crate) struct Slots<T> {
    /// Every chunk but the last holds exactly [`CHUNK`] slots (the first grows to it), or
    /// none if it is dead. The first chunk is never dead, nor is the last (dead chunks at the
    /// end are dropped), and every other chunk holds a value or is dead.
    chunks: Vec<Chunk<T>>,
    /// Dead chunks (freed below the last).
    dead: usize,
    /// The slots of the chunk killed last, all vacant, and the head of their free list: a
    /// chunk revived takes them back instead of allocating and filling a chunk (a value put
    /// in and taken out again at the boundary, every slot taken but a dead chunk's, revived
    /// and killed a chunk every time). Kept only while a chunk is dead.
    spare: Option<(Vec<Slot<T>>, usize)>,
    /// Chunks allocated, for tests.
    #[cfg(test)]
    allocated: usize,
    /// Occupied slots.
    len: usize,
    /// Bit `c` is set while chunk `c` has a free slot, except the chunk being evacuated.
    has_free: Vec<u64>,
    /// While [`compact_step`](Self::compact_step)s empty the last chunk: every slot of it below
    /// this offset is vacant. Its `has_free` bit stays clear meanwhile, so no value is put in
    /// it but at its end (and those, above the offset, move down in later steps).
    evacuating: Option<usize>,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Self {
            chunks: Vec::new(),
            dead: 0,
            spare: None,
            #[cfg(test)]
            allocated: 0,
            len: 0,
            has_free: Vec::new(),
            evacuating: None,
        }
    }
}

impl<T> Slots<T> {
    /// Occupied slots.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Slots allocated, free or not.
    #[inline]
    pub(crate) fn capacity(&self) -> usize {
        match self.chunks.len() {
            0 => 0,
            1 => self.chunks[0].slots.capacity(),
            n => (n - self.dead) * CHUNK,
        }
    }

    /// Whether there is more than one chunk ([`compact_step`](Self::compact_step)s empty the
    /// last); with one, compacting packs it and shrinks it.
    #[inline]
    pub(crate) fn is_chunked(&self) -> bool {
        self.chunks.len() > 1
    }

    #[inline]
    fn set_free(&mut self, chunk: usize, free: bool) {
        let (word, bit) = (chunk / 64, 1u64 << (chunk % 64));
        if free {
            if word >= self.has_free.len() {
                self.has_free.resize(word + 1, 0);
            }
            self.has_free[word] |= bit;
        } else if let Some(bits) = self.has_free.get_mut(word) {
            *bits &= !bit;
        }
    }

    /// The lowest chunk with a free slot.
    #[inline]
    fn first_free(&self) -> Option<usize> {
        let word = self.has_free.iter().position(|&bits| bits != 0)?;
        Some(word * 64 + self.has_free[word].trailing_zeros() as usize)
    }

    /// Takes the most recently freed slot of `chunk` (which has one) for `value`; returns its
    /// offset.
    #[inline]
    fn fill_hole(&mut self, chunk: usize, value: T) -> usize {
        let c = &mut self.chunks[chunk];
        let offset = c.free;
        let next = match c.slots.get_mut(offset) {
            Some(slot @ Slot::Vacant(_)) => {
                let Slot::Vacant(next) = mem::replace(slot, Slot::Occupied(value)) else {
                    unreachable!("matched as vacant")
                };
                next
            }
            _ => unreachable!("a free list names only vacant slots"),
        };
        c.free = next;
        c.live += 1;
        if next == NONE {
            self.set_free(chunk, false);
        }
        offset
    }

    /// Stores `value` and returns its index.
    #[inline]
    pub(crate) fn insert(&mut self, value: T) -> usize {
        self.len += 1;
        if let Some(chunk) = self.first_free() {
            return chunk * CHUNK + self.fill_hole(chunk, value);
        }
        let base = self.chunks.len().saturating_sub(1) * CHUNK;
        match self.chunks.last_mut() {
            // The first chunk grows like a `Vec`, never past `CHUNK` (a compaction may have
            // shrunk it to any size, from which plain doubling would overshoot).
            Some(last) if last.slots.len() < CHUNK => {
                if last.slots.len() == last.slots.capacity() {
                    let want = (2 * last.slots.capacity()).clamp(4, CHUNK);
                    last.slots.reserve_exact(want - last.slots.len());
                }
                last.slots.push(Slot::Occupied(value));
                last.live += 1;
                base + last.slots.len() - 1
            }
            _ if self.dead > 0 => self.revive(value),
            _ => self.push_chunk(value),
        }
    }

    /// Every slot is taken but dead chunks are left: gives the lowest one slots again, all
    /// free, and puts `value` in it. O(1) with the [spare](Self::spare) slots of the chunk
    /// killed last; else O([`CHUNK`]) to allocate and fill a chunk, which happens once per
    /// [`CHUNK`] insertions at most (a chunk revived from the spare and killed again leaves
    /// the spare behind).
    #[cold]
    #[inline(never)]
    fn revive(&mut self, value: T) -> usize {
        let Some(chunk) = self.chunks.iter().position(Chunk::is_dead) else {
            unreachable!("a dead chunk is counted")
        };
        self.dead -= 1;
        let (slots, free) = match self.spare.take() {
            Some(spare) => spare,
            None => {
                #[cfg(test)]
                {
                    self.allocated += 1;
                }
                (Self::vacant_chunk(), 0)
            }
        };
        let c = &mut self.chunks[chunk];
        c.slots = slots;
        c.free = free;
        self.set_free(chunk, true);
        chunk * CHUNK + self.fill_hole(chunk, value)
    }

    /// A chunk's worth of vacant slots, their free list running from the first slot up.
    fn vacant_chunk() -> Vec<Slot<T>> {
        let mut slots = Vec::with_capacity(CHUNK);
        slots.extend((1..CHUNK).map(Slot::Vacant));
        slots.push(Slot::Vacant(NONE));
        slots
    }

    /// Frees the memory of `chunk`, empty and neither the first nor the last: it stays as a
    /// header without slots, so that the indexes of the chunks above keep their meaning. Its
    /// slots (all vacant) become the [spare](Self::spare) if there is none.
    #[cold]
    #[inline(never)]
    fn kill(&mut self, chunk: usize) {
        let c = &mut self.chunks[chunk];
        debug_assert!(c.live == 0 && !c.is_dead() && c.slots.len() == CHUNK);
        let slots = mem::take(&mut c.slots);
        let free = mem::replace(&mut c.free, NONE);
        self.dead += 1;
        self.set_free(chunk, false);
        if self.spare.is_none() {
            self.spare = Some((slots, free));
        }
        self.trim_bits();
    }

    /// Starts a chunk with `value` in its first slot: the first chunk grows like a `Vec`,
    /// the others are allocated at their full size once.
    #[cold]
    #[inline(never)]
    fn push_chunk(&mut self, value: T) -> usize {
        #[cfg(test)]
        {
            self.allocated += 1;
        }
        // The chunk being evacuated is no longer the last: it takes values again.
        self.stop_evacuating();
        let mut chunk = Chunk::new(if self.chunks.is_empty() { 0 } else { CHUNK });
        chunk.slots.push(Slot::Occupied(value));
        chunk.live = 1;
        self.chunks.push(chunk);
        (self.chunks.len() - 1) * CHUNK
    }

    #[inline]
    fn slot(&self, index: usize) -> Option<&Slot<T>> {
        self.chunks.get(index >> SHIFT)?.slots.get(index & MASK)
    }

    #[inline]
    fn slot_mut(&mut self, index: usize) -> Option<&mut Slot<T>> {
        self.chunks
            .get_mut(index >> SHIFT)?
            .slots
            .get_mut(index & MASK)
    }

    #[inline]
    pub(crate) fn get(&self, index: usize) -> Option<&T> {
        match self.slot(index)? {
            Slot::Occupied(value) => Some(value),
            Slot::Vacant(_) => None,
        }
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        match self.slot_mut(index)? {
            Slot::Occupied(value) => Some(value),
            Slot::Vacant(_) => None,
        }
    }

    /// Removes and returns the value at `index`, if one is there. Frees its chunk (never the
    /// first) once it is empty: the last is dropped, one below it is [killed](Self::kill).
    #[inline]
    pub(crate) fn try_remove(&mut self, index: usize) -> Option<T> {
        let (chunk, offset) = (index >> SHIFT, index & MASK);
        let c = self.chunks.get_mut(chunk)?;
        let slot = c.slots.get_mut(offset)?;
        if let Slot::Vacant(_) = slot {
            return None;
        }
        let Slot::Occupied(value) = mem::replace(slot, Slot::Vacant(c.free)) else {
            unreachable!("checked above")
        };
        let had_free = c.free != NONE;
        c.free = offset;
        c.live -= 1;
        let emptied = c.live == 0;
        self.len -= 1;
        if !had_free && !self.is_evacuating(chunk) {
            self.set_free(chunk, true);
        }
        if emptied && chunk > 0 {
            if chunk == self.chunks.len() - 1 {
                self.pop_empty_chunk();
            } else {
                self.kill(chunk);
            }
        }
        Some(value)
    }

    /// Frees the last chunk if it is empty (never the first), and drops the dead chunks
    /// below it that are then last (they hold no memory), and the spare slots once no chunk is
    /// dead. Two chunks' memory per call at most: freeing a chunk gives its memory back to the
    /// system, tens of microseconds each (freeing 38 at once held the lock 1 to 3 ms, when
    /// empty chunks below the last waited for the last to go).
    #[cold]
    fn pop_empty_chunk(&mut self) {
        if self.chunks.len() > 1 && self.chunks.last().is_some_and(|c| c.live == 0) {
            self.evacuating = None;
            self.chunks.pop();
            self.set_free(self.chunks.len(), false);
            while self.chunks.len() > 1 && self.chunks.last().is_some_and(Chunk::is_dead) {
                self.chunks.pop();
                self.dead -= 1;
            }
            if self.dead == 0 {
                // Freed with the last chunk: two chunks' memory in this call at most.
                self.spare = None;
            }
        }
        self.trim_bits();
    }

    fn trim_bits(&mut self) {
        while self.has_free.last() == Some(&0) {
            self.has_free.pop();
        }
        let words = self.chunks.len().div_ceil(64);
        if self.has_free.capacity() > 2 * words + 4 {
            self.has_free.shrink_to_fit();
        }
        if self.chunks.capacity() > 2 * self.chunks.len() + 4 {
            self.chunks.shrink_to_fit();
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, &T)> {
        self.chunks.iter().enumerate().flat_map(|(chunk, c)| {
            c.slots
                .iter()
                .enumerate()
                .filter_map(move |(offset, slot)| match slot {
                    Slot::Occupied(value) => Some((chunk * CHUNK + offset, value)),
                    Slot::Vacant(_) => None,
                })
        })
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (usize, &mut T)> {
        self.chunks.iter_mut().enumerate().flat_map(|(chunk, c)| {
            c.slots
                .iter_mut()
                .enumerate()
                .filter_map(move |(offset, slot)| match slot {
                    Slot::Occupied(value) => Some((chunk * CHUNK + offset, value)),
                    Slot::Vacant(_) => None,
                })
        })
    }

    /// Moves every value into the lowest slots (`0..len`), calling `on_move(value, from, to)`
    /// for each one moved, then frees the chunks left empty; a lone first chunk is shrunk to
    /// `max(len, min_capacity)` slots. O(slots). Values are moved, never dropped.
    pub(crate) fn compact(
        &mut self,
        min_capacity: usize,
        mut on_move: impl FnMut(&mut T, usize, usize),
    ) {
        let len = self.len;
        // The chunks that will hold `0..len` need their slots: dead ones among them are
        // allocated again (their slots free; every free list is reset below); the others are
        // dropped below.
        for chunk in 0..len.div_ceil(CHUNK).min(self.chunks.len()) {
            let c = &mut self.chunks[chunk];
            if c.is_dead() {
                c.slots = Self::vacant_chunk();
            }
        }
        // Two cursors: `hole` climbs to the next vacant slot below `len`, `top` descends to the
        // next occupied slot at or above `len`; there are exactly as many of each.
        let mut hole = 0;
        let mut top = match self.chunks.last() {
            None => 0,
            Some(last) => (self.chunks.len() - 1) * CHUNK + last.slots.len(),
        };
        loop {
            while hole < len && matches!(self.slot(hole), Some(Slot::Occupied(_))) {
                hole += 1;
            }
            if hole >= len {
                break;
            }
            top -= 1;
            while top > len && !matches!(self.slot(top), Some(Slot::Occupied(_))) {
                top -= 1;
            }
            let Some(slot) = self.slot_mut(top) else {
                unreachable!("a live value lies above every hole below `len`")
            };
            let Slot::Occupied(mut value) = mem::replace(slot, Slot::Vacant(NONE)) else {
                unreachable!("`top` stopped at an occupied slot")
            };
            on_move(&mut value, top, hole);
            if let Some(slot) = self.slot_mut(hole) {
                *slot = Slot::Occupied(value);
            }
            hole += 1;
        }
        // Everything live is in `0..len`, with no hole: drop the rest (vacant slots only).
        let chunks = len.div_ceil(CHUNK);
        self.chunks.truncate(chunks);
        for (index, chunk) in self.chunks.iter_mut().enumerate() {
            chunk.slots.truncate((len - index * CHUNK).min(CHUNK));
            chunk.live = chunk.slots.len();
            chunk.free = NONE;
        }
        if let [first] = self.chunks.as_mut_slice() {
            // A lone first chunk keeps room to grow like a `Vec` again (`shrink_to` copies
            // at most `CHUNK` slots).
            first.slots.shrink_to(len.max(min_capacity));
        }
        self.has_free.clear();
        self.dead = 0;
        self.spare = None;
        self.evacuating = None;
        self.trim_bits();
    }

    /// Whether `chunk` is the last one, being evacuated.
    #[inline]
    fn is_evacuating(&self, chunk: usize) -> bool {
        self.evacuating.is_some() && chunk + 1 == self.chunks.len()
    }

    /// Ends an evacuation under way: the last chunk takes values again.
    fn stop_evacuating(&mut self) {
        if self.evacuating.take().is_some()
            && let Some(last) = self.chunks.len().checked_sub(1)
            && self.chunks[last].free != NONE
        {
            self.set_free(last, true);
        }
    }

    /// One bounded step of compaction: with several chunks, moves values of the last chunk
    /// into the lowest free slots below it (calling `on_move(value, from, to)` for each), at
    /// most [`STEP_MOVES`] of them, looking at most at `STEP_SLOTS` slots, and frees the chunk
    /// once it is empty: later steps go on where this one stopped. With one chunk,
    /// [`compact`](Self::compact)s it (at most [`CHUNK`] slots). Does nothing (and stops an
    /// evacuation under way) if the chunks below have too few free slots for the last
    /// chunk's values.
    pub(crate) fn compact_step(
        &mut self,
        min_capacity: usize,
        mut on_move: impl FnMut(&mut T, usize, usize),
    ) {
        if !self.is_chunked() {
            self.compact(min_capacity, on_move);
            return;
        }
        let last = self.chunks.len() - 1;
        if self.chunks[last].live == 0 {
            // An empty chunk left by the last step or removal: this step frees it.
            self.pop_empty_chunk();
            return;
        }
        let live_below = self.len - self.chunks[last].live;
        if (last - self.dead) * CHUNK - live_below < self.chunks[last].live {
            self.stop_evacuating();
            return;
        }
        // The last chunk takes no value any more (but at its end), and gives its values up.
        self.set_free(last, false);
        let mut offset = self.evacuating.unwrap_or(0);
        let end = self.chunks[last].slots.len();
        let (mut moves, mut looked) = (0, 0);
        while offset < end && moves < STEP_MOVES && looked < STEP_SLOTS {
            let c = &mut self.chunks[last];
            if let Slot::Occupied(_) = c.slots[offset] {
                let Slot::Occupied(mut value) =
                    mem::replace(&mut c.slots[offset], Slot::Vacant(c.free))
                else {
                    unreachable!("matched as occupied")
                };
                c.free = offset;
                c.live -= 1;
                let Some(chunk) = self.first_free() else {
                    unreachable!("counted enough free slots below")
                };
                let to_offset = self.chunks[chunk].free;
                on_move(&mut value, last * CHUNK + offset, chunk * CHUNK + to_offset);
                self.fill_hole(chunk, value);
                moves += 1;
            }
            offset += 1;
            looked += 1;
        }
        if self.chunks[last].live == 0 {
            self.pop_empty_chunk();
        } else {
            self.evacuating = Some(offset);
            self.trim_bits();
        }
    }
}

impl<T> std::ops::Index<usize> for Slots<T> {
    type Output = T;

    #[track_caller]
    fn index(&self, index: usize) -> &T {
        self.get(index).expect("no value at this index")
    }
}

impl<T> std::ops::IndexMut<usize> for Slots<T> {
    #[track_caller]
    fn index_mut(&mut self, index: usize) -> &mut T {
        self.get_mut(index).expect("no value at this index")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use super::*;

    #[test]
    fn behaves_like_a_slab_across_chunks() {
        let mut slots = Slots::default();
        let n = 2 * CHUNK + 17;
        let indexes: Vec<usize> = (0..n).map(|i| slots.insert(i)).collect();
        assert_eq!(
            indexes,
            (0..n).collect::<Vec<_>>(),
            "indexes handed out in order"
        );
        assert_eq!(slots.len(), n);
        assert_eq!(slots.capacity(), 3 * CHUNK);
        for i in (0..n).step_by(3) {
            assert_eq!(slots.try_remove(i), Some(i));
            assert_eq!(slots.try_remove(i), None, "removed once");
            assert_eq!(slots.get(i), None);
        }
        // Freed slots are reused from the lowest chunk, most recently freed first in it.
        let last_freed_in_first = (0..CHUNK).step_by(3).next_back().unwrap();
        assert_eq!(slots.insert(usize::MAX), last_freed_in_first);
        assert_eq!(slots[last_freed_in_first], usize::MAX);
        let live: Vec<usize> = slots.iter().map(|(_, &v)| v).collect();
        assert_eq!(live.len(), slots.len());
        for (index, value) in slots.iter_mut() {
            if *value != usize::MAX {
                assert_eq!(*value, index);
            }
        }
        assert_eq!(slots.get(10 * n), None, "beyond the end");
        assert_eq!(slots.try_remove(10 * n), None);
    }

    #[test]
    fn growing_never_moves_a_full_chunk() {
        let mut slots = Slots::default();
        for i in 0..CHUNK {
            slots.insert(i);
        }
        let first = slots.chunks[0].slots.as_ptr();
        for i in CHUNK..5 * CHUNK {
            slots.insert(i);
        }
        assert_eq!(
            slots.chunks[0].slots.as_ptr(),
            first,
            "the first chunk stayed put"
        );
        assert!(slots.chunks.iter().all(|c| c.slots.capacity() == CHUNK));
    }

    #[test]
    fn a_shrunk_first_chunk_grows_back_to_one_chunk_exactly() {
        let mut slots = Slots::default();
        for i in 0..1_000 {
            slots.insert(i);
        }
        for i in 0..900 {
            slots.try_remove(i);
        }
        slots.compact_step(64, |_, _, _| {});
        assert_eq!(slots.capacity(), 100);
        for i in 0..5_000 {
            slots.insert(i);
        }
        assert_eq!(
            slots.chunks[0].slots.capacity(),
            CHUNK,
            "never past one chunk"
        );
        assert_eq!(slots.capacity(), 2 * CHUNK);
    }

    #[test]
    fn a_chunk_left_empty_is_freed_at_once() {
        let mut slots = Slots::default();
        for i in 0..4 * CHUNK {
            slots.insert(i);
        }
        // Emptying a chunk below the last frees it at once, nothing moved; the indexes above
        // keep their meaning.
        for i in CHUNK..2 * CHUNK {
            assert_eq!(slots.try_remove(i), Some(i));
        }
        assert_eq!(slots.capacity(), 3 * CHUNK);
        assert_eq!(slots.get(CHUNK), None);
        assert_eq!(
            slots.try_remove(CHUNK),
            None,
            "nothing to remove in a dead chunk"
        );
        assert_eq!(slots[2 * CHUNK], 2 * CHUNK);
        assert_eq!(slots[4 * CHUNK - 1], 4 * CHUNK - 1);
        // Every slot taken: the dead chunk takes values again before a chunk is added (in
        // its spare slots, most recently freed first).
        let (seven, eight) = (slots.insert(7), slots.insert(8));
        assert_eq!((seven, eight), (2 * CHUNK - 1, 2 * CHUNK - 2));
        assert_eq!(slots.capacity(), 4 * CHUNK);
        assert_eq!(slots.try_remove(seven), Some(7));
        assert_eq!(slots.try_remove(eight), Some(8));
        assert_eq!(slots.capacity(), 3 * CHUNK, "dead again");
        // The first chunk is never freed, even empty.
        for i in 0..CHUNK {
            slots.try_remove(i);
        }
        assert_eq!(slots.capacity(), 3 * CHUNK);
        // Emptying the last frees it; emptying the one left last frees it and drops the dead
        // chunk below it.
        for i in 3 * CHUNK..4 * CHUNK {
            slots.try_remove(i);
        }
        assert_eq!(slots.capacity(), 2 * CHUNK);
        for i in 2 * CHUNK..3 * CHUNK {
            slots.try_remove(i);
        }
        assert_eq!(slots.capacity(), CHUNK);
        assert_eq!(slots.chunks.len(), 1, "no dead chunk left at the end");
        assert!(slots.is_empty());
        // Freed slots of the first chunk are reused first, then a chunk is added after it.
        for _ in 0..CHUNK {
            assert!(slots.insert(0) < CHUNK);
        }
        assert_eq!(
            slots.insert(9),
            CHUNK,
            "appends after the first chunk again"
        );
    }

    /// `chunks` full chunks, then chunk 1 emptied (so dead), each value its own index.
    fn with_chunk_1_dead(chunks: usize) -> Slots<usize> {
        let mut slots = Slots::default();
        for i in 0..chunks * CHUNK {
            slots.insert(i);
        }
        for i in CHUNK..2 * CHUNK {
            assert_eq!(slots.try_remove(i), Some(i));
        }
        assert_eq!(slots.dead, 1);
        slots.check();
        slots
    }

    /// Packs `slots` with [`Slots::compact`], checking every move and the result.
    fn compact_and_check(slots: &mut Slots<usize>) {
        let mut before: Vec<usize> = slots.iter().map(|(_, &v)| v).collect();
        before.sort_unstable();
        let len = slots.len();
        slots.compact(64, |value, from, to| {
            assert_eq!(*value, from, "the value moved is the one at `from`");
            assert!(from >= len && to < len, "{from} -> {to} for {len} values");
        });
        slots.check();
        assert_eq!(slots.dead, 0);
        assert!(slots.iter().all(|(index, _)| index < len), "packed");
        let mut after: Vec<usize> = slots.iter().map(|(_, &v)| v).collect();
        after.sort_unstable();
        assert_eq!(after, before, "no value lost");
        assert_eq!(slots.capacity(), len.div_ceil(CHUNK) * CHUNK);
    }

    #[test]
    fn compaction_packs_across_dead_chunks() {
        // A dead chunk above the packed values: the values above it move down past it.
        let mut slots = Slots::default();
        for i in 0..4 * CHUNK {
            slots.insert(i);
        }
        for i in (2 * CHUNK..3 * CHUNK).chain((0..CHUNK).step_by(2)) {
            slots.try_remove(i);
        }
        for i in 3 * CHUNK + 10..4 * CHUNK {
            slots.try_remove(i);
        }
        assert_eq!(slots.dead, 1);
        slots.check();
        compact_and_check(&mut slots);

        // A dead chunk below: it takes values again.
        let mut slots = with_chunk_1_dead(4);
        compact_and_check(&mut slots);
        assert_eq!(slots.len(), 3 * CHUNK);
    }

    /// A value put in and taken out again at the boundary (every slot taken but a dead
    /// chunk's) revives the chunk and kills it again each time: the slots of the chunk killed
    /// last are kept, free, for that, so that a pool in that state does not allocate and fill
    /// a chunk under its lock for every spawn (found by review: 1,000 such pairs took 7.4 ms,
    /// against 85 µs when the boundary is a last chunk).
    #[test]
    fn a_chunk_killed_and_revived_again_and_again_is_not_reallocated() {
        let mut slots = with_chunk_1_dead(3);
        let allocated = slots.allocated;
        for i in 0..1_000 {
            let index = slots.insert(i);
            assert_eq!(index >> SHIFT, 1, "revived");
            assert_eq!(slots.allocated, allocated, "no chunk allocated and filled");
            assert_eq!(slots.try_remove(index), Some(i));
            assert_eq!(slots.dead, 1, "dead again");
            slots.check();
        }
        assert_eq!(slots.capacity(), 2 * CHUNK, "the spare is not counted");
        // The spare goes with the last dead chunk.
        for i in 2 * CHUNK..3 * CHUNK {
            slots.try_remove(i);
        }
        assert_eq!(slots.dead, 0);
        assert!(slots.spare.is_none(), "no spare without a dead chunk");
        slots.check();
    }

    #[test]
    fn compaction_packs_reports_every_move_and_gives_memory_back() {
        let mut slots = Slots::default();
        let n = 3 * CHUNK;
        for i in 0..n {
            slots.insert(i);
        }
        // Keep every 100th value, scattered over every chunk.
        for i in 0..n {
            if i % 100 != 99 {
                slots.try_remove(i);
            }
        }
        let live = slots.len();
        let mut moves = Vec::new();
        slots.compact(64, |value, from, to| {
            assert_eq!(*value, from, "the value moved is the one at `from`");
            moves.push((from, to));
        });
        assert_eq!(slots.len(), live);
        assert_eq!(slots.capacity(), live.max(64), "one chunk, shrunk to fit");
        let mut values: Vec<usize> = slots.iter().map(|(_, &v)| v).collect();
        values.sort_unstable();
        assert_eq!(values, (0..n).filter(|i| i % 100 == 99).collect::<Vec<_>>());
        assert!(
            slots.iter().all(|(index, _)| index < live),
            "packed at the bottom"
        );
        for (from, to) in moves {
            assert!(to < live && from >= live);
            assert_eq!(slots.get(from), None);
            assert_eq!(slots[to], from);
        }
        // Inserting after a compaction appends after the packed values.
        assert_eq!(slots.insert(7), live);
    }

    #[test]
    fn compaction_steps_empty_only_the_last_chunk() {
        let mut slots = Slots::default();
        for i in 0..4 * CHUNK {
            slots.insert(i);
        }
        // A few survivors in every chunk.
        for i in 0..4 * CHUNK {
            if i % 512 != 0 {
                slots.try_remove(i);
            }
        }
        let live = slots.len();
        assert_eq!(live, 32);
        let mut moves = Vec::new();
        let mut steps = 0;
        while slots.capacity() == 4 * CHUNK {
            slots.compact_step(64, |value, from, to| {
                assert_eq!(*value, from);
                moves.push((from, to));
            });
            steps += 1;
        }
        assert_eq!(
            steps,
            CHUNK / STEP_SLOTS,
            "each step looks at a bounded number of slots"
        );
        assert_eq!(
            moves.len(),
            CHUNK / 512,
            "only the last chunk's values moved"
        );
        assert!(
            moves
                .iter()
                .all(|&(from, to)| from >= 3 * CHUNK && to < CHUNK)
        );
        assert_eq!(slots.capacity(), 3 * CHUNK);
        assert_eq!(slots.len(), live);
        for (from, to) in &moves {
            assert_eq!(slots[*to], *from);
        }
        // Further steps empty the chunks one at a time, then pack the first.
        while slots.is_chunked() {
            slots.compact_step(64, |_, _, _| {});
        }
        assert_eq!(slots.capacity(), CHUNK);
        slots.compact_step(64, |_, _, _| {});
        assert_eq!(slots.capacity(), 64);
        let mut values: Vec<usize> = slots.iter().map(|(_, &v)| v).collect();
        values.sort_unstable();
        assert_eq!(values, (0..4 * CHUNK).step_by(512).collect::<Vec<_>>());
    }

    #[test]
    fn a_compaction_step_moves_a_bounded_number_of_values() {
        let mut slots = Slots::default();
        for i in 0..2 * CHUNK {
            slots.insert(i);
        }
        // The first chunk empty, the last full.
        for i in 0..CHUNK {
            slots.try_remove(i);
        }
        let mut steps = 0;
        while slots.is_chunked() {
            let mut moved = 0;
            slots.compact_step(64, |value, from, to| {
                assert_eq!(*value, from);
                assert!(from >= CHUNK && to < CHUNK);
                moved += 1;
            });
            assert!(moved <= STEP_MOVES, "{moved} values moved in one step");
            steps += 1;
            assert_eq!(slots.len(), CHUNK);
        }
        assert_eq!(steps, CHUNK / STEP_MOVES);
        assert_eq!(slots.capacity(), CHUNK);
        let mut values: Vec<usize> = slots.iter().map(|(_, &v)| v).collect();
        values.sort_unstable();
        assert_eq!(values, (CHUNK..2 * CHUNK).collect::<Vec<_>>());
    }

    #[test]
    fn a_chunk_being_evacuated_takes_no_value_until_it_must() {
        let mut slots = Slots::default();
        for i in 0..2 * CHUNK {
            slots.insert(i);
        }
        for i in 0..CHUNK {
            slots.try_remove(i);
        }
        slots.compact_step(64, |_, _, _| {});
        assert!(
            slots.evacuating.is_some(),
            "a step emptied part of the last chunk"
        );
        // A value freed in the last chunk, and new values: they go below it.
        assert_eq!(slots.try_remove(2 * CHUNK - 1), Some(2 * CHUNK - 1));
        let index = slots.insert(7);
        assert!(
            index < CHUNK,
            "put below the chunk being evacuated, at {index}"
        );
        // Fill every free slot below: the next value has nowhere to go but a new chunk, and
        // the last chunk takes values again.
        while slots.first_free().is_some() {
            let index = slots.insert(8);
            assert!(
                index < CHUNK,
                "put below the chunk being evacuated, at {index}"
            );
        }
        let beyond = slots.insert(9);
        assert_eq!(beyond, 2 * CHUNK, "a new chunk");
        assert!(slots.evacuating.is_none());
        let freed = slots.insert(10);
        assert!(
            (CHUNK..2 * CHUNK).contains(&freed),
            "the chunk no longer evacuated reuses its free slots, got {freed}"
        );
    }

    #[test]
    fn compaction_keeps_the_chunks_still_needed() {
        let mut slots = Slots::default();
        for i in 0..4 * CHUNK {
            slots.insert(i);
        }
        for i in 0..CHUNK + 1 {
            slots.try_remove(i);
        }
        slots.compact(64, |_, _, _| {});
        assert_eq!(slots.len(), 3 * CHUNK - 1);
        assert_eq!(slots.capacity(), 3 * CHUNK);
        assert!(
            slots
                .iter()
                .all(|(index, &value)| value > CHUNK && index < 3 * CHUNK)
        );
        let all: Vec<usize> = slots.iter().map(|(index, _)| index).collect();
        for index in all {
            slots.try_remove(index).unwrap();
        }
        slots.compact(64, |_, _, _| panic!("nothing to move"));
        assert!(slots.is_empty());
        assert_eq!(slots.capacity(), 0, "all memory given back");
        assert_eq!(slots.insert(1), 0);
    }

    impl<T> Slots<T> {
        /// Checks the structure: counts, free lists, and where chunks may be dead.
        fn check(&self) {
            let last = self.chunks.len().saturating_sub(1);
            let mut dead = 0;
            for (index, chunk) in self.chunks.iter().enumerate() {
                let occupied = chunk
                    .slots
                    .iter()
                    .filter(|slot| matches!(slot, Slot::Occupied(_)))
                    .count();
                assert_eq!(chunk.live, occupied, "chunk {index} counts its values");
                if chunk.is_dead() {
                    assert!(index != 0 && index != last, "chunk {index} of {last} dead");
                    dead += 1;
                } else if index != 0 && index != last {
                    assert!(chunk.live > 0, "chunk {index} of {last} empty but kept");
                }
                let mut free = 0;
                let mut at = chunk.free;
                while at != NONE {
                    let Some(Slot::Vacant(next)) = chunk.slots.get(at) else {
                        panic!("chunk {index}'s free list names slot {at}, not vacant");
                    };
                    free += 1;
                    at = *next;
                }
                let listed = self
                    .has_free
                    .get(index / 64)
                    .is_some_and(|w| w >> (index % 64) & 1 == 1);
                let evacuated = self.is_evacuating(index);
                assert_eq!(listed, free > 0 && !evacuated, "chunk {index}'s free bit");
            }
            assert_eq!(self.dead, dead, "dead chunks counted");
            if let Some((spare, head)) = &self.spare {
                let mut at = *head;
                assert!(dead > 0, "a spare kept without a dead chunk");
                assert_eq!(spare.len(), CHUNK);
                let mut free = 0;
                while at != NONE {
                    let Some(Slot::Vacant(next)) = spare.get(at) else {
                        panic!("the spare's free list names slot {at}, not vacant");
                    };
                    free += 1;
                    at = *next;
                }
                assert_eq!(free, CHUNK, "every spare slot is free");
            }
            assert_eq!(self.len, self.chunks.iter().map(|c| c.live).sum::<usize>());
        }
    }

    /// Random inserts, removals (some of them oldest first, as tasks usually end) and both
    /// compactions against a map from index to value, following every reported move.
    #[test]
    fn matches_a_model_through_random_operations() {
        let mut slots = Slots::default();
        // Index to value, and value (the round it was inserted in) to index: the oldest value
        // is the first of `order`.
        let mut model: HashMap<usize, u64> = HashMap::new();
        let mut order: BTreeMap<u64, usize> = BTreeMap::new();
        let mut next = crate::core::xorshift(0x2545_f491_4f6c_dd1d_u64);
        let (mut saw_dead, mut revived) = (false, false);
        for round in 0..300_000u64 {
            let r = next();
            // Phases of growth (about 9,000 values more) and of draining, so that chunks come
            // and go. Every other pair of phases is a burst: inserts only, then the oldest
            // values first with few inserts (as a burst of tasks ends), compacting only when
            // mostly empty (as `Records` does), which leaves dead chunks; then inserts only
            // again, which revives them.
            let burst = (round / 40_000) % 2 == 0;
            let grow = if burst {
                !(20_000..30_000).contains(&(round % 40_000))
            } else {
                (round / 20_000) % 2 == 0
            };
            let sparse = slots.capacity() > 64 && slots.len() < slots.capacity() / 8;
            let (compacting, inserting) = match (burst, grow) {
                (true, true) => (0..0, 0..100),
                (true, false) => (0..0, 95..100),
                (false, true) => (0..4, 4..75),
                (false, false) => (0..4, 75..100),
            };
            match r % 100 {
                x if compacting.contains(&x) || (burst && sparse) => {
                    let mut moves = Vec::new();
                    let on_move = |value: &mut u64, from, to| moves.push((from, to, *value));
                    if r.is_multiple_of(100) {
                        slots.compact(64, on_move);
                    } else {
                        slots.compact_step(64, on_move);
                    }
                    for (from, to, value) in moves {
                        assert_eq!(model.remove(&from), Some(value));
                        assert!(model.insert(to, value).is_none());
                        order.insert(value, to);
                    }
                }
                x if inserting.contains(&x) || model.is_empty() => {
                    let dead = slots.dead;
                    let index = slots.insert(round);
                    revived |= slots.dead < dead;
                    assert!(
                        model.insert(index, round).is_none(),
                        "index {index} reused while live"
                    );
                    order.insert(round, index);
                }
                _ if burst => {
                    let (value, index) = order.pop_first().unwrap();
                    assert_eq!(model.remove(&index), Some(value));
                    assert_eq!(slots.try_remove(index), Some(value));
                }
                _ => {
                    let (&first, _) = order.first_key_value().unwrap();
                    let pick = first + (r >> 8) % (round + 1 - first);
                    let (&value, &index) = order
                        .range(pick..)
                        .next()
                        .or(order.last_key_value())
                        .unwrap();
                    order.remove(&value);
                    assert_eq!(model.remove(&index), Some(value));
                    assert_eq!(slots.try_remove(index), Some(value));
                }
            }
            saw_dead |= slots.dead > 0;
            if round % 1_000 == 0 {
                slots.check();
                assert_eq!(slots.len(), model.len());
                let mut live: Vec<(usize, u64)> = slots.iter().map(|(i, &v)| (i, v)).collect();
                live.sort_unstable();
                let mut expected: Vec<(usize, u64)> = model.iter().map(|(&i, &v)| (i, v)).collect();
                expected.sort_unstable();
                assert_eq!(live, expected);
                assert!(slots.capacity() <= (model.len() * 8).max(2 * CHUNK) + CHUNK || grow);
            }
        }
        assert!(saw_dead && revived, "dead chunks were made and used again");
    }
}
