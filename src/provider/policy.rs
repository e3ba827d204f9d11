//! Which download links callvault will follow. Links come from a third party, so only
//! http(s) to the API's host or an allowed host, and never to loopback, private, link-local,
//! cloud-metadata or other special addresses unless the operator allows those networks.
//! Checked on the link, on every redirect, and on every address DNS returns, so a name that
//! resolves (or later rebinds) to an internal address is refused too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, LazyLock};

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// Redirects followed at most, each checked like the link itself.
pub const MAX_REDIRECTS: usize = 3;

/// Why a link (or a hop, or an address) was not fetched. Never holds the link's query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// A host allowlist entry: `example.com`, `*.example.com` (any name below it, not the name
/// itself) or an IP address.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    Below(String),
    Ip(IpAddr),
}

impl HostPattern {
    fn parse(raw: &str) -> Result<Self, String> {
        let text = raw.trim().trim_end_matches('.').to_ascii_lowercase();
        let bare = text.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(Self::Ip(ip));
        }
        let (below, name) = match text.strip_prefix("*.") {
            Some(name) => (true, name),
            None => (false, text.as_str()),
        };
        let valid = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            });
        if !valid {
            return Err(format!(
                "download host {raw:?} is not a host name, `*.name` or an IP address"
            ));
        }
        Ok(if below {
            Self::Below(name.to_owned())
        } else {
            Self::Exact(name.to_owned())
        })
    }

    fn matches(&self, host: &Host<String>) -> bool {
        match (self, host) {
            (Self::Exact(p), Host::Domain(d)) => *p == normalize(d),
            (Self::Below(p), Host::Domain(d)) => normalize(d)
                .strip_suffix(p.as_str())
                .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
            (Self::Ip(p), Host::Ipv4(ip)) => canonical(*p) == IpAddr::V4(*ip),
            (Self::Ip(p), Host::Ipv6(ip)) => canonical(*p) == canonical(IpAddr::V6(*ip)),
            _ => false,
        }
    }
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Host names of cloud metadata services: refused unless named exactly in the allowlist.
const METADATA_NAMES: [&str; 5] = [
    "metadata.google.internal",
    "metadata.goog",
    "metadata",
    "instance-data",
    "instance-data.ec2.internal",
];

/// Cloud metadata addresses (AWS, ECS, GCP, Azure, Alibaba): only an allowance of exactly
/// this address (`/32`, `/128`) lifts the refusal, not a wider network that contains it.
static METADATA_ADDRS: LazyLock<[IpAddr; 4]> = LazyLock::new(|| {
    [
        IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
        IpAddr::V4(Ipv4Addr::new(169, 254, 170, 2)),
        IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x254)),
    ]
});

/// Addresses no download goes to by default, first match wins.
static SPECIAL: LazyLock<Vec<(IpNet, &'static str)>> = LazyLock::new(|| {
    [
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared (CGNAT)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "reserved"),
        ("192.0.2.0/24", "documentation"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("255.255.255.255/32", "broadcast"),
        ("240.0.0.0/4", "reserved"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/96", "reserved (IPv4-compatible)"),
        ("100::/64", "discard-only"),
        ("2001:db8::/32", "documentation"),
        ("fc00::/7", "private (unique local)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("ff00::/8", "multicast"),
    ]
    .into_iter()
    .map(|(net, kind)| (net.parse().expect("a valid network"), kind))
    .collect()
});

/// `::ffff:a.b.c.d` is `a.b.c.d`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_canonical(),
        v4 => v4,
    }
}

/// The IPv4 address a NAT64 (`64:ff9b::/96`) or 6to4 (`2002::/16`) address reaches.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let pair = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match s {
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(pair(hi, lo)),
        [0x2002, hi, lo, ..] => Some(pair(hi, lo)),
        _ => None,
    }
}

/// What kind of special address `ip` is (judged by the address it reaches), if any.
pub fn special_kind(ip: IpAddr) -> Option<&'static str> {
    let ip = match canonical(ip) {
        IpAddr::V6(v6) => embedded_v4(v6).map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    if METADATA_ADDRS.contains(&ip) {
        return Some("cloud metadata");
    }
    SPECIAL
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|(_, kind)| *kind)
}

/// The rules for one run's downloads.
#[derive(Debug, Clone)]
pub struct DownloadPolicy {
    hosts: Vec<HostPattern>,
    networks: Vec<IpNet>,
    /// The configured proxy's host: its addresses are the operator's choice, not a link's.
    proxy_host: Option<String>,
}

