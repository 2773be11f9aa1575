//! Abuse limits that need shared state: how fast one session may change things (a token bucket
//! per session) and how many sockets one client address may hold open at once.
//!
//! Both live in the app state of one process: a deployment of N processes allows N times as
//! much, which is acceptable because they bound load per process, not a global quota.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use actix_web::{
    HttpMessage as _, HttpRequest,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    http::Method,
    middleware::Next,
    web,
};

use crate::{error::AppError, origin::TrustedProxies, session::Session, startup::AppState};

/// The mutation limit's settings. A rate of zero turns the limit off.
#[derive(Debug, Clone, Copy)]
pub struct MutationRate {
    /// Mutations a session may make at once before the rate applies.
    pub burst: u32,
    /// Sustained mutations per second per session.
    pub per_second: f64,
    /// Sessions tracked at once; the map never grows beyond this.
    pub max_sessions: usize,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets, one per session, keyed by a salted hash of the session's secret so the map
/// never holds anything a memory dump could replay.
pub struct MutationLimiter {
    rate: MutationRate,
    salt: RandomState,
    buckets: Mutex<HashMap<u64, Bucket>>,
}

impl MutationLimiter {
    pub fn new(rate: MutationRate) -> Self {
        Self {
            rate,
            salt: RandomState::new(),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn enabled(&self) -> bool {
        self.rate.per_second > 0.0 && self.rate.burst > 0
    }

    /// Takes one token for `key`; `Err` carries how long until the next one, rounded up to
    /// whole seconds for `Retry-After`.
    pub fn take(&self, key: &[u8]) -> Result<(), u64> {
        self.take_at(key, Instant::now())
    }

    fn take_at(&self, key: &[u8], now: Instant) -> Result<(), u64> {
        if !self.enabled() {
            return Ok(());
        }
        let burst = f64::from(self.rate.burst);
        let key = self.salt.hash_one(key);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !buckets.contains_key(&key) && buckets.len() >= self.rate.max_sessions.max(1) {
            self.make_room(&mut buckets, now);
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate.per_second).min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.rate.per_second;
            Err((wait.ceil() as u64).max(1))
        }
    }

    /// Forgets buckets that have refilled (their sessions are idle: forgetting them changes
    /// nothing); if every session is busy, forgets the one idle longest. Evicting rather than
    /// refusing newcomers keeps a flood of fresh sessions from locking everyone else out.
    fn make_room(&self, buckets: &mut HashMap<u64, Bucket>, now: Instant) {
        let burst = f64::from(self.rate.burst);
        let per_second = self.rate.per_second;
        buckets.retain(|_, b| {
            b.tokens + now.saturating_duration_since(b.updated).as_secs_f64() * per_second < burst
        });
        if buckets.len() >= self.rate.max_sessions.max(1)
            && let Some(stalest) = buckets
                .iter()
                .min_by_key(|(_, b)| b.updated)
                .map(|(k, _)| *k)
        {
            buckets.remove(&stalest);
        }
    }

    /// Sessions currently tracked.
    pub fn tracked(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Middleware, innermost in the app scope: by then the session is loaded and the form guard has
/// accepted the CSRF token, so only requests that could really change something are counted,
/// against a session an attacker cannot pick.
pub async fn mutation_rate(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        && let Some(state) = req.app_data::<web::Data<AppState>>()
        && let Some(session) = req.extensions().get::<Session>()
    {
        session
            .with_limiter_key(|key| state.mutations.take(key))
            .map_err(AppError::TooManyRequests)?;
    }
    next.call(req).await
}

/// Open sockets per client address.
#[derive(Clone)]
pub struct ConnectionLimiter {
    inner: Arc<ConnectionsInner>,
}

struct ConnectionsInner {
    max: usize,
    proxies: TrustedProxies,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One counted socket; dropping it, however the socket ends, gives the slot back.
#[must_use = "the slot is released when the permit is dropped"]
pub struct ConnectionPermit {
    inner: Option<(Arc<ConnectionsInner>, IpAddr)>,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        if let Some((inner, ip)) = self.inner.take() {
            let mut open = inner.open.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(count) = open.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    open.remove(&ip);
                }
            }
        }
    }
}

impl ConnectionLimiter {
    /// At most `max` sockets per address; 0 means no limit.
    pub fn new(max: usize, proxies: TrustedProxies) -> Self {
        Self {
            inner: Arc::new(ConnectionsInner {
                max,
                proxies,
                open: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A slot for one more socket from `req`'s client, or `None` when it holds its maximum.
    pub fn acquire(&self, req: &HttpRequest) -> Option<ConnectionPermit> {
        if self.inner.max == 0 {
            return Some(ConnectionPermit { inner: None });
        }
        let ip = client_ip(req, &self.inner.proxies)?;
        let mut open = self.inner.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= self.inner.max {
            return None;
        }
        *count += 1;
        Some(ConnectionPermit {
            inner: Some((self.inner.clone(), ip)),
        })
    }

    /// Sockets open from `ip` right now.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        let open = self.inner.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&ip).copied().unwrap_or(0)
    }
}

/// Who the client is: the peer, or, when the peer is a trusted proxy, the nearest address in
/// `X-Forwarded-For` that is not itself a trusted proxy (read from the right, since everything
/// left of the proxies' own entries is whatever the client chose to send).
pub fn client_ip(req: &HttpRequest, proxies: &TrustedProxies) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip();
    if !proxies.contains(peer) {
        return Some(peer);
    }
    let entries = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for entry in entries.into_iter().rev() {
        match entry.parse::<IpAddr>() {
            Ok(ip) if proxies.contains(ip) => continue,
            Ok(ip) => return Some(ip),
            // Garbage in the chain: nothing left of it can be attributed, so count the proxy.
            Err(_) => break,
        }
    }
    Some(peer)
}

/// The `Retry-After` for a refused upgrade: sockets free up as they close, so "soon".
pub const CONNECTION_RETRY_AFTER: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    fn limiter(burst: u32, per_second: f64, max_sessions: usize) -> MutationLimiter {
        MutationLimiter::new(MutationRate {
            burst,
            per_second,
            max_sessions,
        })
    }

    #[test]
    fn a_burst_passes_then_the_rate_applies_with_a_retry_after() {
        let l = limiter(3, 0.5, 10);
        let t = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.take_at(b"a", t), Ok(()));
        }
        assert_eq!(l.take_at(b"a", t), Err(2));
        assert_eq!(l.take_at(b"b", t), Ok(()), "sessions are independent");
        assert_eq!(l.take_at(b"a", t + Duration::from_secs(2)), Ok(()));
        assert_eq!(l.take_at(b"a", t + Duration::from_secs(2)), Err(2));
    }

