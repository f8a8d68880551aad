//! Where webhooks may send (docs/product.md §4): `https` only, no credentials in the URL, at most
//! 2,048 characters, and every address the host resolves to must be public. The same vetting
//! runs at create and edit time and again at every delivery attempt, so that DNS changes or
//! rebinding cannot reach internal networks. Operators may exempt named ranges.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use url::{Host, Url};

pub const MAX_URL_LENGTH: usize = 2_048;

/// The operator's exceptions to the rules; the default allows none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UrlPolicy {
    pub allow_http: bool,
    pub allowed_private: Vec<IpNet>,
}

/// Why a URL or an address was refused; the message is meant for the admin who entered it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("the URL is longer than {MAX_URL_LENGTH} characters")]
    TooLong,
    #[error("not a valid absolute URL")]
    Invalid,
    #[error("the URL must use https")]
    NotHttps,
    #[error("the URL must use https or http")]
    UnsupportedScheme,
    #[error("the URL must not contain a user name or password")]
    Credentials,
    #[error("the URL has no host")]
    NoHost,
    #[error("{host} resolves to no address")]
    Unresolvable { host: String },
    #[error("{address} is a {reason} address; webhooks may only reach public addresses")]
    ForbiddenAddress {
        address: IpAddr,
        reason: &'static str,
    },
    #[error("port 0 cannot be connected to")]
    PortZero,
    #[error(
        "{host} resolves to {address}, a {reason} address; webhooks may only reach public addresses"
    )]
    Forbidden {
        host: String,
        address: IpAddr,
        reason: &'static str,
    },
}

/// A URL that passed the syntactic rules; its addresses are vetted separately.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    url: Url,
}

/// What a delivery must connect to: a name to resolve (and vet), or a literal address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Name(String),
    Address(IpAddr),
}

impl UrlPolicy {
    /// Checks the syntax and, for IP-literal hosts, the address. Host names still need
    /// [`UrlPolicy::vet`] on what they resolve to. Hex, octal and decimal IPv4 forms are
    /// normalised by WHATWG URL parsing first, so `https://0x7f.1/` is judged as 127.0.0.1.
    pub fn parse(&self, text: &str) -> Result<WebhookUrl, UrlError> {
        if text.chars().count() > MAX_URL_LENGTH {
            return Err(UrlError::TooLong);
        }
        let url = Url::parse(text.trim()).map_err(|_| UrlError::Invalid)?;
        // Normalisation (percent-encoding, punycode) can lengthen a URL: check what is stored.
        if url.as_str().len() > MAX_URL_LENGTH {
            return Err(UrlError::TooLong);
        }
        if url.port() == Some(0) {
            return Err(UrlError::PortZero);
        }
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => return Err(UrlError::NotHttps),
            _ if self.allow_http => return Err(UrlError::UnsupportedScheme),
            _ => return Err(UrlError::NotHttps),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlError::Credentials);
        }
        let parsed = WebhookUrl { url };
        if let Destination::Address(address) = parsed.destination()?
            && let Some(reason) = self.refusal(address)
        {
            return Err(UrlError::ForbiddenAddress { address, reason });
        }
        Ok(parsed)
    }

    /// Accepts the resolved addresses of `host` only if there is at least one and every one
    /// is allowed; a single forbidden address refuses them all.
    pub fn vet(&self, host: &str, addresses: &[IpAddr]) -> Result<(), UrlError> {
        if addresses.is_empty() {
            return Err(UrlError::Unresolvable {
                host: host.to_owned(),
            });
        }
        for address in addresses {
            if let Some(reason) = self.refusal(*address) {
                return Err(UrlError::Forbidden {
                    host: host.to_owned(),
                    address: *address,
                    reason,
                });
            }
        }
        Ok(())
    }

    /// Why `address` may not be reached, or `None` if it may. An exempt range covers its
    /// addresses and their IPv4-mapped forms (the same socket), nothing else.
    pub fn refusal(&self, address: IpAddr) -> Option<&'static str> {
        let mapped = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        let exempt = |ip: IpAddr| self.allowed_private.iter().any(|net| net.contains(&ip));
        if exempt(address) || mapped.is_some_and(exempt) {
            return None;
        }
        non_public_reason(address)
    }
}

