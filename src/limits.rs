//! Abuse limits applied by the webhook endpoint before any body is read: per-source IP
//! allowlists (believing a forwarded header only from `server.trusted_proxies`),
//! per-source token-bucket rate limits, the deadline for reading the body, and the
//! budget for bodies in flight ([`crate::budget`]).
//!
//! The check order (after the 404 for an unknown source): address (403), rate (429),
//! then the documented order (README, HTTP API). Both are cheap and come before the body is read, so a
//! refused sender costs a header parse and nothing else. Every request to a source
//! takes a token, whatever it turns out to be: a flood of bad credentials is limited too.

use crate::budget::BodyBudget;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::settings::{ForwardedHeader, RateLimit, Source, Validated};
use actix_web::http::header::HeaderMap;
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The limits of one running relay (shared by every HTTP worker).
#[derive(Debug)]
pub struct Limits {
    trusted_proxies: Vec<IpNet>,
    forwarded_header: ForwardedHeader,
    buckets: HashMap<String, Mutex<TokenBucket>>,
    /// How long the whole body may take once the head has arrived.
    pub body_read_timeout: Duration,
    /// Every body is reserved here before it is read.
    pub budget: Arc<BodyBudget>,
}

impl Limits {
    pub fn new(settings: &Validated, metrics: &Metrics) -> Self {
        let buckets = settings
            .sources
            .iter()
            .filter_map(|(name, s)| {
                s.rate_limit.map(|rl| {
                    (
                        name.clone(),
                        Mutex::new(TokenBucket::new(rl, Instant::now())),
                    )
                })
            })
            .collect();
        Self {
            trusted_proxies: settings.trusted_proxies.clone(),
            forwarded_header: settings.raw.server.forwarded_header,
            buckets,
            body_read_timeout: Duration::from_millis(settings.raw.server.body_read_timeout_ms),
            budget: Arc::new(BodyBudget::new(
                settings.raw.server.max_inflight_body_bytes,
                settings.raw.server.max_body_bytes as u64,
                metrics.inflight_body_bytes.clone(),
                metrics.body_budget_exhausted.clone(),
            )),
        }
    }

    /// Address, then rate. `peer` is the TCP peer; `headers` may carry a forwarded
    /// address, believed only when the peer is a trusted proxy.
    pub fn admit(
        &self,
        source: &Source,
        peer: Option<SocketAddr>,
        headers: &HeaderMap,
    ) -> Result<(), ApiError> {
        if !source.allowed_ips.is_empty() {
            let client = self.client_ip(peer.map(|p| p.ip()), headers);
            let allowed =
                client.is_some_and(|ip| source.allowed_ips.iter().any(|n| n.contains(&ip)));
            if !allowed {
                tracing::info!(
                    source = %source.name,
                    client = %client.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string()),
                    peer = ?peer.map(|p| p.ip()),
                    "forbidden: client address not in allowed_ips"
                );
                return Err(ApiError::Forbidden);
            }
        }
        if let Some(bucket) = self.buckets.get(&*source.name) {
            let taken = bucket
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .try_take(Instant::now());
            if let Err(wait) = taken {
                tracing::debug!(source = %source.name, "rate limited");
                return Err(ApiError::RateLimited {
                    retry_after_secs: retry_after_secs(wait),
                });
            }
        }
        Ok(())
    }

    /// The client's address: the TCP peer, unless the peer is a trusted proxy, in which
    /// case the forwarded header is walked from the right (the hop the proxy itself
    /// added) past every trusted proxy; the first untrusted hop is the client. `None`
    /// when that hop cannot be read (an allowlist then refuses: fail closed).
    pub fn client_ip(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer?.to_canonical();
        if !self.trusted(peer) {
            return Some(peer);
        }
        let hops = match self.forwarded_header {
            ForwardedHeader::XForwardedFor => list_items(headers, "x-forwarded-for", parse_hop),
            ForwardedHeader::Forwarded => list_items(headers, "forwarded", forwarded_for),
        };
        let Some(first) = hops.first() else {
            // The proxy itself is the client (its own health checks, say).
            return Some(peer);
        };
        for hop in hops.iter().rev() {
            let ip = (*hop)?;
            if !self.trusted(ip) {
                return Some(ip);
            }
        }
        // Every hop is a trusted proxy: the leftmost is as far as anyone can tell.
        *first
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(&ip))
    }
}

/// Retry-After in whole seconds, never 0 (0 would invite an immediate retry).
fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// Every comma-separated item of every `name` header line, in order, parsed by `parse`.
fn list_items(
    headers: &HeaderMap,
    name: &str,
    parse: impl Fn(&str) -> Option<IpAddr>,
) -> Vec<Option<IpAddr>> {
    headers
        .get_all(name)
        .flat_map(|v| match v.to_str() {
            Ok(text) => text.split(',').map(&parse).collect::<Vec<_>>(),
            // Not visible ASCII: nothing in it can be believed.
            Err(_) => vec![None],
        })
        .collect()
}

/// One X-Forwarded-For hop: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1` or
/// `[2001:db8::1]:4711`. `unknown`, obfuscated names and garbage are `None`.
fn parse_hop(item: &str) -> Option<IpAddr> {
    let item = item.trim();
    let ip = item
        .parse::<IpAddr>()
        .ok()
        .or_else(|| item.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            item.strip_prefix('[')
                .and_then(|s| s.strip_suffix(']'))
                .and_then(|s| s.parse::<IpAddr>().ok())
        })?;
    Some(ip.to_canonical())
}

