//! Classifying requests: which groups a request counts in.

use std::fmt;

use http::Request;

mod cidr;
mod combine;
mod extension;
mod header;
mod path;
mod peer;

pub use cidr::{Cidr, InvalidCidr};
pub use combine::{And, MapKey, Optional, Or};
pub use extension::Extension;
pub use header::Header;
pub use path::PathSegment;
pub use peer::{ForwardedHeader, PeerIp};

/// Maps a request to the groups it counts in: a client IP, an API key, a tenant, a route…
///
/// Implemented by every closure `Fn(&http::Request<B>) -> Result<Groups<K>, Unclassified>`, and
/// by the ready-made classifiers: [`PeerIp`], [`Header`], [`PathSegment`], [`Extension`]. The
/// combinators of [`ClassifyExt`] give a request several groups ([`and`](ClassifyExt::and)),
/// fall back from one classifier to another ([`or`](ClassifyExt::or)), and put keys of
/// different types into one key type ([`map_key`](ClassifyExt::map_key)).
///
/// A request that cannot be classified (no peer address, a missing header) gets
/// [`Unclassified`], which the layer answers with `400 Bad Request` (configurable), never a
/// panic. A request with no groups at all is still counted in the total.
///
/// Runs in the service's `call`, once per request, so it should be cheap.
///
/// # Examples
///
/// A closure: one group per tenant, from a header.
///
/// ```
/// use http::Request;
/// use taskherd_tower::{Classify, Groups, Unclassified};
///
/// let tenant = |request: &Request<()>| {
///     match request.headers().get("x-tenant").and_then(|v| v.to_str().ok()) {
///         Some(tenant) => Ok(Groups::one(tenant.to_owned())),
///         None => Err(Unclassified::new("no x-tenant header")),
///     }
/// };
/// let request = Request::builder().header("x-tenant", "acme").body(()).unwrap();
/// assert_eq!(tenant.classify(&request).unwrap().as_slice(), ["acme"]);
/// ```
pub trait Classify<B> {
    /// The type of the groups' keys.
    type Key;

    /// Returns the groups `request` counts in.
    ///
    /// # Errors
    ///
    /// [`Unclassified`] if the request lacks what the groups are taken from.
    fn classify(&self, request: &Request<B>) -> Result<Groups<Self::Key>, Unclassified>;
}

impl<F, B, K> Classify<B> for F
where
    F: Fn(&Request<B>) -> Result<Groups<K>, Unclassified>,
{
    type Key = K;

    fn classify(&self, request: &Request<B>) -> Result<Groups<K>, Unclassified> {
        self(request)
    }
}

/// Combinators for classifiers; implemented for every type.
///
/// # Examples
///
/// Every request counts for its tenant (from an auth layer's extension) and for its client IP:
///
/// ```
/// use std::net::{IpAddr, SocketAddr};
/// use http::Request;
/// use taskherd_tower::{Classify, ClassifyExt, Extension, PeerIp};
///
/// #[derive(Clone, Debug, PartialEq, Eq, Hash)]
/// struct Tenant(u32);
///
/// #[derive(Clone, Debug, PartialEq, Eq, Hash)]
/// enum Key {
///     Tenant(Tenant),
///     Ip(IpAddr),
/// }
///
/// let classify = Extension::<Tenant>::new()
///     .map_key(Key::Tenant)
///     .and(PeerIp::new().map_key(Key::Ip));
///
/// let mut request = Request::new(());
/// request.extensions_mut().insert(Tenant(7));
/// request.extensions_mut().insert(SocketAddr::from(([192, 0, 2, 1], 4711)));
/// let groups = classify.classify(&request).unwrap();
/// assert_eq!(groups.as_slice(), [Key::Tenant(Tenant(7)), Key::Ip([192, 0, 2, 1].into())]);
/// ```
pub trait ClassifyExt: Sized {
    /// Both classifiers' groups; unclassified if either is. See [`And`].
    ///
    /// Give each classifier a key space of its own (an enum variant, as above, or a prefix):
    /// with one shared `String` space, a client that sends a header value spelled like
    /// another classifier's key (`x-api-key: 192.0.2.1`) counts in that group. The same holds
    /// for [`or`](Self::or).
    fn and<C>(self, other: C) -> And<Self, C> {
        And(self, other)
    }

    /// This classifier's groups, or if it cannot classify the request, `other`'s. See [`Or`].
    fn or<C>(self, other: C) -> Or<Self, C> {
        Or(self, other)
    }

