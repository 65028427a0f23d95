//! A group per value of a request extension.

use std::fmt;
use std::marker::PhantomData;

use http::Request;

use crate::{Classify, Groups, Unclassified};

/// One group per value of a request extension of type `T`, such as a tenant that an
/// authentication layer in front of this one inserted.
///
/// A request without the extension is [`Unclassified`].
///
/// # Examples
///
/// ```
/// use http::Request;
/// use taskherd_tower::{Classify, Extension};
///
/// #[derive(Clone, Debug, PartialEq, Eq, Hash)]
/// struct Tenant(u32);
///
/// let classify = Extension::<Tenant>::new();
/// let mut request = Request::new(());
/// request.extensions_mut().insert(Tenant(7));
/// assert_eq!(classify.classify(&request).unwrap().as_slice(), [Tenant(7)]);
/// ```
pub struct Extension<T> {
    _key: PhantomData<fn() -> T>,
}

impl<T> Extension<T> {
    /// Groups by the request's extension of type `T`.
    ///
    /// # Examples
    ///
    /// ```
    /// let _by_user = taskherd_tower::Extension::<u64>::new();
    /// ```
    #[must_use]
    pub fn new() -> Self {
        Self { _key: PhantomData }
    }
}

impl<T> Default for Extension<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for Extension<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Extension<T> {}

impl<T> fmt::Debug for Extension<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Extension")
            .field(&std::any::type_name::<T>())
            .finish()
    }
}

impl<B, T> Classify<B> for Extension<T>
where
    T: Clone + Send + Sync + 'static,
{
    type Key = T;

    fn classify(&self, request: &Request<B>) -> Result<Groups<T>, Unclassified> {
        request
            .extensions()
            .get::<T>()
            .map(|key| Groups::one(key.clone()))
            .ok_or(Unclassified::new(
                "a request extension the groups come from is missing",
            ))
    }
}
