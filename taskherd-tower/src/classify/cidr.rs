//! A block of IP addresses, for the list of trusted proxies.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A block of IP addresses written `address/prefix` (`10.0.0.0/8`, `2001:db8::/32`) or a single
/// address (`192.0.2.7`): a proxy, or proxies, whose forwarding headers
/// [`PeerIp`](crate::PeerIp) believes.
///
/// # Examples
///
/// ```
/// use taskherd_tower::Cidr;
///
/// let private: Cidr = "10.0.0.0/8".parse().unwrap();
/// assert!(private.contains("10.1.2.3".parse().unwrap()));
/// assert!(!private.contains("192.0.2.1".parse().unwrap()));
/// assert!("10.0.0.0/33".parse::<Cidr>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    address: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The block of addresses sharing the first `prefix` bits of `address`.
    ///
    /// # Errors
    ///
    /// [`InvalidCidr`] if `prefix` is longer than the address (32 bits for IPv4, 128 for IPv6).
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd_tower::Cidr;
    ///
    /// let block = Cidr::new([172, 16, 0, 0].into(), 12).unwrap();
    /// assert!(block.contains([172, 31, 255, 255].into()));
    /// ```
    pub fn new(address: IpAddr, prefix: u8) -> Result<Self, InvalidCidr> {
        let bits = if address.is_ipv4() { 32 } else { 128 };
        if prefix > bits {
            return Err(InvalidCidr(()));
        }
        Ok(Self { address, prefix })
    }

    /// `true` if `ip` is in the block. An IPv4 address mapped into IPv6 (`::ffff:a.b.c.d`)
    /// counts as the IPv4 address, and a block written in that form as the IPv4 block:
    /// `::ffff:10.0.0.0/104` is `10.0.0.0/8` (96 bits fewer), and a mapped block with a prefix
    /// shorter than 96 (`::ffff:0:0/80`) holds every IPv4 address.
    ///
    /// # Examples
    ///
    /// ```
    /// let proxy: taskherd_tower::Cidr = "192.0.2.7".parse().unwrap();
    /// assert!(proxy.contains("::ffff:192.0.2.7".parse().unwrap()));
    ///
    /// let private: taskherd_tower::Cidr = "::ffff:10.0.0.0/104".parse().unwrap();
    /// assert!(private.contains("10.1.2.3".parse().unwrap()));
    /// assert!(!private.contains("11.0.0.1".parse().unwrap()));
    /// ```
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (address, prefix) = self.canonical();
        let (ours, theirs, bits) = match (address, ip.to_canonical()) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                (u128::from(a.to_bits()), u128::from(b.to_bits()), 32)
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => (a.to_bits(), b.to_bits(), 128),
            _ => return false,
        };
        debug_assert!(
            prefix <= bits,
            "Cidr::new checks the prefix against the address"
        );
        if prefix == 0 {
            return true;
        }
        let shift = u32::from(bits - prefix);
        (ours >> shift) == (theirs >> shift)
    }

    /// The block with an IPv4-mapped address as the IPv4 block: the address unmapped, the
    /// prefix 96 bits shorter (all of IPv4 if it was shorter than 96).
    fn canonical(&self) -> (IpAddr, u8) {
        match self.address {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), self.prefix.saturating_sub(96)),
                None => (self.address, self.prefix),
            },
            IpAddr::V4(_) => (self.address, self.prefix),
        }
    }
}

impl FromStr for Cidr {
    type Err = InvalidCidr;

    fn from_str(text: &str) -> Result<Self, InvalidCidr> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address.parse().map_err(|_| InvalidCidr(()))?;
        let prefix = match prefix {
            Some(prefix) => prefix.parse().map_err(|_| InvalidCidr(()))?,
            None if address.is_ipv4() => 32,
            None => 128,
        };
        Self::new(address, prefix)
    }
}

impl From<IpAddr> for Cidr {
    fn from(address: IpAddr) -> Self {
        let prefix = if address.is_ipv4() { 32 } else { 128 };
        Self { address, prefix }
    }
}

impl fmt::Debug for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The error of parsing a [`Cidr`]: not `address` or `address/prefix`, or a prefix longer than
/// the address.
///
/// # Examples
///
/// ```
/// assert!("proxy.example".parse::<taskherd_tower::Cidr>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidCidr(());

impl fmt::Display for InvalidCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not an IP address or an address/prefix block")
    }
}

impl std::error::Error for InvalidCidr {}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(text: &str) -> Cidr {
        text.parse().unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_ipv4_mapped_block_is_the_ipv4_block_96_bits_shorter() {
        let private = block("::ffff:10.0.0.0/104");
        for inside in ["10.0.0.1", "10.255.255.255", "::ffff:10.1.2.3"] {
            assert!(private.contains(ip(inside)), "{inside} is in {private}");
        }
        for outside in ["11.0.0.1", "9.255.255.255", "::ffff:11.0.0.1", "::a00:1"] {
            assert!(
                !private.contains(ip(outside)),
                "{outside} is not in {private}"
            );
        }

        let one = block("::ffff:192.0.2.7");
        assert!(one.contains(ip("192.0.2.7")));
        assert!(!one.contains(ip("192.0.2.8")));

        let slash_120 = block("::ffff:192.0.2.0/120");
        assert!(slash_120.contains(ip("192.0.2.200")));
        assert!(!slash_120.contains(ip("192.0.3.1")));
    }

    #[test]
    fn an_ipv4_mapped_block_shorter_than_96_bits_holds_all_of_ipv4_only() {
        for text in [
            "::ffff:0.0.0.0/96",
            "::ffff:10.0.0.0/95",
            "::ffff:10.0.0.0/80",
        ] {
            let all = block(text);
            for inside in ["0.0.0.0", "10.0.0.1", "255.255.255.255", "::ffff:192.0.2.1"] {
                assert!(all.contains(ip(inside)), "{inside} is in {text}");
            }
            for outside in ["::1", "2001:db8::1"] {
                assert!(!all.contains(ip(outside)), "{outside} is not in {text}");
            }
        }
    }

    #[test]
    fn other_blocks_keep_their_family() {
        assert!(block("10.0.0.0/8").contains(ip("::ffff:10.9.9.9")));
        assert!(!block("10.0.0.0/8").contains(ip("2001:db8::1")));
        assert!(block("2001:db8::/32").contains(ip("2001:db8:1::1")));
        assert!(!block("2001:db8::/32").contains(ip("10.0.0.1")));
        assert!(block("::/0").contains(ip("2001:db8::1")));
        assert!(!block("::/0").contains(ip("10.0.0.1")));
        assert!(block("0.0.0.0/0").contains(ip("10.0.0.1")));
        assert!(!block("0.0.0.0/0").contains(ip("2001:db8::1")));
    }
}
