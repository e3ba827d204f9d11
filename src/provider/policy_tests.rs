//! The download policy's rules: address kinds, host patterns, links, redirects, resolving.

use std::net::IpAddr;
use std::sync::Arc;

use reqwest::dns::Resolve;
use url::Url;

use super::policy::{DownloadPolicy, PolicyResolver, Refusal, refusal_in, special_kind};

fn url(s: &str) -> Url {
    Url::parse(s).unwrap()
}

fn policy(hosts: &[&str], networks: &[&str]) -> DownloadPolicy {
    let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    DownloadPolicy::new(
        &url("https://api.provider.example/v1"),
        &owned(hosts),
        &owned(networks),
    )
    .unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn special_addresses_are_named_and_public_ones_are_not() {
    for (addr, kind) in [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "shared (CGNAT)"),
        ("100.127.255.255", "shared (CGNAT)"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("febf::1", "link-local"),
        ("fc00::1", "private (unique local)"),
        ("fdff::1", "private (unique local)"),
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("255.255.255.255", "broadcast"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        // IPv4 inside IPv6 is judged by the IPv4 address it reaches.
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "cloud metadata"),
        ("64:ff9b::a00:1", "private"),
        ("2002:c0a8:0101::1", "private"),
    ] {
        assert_eq!(special_kind(ip(addr)), Some(kind), "{addr}");
    }
    for public in [
        "8.8.8.8",
        "1.1.1.1",
        "172.32.0.1",
        "100.128.0.1",
        "11.0.0.1",
        "2606:4700::1111",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
    ] {
        assert_eq!(special_kind(ip(public)), None, "{public}");
    }
}

#[test]
fn allowed_networks_lift_refusals_but_metadata_needs_its_exact_address() {
    let closed = policy(&[], &[]);
    assert!(closed.check_addr(ip("127.0.0.1"), "h").is_err());
    assert!(closed.check_addr(ip("8.8.8.8"), "h").is_ok());

    let open = policy(&[], &["127.0.0.0/8", "10.0.0.0/8", "169.254.0.0/16", "::1"]);
    assert!(open.check_addr(ip("127.0.0.1"), "h").is_ok());
    assert!(open.check_addr(ip("::1"), "h").is_ok());
    assert!(open.check_addr(ip("::ffff:127.0.0.2"), "h").is_ok());
    assert!(open.check_addr(ip("10.9.9.9"), "h").is_ok());
    assert!(open.check_addr(ip("169.254.1.1"), "h").is_ok());
    assert!(open.check_addr(ip("192.168.0.1"), "h").is_err());
    let metadata = open.check_addr(ip("169.254.169.254"), "h").unwrap_err();
    assert!(metadata.0.contains("cloud metadata"), "{metadata}");
    let everything = policy(&[], &["0.0.0.0/0", "::/0"]);
    assert!(everything.check_addr(ip("169.254.169.254"), "h").is_err());
    assert!(everything.check_addr(ip("fd00:ec2::254"), "h").is_err());

    let exact = policy(&[], &["169.254.169.254/32"]);
    assert!(exact.check_addr(ip("169.254.169.254"), "h").is_ok());
    assert!(exact.check_addr(ip("169.254.1.1"), "h").is_err());
}

#[test]
fn bad_networks_and_hosts_are_configuration_errors() {
    let api = url("https://api.example/");
    for bad in ["10.0.0.0/33", "nope", "10.0.0/8", "::1/200"] {
        assert!(
            DownloadPolicy::new(&api, &[], &[bad.into()]).is_err(),
            "{bad}"
        );
    }
    for bad in ["*", "*.", "a..b", "a/b", "http://a", "*.*.a", "a b"] {
        assert!(
            DownloadPolicy::new(&api, &[bad.into()], &[]).is_err(),
            "{bad}"
        );
    }
    // A host network with host bits set is the network it names.
    assert!(DownloadPolicy::new(&api, &[], &["10.1.2.3/8".into(), " ".into()]).is_ok());
}

#[test]
fn only_http_links_to_the_api_host_or_allowed_hosts_pass() {
    let p = policy(
        &["cdn.example.net", "*.records.example.com", "93.184.216.34"],
        &[],
    );
    for ok in [
        "https://api.provider.example/rec/a.wav?sig=1",
        "http://API.Provider.Example./rec/a.wav",
        "https://cdn.example.net/a.wav",
        "https://x.records.example.com/a.wav",
        "https://a.b.records.example.com/a.wav",
        "http://93.184.216.34:8080/a.wav",
    ] {
        assert_eq!(p.check_url(&url(ok)), Ok(()), "{ok}");
    }
    for refused in [
        "ftp://api.provider.example/a.wav",
        "file:///etc/passwd",
        "https://records.example.com/a.wav",
        "https://evilrecords.example.com/a.wav",
        "https://records.example.com.evil.net/a.wav",
        "https://provider.example/a.wav",
        "https://cdn.example.net.evil.net/a.wav",
        "http://93.184.216.35/a.wav",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://169.254.169.254/latest/meta-data/",
    ] {
        assert!(p.check_url(&url(refused)).is_err(), "{refused}");
    }
}

#[test]
fn literal_addresses_in_links_meet_the_address_rules() {
    let api = url("http://127.0.0.1:8080/");
    let closed =
        DownloadPolicy::new(&api, &["169.254.169.254".into(), "[::1]".into()], &[]).unwrap();
    let refusal = closed
        .check_url(&url("http://127.0.0.1:8080/r/a.wav?sig=secret"))
        .unwrap_err();
    assert!(refusal.0.contains("loopback"), "{refusal}");
    assert!(!refusal.0.contains("secret") && !refusal.0.contains("sig="));
    assert!(closed.check_url(&url("http://[::1]:9/a.wav")).is_err());
    assert!(
        closed
            .check_url(&url("http://169.254.169.254/latest"))
            .is_err()
    );
    // WHATWG URL parsing turns odd spellings into the address they are.
    let hex = url("http://0x7f.1:8080/a.wav");
    assert_eq!(hex.host_str(), Some("127.0.0.1"));
    assert!(closed.check_url(&hex).is_err());

    let open = DownloadPolicy::new(&api, &[], &["127.0.0.0/8".into()]).unwrap();
    assert_eq!(
        open.check_url(&url("http://127.0.0.1:8080/r/a.wav")),
        Ok(())
    );
    assert_eq!(open.check_url(&hex), Ok(()));
}

#[test]
fn metadata_names_pass_only_when_named_exactly() {
    let wildcard = policy(&["*.google.internal"], &[]);
    assert!(
        wildcard
            .check_url(&url("http://metadata.google.internal/"))
            .is_err()
    );
    let named = policy(&["metadata.google.internal"], &[]);
    assert_eq!(
        named.check_url(&url("http://metadata.google.internal/")),
        Ok(())
    );
}

#[test]
fn redirects_are_checked_like_links_and_limited_to_three() {
    let p = policy(&["cdn.example.net"], &[]);
    let next = url("https://cdn.example.net/a.wav?sig=abc");
    for previous in 1..=3 {
        assert_eq!(p.check_redirect(&next, previous), Ok(()));
    }
    let too_many = p.check_redirect(&next, 4).unwrap_err();
    assert!(too_many.0.contains("more than 3 redirects"), "{too_many}");
    let elsewhere = p
        .check_redirect(&url("https://evil.example.org/x?sig=abc"), 1)
        .unwrap_err();
    assert!(elsewhere.0.starts_with("redirect refused"), "{elsewhere}");
    assert!(!elsewhere.0.contains("sig"), "{elsewhere}");
    assert!(p.check_redirect(&url("http://10.0.0.1/x"), 1).is_err());
    assert!(
        p.check_redirect(&url("gopher://cdn.example.net/x"), 1)
            .is_err()
    );
}

#[tokio::test]
async fn the_resolver_drops_refused_addresses_and_fails_when_none_is_left() {
    let closed = Arc::new(policy(&["localhost"], &[]));
    let err = match PolicyResolver(closed)
        .resolve("localhost".parse().unwrap())
        .await
    {
        Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
        Err(e) => e,
    };
    let refusal: Option<Refusal> = refusal_in(&*err);
    let refusal = refusal.expect("a refusal");
    assert!(refusal.0.contains("loopback"), "{refusal}");

    let open = Arc::new(policy(&["localhost"], &["127.0.0.0/8", "::1/128"]));
    let addrs: Vec<_> = PolicyResolver(open)
        .resolve("localhost".parse().unwrap())
        .await
        .unwrap()
        .collect();
    assert!(!addrs.is_empty());
    assert!(addrs.iter().all(|a| a.ip().is_loopback()));

    let v4_only = Arc::new(policy(&["localhost"], &["127.0.0.0/8"]));
    let addrs: Vec<_> = PolicyResolver(v4_only)
        .resolve("localhost".parse().unwrap())
        .await
        .unwrap()
        .collect();
    assert!(addrs.iter().all(|a| a.ip() == ip("127.0.0.1")), "{addrs:?}");
}
