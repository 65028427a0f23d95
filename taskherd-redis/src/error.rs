//! The error of calls that are not admissions (limits, statistics, building the pool).

use std::error::Error;
use std::fmt;

/// Redis could not be reached, or answered with an error.
///
/// Admissions report the same condition through `taskherd`'s error types
/// (`is_unavailable()`), with the work handed back. Never contains credentials: the URL is
/// not part of it.
#[derive(Debug)]
pub struct UnavailableError {
    source: redis::RedisError,
}

impl UnavailableError {
    pub(crate) fn new(source: redis::RedisError) -> Self {
        Self { source }
    }
}

impl fmt::Display for UnavailableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redis is unavailable: {}", self.source)
    }
}

impl Error for UnavailableError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.source)
    }
}

impl From<crate::engine::Unavailable> for UnavailableError {
    fn from(error: crate::engine::Unavailable) -> Self {
        Self::new(error.0)
    }
}
