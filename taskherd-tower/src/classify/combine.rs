//! Combinators over classifiers; made by [`ClassifyExt`](crate::ClassifyExt).

use http::Request;

use crate::{Classify, Groups, Unclassified};

/// Both classifiers' groups, the first's before the second's; see
/// [`ClassifyExt::and`](crate::ClassifyExt::and).
///
/// # Examples
///
/// ```
/// use http::Request;
/// use taskherd_tower::{Classify, ClassifyExt, Header};
///
/// // Each header in a key space of its own: a user named like a tenant is not that tenant.
/// let classify = Header::new("x-tenant")
///     .map_key(|tenant| format!("tenant:{tenant}"))
///     .and(Header::new("x-user").map_key(|user| format!("user:{user}")));
/// let request = Request::builder().header("x-tenant", "t").header("x-user", "u").body(()).unwrap();
/// assert_eq!(classify.classify(&request).unwrap().as_slice(), ["tenant:t", "user:u"]);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct And<A, B>(pub(crate) A, pub(crate) B);

impl<Body, A, B> Classify<Body> for And<A, B>
where
    A: Classify<Body>,
    B: Classify<Body, Key = A::Key>,
{
    type Key = A::Key;

    fn classify(&self, request: &Request<Body>) -> Result<Groups<A::Key>, Unclassified> {
        let mut groups = self.0.classify(request)?;
        groups.extend(self.1.classify(request)?);
        Ok(groups)
    }
}

/// The first classifier's groups, or the second's if the first cannot classify the request;
/// see [`ClassifyExt::or`](crate::ClassifyExt::or).
///
/// # Examples
///
/// ```
/// use http::Request;
/// use taskherd_tower::{Classify, ClassifyExt, Header};
///
/// let classify = Header::new("x-api-key")
///     .map_key(|key| format!("key:{key}"))
///     .or(Header::new("x-client").map_key(|client| format!("client:{client}")));
/// let request = Request::builder().header("x-client", "c").body(()).unwrap();
/// assert_eq!(classify.classify(&request).unwrap().as_slice(), ["client:c"]);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Or<A, B>(pub(crate) A, pub(crate) B);

impl<Body, A, B> Classify<Body> for Or<A, B>
where
    A: Classify<Body>,
    B: Classify<Body, Key = A::Key>,
{
    type Key = A::Key;

    fn classify(&self, request: &Request<Body>) -> Result<Groups<A::Key>, Unclassified> {
        self.0
            .classify(request)
            .or_else(|_| self.1.classify(request))
    }
}

/// No groups instead of unclassified; see [`ClassifyExt::optional`](crate::ClassifyExt::optional).
///
/// # Examples
///
/// ```
/// use http::Request;
/// use taskherd_tower::{Classify, ClassifyExt, Header};
///
/// let classify = Header::new("x-api-key").optional();
/// assert!(classify.classify(&Request::new(())).unwrap().is_empty());
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Optional<A>(pub(crate) A);

impl<Body, A: Classify<Body>> Classify<Body> for Optional<A> {
    type Key = A::Key;

    fn classify(&self, request: &Request<Body>) -> Result<Groups<A::Key>, Unclassified> {
        Ok(self.0.classify(request).unwrap_or_else(|_| Groups::none()))
    }
}

/// Each key passed through a function; see [`ClassifyExt::map_key`](crate::ClassifyExt::map_key).
///
/// # Examples
///
/// ```
/// use http::Request;
/// use taskherd_tower::{Classify, ClassifyExt, Header};
///
/// let classify = Header::new("x-tenant").map_key(|tenant| format!("tenant:{tenant}"));
/// let request = Request::builder().header("x-tenant", "acme").body(()).unwrap();
/// assert_eq!(classify.classify(&request).unwrap().as_slice(), ["tenant:acme"]);
/// ```
#[derive(Clone, Copy)]
pub struct MapKey<A, F>(pub(crate) A, pub(crate) F);

impl<Body, A, F, K> Classify<Body> for MapKey<A, F>
where
    A: Classify<Body>,
    F: Fn(A::Key) -> K,
{
    type Key = K;

    fn classify(&self, request: &Request<Body>) -> Result<Groups<K>, Unclassified> {
        Ok(self.0.classify(request)?.into_iter().map(&self.1).collect())
    }
}

impl<A: std::fmt::Debug, F> std::fmt::Debug for MapKey<A, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapKey")
            .field("inner", &self.0)
            .finish_non_exhaustive()
    }
}
