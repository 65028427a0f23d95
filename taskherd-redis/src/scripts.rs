//! The server-side scripts: the only place admission is decided. Each call is one round trip
//! (EVALSHA, with the script loaded again on NOSCRIPT by [`redis::Script`]).
//!
//! Every script is `scripts/lib.lua` (the shared transitions) followed by its own file, whose
//! header comment lists its KEYS, ARGV and what it returns.

use std::sync::LazyLock;

use redis::Script;

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
script!(STATS, "stats.lua");

/// How many expired holders (and as many waiters) one script call reaps at most.
pub(crate) const REAP_BATCH: usize = 100;

/// A limit as the scripts read it: empty for none.
pub(crate) fn limit_arg(limit: Option<usize>) -> String {
    limit.map_or_else(String::new, |limit| limit.to_string())
}