impl WebhookUrl {
    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The host as written (IPv6 without brackets).
    pub fn host(&self) -> String {
        match self.url.host() {
            Some(Host::Ipv6(ip)) => ip.to_string(),
            Some(host) => host.to_string(),
            None => String::new(),
        }
    }

    pub fn destination(&self) -> Result<Destination, UrlError> {
        match self.url.host().ok_or(UrlError::NoHost)? {
            Host::Domain(name) => Ok(Destination::Name(name.to_owned())),
            Host::Ipv4(ip) => Ok(Destination::Address(IpAddr::V4(ip))),
            Host::Ipv6(ip) => Ok(Destination::Address(IpAddr::V6(ip))),
        }
    }

    /// Scheme and host (and a non-default port) only: URLs often carry credentials in their
    /// path or query, so logs, mails and the audit log show this instead.
    pub fn masked(&self) -> String {
        mask(&self.url)
    }
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.url.as_str())
    }
}

/// Scheme and host of any URL text, or a placeholder when it does not parse.
pub fn mask_str(text: &str) -> String {
    Url::parse(text).map_or_else(|_| "<invalid URL>".to_owned(), |url| mask(&url))
}

fn mask(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

/// The IPv4 address inside IPv4-mapped, IPv4-compatible and NAT64 (64:ff9b::/96) IPv6 forms.
fn embedded_ipv4(address: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = address else {
        return None;
    };
    let segments = v6.segments();
    let tail = Ipv4Addr::new(
        (segments[6] >> 8) as u8,
        segments[6] as u8,
        (segments[7] >> 8) as u8,
        segments[7] as u8,
    );
    match segments {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(tail),
        // IPv4-compatible, except :: and ::1 which are IPv6's own unspecified and loopback.
        [0, 0, 0, 0, 0, 0, high, _] if high != 0 => Some(tail),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail),
        _ => None,
    }
}

/// Why an address is not public, or `None` for a public one.
pub fn non_public_reason(address: IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => match embedded_ipv4(address) {
            Some(v4) => non_public_v4(v4),
            None => non_public_v6(v6),
        },
    }
}

const V4_RANGES: &[([u8; 4], u8, &str)] = &[
    ([0, 0, 0, 0], 8, "\"this network\" (0.0.0.0/8)"),
    ([10, 0, 0, 0], 8, "private (RFC 1918)"),
    ([100, 64, 0, 0], 10, "carrier-grade NAT (100.64.0.0/10)"),
    ([127, 0, 0, 0], 8, "loopback"),
    ([169, 254, 0, 0], 16, "link-local (cloud metadata)"),
    ([172, 16, 0, 0], 12, "private (RFC 1918)"),
    (
        [192, 0, 0, 0],
        24,
        "IETF protocol assignment (192.0.0.0/24)",
    ),
    ([192, 0, 2, 0], 24, "documentation"),
    ([192, 88, 99, 0], 24, "6to4 relay (reserved)"),
    ([192, 168, 0, 0], 16, "private (RFC 1918)"),
    ([198, 18, 0, 0], 15, "benchmarking"),
    ([198, 51, 100, 0], 24, "documentation"),
    ([203, 0, 113, 0], 24, "documentation"),
    ([224, 0, 0, 0], 4, "multicast"),
    ([240, 0, 0, 0], 4, "reserved or broadcast"),
];

fn non_public_v4(address: Ipv4Addr) -> Option<&'static str> {
    let bits = u32::from(address);
    V4_RANGES.iter().find_map(|(network, prefix, reason)| {
        let mask = u32::MAX.checked_shl(32 - u32::from(*prefix)).unwrap_or(0);
        (bits & mask == u32::from(Ipv4Addr::from(*network))).then_some(*reason)
    })
}

const V6_RANGES: &[([u16; 8], u8, &str)] = &[
    (
        [0x64, 0xff9b, 1, 0, 0, 0, 0, 0],
        48,
        "local-use NAT64 (64:ff9b:1::/48)",
    ),
    ([0x100, 0, 0, 0, 0, 0, 0, 0], 64, "discard-only (100::/64)"),
    (
        [0x2001, 0, 0, 0, 0, 0, 0, 0],
        23,
        "IETF protocol assignment or Teredo (2001::/23)",
    ),
    ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, "documentation"),
    ([0x2002, 0, 0, 0, 0, 0, 0, 0], 16, "6to4 (2002::/16)"),
    ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, "documentation"),
    ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, "unique-local"),
    ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "link-local"),
    ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, "site-local"),
    ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "multicast"),
];

