//! Collector endpoints: where they come from (DNS names re-resolved on a timer, or a static list), which one a
//! trace goes to (rendezvous hashing by trace ID), and whether each is usable (a circuit breaker).
//!
//! Rendezvous (highest-random-weight) hashing gives every agent the same answer for the same endpoint set, so
//! every span of a trace reaches the same collector from every pod; when an endpoint leaves or is unhealthy only
//! its own traces move, each to its next choice.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use tokio::sync::watch;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(FNV_PRIME))
}

/// SplitMix64's finaliser: spreads FNV's weak low bits over the whole word.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The rendezvous key of an endpoint: FNV-1a of its `ip:port` text, identical in every agent.
pub fn endpoint_key(addr: &SocketAddr) -> u64 {
    fnv1a(addr.to_string().as_bytes())
}

/// The weight of `trace_id` on the endpoint with `key`; a trace goes to the usable endpoint of highest weight.
pub fn weight(trace_id_hash: u64, key: u64) -> u64 {
    mix(trace_id_hash ^ key)
}

/// Hash of a trace ID for [`weight`].
pub fn trace_hash(trace_id: &[u8]) -> u64 {
    fnv1a(trace_id)
}

/// Index of the highest-weight key among `keys` for which `usable(i)` holds, or `None`.
pub fn choose(trace_id_hash: u64, keys: &[u64], usable: impl Fn(usize) -> bool) -> Option<usize> {
    keys.iter().enumerate().filter(|(i, _)| usable(*i)).max_by_key(|(_, k)| weight(trace_id_hash, **k)).map(|(i, _)| i)
}

/// A per-endpoint circuit breaker: closed until an endpoint fails a request (after its retries), then open for a
/// cool-down that doubles with each consecutive trip (from `base` up to `max`); after the cool-down one probe
/// request (half-open) decides.
#[derive(Debug, Clone)]
pub struct Breaker {
    open_until: Option<Instant>,
    trips: u32,
    base: Duration,
    max: Duration,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self { open_until: None, trips: 0, base, max }
    }

    /// Whether requests may be sent (closed, or half-open after the cool-down).
    pub fn available(&self, now: Instant) -> bool {
        self.open_until.is_none_or(|t| now >= t)
    }

    /// Whether the last request failed (half-open: allow a single probe attempt, not the full retries).
    pub fn probing(&self) -> bool {
        self.trips > 0
    }

    /// When the breaker will let a probe through, if open.
    pub fn open_until(&self) -> Option<Instant> {
        self.open_until
    }

    /// Records a failed request: opens the breaker.
    pub fn trip(&mut self, now: Instant) {
        self.trips = self.trips.saturating_add(1);
        let factor = 1u32 << (self.trips - 1).min(16);
        self.open_until = Some(now + (self.base * factor).min(self.max));
    }

    /// Records a delivered request: closes the breaker.
    pub fn success(&mut self) {
        self.trips = 0;
        self.open_until = None;
    }
}

/// One place to send spans: the address and the name to verify its TLS certificate against.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    /// Resolved address.
    pub addr: SocketAddr,
    /// The host name it was resolved from (TLS server name).
    pub host: String,
    /// Its rendezvous key ([`endpoint_key`]).
    pub key: u64,
}

/// The endpoint set and which endpoints are unhealthy, shared by the receivers (which route each span when it is
/// accepted) and the forwarder (which sends, and marks endpoints unhealthy or healthy).
pub struct Routes {
    targets: watch::Receiver<Vec<Target>>,
    unhealthy: RwLock<HashSet<u64>>,
}

impl Routes {
    /// Routes over the endpoint sets published on `targets`.
    pub fn new(targets: watch::Receiver<Vec<Target>>) -> Self {
        Self { targets, unhealthy: RwLock::default() }
    }

    /// The current endpoint set (a receiver to watch for changes).
    pub fn targets(&self) -> watch::Receiver<Vec<Target>> {
        self.targets.clone()
    }

    /// Keys of the endpoints new spans should go to: the healthy ones, or all when none is healthy (the
    /// forwarder re-routes when one recovers first).
    pub fn usable_keys(&self) -> Vec<u64> {
        let unhealthy = self.unhealthy.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let all: Vec<u64> = self.targets.borrow().iter().map(|t| t.key).collect();
        let healthy: Vec<u64> = all.iter().copied().filter(|k| !unhealthy.contains(k)).collect();
        if healthy.is_empty() { all } else { healthy }
    }

    /// Records an endpoint's health.
    pub fn set_healthy(&self, key: u64, healthy: bool) {
        let mut unhealthy = self.unhealthy.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if healthy {
            unhealthy.remove(&key);
        } else {
            unhealthy.insert(key);
        }
    }
}

