//! Built-in tools, small and safe: `current_time`, and `fetch_url` (GET only, never
//! to private, loopback or link-local addresses unless allowed, size and time capped).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use futures::StreamExt;
use ipnet::IpNet;
use serde_json::{Map, Value, json};

use super::ToolError;
use crate::config::BuiltinFetchUrl;

pub const CURRENT_TIME_DESCRIPTION: &str =
    "Current date and time. Optionally in an IANA time zone such as Europe/Paris (default UTC).";

pub const FETCH_URL_DESCRIPTION: &str =
    "Fetch a public web page or document over HTTP(S) GET and return its text (HTML is reduced to text).";

pub fn current_time_schema() -> Value {
    json!({"type": "object", "properties": {
        "timezone": {"type": "string", "description": "IANA time zone, e.g. Europe/Paris; default UTC"}
    }})
}

pub fn fetch_url_schema() -> Value {
    json!({"type": "object", "properties": {
        "url": {"type": "string", "description": "http:// or https:// URL"}
    }, "required": ["url"]})
}

pub fn current_time(args: &Map<String, Value>) -> Result<String, ToolError> {
    let zone = match args.get("timezone") {
        None | Some(Value::Null) => "UTC",
        Some(Value::String(s)) if s.trim().is_empty() => "UTC",
        Some(Value::String(s)) => s.trim(),
        Some(other) => return Err(ToolError::Failed(format!("`timezone` must be a string, got {other}"))),
    };
    let tz = jiff::tz::TimeZone::get(zone)
        .map_err(|_| ToolError::Failed(format!("unknown time zone `{zone}` (use an IANA name like Europe/Paris)")))?;
    let now = crate::clock::now().to_zoned(tz);
    Ok(format!("{} ({zone}, {})", now.strftime("%Y-%m-%dT%H:%M:%S%:z"), now.strftime("%A")))
}

/// `fetch_url`: an HTTP client whose resolver refuses private addresses, so the check
/// applies to the address actually connected to, not to the hostname.
#[derive(Debug)]
pub struct Fetcher {
    client: reqwest::Client,
    policy: Arc<AddressPolicy>,
    max_bytes: usize,
}

/// Which addresses may be fetched.
#[derive(Debug, Default)]
struct AddressPolicy {
    hosts: Vec<String>,
    nets: Vec<IpNet>,
}

