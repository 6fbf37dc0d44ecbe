//! Service dependencies: parent→child edges that cross a service boundary, counted per time bucket at write time.
//!
//! A call is a span whose parent span belongs to another service; it counts once for the edge
//! `(parent's service → span's service)` in the bucket of the child span's start, and as an error when the child
//! span has ERROR status. Buckets are [`BUCKET_SECS`] long; the query side sums the buckets of any window.

use std::collections::{BTreeMap, HashMap};

use crate::Span;

/// Length of a dependency time bucket, seconds.
pub const BUCKET_SECS: u64 = 60;

/// Calls between two services within one time bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DependencyEdge {
    /// Bucket start, seconds since the Unix epoch (a multiple of [`BUCKET_SECS`]).
    pub bucket_start_secs: u64,
    /// Calling service.
    pub parent: String,
    /// Called service.
    pub child: String,
    /// Number of calls.
    pub calls: u64,
    /// Calls with ERROR status on the child span.
    pub errors: u64,
}

/// What the already-stored chunks of a trace contribute to a late chunk's edges.
#[derive(Clone, Debug, Default)]
pub struct Earlier {
    /// Span ID → service of every stored span: parents of the late chunk's spans.
    pub services: HashMap<[u8; 8], String>,
    /// Stored spans whose parent was not stored: their edge could not be counted when they were written, and is
    /// counted when the parent arrives in a late chunk.
    pub waiting: Vec<WaitingChild>,
}

/// A stored span whose parent had not arrived when it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitingChild {
    /// The parent span's ID.
    pub parent: [u8; 8],
    /// The child span's service.
    pub service: String,
    /// The child span's start, ns since the Unix epoch (it picks the bucket).
    pub start_unix_nanos: u64,
    /// The child span has ERROR status.
    pub error: bool,
}

impl Earlier {
    /// From the stored spans of a trace: their services, and those whose parent is not among them.
    pub fn from_stored(stored: &[Span]) -> Self {
        let services: HashMap<[u8; 8], String> =
            stored.iter().map(|s| (s.span_id.0, s.service_name().to_string())).collect();
        let waiting = stored
            .iter()
            .filter_map(|s| {
                let parent = s.parent_id()?;
                (!services.contains_key(&parent.0)).then(|| WaitingChild {
                    parent: parent.0,
                    service: s.service_name().to_string(),
                    start_unix_nanos: s.start_unix_nanos,
                    error: s.is_error(),
                })
            })
            .collect();
        Self { services, waiting }
    }
}