impl DownloadPolicy {
    /// `api_url`'s host is always allowed; `hosts` adds names (`*.example.com` for any name
    /// below), `networks` (CIDR or a bare address) lifts the address refusals.
    pub fn new(api_url: &Url, hosts: &[String], networks: &[String]) -> Result<Self, String> {
        let api_host = api_url
            .host_str()
            .ok_or_else(|| format!("the API URL {api_url} has no host"))?;
        let hosts = std::iter::once(api_host)
            .chain(
                hosts
                    .iter()
                    .map(String::as_str)
                    .filter(|h| !h.trim().is_empty()),
            )
            .map(HostPattern::parse)
            .collect::<Result<_, _>>()?;
        let networks = networks
            .iter()
            .map(|n| n.trim())
            .filter(|n| !n.is_empty())
            .map(|n| {
                n.parse::<IpNet>()
                    .or_else(|_| n.parse::<IpAddr>().map(IpNet::from))
                    .map(|net| net.trunc())
                    .map_err(|_| format!("download network {n:?} is not a CIDR network or address"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            hosts,
            networks,
            proxy_host: None,
        })
    }

    /// Exempts the proxy's own addresses from the address rules.
    pub fn with_proxy(mut self, proxy: &Url) -> Self {
        self.proxy_host = proxy.host_str().map(normalize);
        self
    }

    /// Scheme, host allowlist, and (for an address written in the URL) the address rules.
    pub fn check_url(&self, url: &Url) -> Result<(), Refusal> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refusal(format!(
                "the download link's scheme {:?} is not http(s)",
                url.scheme()
            )));
        }
        let host = url
            .host()
            .map(|h| h.to_owned())
            .ok_or_else(|| Refusal("the download link has no host".into()))?;
        if let Host::Domain(name) = &host
            && METADATA_NAMES.contains(&normalize(name).as_str())
            && !self.hosts.contains(&HostPattern::Exact(normalize(name)))
        {
            return Err(Refusal(format!(
                "the download host {name} is a cloud metadata service"
            )));
        }
        if !self.hosts.iter().any(|p| p.matches(&host)) {
            return Err(Refusal(format!(
                "the download host {host} is neither the API's host nor on the allowlist (--download-host)"
            )));
        }
        match host {
            Host::Ipv4(ip) => self.check_addr(IpAddr::V4(ip), &host.to_string()),
            Host::Ipv6(ip) => self.check_addr(IpAddr::V6(ip), &host.to_string()),
            Host::Domain(_) => Ok(()),
        }
    }

    /// A redirect to `next` after `previous` requests: a hop too many, or a link refused.
    pub fn check_redirect(&self, next: &Url, previous: usize) -> Result<(), Refusal> {
        if previous > MAX_REDIRECTS {
            return Err(Refusal(format!("more than {MAX_REDIRECTS} redirects")));
        }
        self.check_url(next)
            .map_err(|r| Refusal(format!("redirect refused: {r}")))
    }

    /// The address rules: special addresses only inside an allowed network (metadata
    /// addresses only when allowed exactly).
    pub fn check_addr(&self, ip: IpAddr, host: &str) -> Result<(), Refusal> {
        let Some(kind) = special_kind(ip) else {
            return Ok(());
        };
        let ip = canonical(ip);
        let allowed = self.networks.iter().any(|net| {
            net.contains(&ip)
                && (kind != "cloud metadata" || net.prefix_len() == net.max_prefix_len())
        });
        if allowed {
            Ok(())
        } else {
            Err(Refusal(format!(
                "the download host {host} is at {ip}, a {kind} address (allow it with --allow-download-network)"
            )))
        }
    }

    fn is_proxy(&self, host: &str) -> bool {
        self.proxy_host.as_deref() == Some(normalize(host).as_str())
    }
}

/// Resolves names for the download client and keeps only addresses the policy allows, so
/// the connection can only go where the check said.
pub(super) struct PolicyResolver(pub Arc<DownloadPolicy>);

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = Arc::clone(&self.0);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if policy.is_proxy(&host) {
                return Ok(Box::new(found.into_iter()) as Addrs);
            }
            let mut refusal = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match policy.check_addr(a.ip(), &host) {
                    Ok(()) => true,
                    Err(r) => {
                        refusal.get_or_insert(r);
                        false
                    }
                })
                .collect();
            match (allowed.is_empty(), refusal) {
                (true, Some(refusal)) => Err(refusal.into()),
                _ => Ok(Box::new(allowed.into_iter()) as Addrs),
            }
        })
    }
}

/// The refusal somewhere in an error's chain (reqwest wraps resolver and redirect errors).
pub(super) fn refusal_in(err: &(dyn std::error::Error + 'static)) -> Option<Refusal> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(r) = e.downcast_ref::<Refusal>() {
            return Some(r.clone());
        }
        current = e.source();
    }
    None
}