impl AddressPolicy {
    fn allows_host(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    fn allows(&self, ip: IpAddr) -> bool {
        is_public(ip) || self.nets.iter().any(|n| n.contains(&ip))
    }
}

impl Fetcher {
    pub fn new(config: &BuiltinFetchUrl) -> Result<Self, ToolError> {
        let mut policy = AddressPolicy::default();
        for entry in &config.allow_private {
            match entry.parse::<IpNet>().or_else(|_| entry.parse::<IpAddr>().map(IpNet::from)) {
                Ok(net) => policy.nets.push(net),
                Err(_) => policy.hosts.push(entry.clone()),
            }
        }
        let policy = Arc::new(policy);
        let redirect_policy = policy.clone();
        // No client timeout: the agent bounds every tool call with the tool's timeout.
        let client = reqwest::Client::builder()
            .connect_timeout(config.timeout)
            .user_agent(concat!("lariat/", env!("CARGO_PKG_VERSION"), " (fetch_url)"))
            .dns_resolver(Arc::new(Resolver { policy: policy.clone() }))
            // A proxy from the environment would resolve the name itself, and the
            // resolver above would never see it.
            .no_proxy()
            // Redirects to IP literals bypass the resolver, so each hop is checked here.
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= 5 {
                    attempt.error("too many redirects")
                } else if let Err(reason) = check_literal(attempt.url(), &redirect_policy) {
                    attempt.error(reason)
                } else {
                    attempt.follow()
                }
            }))
            .build()
            .map_err(|e| ToolError::Failed(format!("building the fetch client: {e}")))?;
        Ok(Self { client, policy, max_bytes: config.max_bytes })
    }

    pub async fn fetch(&self, args: &Map<String, Value>) -> Result<String, ToolError> {
        let Some(raw) = args.get("url").and_then(Value::as_str) else {
            return Err(ToolError::Failed("`url` (a string) is required".into()));
        };
        let url =
            reqwest::Url::parse(raw.trim()).map_err(|e| ToolError::Failed(format!("invalid URL `{raw}`: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ToolError::Refused(format!("only http and https URLs can be fetched, not `{}`", url.scheme())));
        }
        check_literal(&url, &self.policy).map_err(ToolError::Refused)?;
        let response = self.client.get(url).send().await.map_err(|e| ToolError::http(&e))?;
        let status = response.status();
        let content_type =
            response.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let (body, truncated) = read_capped(response, self.max_bytes).await?;
        let text = if content_type.contains("html") {
            // Linear, but half a megabyte of markup is still CPU work: off the
            // async workers, so it cannot stall other requests.
            let page = String::from_utf8_lossy(&body).into_owned();
            tokio::task::spawn_blocking(move || super::html::to_text(&page))
                .await
                .map_err(|e| ToolError::Failed(format!("reducing the page to text failed: {e}")))?
        } else if content_type.is_empty()
            || content_type.starts_with("text/")
            || content_type.contains("json")
            || content_type.contains("xml")
        {
            String::from_utf8_lossy(&body).into_owned()
        } else {
            return Ok(format!("[{content_type} content, {} bytes, not shown]", body.len()));
        };
        let mut out = if status.is_success() { text } else { format!("HTTP {status}\n{text}") };
        if truncated {
            out.push_str(&format!("\n…[truncated at {} bytes]", self.max_bytes));
        }
        Ok(out)
    }
}

/// An IP-literal host must be allowed; hostnames are checked by the resolver.
fn check_literal(url: &reqwest::Url, policy: &AddressPolicy) -> Result<(), String> {
    let Some(host) = url.host() else { return Err("the URL has no host".into()) };
    let ip = match host {
        url::Host::Ipv4(ip) => IpAddr::V4(ip),
        url::Host::Ipv6(ip) => IpAddr::V6(ip),
        // Names are judged by the addresses they resolve to, in `Resolver`.
        url::Host::Domain(_) => return Ok(()),
    };
    if policy.allows(ip) { Ok(()) } else { Err(format!("{ip} is a private, loopback or link-local address")) }
}

struct Resolver {
    policy: Arc<AddressPolicy>,
}

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = if policy.allows_host(&host) {
                addrs
            } else {
                addrs.into_iter().filter(|a| policy.allows(a.ip())).collect()
            };
            if allowed.is_empty() {
                let reason = format!("refused: `{host}` resolves only to private, loopback or link-local addresses");
                return Err(reason.into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Publicly routable: not loopback, private, link-local, CGNAT, unique-local,
/// multicast, documentation, reserved or unspecified. An IPv6 address that embeds
/// an IPv4 one (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`, NAT64
/// `64:ff9b::/96` and `64:ff9b:1::/48`, 6to4 `2002::/16`, Teredo `2001::/32`) is
/// judged by the IPv4 it leads to: a gateway on the way would deliver it there.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (b == 18 || b == 19)))
        }
        IpAddr::V6(v6) => {
            if let Some(embedded) = embedded_ipv4(v6) {
                return embedded.iter().all(|v4| is_public(IpAddr::V4(*v4)));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]))
        }
    }
}

/// The IPv4 addresses an IPv6 address leads to, if it embeds any.
fn embedded_ipv4(v6: std::net::Ipv6Addr) -> Option<Vec<std::net::Ipv4Addr>> {
    use std::net::Ipv4Addr;
    let s = v6.segments();
    let o = v6.octets();
    let low = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if let Some(mapped) = v6.to_ipv4_mapped() {
        return Some(vec![mapped]);
    }
    // IPv4-compatible (deprecated, but still routed by some stacks); `::` and `::1`
    // are IPv6's own unspecified and loopback addresses.
    if s[..6] == [0; 6] && !(v6.is_unspecified() || v6.is_loopback()) {
        return Some(vec![low]);
    }
    // NAT64: the well-known prefix and the local-use one.
    if s[0] == 0x64 && s[1] == 0xff9b && (s[2..6] == [0; 4] || s[2] == 1) {
        return Some(vec![low]);
    }
    if s[0] == 0x2002 {
        return Some(vec![Ipv4Addr::new(o[2], o[3], o[4], o[5])]);
    }
    // Teredo: the server's IPv4, and the client's, stored inverted.
    if s[0] == 0x2001 && s[1] == 0 {
        let client = Ipv4Addr::new(!o[12], !o[13], !o[14], !o[15]);
        return Some(vec![Ipv4Addr::new(o[4], o[5], o[6], o[7]), client]);
    }
    None
}

