//! The gate of the API routes (`/graphql`, `/ws`, `/prever_precos/`): who is calling (the
//! `x-api-key`, checked against [`KeyStore`]) and whether they are within their rate.
//!
//! Rates are token buckets (governor's GCRA): a valid key is limited by `RATE_LIMIT_PER_KEY`,
//! anything else by `RATE_LIMIT_PER_ADDRESS` for its client address (an IPv6 address by its /64,
//! which one host usually holds whole). Each limit allows a burst of `RATE_LIMIT_BURST_SECONDS`
//! of its rate. A request over its rate is answered `429` with `Retry-After` and code
//! `RATE_LIMITED`, before anything else runs, and counted in `rate_limited_total{limit}`.
//!
//! The buckets are per replica: with N replicas behind a balancer that spreads a client's
//! requests evenly, the client gets up to N times the rate; with `ip_hash`-style affinity,
//! exactly the rate. Set the per-replica rate to (wanted total) / N (README "Security"). Memory
//! is bounded: idle buckets are dropped every [`SWEEP_EVERY`] requests, so the table holds at most
//! the clients seen within a burst period plus one sweep interval.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use serde_json::json;

use super::request::header_str;
use super::state::HttpState;
use crate::auth::keys::Verdict;
use crate::auth::{Caller, KeyStore};
use crate::config::AccessConfig;
use crate::error::codes;

/// Requests between two sweeps of idle buckets.
pub const SWEEP_EVERY: u64 = 4_096;

/// The per-address and per-key buckets of this replica.
pub struct RateLimits {
    addresses: Option<DefaultKeyedRateLimiter<IpAddr>>,
    keys: Option<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
    requests: AtomicU64,
    trust_forwarded_for: bool,
}

/// Which limit a request ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    Address,
    Key,
}

impl RateLimits {
    /// The limits `config` sets (a rate of 0 is no limit).
    pub fn new(config: &AccessConfig) -> Self {
        let quota = |rate: u32| {
            let rate = NonZeroU32::new(rate)?;
            let burst =
                rate.saturating_mul(NonZeroU32::new(config.rate_limit_burst_seconds).unwrap_or(NonZeroU32::MIN));
            Some(Quota::per_second(rate).allow_burst(burst))
        };
        Self {
            addresses: quota(config.rate_limit_per_address).map(governor::RateLimiter::keyed),
            keys: quota(config.rate_limit_per_key).map(governor::RateLimiter::keyed),
            clock: DefaultClock::default(),
            requests: AtomicU64::new(0),
            trust_forwarded_for: config.trust_forwarded_for,
        }
    }

    /// `Err((limit, wait))` when `caller` (from `address`) is over its rate; counts the refusal in
    /// `rate_limited_total{limit}` (`limit`: `address` or `key`).
    pub fn admit(&self, caller: &Caller, address: Option<IpAddr>) -> Result<(), (&'static str, Duration)> {
        self.check(caller, address).map_err(|(limit, wait)| {
            let label = match limit {
                Limit::Address => "address",
                Limit::Key => "key",
            };
            metrics::counter!("rate_limited_total", "limit" => label).increment(1);
            (label, wait)
        })
    }