/// The `for=` of one RFC 7239 `Forwarded` element (`for=192.0.2.60;proto=https`,
/// `for="[2001:db8::1]:4711"`). An element without a readable `for` is `None`.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        if !key.trim().eq_ignore_ascii_case("for") {
            return None;
        }
        parse_hop(value.trim().trim_matches('"'))
    })
}

/// A token bucket: `per_sec` tokens a second, at most `burst` saved up. Hand-written
/// (a dozen lines) because `governor` would add a second `hashbrown` and five crates.
#[derive(Debug)]
pub struct TokenBucket {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// Starts full: a relay that just started accepts a burst at once.
    pub fn new(limit: RateLimit, now: Instant) -> Self {
        Self {
            per_sec: limit.per_sec,
            burst: f64::from(limit.burst),
            tokens: f64::from(limit.burst),
            last: now,
        }
    }

    /// Take one token, or say how long until one is there.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        self.last = self.last.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.per_sec))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn limits(trusted: &[&str], header: ForwardedHeader) -> Limits {
        Limits {
            trusted_proxies: trusted
                .iter()
                .map(|t| crate::settings::parse_cidr(t).unwrap())
                .collect(),
            forwarded_header: header,
            buckets: HashMap::new(),
            body_read_timeout: Duration::from_secs(1),
            budget: Arc::new(BodyBudget::new(
                1 << 20,
                1 << 20,
                Default::default(),
                Default::default(),
            )),
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_it_forwards() {
        let l = limits(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
        let h = headers(&[("x-forwarded-for", "192.0.2.1")]);
        assert_eq!(l.client_ip(ip("203.0.113.9"), &h), ip("203.0.113.9"));
        let none = limits(&[], ForwardedHeader::XForwardedFor);
        assert_eq!(none.client_ip(ip("10.1.1.1"), &h), ip("10.1.1.1"));
        assert_eq!(l.client_ip(None, &h), None);
    }

    #[test]
    fn trusted_proxy_chain_is_walked_from_the_right() {
        let l = limits(
            &["10.0.0.0/8", "172.16.0.1"],
            ForwardedHeader::XForwardedFor,
        );
        // A client-supplied first hop is to the left of the one the proxy appended.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 198.51.100.7, 172.16.0.1")]);
        assert_eq!(l.client_ip(ip("10.0.0.2"), &h), ip("198.51.100.7"));
        // Several header lines are one list, in order.
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "198.51.100.8:4711"),
        ]);
        assert_eq!(l.client_ip(ip("10.0.0.2"), &h), ip("198.51.100.8"));
        // No header: the proxy is the client. All trusted: the leftmost.
        assert_eq!(l.client_ip(ip("10.0.0.2"), &headers(&[])), ip("10.0.0.2"));
        let h = headers(&[("x-forwarded-for", "10.9.9.9, 10.0.0.3")]);
        assert_eq!(l.client_ip(ip("10.0.0.2"), &h), ip("10.9.9.9"));
        // An unreadable hop before an untrusted one: unknown (fail closed).
        let h = headers(&[("x-forwarded-for", "198.51.100.7, garbage")]);
        assert_eq!(l.client_ip(ip("10.0.0.2"), &h), None);
        // IPv4-mapped IPv6 peers and hops compare as IPv4.
        let h = headers(&[("x-forwarded-for", "[::ffff:198.51.100.9]:80")]);
        assert_eq!(l.client_ip(ip("::ffff:10.0.0.2"), &h), ip("198.51.100.9"));
    }

    #[test]
    fn only_the_configured_header_is_read() {
        let xff = limits(&["127.0.0.1"], ForwardedHeader::XForwardedFor);
        let fwd = limits(&["127.0.0.1"], ForwardedHeader::Forwarded);
        let h = headers(&[
            (
                "forwarded",
                r#"for="[2001:db8::1]:4711";proto=https, for=192.0.2.60"#,
            ),
            ("x-forwarded-for", "198.51.100.1"),
        ]);
        assert_eq!(xff.client_ip(ip("127.0.0.1"), &h), ip("198.51.100.1"));
        assert_eq!(fwd.client_ip(ip("127.0.0.1"), &h), ip("192.0.2.60"));
        let h = headers(&[("forwarded", "for=_hidden")]);
        assert_eq!(fwd.client_ip(ip("127.0.0.1"), &h), None);
    }

    #[test]
    fn token_bucket_refills_at_the_rate_up_to_the_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(
            RateLimit {
                per_sec: 2.0,
                burst: 3,
            },
            t0,
        );
        for _ in 0..3 {
            assert!(b.try_take(t0).is_ok());
        }
        let wait = b.try_take(t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert_eq!(retry_after_secs(wait), 1);
        assert!(b.try_take(t0 + Duration::from_millis(500)).is_ok());
        assert!(b.try_take(t0 + Duration::from_millis(500)).is_err());
        // A long pause saves up no more than the burst.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(b.try_take(later).is_ok());
        }
        assert!(b.try_take(later).is_err());
        // A clock that steps back takes nothing extra.
        assert!(b.try_take(t0).is_err());
    }

    #[test]
    fn slow_rates_ask_for_a_longer_wait() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(
            RateLimit {
                per_sec: 0.1,
                burst: 1,
            },
            t0,
        );
        assert!(b.try_take(t0).is_ok());
        assert_eq!(retry_after_secs(b.try_take(t0).unwrap_err()), 10);
    }
}
