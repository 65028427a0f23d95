//! A group per path segment.

use http::Request;

use crate::{Classify, Groups, Unclassified};

/// One group per value of a segment of the request path, as a `String`: with index 1,
/// `/tenants/acme/orders` counts in group `"acme"`.
///
/// Segments are counted from 0 after the leading `/`; empty segments count. A path with too
/// few segments is [`Unclassified`]. The segment is taken as sent (not percent-decoded).
///
/// # Examples
///
/// ```
/// use http::Request;
/// use taskherd_tower::{Classify, PathSegment};
///
/// let classify = PathSegment::new(1);
/// let request = Request::builder().uri("/tenants/acme/orders?x=1").body(()).unwrap();
/// assert_eq!(classify.classify(&request).unwrap().as_slice(), ["acme"]);
/// let short = Request::builder().uri("/health").body(()).unwrap();
/// assert!(classify.classify(&short).is_err());
/// ```
#[derive(Debug, Clone, Copy)]
pub struct PathSegment {
    index: usize,
}

impl PathSegment {
    /// Groups by segment `index` (0-based) of the path.
    ///
    /// # Examples
    ///
    /// ```
    /// let _by_tenant = taskherd_tower::PathSegment::new(1);
    /// ```
    #[must_use]
    pub fn new(index: usize) -> Self {
        Self { index }
    }
}

impl<B> Classify<B> for PathSegment {
    type Key = String;

    fn classify(&self, request: &Request<B>) -> Result<Groups<String>, Unclassified> {
        let path = request.uri().path();
        path.strip_prefix('/')
            .unwrap_or(path)
            .split('/')
            .nth(self.index)
            .map(|segment| Groups::one(segment.to_owned()))
            .ok_or(Unclassified::new("the path is too short"))
    }
}
