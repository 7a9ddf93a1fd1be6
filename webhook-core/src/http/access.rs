//! Who may call an endpoint that cannot be signed: a shared token compared in constant time,
//! and the client's address checked against CIDR blocks.
//!
//! The client address is the socket peer, unless the peer is a trusted proxy: then it is the
//! right-most address in `X-Forwarded-For` that is not itself a trusted proxy. Entries left of
//! it were written by whoever sent the request and prove nothing, so a client that is not a
//! trusted proxy cannot choose its address by sending the header itself.

use std::net::IpAddr;

use hmac::{Hmac, Mac};
use ipnet::IpNet;
use poem::http::HeaderMap;
use sha2::Sha256;

/// Whether `presented` equals `expected`, in time that depends on neither: both are MACed
/// first, so not even their lengths are compared directly.
pub fn same_secret(presented: &[u8], expected: &[u8]) -> bool {
    let mac = |bytes: &[u8]| {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"same-secret").expect("any key length");
        mac.update(bytes);
        mac
    };
    let expected = mac(expected).finalize().into_bytes();
    mac(presented).verify_slice(&expected).is_ok()
}

/// Reads a comma-separated list of CIDR blocks (`10.0.0.0/8`, `2001:db8::/32`) or single
/// addresses; the error names `variable`.
pub fn parse_cidrs(variable: &str, text: &str) -> Result<Vec<IpNet>, String> {
    let blocks: Vec<IpNet> = text
        .split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    format!(
                        "{variable}: {s:?} is not an IP address or a CIDR block such as 10.0.0.0/8"
                    )
                })
        })
        .collect::<Result<_, _>>()?;
    if blocks.is_empty() {
        return Err(format!("{variable} lists no address or CIDR block"));
    }
    Ok(blocks)
}

/// Whether `ip` lies in one of `blocks`; an IPv4 address seen as IPv6 (`::ffff:10.0.0.1`,
/// from a dual-stack socket) counts as the IPv4 address.
pub fn contains(blocks: &[IpNet], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    blocks.iter().any(|b| b.contains(&ip))
}

/// The client's address: `peer`, or, when `peer` is a trusted proxy, the right-most address
/// of `X-Forwarded-For` that is not a trusted proxy (the left-most if all are). An entry that
/// is not an IP address is an error naming it.
pub fn client_address(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted_proxies: &[IpNet],
) -> Result<IpAddr, String> {
    let peer = peer.to_canonical();
    if !contains(trusted_proxies, peer) {
        return Ok(peer);
    }
    // Several header lines mean the same as one joined with commas, in order.
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("\u{fffd}").split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for entry in entries.iter().rev().filter(|e| !e.is_empty()) {
        client = parse_forwarded(entry)
            .ok_or_else(|| format!("X-Forwarded-For: {entry:?} is not an IP address"))?
            .to_canonical();
        if !contains(trusted_proxies, client) {
            break;
        }
    }
    Ok(client)
}

/// An `X-Forwarded-For` entry: an address, possibly with a port (`192.0.2.1:4711`,
/// `[2001:db8::1]:4711`).
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    entry
        .parse()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use poem::http::HeaderValue;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let proxies = parse_cidrs("P", "10.0.0.0/8").unwrap();
        let got = client_address(ip("192.0.2.9"), &forwarded(&["10.1.1.1"]), &proxies);
        assert_eq!(got, Ok(ip("192.0.2.9")));
    }

    #[test]
    fn behind_trusted_proxies_the_right_most_untrusted_entry_is_the_client() {
        let proxies = parse_cidrs("P", "127.0.0.1, 10.200.0.0/16").unwrap();
        let headers = forwarded(&["203.0.113.66, 198.51.100.7", "10.200.3.4"]);
        let got = client_address(ip("127.0.0.1"), &headers, &proxies);
        assert_eq!(got, Ok(ip("198.51.100.7")));
        let all_trusted = client_address(ip("127.0.0.1"), &forwarded(&["10.200.0.1"]), &proxies);
        assert_eq!(all_trusted, Ok(ip("10.200.0.1")));
        let none = client_address(ip("127.0.0.1"), &HeaderMap::new(), &proxies);
        assert_eq!(none, Ok(ip("127.0.0.1")));
        let ported = client_address(ip("127.0.0.1"), &forwarded(&["[2001:db8::1]:80"]), &proxies);
        assert_eq!(ported, Ok(ip("2001:db8::1")));
        let bad = client_address(ip("127.0.0.1"), &forwarded(&["unknown"]), &proxies);
        assert!(bad.unwrap_err().contains("\"unknown\""));
    }

    #[test]
    fn mapped_ipv4_addresses_match_ipv4_blocks() {
        let blocks = parse_cidrs("C", "10.0.0.0/8").unwrap();
        assert!(contains(&blocks, ip("::ffff:10.1.2.3")));
        assert!(!contains(&blocks, ip("11.0.0.1")));
    }

    #[test]
    fn bad_blocks_name_the_variable() {
        let err = parse_cidrs("WALDUR_ALLOWED_CIDRS", "10.0.0.0/33").unwrap_err();
        assert!(
            err.starts_with("WALDUR_ALLOWED_CIDRS: \"10.0.0.0/33\""),
            "{err}"
        );
        assert!(parse_cidrs("X", " , ").is_err());
    }

    #[test]
    fn secrets_compare_equal_only_when_equal() {
        assert!(same_secret(b"token", b"token"));
        assert!(!same_secret(b"token", b"token2"));
        assert!(!same_secret(b"", b"token"));
    }
}
