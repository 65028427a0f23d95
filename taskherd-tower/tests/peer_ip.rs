//! The client IP comes from the connection: forwarding headers from a peer that is not a
//! trusted proxy do not change the group; from a trusted proxy they do.

mod support;

use std::net::{IpAddr, SocketAddr};

use axum::{Router, routing::get};
use http::StatusCode;
use taskherd::TaskPool;
use taskherd_tower::{Cidr, ForwardedHeader, LimitLayer, PeerIp};

use support::{Gate, wait_until};

async fn server(pool: &TaskPool<IpAddr>, classify: PeerIp) -> (std::net::SocketAddr, Gate) {
    let gate = Gate::new();
    let held = gate.clone();
    let app = Router::new()
        .route(
            "/",
            get(move || async move {
                held.pass().await;
                "done"
            }),
        )
        .layer(LimitLayer::new(pool.clone(), classify));
    (support::serve(app).await, gate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_forwarded_header_from_an_untrusted_peer_does_not_change_the_group() {
    let pool = TaskPool::<IpAddr>::builder().default_limit(1).build();
    // Only 10.0.0.0/8 is a proxy; the test connects from 127.0.0.1.
    let classify = PeerIp::new().trust_proxies(["10.0.0.0/8".parse().unwrap()]);
    let (addr, gate) = server(&pool, classify).await;
    let client = support::client();
    let loopback: IpAddr = [127, 0, 0, 1].into();

    let first = {
        let client = client.clone();
        tokio::spawn(async move {
            support::get(&client, addr, "/", &[("x-forwarded-for", "198.51.100.1")]).await
        })
    };
    wait_until("the first request is admitted", || {
        pool.task_count(&loopback) == 1
    })
    .await;

    // Another made-up address, in both headers: still 127.0.0.1, which is full.
    let spoofed = support::get(
        &client,
        addr,
        "/",
        &[
            ("x-forwarded-for", "198.51.100.2"),
            ("forwarded", "for=198.51.100.3"),
        ],
    )
    .await;
    assert_eq!(spoofed.status, StatusCode::TOO_MANY_REQUESTS);
    for made_up in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
        assert_eq!(pool.stats(&made_up.parse().unwrap()).admitted, 0);
    }

    gate.open();
    assert_eq!(first.await.unwrap().status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_from_a_trusted_proxy_name_the_client() {
    let pool = TaskPool::<IpAddr>::builder().default_limit(1).build();
    // The test's connection from 127.0.0.1 plays the trusted proxy.
    let classify = PeerIp::new().trust_proxies(["127.0.0.1".parse().unwrap()]);
    let (addr, gate) = server(&pool, classify).await;
    let client = support::client();

    let requests: Vec<_> = ["198.51.100.1", "198.51.100.2"]
        .into_iter()
        .map(|client_ip| {
            let client = client.clone();
            tokio::spawn(async move {
                // A client-supplied entry on the left is not what counts: the proxy's append is.
                let chain = format!("203.0.113.66, {client_ip}");
                support::get(&client, addr, "/", &[("x-forwarded-for", &chain)]).await
            })
        })
        .collect();
    for client_ip in ["198.51.100.1", "198.51.100.2"] {
        let ip: IpAddr = client_ip.parse().unwrap();
        wait_until("each client is admitted in its own group", || {
            pool.task_count(&ip) == 1
        })
        .await;
    }
    assert_eq!(pool.task_count(&[127, 0, 0, 1].into()), 0);
    gate.open();
    for request in requests {
        assert_eq!(request.await.unwrap().status, StatusCode::OK);
    }
}

/// What `classify` makes of a request from `peer` with `headers`.
fn key(classify: &PeerIp, peer: &str, headers: &[(&str, &str)]) -> IpAddr {
    let headers: Vec<_> = headers
        .iter()
        .map(|&(name, value)| (name, value.parse().unwrap()))
        .collect();
    key_of(classify, peer, &headers)
}

/// [`key`], with header values as bytes (not always text); a name given twice is two lines.
fn key_of(classify: &PeerIp, peer: &str, headers: &[(&str, http::HeaderValue)]) -> IpAddr {
    use taskherd_tower::Classify;

    let mut request = http::Request::new(());
    for (name, value) in headers {
        let name = http::HeaderName::from_bytes(name.as_bytes()).unwrap();
        request.headers_mut().append(name, value.clone());
    }
    request
        .extensions_mut()
        .insert(SocketAddr::new(peer.parse().unwrap(), 443));
    classify.classify(&request).unwrap().as_slice()[0]
}

/// `Forwarded` read behind trusted proxies in 10.0.0.0/8.
fn rfc_7239_behind_10_8() -> PeerIp {
    PeerIp::new()
        .trust_proxies(["10.0.0.0/8".parse().unwrap()])
        .forwarded_header(ForwardedHeader::Forwarded)
}

/// Random bytes from an alphabet, from a fixed seed (xorshift): the same every run.
struct RandomBytes {
    state: u64,
    alphabet: &'static [u8],
}

impl RandomBytes {
    fn next(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    /// Fewer than `max` bytes.
    fn bytes(&mut self, max: u64) -> Vec<u8> {
        let len = self.next() % max;
        (0..len)
            .map(|_| self.alphabet[usize::try_from(self.next()).unwrap() % self.alphabet.len()])
            .collect()
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn forwarding_headers_are_read_right_to_left_through_trusted_proxies_only() {
    let classify =
        PeerIp::new().trust_proxies(["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()]);
    let rfc_7239 = classify
        .clone()
        .forwarded_header(ForwardedHeader::Forwarded);
    let client = |peer: &str, headers: &[(&str, &str)]| key(&classify, peer, headers);

    // Two trusted hops, the client before them; what the client wrote further left is ignored.
    assert_eq!(
        client(
            "10.0.0.1",
            &[("x-forwarded-for", "1.1.1.1, 203.0.113.5, 10.0.0.9")]
        ),
        ip("203.0.113.5")
    );
    // Repeated headers are one list.
    assert_eq!(
        client(
            "10.0.0.1",
            &[
                ("x-forwarded-for", "1.1.1.1"),
                ("x-forwarded-for", "203.0.113.5")
            ]
        ),
        ip("203.0.113.5")
    );
    // Forwarded: quoted IPv6 with a port (counted by its /64), and IPv4 with a port.
    assert_eq!(
        key(
            &rfc_7239,
            "10.0.0.1",
            &[("forwarded", r#"for="[2001:db8:0:7::7]:4711";proto=https"#)]
        ),
        ip("2001:db8:0:7::")
    );
    assert_eq!(
        key(
            &rfc_7239,
            "fd00::1",
            &[("forwarded", "for=192.0.2.60:80, for=10.0.0.3")]
        ),
        ip("192.0.2.60")
    );
    // An entry that is not an address stops the walk at the last trusted hop.
    assert_eq!(
        key(
            &rfc_7239,
            "10.0.0.1",
            &[("forwarded", "for=unknown, for=10.0.0.4")]
        ),
        ip("10.0.0.4")
    );
    assert_eq!(
        client("10.0.0.1", &[("x-forwarded-for", "garbage")]),
        ip("10.0.0.1")
    );
    // Every hop trusted: the leftmost is the client. No header: the proxy itself.
    assert_eq!(
        client("10.0.0.1", &[("x-forwarded-for", "10.1.1.1, 10.2.2.2")]),
        ip("10.1.1.1")
    );
    assert_eq!(client("10.0.0.1", &[]), ip("10.0.0.1"));
    // An untrusted peer is the client, whatever it sends.
    assert_eq!(
        client("192.0.2.1", &[("forwarded", "for=203.0.113.5")]),
        ip("192.0.2.1")
    );
    assert_eq!(
        client("192.0.2.1", &[("x-forwarded-for", "203.0.113.5")]),
        ip("192.0.2.1")
    );
    // A trusted proxy's address in its IPv4-mapped form is still trusted.
    assert_eq!(
        client("::ffff:10.0.0.1", &[("x-forwarded-for", "203.0.113.5")]),
        ip("203.0.113.5")
    );
}

/// nginx and the AWS load balancers append to `X-Forwarded-For` and pass a `Forwarded` header
/// through as the client wrote it (and the other way round for a proxy that writes
/// `Forwarded`): only the header the operator named is read, with no fallback to the other.
#[test]
fn only_the_header_the_trusted_proxies_write_is_read() {
    let proxy: Cidr = "10.0.0.0/8".parse().unwrap();
    let x_forwarded_for = PeerIp::new().trust_proxies([proxy]);
    let forwarded = PeerIp::new()
        .trust_proxies([proxy])
        .forwarded_header(ForwardedHeader::Forwarded);

    // Behind an X-Forwarded-For proxy (the default): the client's `Forwarded` is ignored.
    let spoofed = [
        ("forwarded", "for=198.51.100.77"),
        ("x-forwarded-for", "203.0.113.5"),
    ];
    assert_eq!(
        key(&x_forwarded_for, "10.0.0.1", &spoofed),
        ip("203.0.113.5")
    );
    // ... and so is a `Forwarded` header alone: the request counts for the proxy.
    assert_eq!(
        key(
            &x_forwarded_for,
            "10.0.0.1",
            &[("forwarded", "for=198.51.100.77")]
        ),
        ip("10.0.0.1")
    );

    // Behind a Forwarded proxy: the client's `X-Forwarded-For` is ignored.
    let spoofed = [
        ("x-forwarded-for", "198.51.100.77"),
        ("forwarded", "for=203.0.113.5"),
    ];
    assert_eq!(key(&forwarded, "10.0.0.1", &spoofed), ip("203.0.113.5"));
    assert_eq!(
        key(
            &forwarded,
            "10.0.0.1",
            &[("x-forwarded-for", "198.51.100.77")]
        ),
        ip("10.0.0.1")
    );
}

/// nginx's `$proxy_add_x_forwarded_for` appends ", <client>" to the client's own value on the
/// same line: bytes that are not text in the client's part must not hide the address the proxy
/// appended (the request would count for the proxy itself, escaping the client's limit).
#[test]
fn bytes_that_are_not_text_hide_only_their_own_entry() {
    use taskherd_tower::Classify;

    let classify = PeerIp::new().trust_proxies(["10.0.0.0/8".parse().unwrap()]);
    let rfc_7239 = classify
        .clone()
        .forwarded_header(ForwardedHeader::Forwarded);
    let key = |classify: &PeerIp, name: &str, value: &[u8]| {
        let mut request = http::Request::new(());
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            http::HeaderValue::from_bytes(value).unwrap(),
        );
        request
            .extensions_mut()
            .insert(SocketAddr::new(ip("10.0.0.1"), 443));
        classify.classify(&request).unwrap().as_slice()[0]
    };

    assert_eq!(
        key(&classify, "x-forwarded-for", b"\xff, 203.0.113.5"),
        ip("203.0.113.5")
    );
    assert_eq!(
        key(&rfc_7239, "forwarded", b"for=\"\xff\", for=203.0.113.5"),
        ip("203.0.113.5")
    );
    // Such an entry is an unknown hop: to its right, behind trusted proxies only, the walk
    // stops at the last trusted proxy (fail closed, never the entry further left).
    assert_eq!(
        key(
            &classify,
            "x-forwarded-for",
            b"198.51.100.1, \xff, 10.0.0.7"
        ),
        ip("10.0.0.7")
    );
    assert_eq!(
        key(&classify, "x-forwarded-for", b"198.51.100.1, \xff"),
        ip("10.0.0.1")
    );
}

/// A dual-stack `[::]` listener sees an IPv4 client as `::ffff:a.b.c.d`: the key is its IPv4
/// address, so that a limit set for that address applies, and the client has the same key
/// whether it connects directly or through a proxy.
#[test]
fn an_ipv4_mapped_address_counts_as_its_ipv4_address() {
    let classify = PeerIp::new().trust_proxies(["10.0.0.0/8".parse().unwrap()]);
    let rfc_7239 = classify
        .clone()
        .forwarded_header(ForwardedHeader::Forwarded);

    // Untrusted peer, whatever it sends.
    assert_eq!(key(&classify, "::ffff:192.0.2.1", &[]), ip("192.0.2.1"));
    assert_eq!(
        key(
            &classify,
            "::ffff:192.0.2.1",
            &[("x-forwarded-for", "203.0.113.5")]
        ),
        ip("192.0.2.1")
    );
    // Written by a trusted proxy, in either header.
    assert_eq!(
        key(
            &classify,
            "10.0.0.1",
            &[("x-forwarded-for", "::ffff:203.0.113.5")]
        ),
        ip("203.0.113.5")
    );
    assert_eq!(
        key(
            &rfc_7239,
            "10.0.0.1",
            &[("forwarded", r#"for="[::ffff:203.0.113.5]:4711""#)]
        ),
        ip("203.0.113.5")
    );
    // A trusted proxy's own address, when the chain ends at it.
    assert_eq!(key(&classify, "::ffff:10.0.0.1", &[]), ip("10.0.0.1"));
    // An IPv6 address is left alone (but for its /64: see below).
    assert_eq!(key(&classify, "2001:db8::1", &[]), ip("2001:db8::"));
}

/// RFC 7239 values may be quoted strings holding `,` and `;`, and a proxy's element often
/// carries `host=` copied from the client's `Host` header: a client could write a `for=` of
/// its choosing inside it and be counted as that address (a key it chose: another client's
/// group, or a fresh one each time). Quoted strings are one value now. Found by a review.
#[test]
fn a_quoted_forwarded_value_cannot_choose_the_client_address() {
    let classify = PeerIp::new()
        .trust_proxies(["10.0.0.0/8".parse().unwrap()])
        .forwarded_header(ForwardedHeader::Forwarded);
    // Proxy 10.0.0.2 saw client 198.51.100.9 whose Host was `evil, for=…`, or `x;for=…`.
    for header in [
        r#"for=198.51.100.9;host="evil, for=203.0.113.77""#,
        r#"host="x;for=203.0.113.77";for=198.51.100.9"#,
        r#"host="a\"b, for=203.0.113.77";for=198.51.100.9"#,
    ] {
        assert_eq!(
            key(&classify, "10.0.0.2", &[("forwarded", header)]),
            ip("198.51.100.9"),
            "{header}"
        );
    }
    // A quote the client left open does not swallow what the proxy appended on its line (see
    // `a_quote_left_open_does_not_hide_what_the_proxies_appended`): the proxy's element names
    // the client.
    assert_eq!(
        key(
            &classify,
            "10.0.0.2",
            &[("forwarded", r#"for="203.0.113.77, for=198.51.100.9"#)]
        ),
        ip("198.51.100.9")
    );
    // A proxy that copies a `Host` ending in `\` into a quoted string without escaping it leaves
    // its own element's quote open: what the client wrote after a comma in it is cut out into
    // elements of their own, which are not well formed either, so no address comes from them
    // (fail closed: the last trusted hop), never the one the client wrote.
    assert_eq!(
        key(
            &classify,
            "10.0.0.2",
            &[(
                "forwarded",
                r#"for=198.51.100.9;host="evil, for=203.0.113.77;x=\""#
            )]
        ),
        ip("10.0.0.2")
    );
}

/// An IPv6 host usually has a /64 to itself and may use any address in it (privacy
/// addresses rotate by themselves): counted per address, one host had up to 2^64 times its
/// limit. IPv6 clients are counted per /64 by default, keyed by the network's address;
/// `ipv6_prefix` changes the length (128: per address). IPv4 is unchanged. Found by a review.
#[test]
fn ipv6_clients_are_counted_per_64_by_default() {
    let by_default = PeerIp::new();
    assert_eq!(
        key(&by_default, "2001:db8:1:2::1", &[]),
        ip("2001:db8:1:2::")
    );
    assert_eq!(
        key(&by_default, "2001:db8:1:2:aaaa:bbbb:cccc:dddd", &[]),
        ip("2001:db8:1:2::")
    );
    assert_eq!(
        key(&by_default, "2001:db8:1:3::1", &[]),
        ip("2001:db8:1:3::")
    );
    assert_eq!(key(&by_default, "192.0.2.7", &[]), ip("192.0.2.7"));
    assert_eq!(key(&by_default, "::ffff:192.0.2.7", &[]), ip("192.0.2.7"));
    // Forwarded addresses alike.
    let behind = PeerIp::new().trust_proxies(["10.0.0.0/8".parse().unwrap()]);
    assert_eq!(
        key(
            &behind,
            "10.0.0.1",
            &[("x-forwarded-for", "2001:db8:9:9::42")]
        ),
        ip("2001:db8:9:9::")
    );
    let per_address = PeerIp::new().ipv6_prefix(128);
    assert_eq!(
        key(&per_address, "2001:db8:1:2::1", &[]),
        ip("2001:db8:1:2::1")
    );
    let per_48 = PeerIp::new().ipv6_prefix(48);
    assert_eq!(key(&per_48, "2001:db8:1:2::1", &[]), ip("2001:db8:1::"));
    // Longer than an address: per address; 0: one group for every IPv6 client.
    assert_eq!(
        key(&PeerIp::new().ipv6_prefix(200), "2001:db8::1", &[]),
        ip("2001:db8::1")
    );
    assert_eq!(
        key(&PeerIp::new().ipv6_prefix(0), "2001:db8::1", &[]),
        ip("::")
    );
}

/// A quoted string the client left open in its `Forwarded` element must not swallow the
/// elements a trusted proxy appended on the same line: the walk still finds the address the
/// proxy wrote (found by a review: `for="x` made the appended `, for=<client>` part of the
/// open quote, the walk fell back to the proxy's own address, and the client escaped its
/// limit, counted in the proxy's group instead).
#[test]
fn a_quote_left_open_does_not_hide_what_the_proxies_appended() {
    let classify = rfc_7239_behind_10_8();
    for header in [
        r#"for="x, for=203.0.113.7"#,
        r#"for="x;by=y, for=203.0.113.7"#,
        r#"for="x, for=203.0.113.7;proto=https, for=10.0.0.9"#,
        // A well-formed quoted element is still one element.
        r#"for="[2001:db8::1]:4711", for=203.0.113.7"#,
    ] {
        assert_eq!(
            key(&classify, "10.0.0.2", &[("forwarded", header)]),
            ip("203.0.113.7"),
            "{header}"
        );
    }
}

/// Quotes a client opens in its own `Forwarded` element can pair with the quotes of a
/// compliant proxy's `host=` (copied from the client's `Host`, escaped): read loosely, the
/// proxy's quoted string turned into elements of the client's choosing. Elements that do not
/// follow RFC 7239's grammar give no address now (found by a review: `203.0.113.77`, an
/// address the client chose, was read in both cases below).
#[test]
fn quotes_a_client_opens_cannot_turn_a_proxys_quoted_host_into_its_key() {
    let classify = rfc_7239_behind_10_8();
    for header in [
        // Client: `Forwarded: for="x`, `Host: evil, for=203.0.113.77;x="`.
        r#"for="x, for=198.51.100.9;host="evil, for=203.0.113.77;x=\"""#,
        r#"for="x, host="evil, for=203.0.113.77;x=\"";for=198.51.100.9"#,
        // A proxy that does not escape, with `Host: ,for=203.0.113.77;"`.
        r#"for=198.51.100.9;host=",for=203.0.113.77;"""#,
    ] {
        assert_ne!(
            key(&classify, "10.0.0.2", &[("forwarded", header)]),
            ip("203.0.113.77"),
            "{header}"
        );
    }
    // Well-formed elements are read as before (IPv6 clients are keyed by their /64).
    for (header, client) in [
        (
            r#"for=198.51.100.9;host="a, for=203.0.113.77";proto=https"#,
            "198.51.100.9",
        ),
        (r#"for="[2001:db8::1]:4711";by=_proxy"#, "2001:db8::"),
        ("for=192.0.2.43, for=198.51.100.17", "198.51.100.17"),
        (r#"For="192.0.2.43:47011""#, "192.0.2.43"),
    ] {
        assert_eq!(
            key(&classify, "10.0.0.2", &[("forwarded", header)]),
            ip(client),
            "{header}"
        );
    }
}

/// Whatever a client writes into `Forwarded` or `X-Forwarded-For`, classifying never panics
/// (a first version of the grammar check above underflowed on a value of a lone `"`). Random
/// header values over the bytes that matter to the parser, from a fixed seed.
#[test]
fn any_forwarding_header_value_is_classified_without_panicking() {
    let rfc_7239 = rfc_7239_behind_10_8();
    let x_forwarded_for = PeerIp::new().trust_proxies(["10.0.0.0/8".parse().unwrap()]);
    let mut random = RandomBytes {
        state: 0x9e37_79b9_7f4a_7c15,
        alphabet: b"\"\\,;= \tfor=[]:.0123456789abcdef_FOR\x80\xff",
    };
    for _ in 0..20_000 {
        let Ok(value) = http::HeaderValue::from_bytes(&random.bytes(40)) else {
            continue;
        };
        // Panics (fails) if classifying does.
        key_of(&rfc_7239, "10.0.0.2", &[("forwarded", value.clone())]);
        key_of(&x_forwarded_for, "10.0.0.2", &[("x-forwarded-for", value)]);
    }
}

/// A client that opens a quote in its own `Forwarded` element and sends a `Host` holding a `,`
/// or a `"` could make the element a compliant proxy appended (its `host=` quoted and escaped)
/// unreadable, read from the left, and be counted as the trusted proxy (in a chain: whichever
/// proxy it picked), escaping its own limit. Each line is read from the right now, where what
/// the proxies wrote parses one way only (found by a review of the grammar check).
#[test]
fn a_clients_quotes_and_host_cannot_hide_the_element_its_proxy_appended() {
    let classify = rfc_7239_behind_10_8();
    for header in [
        // Client: `Forwarded: for="x`, `Host: a,b`; proxy appends `, for=198.51.100.9;host="a,b"`.
        r#"for="x, for=198.51.100.9;host="a,b""#,
        // Client: `Forwarded: for="x`, `Host: a"b`; proxy escapes: `host="a\"b"`.
        r#"for="x, for=198.51.100.9;host="a\"b""#,
        // Two proxies (10.0.0.5 then 10.0.0.2), both appending `host=`.
        r#"for="x, for=198.51.100.9;host="a,b", for=10.0.0.5;host="a,b""#,
        r#"for="x, for=198.51.100.9;host="a\"b", for=10.0.0.5;host="a\"b""#,
        // `host=` first, spaces around the separators.
        r#"for="x ,  host="a,b\\" ; for=198.51.100.9"#,
    ] {
        assert_eq!(
            key(&classify, "10.0.0.2", &[("forwarded", header)]),
            ip("198.51.100.9"),
            "{header}"
        );
    }
    // The client's own line apart from the proxy's: the proxy's line is read whole.
    assert_eq!(
        key(
            &classify,
            "10.0.0.2",
            &[
                ("forwarded", r#"for="x, host="#),
                ("forwarded", r#"for=198.51.100.9;host="a;b""#)
            ]
        ),
        ip("198.51.100.9")
    );
}

/// Whatever a client writes into its own `Forwarded` header and its `Host`, a compliant proxy
/// that appends `for=<client>;host="<Host, escaped>"` (on the same line, or on a line of its
/// own) gets the client keyed by the address the proxy wrote: random values from a fixed seed.
#[test]
fn behind_a_compliant_proxy_the_client_is_keyed_by_the_address_the_proxy_wrote() {
    let classify = rfc_7239_behind_10_8();
    let mut random = RandomBytes {
        state: 0x2545_f491_4f6c_dd1d,
        alphabet: b"\"\\,;= \tfor=[]:.19_xF\x80",
    };
    for round in 0..20_000 {
        let client = random.bytes(24);
        let host = random.bytes(12);
        let mut proxy = b"for=198.51.100.9;host=\"".to_vec();
        for &byte in &host {
            if matches!(byte, b'"' | b'\\') {
                proxy.push(b'\\');
            }
            proxy.push(byte);
        }
        proxy.push(b'"');
        let lines = if round % 2 == 0 {
            [client.as_slice(), b", ", &proxy].concat()
        } else {
            client.clone()
        };
        let mut headers = Vec::new();
        let Ok(line) = http::HeaderValue::from_bytes(&lines) else {
            continue;
        };
        headers.push(("forwarded", line));
        if round % 2 == 1 {
            headers.push(("forwarded", http::HeaderValue::from_bytes(&proxy).unwrap()));
        }
        assert_eq!(
            key_of(&classify, "10.0.0.2", &headers),
            ip("198.51.100.9"),
            "client {:?}, host {:?}",
            String::from_utf8_lossy(&client),
            String::from_utf8_lossy(&host)
        );
    }
}
