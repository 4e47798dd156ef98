//! Whether an address a link resolves to may be fetched (the SSRF check of link ingestion).
//!
//! An address is *public* when it is neither loopback, private, link-local, shared (CGNAT),
//! benchmarking, reserved, multicast, broadcast nor documentation space. IPv6 forms that carry
//! an IPv4 address, and so reach an IPv4 host through a translator or a tunnel, are judged by
//! the IPv4 address they carry, recursively:
//!
//! | form                      | prefix               | IPv4 address                        |
//! |---------------------------|----------------------|-------------------------------------|
//! | IPv4-mapped               | `::ffff:0:0/96`      | last 32 bits                        |
//! | IPv4-translated (SIIT)    | `::ffff:0:0:0/96`    | last 32 bits                        |
//! | IPv4-compatible (old)     | `::/96`              | last 32 bits                        |
//! | NAT64 well-known prefix   | `64:ff9b::/96`       | last 32 bits                        |
//! | 6to4                      | `2002::/16`          | bits 16..48                         |
//! | Teredo                    | `2001:0::/32`        | server: bits 32..64; client: last 32 bits XOR `0xffffffff` |
//!
//! NAT64's local-use prefix `64:ff9b:1::/48` (RFC 8215) is never public: it is not globally
//! reachable by definition (IANA), it leads to whatever the local translator is set up to
//! reach, and the operator chooses where in it the IPv4 address sits, so it cannot be read
//! back reliably. A Teredo address is public only when both its server and its client are.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Whether `ip` is a public address a link may be fetched from.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(v4: Ipv4Addr) -> bool {
    let o = v4.octets();
    !(v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || v4.is_documentation()
        // "this network" 0.0.0.0/8
        || o[0] == 0
        // shared address space (CGNAT) 100.64.0.0/10
        || (o[0] == 100 && (64..128).contains(&o[1]))
        // IETF protocol assignments 192.0.0.0/24 (not globally reachable)
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        // benchmarking 198.18.0.0/15
        || (o[0] == 198 && (o[1] == 18 || o[1] == 19))
        // reserved 240.0.0.0/4
        || o[0] >= 240)
}

/// The IPv4 address in `bits` at `shift` (the number of bits to its right).
fn v4_at(bits: u128, shift: u32) -> Ipv4Addr {
    Ipv4Addr::from((bits >> shift) as u32)
}

/// Whether `bits` lies in `prefix/len`.
fn within(bits: u128, prefix: u128, len: u32) -> bool {
    let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
    bits & mask == prefix & mask
}