    /// No groups (the request counts in the total only) instead of unclassified. See
    /// [`Optional`].
    fn optional(self) -> Optional<Self> {
        Optional(self)
    }

    /// Each key passed through `map`, e.g. into a variant of the pool's key type. See
    /// [`MapKey`]; a closure's argument type may need to be written out
    /// (`|ip: IpAddr| ip.to_string()`).
    fn map_key<F>(self, map: F) -> MapKey<Self, F> {
        MapKey(self, map)
    }
}

impl<T> ClassifyExt for T {}

/// The groups a request counts in, in order (the first full one is reported); duplicates are
/// counted once by the pool.
///
/// # Examples
///
/// ```
/// use taskherd_tower::Groups;
///
/// let mut groups = Groups::one("tenant-7");
/// groups.push("10.0.0.1");
/// assert_eq!(groups.len(), 2);
/// assert_eq!(groups.into_iter().collect::<Vec<_>>(), ["tenant-7", "10.0.0.1"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Groups<K> {
    keys: Vec<K>,
}

impl<K> Groups<K> {
    /// No groups: the request counts in the total only.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(taskherd_tower::Groups::<String>::none().is_empty());
    /// ```
    #[must_use]
    pub fn none() -> Self {
        Self { keys: Vec::new() }
    }

    /// One group.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(taskherd_tower::Groups::one(3).as_slice(), [3]);
    /// ```
    #[must_use]
    pub fn one(key: K) -> Self {
        Self { keys: vec![key] }
    }

    /// Adds a group at the end.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut groups = taskherd_tower::Groups::none();
    /// groups.push('a');
    /// assert_eq!(groups.as_slice(), ['a']);
    /// ```
    pub fn push(&mut self, key: K) {
        self.keys.push(key);
    }

    /// The number of groups named (duplicates included).
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(taskherd_tower::Groups::one(1).len(), 1);
    /// ```
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// `true` if no group is named.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!taskherd_tower::Groups::one(1).is_empty());
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The groups, in order.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(taskherd_tower::Groups::one("a").as_slice(), ["a"]);
    /// ```
    #[must_use]
    pub fn as_slice(&self) -> &[K] {
        &self.keys
    }
}

impl<K> Default for Groups<K> {
    fn default() -> Self {
        Self::none()
    }
}

impl<K> From<Vec<K>> for Groups<K> {
    fn from(keys: Vec<K>) -> Self {
        Self { keys }
    }
}

impl<K> FromIterator<K> for Groups<K> {
    fn from_iter<I: IntoIterator<Item = K>>(iter: I) -> Self {
        Self {
            keys: iter.into_iter().collect(),
        }
    }
}

impl<K> Extend<K> for Groups<K> {
    fn extend<I: IntoIterator<Item = K>>(&mut self, iter: I) {
        self.keys.extend(iter);
    }
}

impl<K> IntoIterator for Groups<K> {
    type Item = K;
    type IntoIter = std::vec::IntoIter<K>;

    fn into_iter(self) -> Self::IntoIter {
        self.keys.into_iter()
    }
}

/// A request the classifier could not classify; answered `400 Bad Request` by default.
///
/// The reason is for logs and for a custom refusal response; the default response does not
/// show it.
///
/// # Examples
///
/// ```
/// let error = taskherd_tower::Unclassified::new("no x-api-key header");
/// assert_eq!(error.reason(), "no x-api-key header");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Unclassified {
    reason: &'static str,
}

impl Unclassified {
    /// A refusal to classify, with a short reason.
    ///
    /// # Examples
    ///
    /// ```
    /// use http::Request;
    /// use taskherd_tower::{Groups, Unclassified};
    ///
    /// let tenant = |request: &Request<()>| match request.uri().query() {
    ///     Some(query) => Ok(Groups::one(query.to_owned())),
    ///     None => Err(Unclassified::new("no query")),
    /// };
    /// assert_eq!(tenant(&Request::new(())).unwrap_err().reason(), "no query");
    /// ```
    #[must_use]
    pub const fn new(reason: &'static str) -> Self {
        Self { reason }
    }

    /// Why the request could not be classified.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(taskherd_tower::Unclassified::new("why").reason(), "why");
    /// ```
    #[must_use]
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for Unclassified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request not classified: {}", self.reason)
    }
}

impl std::error::Error for Unclassified {}
