//! The server-side scripts: the only place admission is decided. Each call is one round trip
//! (EVALSHA, with the script loaded again on NOSCRIPT by [`redis::Script`]).
//!
//! Every script is `scripts/lib.lua` (the shared transitions) followed by its own file, whose
//! header comment lists its KEYS, ARGV and what it returns.

use std::sync::LazyLock;

use redis::{Script, ScriptInvocation};
use taskherd::LimitChanges;

use crate::RedisKey;
use crate::key::{InvalidKey, checked_segment};

macro_rules! script {
    ($name:ident, $file:literal) => {
        pub(crate) static $name: LazyLock<Script> = LazyLock::new(|| {
            Script::new(concat!(
                include_str!("../scripts/lib.lua"),
                "\n",
                include_str!(concat!("../scripts/", $file))
            ))
        });
    };
}

script!(ADMIT, "admit.lua");
script!(RELEASE, "release.lua");
script!(RENEW, "renew.lua");
script!(REAP, "reap.lua");
script!(POLL, "poll.lua");
script!(LIMITS, "limits.lua");
script!(LIMIT, "limit.lua");
script!(STATS, "stats.lua");

/// How many expired holders (and as many waiters) one script call reaps at most.
pub(crate) const REAP_BATCH: usize = 100;

/// A limit as the scripts read it: empty for none.
pub(crate) fn limit_arg(limit: Option<usize>) -> String {
    limit.map_or_else(String::new, |limit| limit.to_string())
}

/// How `limits.lua` applies a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitsMode {
    /// Every change.
    Set,
    /// Every change, only into a pool without limits (never set, or lost with Redis's data).
    Restore,
    /// Each limit only where the pool has none.
    Fill,
}

/// A batch of limit changes as `limits.lua` takes them: each segment once (the last change of
/// a key wins), in the order first seen.
#[derive(Debug, Clone)]
pub(crate) struct LimitBatch {
    max_tasks: Option<Option<usize>>,
    default_limit: Option<Option<usize>>,
    groups: Vec<(String, Option<usize>)>,
}

impl LimitBatch {
    /// The batch of `changes`; an error if a key's segment is invalid.
    pub(crate) fn of<K: RedisKey>(changes: LimitChanges<K>) -> Result<Self, InvalidKey> {
        let (max_tasks, default_limit, changed) = changes.into_parts();
        let mut groups: Vec<(String, Option<usize>)> = Vec::new();
        let mut index = std::collections::HashMap::new();
        for (key, limit) in changed {
            let segment = checked_segment(&key)?;
            match index.get(&segment) {
                Some(&i) => groups[i] = (segment, limit),
                None => {
                    index.insert(segment.clone(), groups.len());
                    groups.push((segment, limit));
                }
            }
        }
        Ok(Self {
            max_tasks,
            default_limit,
            groups,
        })
    }

    /// The batch removing the explicit limit of the group whose segment is `segment`.
    pub(crate) fn clear(segment: String) -> Self {
        Self {
            max_tasks: None,
            default_limit: None,
            groups: vec![(segment, None)],
        }
    }

    /// The `limits.lua` call applying this batch to the pool with key prefix `prefix`, in
    /// `mode` (see [`LimitsMode`]), checked in the same script call as the write; only if the
    /// pool's limits are in generation `expected` (0: any; see `crate::generation`).
    pub(crate) fn invocation(
        &self,
        prefix: &str,
        mode: LimitsMode,
        expected: u64,
    ) -> ScriptInvocation<'static> {
        let change = |c: Option<Option<usize>>| c.map_or_else(|| "-".to_owned(), limit_arg);
        let mut invocation = LIMITS.key(prefix);
        invocation
            .arg(REAP_BATCH)
            .arg(match mode {
                LimitsMode::Set => "set",
                LimitsMode::Restore => "restore",
                LimitsMode::Fill => "fill",
            })
            .arg(expected)
            // The generation to start if the pool has none: from 2 (1 is what earlier releases
            // wrote) to below 2^52, exact as a Lua number.
            .arg((crate::engine::random_u64() >> 12).max(2))
            .arg(change(self.max_tasks))
            .arg(change(self.default_limit));
        for (segment, limit) in &self.groups {
            invocation.arg(segment).arg(limit_arg(*limit));
        }
        invocation
    }
}
