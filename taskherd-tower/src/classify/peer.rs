//! A group per client IP address.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::Request;
use http::header::{AsHeaderName, FORWARDED, HeaderMap};

use crate::{Cidr, Classify, Groups, Unclassified};

/// One group per client IP address, taken from the connection.
///
/// The peer address is read from the request's extensions: axum's
/// `ConnectInfo<SocketAddr>` (with the `axum` feature, on by default; serve the router with
/// `into_make_service_with_connect_info::<SocketAddr>()`), tonic's `TcpConnectInfo` (with the
/// `tonic` feature; a tonic server over TCP inserts it; with tonic's own TLS, whose extension
/// is `TlsConnectInfo<TcpConnectInfo>`, classify with a closure), else a plain [`SocketAddr`]
/// extension (insert it yourself when serving with hyper). A request with none of them is
/// [`Unclassified`] (refused with `400`, or gRPC `INVALID_ARGUMENT`).
///
/// The key is the address in its canonical form: an IPv4 address mapped into IPv6
/// (`::ffff:192.0.2.1`, as a dual-stack `[::]` listener sees IPv4 clients, or as a proxy may
/// write them) is its IPv4 address (`192.0.2.1`), so a limit set for `192.0.2.1` applies to it.
///
/// An IPv6 client is counted by its network, a /64 unless [`ipv6_prefix`](Self::ipv6_prefix)
/// says otherwise, keyed by the network's address (`2001:db8:1:2::5` counts in
/// `2001:db8:1:2::`; set limits for that key): an IPv6 host usually has a /64 to itself and
/// may use any address in it (privacy addresses rotate by themselves), so one group per
/// address would give one host its limit 2^64 times over.
///
/// # Proxies
///
/// Behind a reverse proxy every connection comes from the proxy. The `X-Forwarded-For` and
/// `Forwarded` headers say where the request came from, but anyone can send them: a client
/// that made up a new address per request would escape its limit and use up other clients'.
/// So they are believed only when the connection comes from a proxy named with
/// [`trust_proxies`](Self::trust_proxies), and only as far as the chain of trusted proxies
/// goes: the addresses are read from right to left (each proxy appends the address it saw),
/// trusted proxies are skipped, and the first other address is the client's. If every
/// address is a trusted proxy's, the leftmost one is the client; an entry that is not an IP
/// address (`unknown`, an obfuscated name, bytes that are not text) stops the walk at the last
/// address seen, which is a trusted proxy's; an entry to the left of it (what the client
/// wrote) does not hide the entries the proxies appended. `Forwarded` is read from the right
/// end of each line with RFC 7239's grammar, so that quotes a client opened in its part of
/// the line cannot swallow or reshape what its proxies appended; at a syntax error the
/// reading stops, and what is left of it counts as one entry that is not an address.
///
/// Only one of the two headers is read: the one your trusted proxies write, named with
/// [`forwarded_header`](Self::forwarded_header) ([`ForwardedHeader::XForwardedFor`] unless you
/// say otherwise, which is what nginx, HAProxy, Envoy and the AWS, Google Cloud and Azure load
/// balancers append). The other header is ignored, even when the chosen one is missing (the
/// request then counts for the proxy's own address): a proxy passes a header it does not write
/// through unchanged, so whatever it holds was written by the client.
///
/// # Examples
///
/// ```
/// use std::net::SocketAddr;
/// use http::Request;
/// use taskherd_tower::{Classify, PeerIp};
///
/// let classify = PeerIp::new().trust_proxies(["10.0.0.0/8".parse().unwrap()]);
///
/// // Through the trusted proxy 10.0.0.2: the client is the address it appended.
/// let mut request = Request::builder()
///     .header("x-forwarded-for", "203.0.113.9, 198.51.100.4")
///     .body(())
///     .unwrap();
/// request.extensions_mut().insert(SocketAddr::from(([10, 0, 0, 2], 50000)));
/// assert_eq!(classify.classify(&request).unwrap().as_slice(), ["198.51.100.4".parse::<std::net::IpAddr>().unwrap()]);
///
/// // Directly from a client: its header is ignored.
/// request.extensions_mut().insert(SocketAddr::from(([192, 0, 2, 1], 50000)));
/// assert_eq!(classify.classify(&request).unwrap().as_slice(), ["192.0.2.1".parse::<std::net::IpAddr>().unwrap()]);
/// ```
#[derive(Debug, Clone)]
pub struct PeerIp {
    trusted: Arc<[Cidr]>,
    header: ForwardedHeader,
    /// The leading bits of an IPv6 address that name its client.
    ipv6_prefix: u8,
}