/// Splits `host:port` (IPv6 as `[addr]:port`).
///
/// # Errors
/// No port, or a port that is not a number.
pub fn split_host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s.rsplit_once(':').ok_or_else(|| format!("{s:?}: expected HOST:PORT"))?;
    let port = port.parse().map_err(|_| format!("{s:?}: port {port:?} is not a number"))?;
    Ok((host.trim_start_matches('[').trim_end_matches(']').to_string(), port))
}

/// Resolves every `host:port` (A and AAAA records, via the system resolver); sorted, deduplicated.
pub async fn resolve(names: &[String]) -> Vec<Target> {
    let mut out = Vec::new();
    for name in names {
        let Ok((host, _)) = split_host_port(name) else { continue };
        match tokio::net::lookup_host(name.as_str()).await {
            Ok(addrs) => out.extend(addrs.map(|addr| Target { addr, host: host.clone(), key: endpoint_key(&addr) })),
            Err(e) => tracing::warn!(name = %name, error = %e, "resolving collector endpoint failed"),
        }
    }
    out.sort();
    out.dedup_by(|a, b| a.addr == b.addr);
    out
}

/// Re-resolves `names` every `refresh` and publishes the set when it changes. An empty answer (DNS outage)
/// keeps the previous set: sending to the last known collectors beats sending nowhere.
pub async fn resolve_loop(names: Vec<String>, refresh: Duration, tx: watch::Sender<Vec<Target>>) {
    loop {
        let targets = resolve(&names).await;
        if !targets.is_empty() && *tx.borrow() != targets {
            tracing::info!(endpoints = ?targets.iter().map(|t| t.addr).collect::<Vec<_>>(), "collector endpoints");
            if tx.send(targets).is_err() {
                return;
            }
        }
        tokio::time::sleep(refresh).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: u16) -> Vec<u64> {
        (0..n).map(|i| endpoint_key(&SocketAddr::from(([10, 0, 0, i as u8], 4317)))).collect()
    }

    #[test]
    fn rendezvous_spreads_evenly_and_moves_only_the_lost_share() {
        let k = keys(4);
        let ids: Vec<[u8; 16]> = (0u64..8000)
            .map(|i| {
                let mut id = [0u8; 16];
                id[8..].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
                id
            })
            .collect();
        let first: Vec<usize> = ids.iter().map(|id| choose(trace_hash(id), &k, |_| true).expect("some")).collect();
        for e in 0..4 {
            let n = first.iter().filter(|&&c| c == e).count();
            assert!((1700..2300).contains(&n), "endpoint {e} got {n} of 8000");
        }
        // Endpoint 2 unhealthy: its traces spread over the others; nobody else's trace moves.
        for (id, &was) in ids.iter().zip(&first) {
            let now = choose(trace_hash(id), &k, |i| i != 2).expect("some");
            if was == 2 {
                assert_ne!(now, 2);
            } else {
                assert_eq!(now, was);
            }
        }
        // Every agent gets the same answer whatever order it learned the endpoints in.
        let mut rev = k.clone();
        rev.reverse();
        for id in &ids[..100] {
            let a = k[choose(trace_hash(id), &k, |_| true).expect("some")];
            let b = rev[choose(trace_hash(id), &rev, |_| true).expect("some")];
            assert_eq!(a, b);
        }
        assert_eq!(choose(1, &k, |_| false), None);
    }

    #[test]
    fn breaker_opens_with_growing_cool_down_and_closes_on_success() {
        let mut b = Breaker::new(Duration::from_millis(100), Duration::from_millis(350));
        let t0 = Instant::now();
        assert!(b.available(t0) && !b.probing());
        b.trip(t0);
        assert!(!b.available(t0 + Duration::from_millis(99)));
        assert!(b.available(t0 + Duration::from_millis(100)) && b.probing());
        b.trip(t0);
        assert!(!b.available(t0 + Duration::from_millis(199)));
        b.trip(t0);
        b.trip(t0);
        assert_eq!(b.open_until(), Some(t0 + Duration::from_millis(350)), "capped");
        b.success();
        assert!(b.available(t0) && !b.probing());
    }

    #[test]
    fn host_port_parsing() {
        assert_eq!(split_host_port("collector-headless.obs:4317"), Ok(("collector-headless.obs".into(), 4317)));
        assert_eq!(split_host_port("[::1]:4317"), Ok(("::1".into(), 4317)));
        assert!(split_host_port("collector").is_err());
        assert!(split_host_port("collector:http").is_err());
    }

    #[tokio::test]
    async fn resolves_names_and_literals() {
        let t = resolve(&["localhost:4317".into(), "127.0.0.1:4317".into(), "bad".into()]).await;
        assert!(t.iter().any(|t| t.addr == SocketAddr::from(([127, 0, 0, 1], 4317))), "{t:?}");
        assert_eq!(t.iter().filter(|t| t.addr == SocketAddr::from(([127, 0, 0, 1], 4317))).count(), 1);
    }
}
