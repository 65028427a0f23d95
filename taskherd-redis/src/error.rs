//! The error of calls that are not admissions (limits, statistics, building the pool).

use std::error::Error;
use std::fmt;

use crate::key::InvalidKey;

/// Redis could not be reached, or answered with an error; or the call could not be sent
/// because a custom [`RedisKey`](crate::RedisKey) gave an invalid segment
/// ([`is_invalid_key`](Self::is_invalid_key)); or Redis has lost the pool's data since this
/// process saw its limits set ([`is_forgotten`](Self::is_forgotten)).
///
/// Admissions report the same conditions through `taskherd`'s error types
/// (`is_unavailable()`, with this error as the source), with the work handed back. Never
/// contains credentials: the URL is not part of it.
#[derive(Debug)]
pub struct UnavailableError {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Redis(redis::RedisError),
    InvalidKey(InvalidKey),
    /// See [`UnavailableError::is_forgotten`].
    Forgotten,
}

impl UnavailableError {
    pub(crate) fn new(source: redis::RedisError) -> Self {
        Self {
            kind: Kind::Redis(source),
        }
    }

    /// Returns `true` if nothing was sent to Redis because a group key's
    /// [`segment`](crate::RedisKey::segment) was empty or contained a control character (only
    /// a custom [`RedisKey`](crate::RedisKey) implementation can do that).
    #[must_use]
    pub fn is_invalid_key(&self) -> bool {
        matches!(self.kind, Kind::InvalidKey(_))
    }

    /// Returns `true` if an admission (or a read of a limit or of statistics) was refused
    /// because Redis has lost the pool's data (restarted without persistence, flushed, or
    /// failed over to a replica that lacked it) since this process saw the pool's limits set:
    /// the limits are gone with it, and an admission into a pool without them would exceed
    /// them (a whole fleet's queue at once).
    /// Nothing is admitted by this process until the limits are set again
    /// ([`RedisPool::set_limits`](crate::RedisPool::set_limits) or the other setters, by any
    /// process of the fleet); see [Redis loses its data](crate#redis-loses-its-data).
    #[must_use]
    pub fn is_forgotten(&self) -> bool {
        matches!(self.kind, Kind::Forgotten)
    }
}

impl fmt::Display for UnavailableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Redis(source) => write!(f, "Redis is unavailable: {source}"),
            Kind::InvalidKey(InvalidKey(why)) => {
                write!(f, "invalid group key: {why}; nothing was sent to Redis")
            }
            Kind::Forgotten => f.write_str(crate::engine::FORGOTTEN),
        }
    }
}

impl Error for UnavailableError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match &self.kind {
            Kind::Redis(source) => Some(source),
            Kind::InvalidKey(_) | Kind::Forgotten => None,
        }
    }
}

impl From<InvalidKey> for UnavailableError {
    fn from(error: InvalidKey) -> Self {
        Self {
            kind: Kind::InvalidKey(error),
        }
    }
}

impl From<crate::engine::Unavailable> for UnavailableError {
    fn from(error: crate::engine::Unavailable) -> Self {
        match error {
            crate::engine::Unavailable(_, true) => Self {
                kind: Kind::Forgotten,
            },
            crate::engine::Unavailable(source, false) => Self::new(source),
        }
    }
}