    /// `Err(wait)` when `caller` (from `address`) is over its rate.
    fn check(&self, caller: &Caller, address: Option<IpAddr>) -> Result<(), (Limit, Duration)> {
        if self.requests.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep();
        }
        let now = self.clock.now();
        match (caller, &self.keys, &self.addresses) {
            (Caller::Key(key), Some(limiter), _) => {
                limiter.check_key(&key.id).map_err(|until| (Limit::Key, until.wait_time_from(now)))
            }
            (Caller::Key(_), None, _) | (_, _, None) => Ok(()),
            (_, _, Some(limiter)) => {
                let address = address.map_or(IpAddr::from([0, 0, 0, 0]), bucket_of);
                limiter.check_key(&address).map_err(|until| (Limit::Address, until.wait_time_from(now)))
            }
        }
    }

    /// Drops the buckets that are full again (their clients are idle).
    fn sweep(&self) {
        if let Some(limiter) = &self.addresses {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Some(limiter) = &self.keys {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// The client address: the peer, or the last `X-Forwarded-For` entry behind a trusted proxy.
    pub fn client_address(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> Option<IpAddr> {
        if self.trust_forwarded_for
            && let Some(forwarded) = header_str(headers, "x-forwarded-for")
            && let Some(last) = forwarded.rsplit(',').next()
            && let Ok(address) = last.trim().parse::<IpAddr>()
        {
            return Some(address);
        }
        peer.map(|p| p.ip())
    }
}

/// The bucket an address counts against: IPv4 addresses alone, IPv6 by their /64.
fn bucket_of(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let mut segments = v6.segments();
            segments[4..].fill(0);
            IpAddr::from(segments)
        }
    }
}

/// Who presented what: the caller the `x-api-key` header makes.
pub fn caller_of(keys: &KeyStore, presented: Option<&str>) -> Caller {
    match presented.filter(|k| !k.is_empty()) {
        None => Caller::Anonymous,
        Some(key) => match keys.verify(key, chrono::Utc::now()) {
            Verdict::Accepted(identity) => Caller::Key(identity),
            Verdict::Refused(why) => Caller::Refused(why),
        },
    }
}

/// Middleware: identifies the caller (attached to the request as a [`Caller`]) and applies the
/// rate limits.
pub async fn guard(State(s): State<HttpState>, mut request: Request, next: Next) -> Response {
    let caller = caller_of(&s.app.keys, header_str(request.headers(), "x-api-key"));
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let address = s.limits.client_address(request.headers(), peer);
    if let Err((limit, wait)) = s.limits.admit(&caller, address) {
        let rest = request.uri().path().starts_with("/prever_precos");
        return too_many_requests(limit, wait, rest);
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// Whole seconds to wait (at least 1), as `Retry-After` says it.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// What a refused client is told.
pub fn rate_limited_message(limit: &str, seconds: u64) -> String {
    format!("too many requests for this {limit}: retry in {seconds} s")
}

/// The 429 answer: the REST route's shape (`{"detail", "code"}`) or a GraphQL error.
fn too_many_requests(limit: &str, wait: Duration, rest: bool) -> Response {
    let seconds = retry_after_seconds(wait);
    let message = rate_limited_message(limit, seconds);
    let body = if rest {
        json!({ "detail": message, "code": codes::RATE_LIMITED })
    } else {
        json!({ "errors": [{
            "message": message,
            "extensions": { "code": codes::RATE_LIMITED, "limit": limit, "retryAfterSeconds": seconds },
        }] })
    };
    let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::auth::KeyIdentity;

    fn config(per_address: u32, per_key: u32) -> AccessConfig {
        AccessConfig {
            rate_limit_per_address: per_address,
            rate_limit_per_key: per_key,
            rate_limit_burst_seconds: 1,
            ..AccessConfig::default()
        }
    }

    #[test]
    fn a_client_over_its_burst_waits_and_others_do_not() {
        let limits = RateLimits::new(&config(5, 0));
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        for _ in 0..5 {
            assert!(limits.check(&Caller::Anonymous, a).is_ok());
        }
        let (limit, wait) = limits.check(&Caller::Anonymous, a).unwrap_err();
        assert_eq!(limit, Limit::Address);
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(200), "{wait:?}");
        assert!(limits.check(&Caller::Anonymous, Some(IpAddr::from([10, 0, 0, 2]))).is_ok());
        // Keys are unlimited here (rate 0): a keyed caller from the same address passes.
        let key = Caller::Key(Arc::new(KeyIdentity { id: "k".into(), scopes: vec![] }));
        assert!(limits.check(&key, a).is_ok());
    }

    #[test]
    fn keys_count_against_the_key_not_the_address() {
        let limits = RateLimits::new(&config(1, 3));
        let key = Caller::Key(Arc::new(KeyIdentity { id: "k".into(), scopes: vec![] }));
        for i in 0..3 {
            let address = Some(IpAddr::from([10, 0, 0, i]));
            assert!(limits.check(&key, address).is_ok());
        }
        assert_eq!(limits.check(&key, Some(IpAddr::from([10, 0, 0, 9]))).unwrap_err().0, Limit::Key);
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(bucket_of(a), bucket_of(b));
        assert_ne!(bucket_of(a), bucket_of(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(bucket_of(mapped), IpAddr::from([10, 0, 0, 1]));
    }

    #[test]
    fn forwarded_for_is_read_only_when_trusted() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9, 198.51.100.7"));
        let peer = Some(SocketAddr::from(([127, 0, 0, 1], 5000)));
        assert_eq!(RateLimits::new(&config(1, 1)).client_address(&headers, peer), Some(IpAddr::from([127, 0, 0, 1])));
        let trusting = RateLimits::new(&AccessConfig { trust_forwarded_for: true, ..config(1, 1) });
        assert_eq!(trusting.client_address(&headers, peer), Some(IpAddr::from([198, 51, 100, 7])));
    }
}