impl Default for PeerIp {
    fn default() -> Self {
        Self {
            trusted: Arc::new([]),
            header: ForwardedHeader::default(),
            ipv6_prefix: 64,
        }
    }
}

/// The forwarding header that a [`PeerIp`] reads on connections from trusted proxies: the one
/// those proxies write. Chosen with [`PeerIp::forwarded_header`].
///
/// There is no "either": a proxy that writes one of the headers passes the other through as
/// the client sent it, so reading both would let a client choose its own key.
///
/// # Examples
///
/// ```
/// use taskherd_tower::{ForwardedHeader, PeerIp};
///
/// assert_eq!(ForwardedHeader::default(), ForwardedHeader::XForwardedFor);
/// let _behind_rfc_7239_proxy = PeerIp::new()
///     .trust_proxies(["10.0.0.0/8".parse().unwrap()])
///     .forwarded_header(ForwardedHeader::Forwarded);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (the default): written by nginx
    /// (`$proxy_add_x_forwarded_for`), HAProxy (`option forwardfor`), Envoy, and the AWS, Google
    /// Cloud and Azure load balancers.
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239): the `for=` parameter of each element.
    /// Each line is read from its right end with RFC 7239's grammar: quoted strings are one
    /// value (a `,` or `;` in them splits nothing), so a client cannot pass a `for=` of its
    /// own through a value a proxy quoted, such as a `host=` copied from its `Host` header,
    /// nor hide the element its proxy appended with quotes of its own to the left of it. A
    /// proxy that copies such a value *unquoted*, or quoted without escaping `"` and `\` in
    /// it, lets the client write elements of its own: configure it to escape, or to leave
    /// `host=` out.
    Forwarded,
}

impl PeerIp {
    /// Groups by the connection's peer address; forwarding headers are ignored.
    ///
    /// # Examples
    ///
    /// ```
    /// let _by_ip = taskherd_tower::PeerIp::new();
    /// ```
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Believes the forwarding header (see [`forwarded_header`](Self::forwarded_header)) on
    /// connections from these proxies (see "Proxies" above).
    ///
    /// # Examples
    ///
    /// ```
    /// let _behind_lb = taskherd_tower::PeerIp::new()
    ///     .trust_proxies(["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()]);
    /// ```
    #[must_use]
    pub fn trust_proxies(mut self, proxies: impl IntoIterator<Item = Cidr>) -> Self {
        self.trusted = proxies.into_iter().collect();
        self
    }

    /// Counts IPv6 clients by the first `prefix` bits of their address (64 by default, the
    /// network a host usually has to itself); `128` counts each address apart, a longer
    /// `prefix` is taken as `128`. The key is the network's address. IPv4 clients are counted
    /// per address whatever this says.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::net::{IpAddr, SocketAddr};
    /// use http::Request;
    /// use taskherd_tower::{Classify, PeerIp};
    ///
    /// let mut request = Request::new(());
    /// request.extensions_mut().insert("[2001:db8:1:2::5]:443".parse::<SocketAddr>().unwrap());
    /// let per_64 = PeerIp::new().classify(&request).unwrap();
    /// assert_eq!(per_64.as_slice(), ["2001:db8:1:2::".parse::<IpAddr>().unwrap()]);
    /// let per_48 = PeerIp::new().ipv6_prefix(48).classify(&request).unwrap();
    /// assert_eq!(per_48.as_slice(), ["2001:db8:1::".parse::<IpAddr>().unwrap()]);
    /// ```
    #[must_use]
    pub fn ipv6_prefix(mut self, prefix: u8) -> Self {
        self.ipv6_prefix = prefix.min(128);
        self
    }