fn non_public_v6(address: Ipv6Addr) -> Option<&'static str> {
    if address.is_unspecified() {
        return Some("unspecified");
    }
    if address.is_loopback() {
        return Some("loopback");
    }
    let bits = u128::from(address);
    let in_range = |network: [u16; 8], prefix: u8| {
        let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
        bits & mask == u128::from(Ipv6Addr::from(network))
    };
    if let Some((_, _, reason)) = V6_RANGES
        .iter()
        .find(|(network, prefix, _)| in_range(*network, *prefix))
    {
        return Some(reason);
    }
    // Only global unicast (2000::/3) is routed on the public internet.
    (!in_range([0x2000, 0, 0, 0, 0, 0, 0, 0], 3)).then_some("reserved")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> UrlPolicy {
        UrlPolicy::default()
    }

    #[test]
    fn refuses_every_non_public_address_form() {
        let refused = [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.169.254",
            "169.254.0.1",
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
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::10.1.2.3",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::7f00:1",
            "64:ff9b:1::1",
            "100::1",
            "2001::1",
            "2001:0:4136:e378::1",
            "2001:1ff::1",
            "2001:db8::1",
            "2002:7f00:1::1",
            "2002:c000:0204::1",
            "3fff::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "feff::1",
            "ff02::1",
            "ff05::2",
            "1::1",
            "4000::1",
            "::2:3:4:5",
        ];
        for text in refused {
            let address: IpAddr = text.parse().unwrap();
            assert!(
                non_public_reason(address).is_some(),
                "{text} must be refused"
            );
            let err = policy().vet("example.com", &[address]).unwrap_err();
            assert!(matches!(err, UrlError::Forbidden { .. }), "{text}: {err}");
        }
    }

    #[test]
    fn accepts_public_addresses() {
        let public = [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.255.255",
            "172.32.0.1",
            "192.0.1.1",
            "192.169.0.1",
            "198.17.255.255",
            "198.20.0.1",
            "223.255.255.255",
            "169.253.255.255",
            "11.0.0.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001:81b::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2001:200::1",
        ];
        for text in public {
            let address: IpAddr = text.parse().unwrap();
            assert_eq!(non_public_reason(address), None, "{text} is public");
        }
    }

    #[test]
    fn url_syntax_rules() {
        let p = policy();
        assert!(p.parse("https://hooks.example.com/zivio?token=abc").is_ok());
        assert!(p.parse("https://93.184.216.34:8443/x").is_ok());
        assert_eq!(
            p.parse("http://hooks.example.com/").unwrap_err(),
            UrlError::NotHttps
        );
        assert_eq!(
            p.parse("ftp://hooks.example.com/").unwrap_err(),
            UrlError::NotHttps
        );
        assert_eq!(
            p.parse("hooks.example.com/x").unwrap_err(),
            UrlError::Invalid
        );
        assert_eq!(p.parse("").unwrap_err(), UrlError::Invalid);
        assert_eq!(p.parse("https://").unwrap_err(), UrlError::Invalid);
        assert_eq!(
            p.parse("https://user:pw@hooks.example.com/").unwrap_err(),
            UrlError::Credentials
        );
        assert_eq!(
            p.parse("https://user@hooks.example.com/").unwrap_err(),
            UrlError::Credentials
        );
        let long = format!("https://hooks.example.com/{}", "a".repeat(MAX_URL_LENGTH));
        assert_eq!(p.parse(&long).unwrap_err(), UrlError::TooLong);
        let exact = format!(
            "https://hooks.example.com/{}",
            "a".repeat(MAX_URL_LENGTH - 26)
        );
        assert_eq!(exact.len(), MAX_URL_LENGTH);
        assert!(p.parse(&exact).is_ok());
    }

    #[test]
    fn ip_literal_hosts_are_vetted_in_every_notation() {
        let p = policy();
        for text in [
            "https://127.0.0.1/",
            "https://0x7f.1/",
            "https://0177.0.0.1/",
            "https://2130706433/",
            "https://0x7f000001/",
            "https://127.1/",
            "https://[::1]/",
            "https://[::ffff:7f00:1]/",
            "https://169.254.169.254/latest/meta-data/",
            "https://[fd00::1]:8443/",
            "https://0/",
            "https://[64:ff9b::a9fe:a9fe]/",
        ] {
            let err = p.parse(text).unwrap_err();
            assert!(
                matches!(err, UrlError::ForbiddenAddress { .. }),
                "{text}: {err:?}"
            );
        }
        let err = p.parse("https://0x7f.1/").unwrap_err();
        assert_eq!(
            err.to_string(),
            "127.0.0.1 is a loopback address; webhooks may only reach public addresses"
        );
        assert_eq!(
            p.parse("https://93.184.216.34:0/").unwrap_err(),
            UrlError::PortZero
        );
        // Percent-encoding lengthens what is stored: the limit applies to that.
        let encoded = format!("https://hooks.example.com/{}", "é".repeat(500));
        assert!(encoded.chars().count() < MAX_URL_LENGTH);
        assert_eq!(p.parse(&encoded).unwrap_err(), UrlError::TooLong);
    }

    #[test]
    fn names_need_every_resolved_address_public() {
        let p = policy();
        let public: IpAddr = "93.184.216.34".parse().unwrap();
        let private: IpAddr = "10.0.0.5".parse().unwrap();
        assert!(p.vet("a.example", &[public]).is_ok());
        assert!(matches!(
            p.vet("a.example", &[public, private]),
            Err(UrlError::Forbidden { .. })
        ));
        assert_eq!(
            p.vet("nowhere.example", &[]),
            Err(UrlError::Unresolvable {
                host: "nowhere.example".into()
            })
        );
        let url = p.parse("https://hooks.example.com/x").unwrap();
        assert_eq!(
            url.destination(),
            Ok(Destination::Name("hooks.example.com".into()))
        );
    }

    #[test]
    fn operators_exempt_exactly_the_configured_ranges() {
        let p = UrlPolicy {
            allow_http: true,
            allowed_private: vec!["127.0.0.0/8".parse().unwrap(), "fd00::/16".parse().unwrap()],
        };
        assert!(p.parse("http://127.0.0.1:8080/hook").is_ok());
        assert!(p.parse("https://[fd00::5]/").is_ok());
        assert!(
            p.parse("https://[::ffff:127.0.0.1]/").is_ok(),
            "mapped form of an exempt address"
        );
        assert!(p.parse("https://10.0.0.1/").is_err());
        assert!(p.parse("https://[fd01::5]/").is_err());
        assert!(p.parse("https://169.254.169.254/").is_err());
        assert_eq!(
            p.parse("ftp://x.example/").unwrap_err(),
            UrlError::UnsupportedScheme
        );
    }

    #[test]
    fn masking_keeps_scheme_and_host_only() {
        let url = policy()
            .parse("https://hooks.slack.example:8443/services/T0/B0/secret?x=1")
            .unwrap();
        assert_eq!(url.masked(), "https://hooks.slack.example:8443");
        assert_eq!(
            mask_str("https://example.com/path/secret"),
            "https://example.com"
        );
        assert_eq!(mask_str("not a url"), "<invalid URL>");
    }

    proptest! {
        #[test]
        fn mapped_and_nat64_forms_are_judged_like_the_embedded_ipv4(raw in any::<u32>()) {
            let v4 = Ipv4Addr::from(raw);
            let expected = non_public_v4(v4).is_some();
            let mapped = IpAddr::V6(v4.to_ipv6_mapped());
            let octets = v4.octets();
            let nat64 = IpAddr::V6(Ipv6Addr::new(
                0x64, 0xff9b, 0, 0, 0, 0,
                u16::from_be_bytes([octets[0], octets[1]]),
                u16::from_be_bytes([octets[2], octets[3]]),
            ));
            prop_assert_eq!(non_public_reason(mapped).is_some(), expected);
            prop_assert_eq!(non_public_reason(nat64).is_some(), expected);
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,64}") {
            let _ = policy().parse(&text);
            let _ = policy().parse(&format!("https://{text}"));
        }
    }
}