    #[test]
    fn a_rate_of_zero_turns_the_limit_off() {
        let l = limiter(1, 0.0, 10);
        let t = Instant::now();
        for _ in 0..100 {
            assert_eq!(l.take_at(b"a", t), Ok(()));
        }
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn the_map_of_sessions_stays_bounded() {
        let l = limiter(5, 1.0, 100);
        let t = Instant::now();
        for i in 0..10_000u32 {
            let _ = l.take_at(&i.to_be_bytes(), t);
            assert!(l.tracked() <= 100);
        }
        // A busy session survives a flood of newcomers only as long as it is not the stalest,
        // but it never gets more than its burst back.
        for _ in 0..5 {
            let _ = l.take_at(b"busy", t);
        }
        assert!(l.take_at(b"busy", t).is_err());
    }

    #[test]
    fn permits_are_counted_per_address_and_given_back_on_drop() {
        let limiter = ConnectionLimiter::new(2, TrustedProxies::default());
        let req = TestRequest::default()
            .peer_addr("10.0.0.1:1234".parse().unwrap())
            .to_http_request();
        let other = TestRequest::default()
            .peer_addr("10.0.0.2:1234".parse().unwrap())
            .to_http_request();
        let a = limiter.acquire(&req).unwrap();
        let b = limiter.acquire(&req).unwrap();
        assert!(limiter.acquire(&req).is_none());
        assert!(limiter.acquire(&other).is_some());
        drop(a);
        let c = limiter.acquire(&req).unwrap();
        drop((b, c));
        assert_eq!(limiter.open_from("10.0.0.1".parse().unwrap()), 0);
    }

    #[test]
    fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
        let proxies = TrustedProxies::parse("127.0.0.1").unwrap();
        let via_proxy = TestRequest::default()
            .peer_addr("127.0.0.1:1".parse().unwrap())
            .insert_header(("X-Forwarded-For", "6.6.6.6, 203.0.113.9"))
            .to_http_request();
        assert_eq!(
            client_ip(&via_proxy, &proxies),
            Some("203.0.113.9".parse().unwrap())
        );
        let direct = TestRequest::default()
            .peer_addr("198.51.100.1:1".parse().unwrap())
            .insert_header(("X-Forwarded-For", "203.0.113.9"))
            .to_http_request();
        assert_eq!(
            client_ip(&direct, &proxies),
            Some("198.51.100.1".parse().unwrap())
        );
    }
}