    /// Reads `header` on connections from trusted proxies, and never the other forwarding
    /// header (see "Proxies" above). The default is [`ForwardedHeader::XForwardedFor`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::net::{IpAddr, SocketAddr};
    /// use http::Request;
    /// use taskherd_tower::{Classify, ForwardedHeader, PeerIp};
    ///
    /// let classify = PeerIp::new()
    ///     .trust_proxies(["10.0.0.0/8".parse().unwrap()])
    ///     .forwarded_header(ForwardedHeader::Forwarded);
    /// let mut request = Request::builder()
    ///     .header("forwarded", "for=198.51.100.4;proto=https")
    ///     .header("x-forwarded-for", "203.0.113.9") // sent by the client: ignored
    ///     .body(())
    ///     .unwrap();
    /// request.extensions_mut().insert(SocketAddr::from(([10, 0, 0, 2], 50000)));
    /// assert_eq!(classify.classify(&request).unwrap().as_slice(), ["198.51.100.4".parse::<IpAddr>().unwrap()]);
    /// ```
    #[must_use]
    pub fn forwarded_header(mut self, header: ForwardedHeader) -> Self {
        self.header = header;
        self
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|block| block.contains(ip))
    }

    /// The client's address, given the address the connection comes from.
    fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.is_trusted(peer) {
            return peer;
        }
        let mut last = peer;
        let chain = match self.header {
            ForwardedHeader::XForwardedFor => x_forwarded_for(headers),
            ForwardedHeader::Forwarded => forwarded_for(headers),
        };
        for hop in chain.into_iter().rev() {
            match hop {
                Some(ip) if self.is_trusted(ip) => last = ip,
                Some(ip) => return ip,
                None => return last,
            }
        }
        last
    }
}

impl<B> Classify<B> for PeerIp {
    type Key = IpAddr;

    fn classify(&self, request: &Request<B>) -> Result<Groups<IpAddr>, Unclassified> {
        let peer = peer_addr(request).ok_or(Unclassified::new(
            "the peer address is not in the request's extensions",
        ))?;
        // A dual-stack listener sees IPv4 clients as `::ffff:a.b.c.d`: one key per client,
        // whichever way it connected or was forwarded, so a limit set for its IPv4 address applies.
        let client = match self.client(peer.ip(), request.headers()).to_canonical() {
            IpAddr::V6(address) => {
                let mask = u128::MAX
                    .checked_shl(u32::from(128 - self.ipv6_prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(address) & mask).into())
            }
            v4 => v4,
        };
        Ok(Groups::one(client))
    }
}

fn peer_addr<B>(request: &Request<B>) -> Option<SocketAddr> {
    #[cfg(feature = "axum")]
    if let Some(info) = request
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(info.0);
    }
    #[cfg(feature = "tonic")]
    if let Some(addr) = request
        .extensions()
        .get::<tonic::transport::server::TcpConnectInfo>()
        .and_then(tonic::transport::server::TcpConnectInfo::remote_addr)
    {
        return Some(addr);
    }
    request.extensions().get::<SocketAddr>().copied()
}

/// The `X-Forwarded-For` addresses, left to right; `None` for an entry that is not one.
fn x_forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    elements(headers, "x-forwarded-for")
        .map(|entry| entry.and_then(|entry| parse_node(entry.trim())))
        .collect()
}

/// The `for=` addresses of the `Forwarded` elements, left to right; `None` for an element
/// whose `for=` is not an address (or that has none).
///
/// Each header line is read from its right end with RFC 7239's grammar (elements split by
/// `,`, pairs by `;`, `name=value` with a value a token or a quoted string). The proxies append
/// to the right, and what they write is well formed, so read from the right it parses one way
/// only, whatever the client wrote to its left: a quote the client left open cannot swallow
/// a proxy's element, pair with a proxy's quotes, or make a `,` or `;` inside a value a proxy
/// quoted (a `host=` copied from the client's `Host`) split anything. Read from the left, any
/// of those let the client hide its proxy's element (and be counted as the proxy) or write a
/// `for=` of its own. At the first syntax error the reading stops: everything to its left is
/// one element with no address.
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let mut addresses = Vec::new();
    for line in headers.get_all(FORWARDED) {
        let start = addresses.len();
        addresses.extend(
            for_values_from_right(line.as_bytes())
                .into_iter()
                .map(|value| value.and_then(address_of)),
        );
        addresses[start..].reverse();
    }
    addresses
}