async fn read_capped(response: reqwest::Response, max: usize) -> Result<(Vec<u8>, bool), ToolError> {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ToolError::http(&e))?;
        let room = max - body.len();
        if chunk.len() >= room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_addresses() {
        let cases = [
            ("8.8.8.8", true),
            ("1.1.1.1", true),
            ("127.0.0.1", false),
            ("10.1.2.3", false),
            ("172.16.0.1", false),
            ("192.168.1.1", false),
            ("169.254.169.254", false),
            ("100.64.0.1", false),
            ("0.0.0.0", false),
            ("::1", false),
            ("fe80::1", false),
            ("fd00::1", false),
            ("::ffff:127.0.0.1", false),
            ("2606:4700:4700::1111", true),
            ("240.0.0.1", false),
            ("192.0.0.8", false),
            ("fec0::1", false),
            // IPv6 forms embedding a private or loopback IPv4 are that IPv4.
            ("::127.0.0.1", false),
            ("::10.0.0.1", false),
            ("::ffff:10.0.0.1", false),
            ("64:ff9b::127.0.0.1", false),
            ("64:ff9b::a9fe:a9fe", false),
            ("64:ff9b:1::192.168.0.1", false),
            ("2002:7f00:1::", false),
            ("2002:a9fe:a9fe::1", false),
            ("2001:0:7f00:1::1", false),
            ("2001:0:808:808:0:0:f7f7:f7f7", true),
            // ...and those embedding a public one stay public.
            ("::8.8.8.8", true),
            ("64:ff9b::8.8.8.8", true),
            ("2002:808:808::1", true),
        ];
        for (ip, public) in cases {
            assert_eq!(is_public(ip.parse().unwrap()), public, "{ip}");
        }
    }

    #[test]
    fn literal_hosts_are_checked_against_the_allow_list() {
        let strict = AddressPolicy::default();
        let url = |u: &str| reqwest::Url::parse(u).unwrap();
        assert!(check_literal(&url("http://127.0.0.1/"), &strict).is_err());
        assert!(check_literal(&url("http://[::1]:8080/"), &strict).is_err());
        assert!(check_literal(&url("http://169.254.169.254/latest"), &strict).is_err());
        assert!(check_literal(&url("http://[::127.0.0.1]/"), &strict).is_err());
        assert!(check_literal(&url("http://[64:ff9b::7f00:1]/"), &strict).is_err());
        assert!(check_literal(&url("http://[2002:7f00:1::]/"), &strict).is_err());
        assert!(check_literal(&url("https://example.com/"), &strict).is_ok());
        let open = AddressPolicy { hosts: vec![], nets: vec!["127.0.0.0/8".parse().unwrap()] };
        assert!(check_literal(&url("http://127.0.0.1/"), &open).is_ok());
        assert!(check_literal(&url("http://10.0.0.1/"), &open).is_err());
    }

    #[test]
    fn current_time_reports_the_zone() {
        let utc = current_time(&Map::new()).unwrap();
        assert!(utc.contains("+00:00 (UTC, "), "{utc}");
        let mut args = Map::new();
        args.insert("timezone".into(), json!("Asia/Tokyo"));
        assert!(current_time(&args).unwrap().contains("+09:00 (Asia/Tokyo"));
        args.insert("timezone".into(), json!("Mars/Olympus"));
        assert!(current_time(&args).unwrap_err().to_string().contains("unknown time zone"));
    }
}