fn is_public_v6(v6: Ipv6Addr) -> bool {
    let bits = u128::from(v6);
    if v6.is_unspecified() || v6.is_loopback() || v6.is_multicast() {
        return false;
    }
    // IPv4-mapped ::ffff:a.b.c.d, IPv4-translated ::ffff:0:a.b.c.d (SIIT), IPv4-compatible
    // ::a.b.c.d (deprecated, still routed by some stacks) and NAT64 64:ff9b::a.b.c.d: the last
    // 32 bits are the IPv4 address.
    if within(bits, 0xffff_0000_0000, 96)
        || within(bits, 0xffff_0000_0000_0000, 96)
        || within(bits, 0, 96)
        || within(bits, 0x0064_ff9b << 96, 96)
    {
        return is_public_v4(v4_at(bits, 0));
    }
    // NAT64 local-use prefix: see the module documentation.
    if within(bits, (0x0064_ff9b_u128 << 96) | (1 << 80), 48) {
        return false;
    }
    // 6to4 2002:AABB:CCDD::/48 carries AA.BB.CC.DD.
    if within(bits, 0x2002 << 112, 16) {
        return is_public_v4(v4_at(bits, 80));
    }
    // Teredo 2001:0:SSSS:SSSS:flags:port:CCCC:CCCC, the client address inverted.
    if within(bits, 0x2001_0000 << 96, 32) {
        let server = v4_at(bits, 64);
        let client = Ipv4Addr::from(!(bits as u32));
        return is_public_v4(server) && is_public_v4(client);
    }
    let s = v6.segments();
    !(
        // unique local fc00::/7
        (s[0] & 0xfe00) == 0xfc00
        // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfe80
        // site-local fec0::/10 (deprecated, still routed inside some networks)
        || (s[0] & 0xffc0) == 0xfec0
        // documentation 2001:db8::/32
        || (s[0] == 0x2001 && s[1] == 0x0db8)
        // discard-only 100::/64
        || within(bits, 0x0100 << 112, 64)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(s: &str) -> bool {
        is_public(s.parse().unwrap())
    }

    /// 6to4 address of an IPv4 address.
    fn six_to_four(v4: [u8; 4]) -> String {
        format!("2002:{:02x}{:02x}:{:02x}{:02x}::1", v4[0], v4[1], v4[2], v4[3])
    }

    /// Teredo address of a server and a client IPv4 address.
    fn teredo(server: [u8; 4], client: [u8; 4]) -> String {
        let c = !u32::from_be_bytes(client);
        format!(
            "2001:0:{:02x}{:02x}:{:02x}{:02x}:8000:f227:{:x}:{:x}",
            server[0],
            server[1],
            server[2],
            server[3],
            c >> 16,
            c & 0xffff
        )
    }

    const PRIVATE_V4: [[u8; 4]; 16] = [
        [127, 0, 0, 1],
        [10, 1, 2, 3],
        [172, 16, 0, 1],
        [192, 168, 1, 1],
        [169, 254, 169, 254],
        [0, 0, 0, 0],
        [0, 1, 2, 3],
        [100, 64, 0, 1],
        [100, 127, 255, 254],
        [198, 18, 0, 1],
        [198, 19, 255, 1],
        [240, 0, 0, 1],
        [255, 255, 255, 255],
        [224, 0, 0, 1],
        [192, 0, 2, 1],
        [192, 0, 0, 170],
    ];
    const PUBLIC_V4: [[u8; 4]; 5] = [[8, 8, 8, 8], [1, 1, 1, 1], [93, 184, 216, 34], [100, 63, 0, 1], [198, 20, 0, 1]];

    #[test]
    fn ipv4_classes() {
        for a in PRIVATE_V4 {
            assert!(!is_public(IpAddr::from(a)), "{a:?}");
        }
        for a in PUBLIC_V4 {
            assert!(is_public(IpAddr::from(a)), "{a:?}");
        }
        // Documentation ranges and 100.128/10 (outside CGNAT).
        assert!(!public("198.51.100.7") && !public("203.0.113.9"));
        assert!(public("100.128.0.1") && public("172.32.0.1") && public("11.0.0.1"));
    }

    #[test]
    fn plain_ipv6_classes() {
        for a in [
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "2001:db8::1",
            "ff02::1",
            "100::1",
        ] {
            assert!(!public(a), "{a}");
        }
        for a in ["2606:4700:4700::1111", "2a00:1450:4001:80b::200e", "2001:4860:4860::8888", "2003::1"] {
            assert!(public(a), "{a}");
        }
    }

    #[test]
    fn ipv4_mapped_translated_and_compatible() {
        for a in PRIVATE_V4 {
            let v4 = Ipv4Addr::from(a);
            assert!(!public(&format!("::ffff:{v4}")), "mapped {v4}");
            assert!(!public(&format!("::ffff:0:{v4}")), "translated {v4}");
            assert!(!public(&format!("::{v4}")), "compatible {v4}");
        }
        for a in PUBLIC_V4 {
            let v4 = Ipv4Addr::from(a);
            assert!(public(&format!("::ffff:{v4}")), "mapped {v4}");
            assert!(public(&format!("::ffff:0:{v4}")), "translated {v4}");
            assert!(public(&format!("::{v4}")), "compatible {v4}");
        }
        // The compatible form of 127.0.0.1 written in hex.
        assert!(!public("::7f00:1"));
    }

    #[test]
    fn nat64() {
        for a in PRIVATE_V4 {
            let v4 = Ipv4Addr::from(a);
            assert!(!public(&format!("64:ff9b::{v4}")), "{v4}");
            assert!(!public(&format!("64:ff9b:1::{v4}")), "local use {v4}");
        }
        for a in PUBLIC_V4 {
            let v4 = Ipv4Addr::from(a);
            assert!(public(&format!("64:ff9b::{v4}")), "{v4}");
            // The local-use prefix is never public, whatever it carries.
            assert!(!public(&format!("64:ff9b:1::{v4}")), "local use {v4}");
            assert!(!public(&format!("64:ff9b:1:abcd::{v4}")), "local use {v4}");
        }
        assert!(!public("64:ff9b::7f00:1"));
        // Just outside both prefixes: ordinary addresses.
        assert!(public("64:ff9b:2::a00:1") && public("64:ff9a::a00:1"));
    }

    #[test]
    fn six_to_four_carries_its_ipv4_address() {
        for a in PRIVATE_V4 {
            assert!(!public(&six_to_four(a)), "{}", six_to_four(a));
        }
        for a in PUBLIC_V4 {
            assert!(public(&six_to_four(a)), "{}", six_to_four(a));
        }
        assert_eq!(six_to_four([192, 168, 1, 1]), "2002:c0a8:0101::1");
        assert!(!public("2002:7f00:1::"));
    }

    #[test]
    fn teredo_carries_server_and_client() {
        let server = [65, 54, 227, 120];
        for a in PRIVATE_V4 {
            assert!(!public(&teredo(server, a)), "client {a:?}: {}", teredo(server, a));
            assert!(!public(&teredo(a, [8, 8, 8, 8])), "server {a:?}: {}", teredo(a, [8, 8, 8, 8]));
        }
        for a in PUBLIC_V4 {
            assert!(public(&teredo(server, a)), "client {a:?}: {}", teredo(server, a));
        }
        // RFC 4380's example: server 65.54.227.120, client 192.0.2.45 (documentation).
        assert!(!public("2001:0:4136:e378:8000:63bf:3fff:fdd2"));
        // The client 127.0.0.1 inverted is 80ff:fffe.
        assert_eq!(teredo(server, [127, 0, 0, 1]), "2001:0:4136:e378:8000:f227:80ff:fffe");
        assert!(!public("2001:0:4136:e378:8000:f227:80ff:fffe"));
        // Other 2001::/16 space is not Teredo.
        assert!(public("2001:4860::8888"));
    }
}