/// The address a `for=` value names: a token or a quoted string without escapes (no address
/// needs one).
fn address_of(value: &[u8]) -> Option<IpAddr> {
    let value = std::str::from_utf8(value).ok()?;
    let node = match value.strip_prefix('"') {
        None => value,
        Some(rest) => rest
            .strip_suffix('"')
            .filter(|inner| !inner.contains('\\'))?,
    };
    parse_node(node)
}

/// The `for=` value (raw: a token or a quoted string) of each element of one `Forwarded` line,
/// right to left; `None` for an element without one, and one `None` for whatever is left of a
/// syntax error.
fn for_values_from_right(line: &[u8]) -> Vec<Option<&[u8]>> {
    let mut elements = Vec::new();
    let mut at = skip_whitespace_left(line, line.len());
    // The `for=` of the element being read (its leftmost, as read from the left).
    let mut found = None;
    loop {
        // One pair, or an empty one, ends at `at`.
        if at > 0 && !matches!(line[at - 1], b';' | b',') {
            let Some((name, value, rest)) = pair_from_right(line, at) else {
                elements.push(None);
                return elements;
            };
            if name.eq_ignore_ascii_case(b"for") {
                found = Some(value);
            }
            at = skip_whitespace_left(line, rest);
        }
        match at.checked_sub(1).map(|before| line[before]) {
            None => {
                elements.push(found);
                return elements;
            }
            Some(b';') => at = skip_whitespace_left(line, at - 1),
            Some(b',') => {
                elements.push(found.take());
                at = skip_whitespace_left(line, at - 1);
            }
            Some(_) => {
                elements.push(None);
                return elements;
            }
        }
    }
}

/// The pair `name=value` ending at `end` (no whitespace before `end`): its name, its raw value
/// and where it starts; `None` if it is not one.
fn pair_from_right(line: &[u8], end: usize) -> Option<(&[u8], &[u8], usize)> {
    let value_start = if line[end - 1] == b'"' {
        // The closing quote must not be escaped; the opening quote is the first quote to its
        // left that is not (an even number of `\` before it): in a well-formed quoted string,
        // every other quote is escaped.
        if !backslashes_before(line, end - 1).is_multiple_of(2) {
            return None;
        }
        let mut at = end - 1;
        loop {
            at = line[..at].iter().rposition(|&byte| byte == b'"')?;
            if backslashes_before(line, at).is_multiple_of(2) {
                break at;
            }
        }
    } else {
        let token = line[..end]
            .iter()
            .rev()
            .take_while(|&&byte| is_tchar(byte) || matches!(byte, b':' | b'[' | b']'))
            .count();
        end - token
    };
    let value = &line[value_start..end];
    if value.is_empty() {
        return None;
    }
    let equals = skip_whitespace_left(line, value_start).checked_sub(1)?;
    if line[equals] != b'=' {
        return None;
    }
    let name_end = skip_whitespace_left(line, equals);
    let name_len = line[..name_end]
        .iter()
        .rev()
        .take_while(|&&byte| is_tchar(byte))
        .count();
    if name_len == 0 {
        return None;
    }
    Some((
        &line[name_end - name_len..name_end],
        value,
        name_end - name_len,
    ))
}

/// How many `\` come right before `at`.
fn backslashes_before(line: &[u8], at: usize) -> usize {
    line[..at]
        .iter()
        .rev()
        .take_while(|&&byte| byte == b'\\')
        .count()
}

/// `at` moved left past spaces and tabs.
fn skip_whitespace_left(line: &[u8], at: usize) -> usize {
    at - line[..at]
        .iter()
        .rev()
        .take_while(|&&byte| matches!(byte, b' ' | b'\t'))
        .count()
}

/// An HTTP token character (RFC 9110).
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// The comma-separated elements of every `name` header, left to right, each decoded on its
/// own: `None` for an element that is not text, so that bytes a client wrote into its part of
/// the list do not hide the elements the proxies appended after it.
fn elements(headers: &HeaderMap, name: impl AsHeaderName) -> impl Iterator<Item = Option<&str>> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&byte| byte == b','))
        .map(|element| std::str::from_utf8(element).ok())
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:4711`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse() {
        return Some(ip);
    }
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    node.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}
