//! Where a webhook may send (the SSRF guard): one decision, [`is_public`], over canonical
//! address forms, and the operator's [`TargetPolicy`] around it. Registration checks IP
//! literals and names; the delivery client checks literals again and every address the
//! resolver returns, and connects only to one that passed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::ValidationError;

/// An IP network, `10.0.0.0/8` or `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let err = || {
            ValidationError::new(
                "cidr",
                format!("`{raw}` is not a network like 10.0.0.0/8 or fd00::/8"),
            )
        };
        let (net, prefix) = raw.split_once('/').ok_or_else(err)?;
        let net: IpAddr = net.parse().map_err(|_| err())?;
        let prefix: u8 = prefix.parse().map_err(|_| err())?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(err());
        }
        Ok(Self { net, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                within(u32::from(net).into(), u32::from(ip).into(), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                within(u128::from(net), u128::from(ip), self.prefix, 128)
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

fn within(net: u128, ip: u128, prefix: u8, bits: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let shift = bits - prefix;
    (net >> shift) == (ip >> shift)
}

/// What the operator allows beyond the public internet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetPolicy {
    /// `--allow-private-targets`: anything, for local development and tests.
    pub allow_private: bool,
    /// `--allow-cidr`: these networks although they are not public (a private receiver net).
    pub allowed: Vec<Cidr>,
    /// `--https-only`: `http://` endpoints refused.
    pub https_only: bool,
}

impl TargetPolicy {
    /// Everything allowed, as `--allow-private-targets` does.
    pub fn permissive() -> Self {
        Self {
            allow_private: true,
            ..Self::default()
        }
    }

    /// Whether a request may go to `ip`.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allow_private || is_public(ip) || self.allowed.iter().any(|c| c.contains(ip))
    }
}

/// `ip` with an IPv4 address that is merely written as IPv6 (mapped `::ffff:a.b.c.d`) as that
/// IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// True when `ip` is globally reachable: not in any IANA special-purpose range that is not
/// (IPv4 and IPv6 special-purpose registries), judging an IPv6 address that embeds an IPv4
/// one (mapped, compatible, NAT64, 6to4, Teredo) by what it embeds.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    const BLOCKED: &[([u8; 4], u8)] = &[
        ([0, 0, 0, 0], 8),       // "this network"
        ([10, 0, 0, 0], 8),      // private
        ([100, 64, 0, 0], 10),   // shared address space (carrier-grade NAT)
        ([127, 0, 0, 0], 8),     // loopback
        ([169, 254, 0, 0], 16),  // link-local (cloud metadata)
        ([172, 16, 0, 0], 12),   // private
        ([192, 0, 0, 0], 24),    // IETF protocol assignments
        ([192, 0, 2, 0], 24),    // documentation (TEST-NET-1)
        ([192, 88, 99, 0], 24),  // 6to4 relay anycast (deprecated)
        ([192, 168, 0, 0], 16),  // private
        ([198, 18, 0, 0], 15),   // benchmarking
        ([198, 51, 100, 0], 24), // documentation (TEST-NET-2)
        ([203, 0, 113, 0], 24),  // documentation (TEST-NET-3)
        ([224, 0, 0, 0], 4),     // multicast
        ([240, 0, 0, 0], 4),     // reserved, and 255.255.255.255 broadcast
    ];
    let bits = u32::from(ip);
    !BLOCKED
        .iter()
        .any(|(net, prefix)| within(u32::from_be_bytes(*net).into(), bits.into(), *prefix, 32))
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let bits = u128::from(ip);
    let seg = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    let net = |s: [u16; 8], prefix: u8| within(u128::from(Ipv6Addr::from(s)), bits, prefix, 128);
    // Forms that carry an IPv4 address, judged by it.
    if let Some(mapped) = ip.to_ipv4_mapped() {
        return is_public_v4(mapped);
    }
    if net([0; 8], 96) {
        // IPv4-compatible (deprecated), including :: and ::1.
        return bits > 1 && is_public_v4(v4(seg[6], seg[7]));
    }
    if net([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96) {
        return is_public_v4(v4(seg[6], seg[7])); // NAT64, well-known prefix
    }
    if net([0x2002, 0, 0, 0, 0, 0, 0, 0], 16) {
        return is_public_v4(v4(seg[1], seg[2])); // 6to4
    }
    if net([0x2001, 0, 0, 0, 0, 0, 0, 0], 32) {
        // Teredo: the server's address, and the client's (stored inverted).
        return is_public_v4(v4(seg[2], seg[3])) && is_public_v4(v4(!seg[6], !seg[7]));
    }
    // Only 2000::/3 is global unicast: everything else (::/8 reserved, 64:ff9b:1::/48 local
    // NAT64, 100::/64 discard, 5f00::/16, fc00::/7, fe80::/10, fec0::/10, ff00::/8, …) is not.
    if !net([0x2000, 0, 0, 0, 0, 0, 0, 0], 3) {
        return false;
    }
    // Inside 2000::/3, the special-purpose ranges that are not globally reachable.
    const GLOBAL_IN_2001_23: &[([u16; 8], u8)] = &[
        ([0x2001, 0x1, 0, 0, 0, 0, 0, 1], 128),    // PCP anycast
        ([0x2001, 0x1, 0, 0, 0, 0, 0, 2], 128),    // TURN anycast
        ([0x2001, 0x1, 0, 0, 0, 0, 0, 3], 128),    // DNS-SD SRP anycast
        ([0x2001, 0x3, 0, 0, 0, 0, 0, 0], 32),     // AMT
        ([0x2001, 0x4, 0x112, 0, 0, 0, 0, 0], 48), // AS112-v6
        ([0x2001, 0x20, 0, 0, 0, 0, 0, 0], 28),    // ORCHIDv2
        ([0x2001, 0x30, 0, 0, 0, 0, 0, 0], 28),    // DRIP DETs
    ];
    if net([0x2001, 0, 0, 0, 0, 0, 0, 0], 23) {
        return GLOBAL_IN_2001_23.iter().any(|(s, p)| net(*s, *p));
    }
    !(net([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32) // documentation
        || net([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20)) // documentation (RFC 9637)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(raw: &str) -> bool {
        is_public(raw.parse().unwrap())
    }

    #[test]
    fn special_purpose_addresses_are_not_public() {
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.255.255.255",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "64:ff9b:1::8.8.8.8",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            "2001:0:4136:e378:8000:63bf:80ff:fffe",
            "2001:0:7f00:1::1",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "ff05::2",
            "100::1",
            "2001:db8::1",
            "2001:2::1",
            "2001:10::1",
            "3fff::1",
            "5f00::1",
            "4000::1",
            "::2:3:4:5",
        ] {
            assert!(!public(ip), "{ip} must not be public");
        }
    }

    #[test]
    fn public_addresses_are_public() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "192.0.1.1",
            "198.20.0.1",
            "223.255.255.255",
            "::ffff:8.8.8.8",
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2001:1::1",
            "2001:4:112::1",
            "2a00:1450::1",
        ] {
            assert!(public(ip), "{ip} is public");
        }
    }

    #[test]
    fn the_policy_allows_what_the_operator_says() {
        let ip: IpAddr = "10.9.0.5".parse().unwrap();
        assert!(!TargetPolicy::default().allows(ip));
        assert!(TargetPolicy::permissive().allows(ip));
        let cidr = TargetPolicy {
            allowed: vec![Cidr::parse("10.9.0.0/24").unwrap()],
            ..TargetPolicy::default()
        };
        assert!(cidr.allows(ip));
        assert!(
            cidr.allows("::ffff:10.9.0.5".parse().unwrap()),
            "mapped form"
        );
        assert!(!cidr.allows("10.9.1.5".parse().unwrap()));
        assert!(
            Cidr::parse("fd00::/8")
                .unwrap()
                .contains("fd12::1".parse().unwrap())
        );
        for bad in ["10.0.0.0", "10.0.0.0/33", "x/8", "::/129"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }
}