/// Computes the edges of one trace chunk.
///
/// Parents are looked up in the chunk first, then in `earlier.services` (spans written in earlier chunks of the
/// same trace). Stored children in `earlier.waiting` whose parent is in this chunk count too: their parent arrived
/// after them, so their edge was not counted when they were written. With several spans sharing an ID (Zipkin
/// shared spans), the first one wins.
pub fn edges(spans: &[Span], earlier: &Earlier) -> Vec<DependencyEdge> {
    if earlier.services.is_empty() && earlier.waiting.is_empty() && spans.len() < 2 {
        // A lone span has no parent to cross a service boundary with.
        return Vec::new();
    }
    let mut service_of: HashMap<[u8; 8], &str> = HashMap::with_capacity(spans.len());
    for s in spans {
        service_of.entry(s.span_id.0).or_insert(s.service_name());
    }
    let mut counts: Counts<'_> = BTreeMap::new();
    type Counts<'a> = BTreeMap<(u64, &'a str, &'a str), (u64, u64)>;
    fn count<'a>(counts: &mut Counts<'a>, parent: &'a str, child: &'a str, start_unix_nanos: u64, error: bool) {
        if parent == child {
            return;
        }
        let bucket = start_unix_nanos / 1_000_000_000 / BUCKET_SECS * BUCKET_SECS;
        let c = counts.entry((bucket, parent, child)).or_default();
        c.0 += 1;
        c.1 += u64::from(error);
    }
    for s in spans {
        let Some(parent) = s.parent_id() else { continue };
        let parent_service = match service_of.get(&parent.0) {
            Some(p) => *p,
            None => match earlier.services.get(&parent.0) {
                Some(p) => p.as_str(),
                None => continue,
            },
        };
        count(&mut counts, parent_service, s.service_name(), s.start_unix_nanos, s.is_error());
    }
    for w in &earlier.waiting {
        if let Some(parent_service) = service_of.get(&w.parent) {
            count(&mut counts, parent_service, &w.service, w.start_unix_nanos, w.error);
        }
    }
    counts
        .into_iter()
        .map(|((bucket_start_secs, parent, child), (calls, errors))| DependencyEdge {
            bucket_start_secs,
            parent: parent.to_string(),
            child: child.to_string(),
            calls,
            errors,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SpanId, StatusCode, TraceId, service_resource};

    #[test]
    fn counts_only_cross_service_calls() {
        let t = TraceId([1; 16]);
        let mut root = Span::minimal(t, SpanId([1; 8]), "root", service_resource("a"));
        root.start_unix_nanos = 120_000_000_000;
        let mut same = Span::minimal(t, SpanId([2; 8]), "inner", service_resource("a"));
        same.parent_span_id = vec![1; 8];
        same.start_unix_nanos = 121_000_000_000;
        let mut call = Span::minimal(t, SpanId([3; 8]), "call", service_resource("b"));
        call.parent_span_id = vec![2; 8];
        call.start_unix_nanos = 122_000_000_000;
        call.status_code = StatusCode::ERROR;
        let mut late = Span::minimal(t, SpanId([4; 8]), "late", service_resource("c"));
        late.parent_span_id = vec![9; 8];
        late.start_unix_nanos = 200_000_000_000;
        let earlier = Earlier { services: HashMap::from([([9; 8], "z".to_string())]), waiting: Vec::new() };
        let e = edges(&[root, same, call, late], &earlier);
        assert_eq!(
            e,
            vec![
                DependencyEdge { bucket_start_secs: 120, parent: "a".into(), child: "b".into(), calls: 1, errors: 1 },
                DependencyEdge { bucket_start_secs: 180, parent: "z".into(), child: "c".into(), calls: 1, errors: 0 },
            ]
        );
    }

    #[test]
    fn a_parent_arriving_after_its_stored_children_counts_their_calls_once() {
        let t = TraceId([1; 16]);
        // First chunk: two children of `gateway`'s span 1 and one of a still-missing span 8, and a same-service
        // child; the parent has not arrived.
        let mut stored = Vec::new();
        for (i, (service, parent, error)) in
            [("db", 1u8, false), ("db", 1, true), ("cache", 8, false), ("gateway", 1, false)].into_iter().enumerate()
        {
            let mut c = Span::minimal(t, SpanId([10 + i as u8; 8]), "child", service_resource(service));
            c.parent_span_id = vec![parent; 8];
            c.start_unix_nanos = 61_000_000_000;
            if error {
                c.status_code = StatusCode::ERROR;
            }
            stored.push(c);
        }
        assert_eq!(edges(&stored, &Earlier::default()), vec![], "no parent yet, no edge");
        // The late chunk brings span 1 (gateway), a root.
        let mut parent = Span::minimal(t, SpanId([1; 8]), "route", service_resource("gateway"));
        parent.start_unix_nanos = 60_000_000_000;
        let earlier = Earlier::from_stored(&stored);
        assert_eq!(earlier.waiting.len(), 4);
        assert_eq!(
            edges(&[parent.clone()], &earlier),
            vec![DependencyEdge {
                bucket_start_secs: 60,
                parent: "gateway".into(),
                child: "db".into(),
                calls: 2,
                errors: 1
            }]
        );
        // Once the parent is stored too, nothing waits on it: a later chunk does not count the calls again.
        let mut all = stored.clone();
        all.push(parent);
        let later = Earlier::from_stored(&all);
        assert_eq!(later.waiting.len(), 1, "only the child of the missing span 8");
        let mut other = Span::minimal(t, SpanId([30; 8]), "other", service_resource("gateway"));
        other.start_unix_nanos = 62_000_000_000;
        assert_eq!(edges(&[other], &later), vec![]);
    }
}
