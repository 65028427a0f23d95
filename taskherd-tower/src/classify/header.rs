//! A group per value of a request header.

use http::Request;
use http::header::HeaderName;

use crate::{Classify, Groups, Unclassified};

/// One group per value of a request header (an API key, a tenant id), as a `String`.
///
/// A request without the header, with an empty value (or only spaces and tabs), or with a
/// value that is not ASCII (visible characters, spaces and tabs, as
/// [`HeaderValue::to_str`](http::HeaderValue::to_str) takes them) is [`Unclassified`]; use
/// [`optional`](crate::ClassifyExt::optional) or [`or`](crate::ClassifyExt::or) for a
/// fallback. The group is the value without the spaces and tabs around it, whatever the
/// protocol (HTTP/1 parsers strip them, HTTP/2 ones do not: `k-1 ` is `k-1`); the ones inside
/// are kept. Only the first value of a repeated header counts.
///
/// Clients choose their headers: key on a header only if something you trust has checked it
/// (an authentication layer in front of this one, a proxy that overwrites it), or a client
/// sending a new value per request escapes its limit.
///
/// # Examples
///
/// ```
/// use http::Request;
/// use taskherd_tower::{Classify, Header};
///
/// let classify = Header::new("x-api-key");
/// let request = Request::builder().header("x-api-key", "k-123").body(()).unwrap();
/// assert_eq!(classify.classify(&request).unwrap().as_slice(), ["k-123"]);
/// assert!(classify.classify(&Request::new(())).is_err());
/// ```
#[derive(Debug, Clone)]
pub struct Header {
    name: HeaderName,
}

impl Header {
    /// Groups by the value of header `name`, in any case (header names are case-insensitive:
    /// `X-Tenant` is `x-tenant`).
    ///
    /// # Panics
    ///
    /// If `name` is not a valid header name (use [`Header::from_name`] with a checked
    /// [`HeaderName`] to avoid the check).
    ///
    /// # Examples
    ///
    /// ```
    /// let _by_tenant = taskherd_tower::Header::new("X-Tenant");
    /// ```
    #[must_use]
    pub fn new(name: &str) -> Self {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(name) => Self::from_name(name),
            Err(_) => panic!("not a valid header name: {name:?}"),
        }
    }

    /// Groups by the value of header `name`.
    ///
    /// # Examples
    ///
    /// ```
    /// let _by_key = taskherd_tower::Header::from_name(http::header::AUTHORIZATION);
    /// ```
    #[must_use]
    pub fn from_name(name: HeaderName) -> Self {
        Self { name }
    }
}

impl<B> Classify<B> for Header {
    type Key = String;

    fn classify(&self, request: &Request<B>) -> Result<Groups<String>, Unclassified> {
        let value = request.headers().get(&self.name).ok_or(Unclassified::new(
            "a header the groups come from is missing",
        ))?;
        // The spaces and tabs around a field value are not part of it (RFC 9110, 5.5):
        // HTTP/1 parsers strip them, HTTP/2 and HTTP/3 ones need not.
        let value = value
            .to_str()
            .map_err(|_| Unclassified::new("a header the groups come from is not ASCII"))?
            .trim_matches([' ', '\t']);
        if value.is_empty() {
            return Err(Unclassified::new("a header the groups come from is empty"));
        }
        Ok(Groups::one(value.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Header names are case-insensitive: `X-Tenant` reads `x-tenant` (it panicked, as
    /// `HeaderName::from_static` takes lowercase names only).
    #[test]
    fn a_mixed_case_name_reads_the_header() {
        let request = Request::builder()
            .header("x-tenant", "t1")
            .body(())
            .unwrap();
        let groups = Header::new("X-Tenant").classify(&request).unwrap();
        assert_eq!(groups.into_iter().collect::<Vec<_>>(), ["t1".to_owned()]);
    }

    /// An empty value names no group, as a missing header does: it counted every client that
    /// sent the header empty in one group `""`.
    #[test]
    fn an_empty_value_is_unclassified_and_the_spaces_around_a_value_go() {
        let classify = Header::new("x-tenant");
        let empty = Request::builder().header("x-tenant", "").body(()).unwrap();
        let refused = classify.classify(&empty).unwrap_err();
        assert!(refused.to_string().contains("empty"), "{refused}");
        let tab = Request::builder()
            .header("x-tenant", "\t a\tb c \t")
            .body(())
            .unwrap();
        let groups = classify.classify(&tab).unwrap();
        assert_eq!(
            groups.into_iter().collect::<Vec<_>>(),
            ["a\tb c".to_owned()],
            "the spaces and tabs around the value go, those inside stay"
        );
        let blank = Request::builder()
            .header("x-tenant", " \t ")
            .body(())
            .unwrap();
        assert!(classify.classify(&blank).is_err(), "spaces only: no group");
    }

    #[test]
    #[should_panic(expected = "not a valid header name")]
    fn an_invalid_name_panics_saying_so() {
        let _ = Header::new("x tenant");
    }
}
