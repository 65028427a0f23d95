//! A group per path segment.

use http::Request;

use crate::{Classify, Groups, Unclassified};

/// One group per value of a segment of the request path, as a `String`: with index 1,
/// `/tenants/acme/orders` counts in group `"acme"`.
///
/// Segments are counted from 0 after the leading `/`; empty segments count. A path with too
/// few segments is [`Unclassified`]. The path is the request's as the layer sees it: a layer
/// inside axum's `Router::nest("/api", ..)` (or `nest_service`) gets it with the prefix
/// stripped, as the nested routes do, so there index 1 of `/api/tenants/acme` is `acme`; on
/// the outer router the whole path counts, and the same tenant is index 2. Count from where
/// the layer sits: an index meant for the other place names a fixed word (`tenants`) for
/// every client, or a segment the client chooses. The segment is percent-decoded as axum's `Path` decodes
/// it (`%61cme` is `acme`, `%2F` a `/` in the value; `+` stays `+`), so that a client cannot
/// escape its group by spelling it another way; a segment that is not UTF-8 once decoded is
/// [`Unclassified`] (`400`).
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
/// let spelled = Request::builder().uri("/tenants/%61cme").body(()).unwrap();
/// assert_eq!(classify.classify(&spelled).unwrap().as_slice(), ["acme"]);
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
        let segment = path
            .strip_prefix('/')
            .unwrap_or(path)
            .split('/')
            .nth(self.index)
            .ok_or(Unclassified::new("the path is too short"))?;
        percent_encoding::percent_decode_str(segment)
            .decode_utf8()
            .map(|decoded| Groups::one(decoded.into_owned()))
            .map_err(|_| Unclassified::new("the path segment is not UTF-8 once decoded"))
    }
}
