//! Which address a request comes from, for the per-address rate limits. Behind a reverse
//! proxy every connection comes from the proxy, so all clients would share one budget:
//! `TRUSTED_PROXIES` names the proxies whose `X-Forwarded-For` is believed. The client is
//! then the right-most address in that header that is not itself a trusted proxy (the
//! entries left of it were written by the client and prove nothing). A connection from
//! anywhere else is its own address, whatever headers it sends.

use std::net::IpAddr;

use axum::http::HeaderMap;

/// One trusted network: an address and how many leading bits of it count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// Parses `10.0.0.0/8`, `fd00::/8` or a single address.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Network { addr, prefix })
    }

    /// Whether `ip` is inside (an IPv4-mapped IPv6 address counts as its IPv4 one).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => same_prefix(
                u128::from(u32::from(n)) << 96,
                u128::from(u32::from(a)) << 96,
                self.prefix,
            ),
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                same_prefix(u128::from(n), u128::from(a), self.prefix)
            }
            _ => false,
        }
    }
}

fn same_prefix(a: u128, b: u128, bits: u8) -> bool {
    match bits {
        0 => true,
        b_ if b_ >= 128 => a == b,
        _ => (a ^ b) >> (128 - u32::from(bits)) == 0,
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Parses a `TRUSTED_PROXIES` list.
pub fn parse_list(entries: &[String]) -> Result<Vec<Network>, String> {
    entries
        .iter()
        .filter(|e| !e.trim().is_empty())
        .map(|e| Network::parse(e))
        .collect()
}

/// The address a request is counted against: `peer` itself unless it is a trusted proxy;
/// then the right-most `X-Forwarded-For` entry that is not one (or `peer`, when the header
/// is missing or unreadable).
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[Network]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(peer) {
        return canonical(peer);
    }
    let mut client = canonical(peer);
    // Several headers are one list, in order.
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop) else {
            // Garbage where an address should be: what lies left of it is no better.
            break;
        };
        client = canonical(ip);
        if !is_trusted(client) {
            break;
        }
    }
    client
}

/// One entry: an address, perhaps bracketed or with a port as some proxies write it.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Ok(sa) = hop.parse::<std::net::SocketAddr>() {
        return Some(sa.ip());
    }
    hop.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().expect("header value"));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn networks_match_by_prefix() {
        let n = Network::parse("10.1.0.0/16").expect("parses");
        assert!(n.contains(ip("10.1.200.3")));
        assert!(!n.contains(ip("10.2.0.1")));
        assert!(
            n.contains(ip("::ffff:10.1.0.9")),
            "IPv4-mapped counts as IPv4"
        );
        assert!(Network::parse("0.0.0.0/0")
            .expect("parses")
            .contains(ip("8.8.8.8")));
        let v6 = Network::parse("fd00::/8").expect("parses");
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        assert!(Network::parse("127.0.0.1")
            .expect("parses")
            .contains(ip("127.0.0.1")));
        for bad in ["10.0.0.0/33", "fd00::/129", "proxy", "10.0.0.0/x", ""] {
            assert!(Network::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_untrusted_peer_is_its_own_address_whatever_it_claims() {
        let trusted = parse_list(&["10.0.0.0/8".into()]).expect("parses");
        let got = client_address(ip("203.0.113.9"), &headers(&["198.51.100.1"]), &trusted);
        assert_eq!(got, ip("203.0.113.9"));
        let none = client_address(ip("10.0.0.2"), &headers(&["198.51.100.1"]), &[]);
        assert_eq!(
            none,
            ip("10.0.0.2"),
            "no trusted proxies: headers are ignored"
        );
    }

    #[test]
    fn behind_trusted_proxies_the_right_most_untrusted_hop_is_the_client() {
        let trusted = parse_list(&["10.0.0.0/8".into(), "127.0.0.1".into()]).expect("parses");
        // The client wrote a forged first entry; the proxies appended the real ones.
        let h = headers(&["1.2.3.4, 198.51.100.7", "10.0.0.5"]);
        assert_eq!(
            client_address(ip("127.0.0.1"), &h, &trusted),
            ip("198.51.100.7")
        );
        let ported = headers(&["[2001:db8::7]:4711"]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &ported, &trusted),
            ip("2001:db8::7")
        );
        let missing = client_address(ip("10.0.0.1"), &HeaderMap::new(), &trusted);
        assert_eq!(missing, ip("10.0.0.1"));
        let garbage = client_address(ip("10.0.0.1"), &headers(&["1.2.3.4, nonsense"]), &trusted);
        assert_eq!(
            garbage,
            ip("10.0.0.1"),
            "nothing left of garbage is believed"
        );
        let all_trusted = client_address(ip("10.0.0.1"), &headers(&["10.9.9.9"]), &trusted);
        assert_eq!(all_trusted, ip("10.9.9.9"));
    }
}
