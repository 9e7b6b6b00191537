//! Where a webhook may point. Only `http` and `https` URLs, and, unless
//! `WEBHOOK_ALLOW_PRIVATE_NETWORKS=true`, only hosts whose every address is public: a
//! ledger inside a private network must not become a way to reach it (server-side request
//! forgery). The check runs when an endpoint is saved and again at every connection (the
//! deliverer's resolver drops private addresses), so a name that later resolves elsewhere
//! gains nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

/// Why a URL is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlRefusal {
    /// Not a URL.
    #[error("url is not a valid absolute URL")]
    Unparseable,
    /// Another scheme than http or https, or credentials in the URL.
    #[error("url must be http or https, without user or password")]
    NotHttp,
    /// The host does not resolve.
    #[error("url's host {0} does not resolve")]
    Unresolvable(String),
    /// The host is or resolves to a loopback, private, link-local or multicast address.
    #[error("url's host {0} is a loopback, private, link-local or multicast address (set WEBHOOK_ALLOW_PRIVATE_NETWORKS=true to allow it)")]
    Private(String),
}

/// Whether `ip` is an address anyone on the internet could reach.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || v6 == Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0))
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (carrier NAT)
        || (a == 198 && (b == 18 || b == 19))) // benchmarking
}

/// `raw` as a URL a webhook may use, checked against the address policy.
pub async fn check_url(raw: &str, allow_private: bool) -> Result<Url, UrlRefusal> {
    let url = Url::parse(raw.trim()).map_err(|_| UrlRefusal::Unparseable)?;
    if !matches!(url.scheme(), "http" | "https")
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(UrlRefusal::NotHttp);
    }
    let host = url.host_str().ok_or(UrlRefusal::Unparseable)?.to_owned();
    if allow_private {
        return Ok(url);
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<IpAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::net::lookup_host((bare, port))
            .await
            .map_err(|_| UrlRefusal::Unresolvable(host.clone()))?
            .map(|a| a.ip())
            .collect(),
    };
    if addrs.is_empty() {
        return Err(UrlRefusal::Unresolvable(host));
    }
    if addrs.iter().any(|ip| !is_public(*ip)) {
        return Err(UrlRefusal::Private(host));
    }
    Ok(url)
}

/// The deliverer's resolver: a name's private addresses are dropped unless allowed, so a
/// connection never reaches one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GuardedResolver {
    pub(crate) allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow_private;
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|a| allow || is_public(a.ip()))
                .collect();
            if found.is_empty() {
                return Err(format!("{} has no public address", name.as_str()).into());
            }
            Ok(Box::new(found.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn private_and_non_http_destinations_are_refused() {
        for (url, want) in [
            ("ftp://example.com/x", UrlRefusal::NotHttp),
            ("https://user:pw@example.com/", UrlRefusal::NotHttp),
            ("not a url", UrlRefusal::Unparseable),
            (
                "http://127.0.0.1:8080/",
                UrlRefusal::Private("127.0.0.1".into()),
            ),
            ("http://10.1.2.3/", UrlRefusal::Private("10.1.2.3".into())),
            (
                "http://192.168.0.1/",
                UrlRefusal::Private("192.168.0.1".into()),
            ),
            (
                "http://169.254.169.254/latest",
                UrlRefusal::Private("169.254.169.254".into()),
            ),
            ("http://224.0.0.1/", UrlRefusal::Private("224.0.0.1".into())),
            ("http://[::1]/", UrlRefusal::Private("[::1]".into())),
            ("http://[fd00::1]/", UrlRefusal::Private("[fd00::1]".into())),
            (
                "http://[::ffff:127.0.0.1]/",
                UrlRefusal::Private("[::ffff:7f00:1]".into()),
            ),
            (
                "http://localhost:9/",
                UrlRefusal::Private("localhost".into()),
            ),
        ] {
            assert_eq!(check_url(url, false).await.err(), Some(want), "{url}");
        }
        assert!(check_url("http://93.184.215.14/hook", false).await.is_ok());
        assert!(check_url("http://127.0.0.1:8080/", true).await.is_ok());
        assert!(check_url("ftp://127.0.0.1/", true).await.is_err());
    }
}
