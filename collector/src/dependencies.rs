//! Service dependencies: parent→child edges that cross a service boundary, counted per time bucket at write time.
//!
//! A call is a span whose parent span belongs to another service; it counts once for the edge
//! `(parent's service → span's service)` in the bucket of the child span's start, and as an error when the child
//! span has ERROR status. Buckets are [`BUCKET_SECS`] long; the query side sums the buckets of any window.

use std::collections::{BTreeMap, HashMap};

use crate::model::Span;

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

/// Computes the edges of one trace chunk.
///
/// Parents are looked up in the chunk first, then in `earlier` (span ID → service of spans written in earlier
/// chunks of the same trace). With several spans sharing an ID (Zipkin shared spans), the first one wins.
pub fn edges(spans: &[Span], earlier: &HashMap<[u8; 8], String>) -> Vec<DependencyEdge> {
    if earlier.is_empty() && spans.len() < 2 {
        // A lone span has no parent to cross a service boundary with.
        return Vec::new();
    }
    let mut service_of: HashMap<[u8; 8], &str> = HashMap::with_capacity(spans.len());
    for s in spans {
        service_of.entry(s.span_id.0).or_insert(s.service_name());
    }
    let mut counts: BTreeMap<(u64, &str, &str), (u64, u64)> = BTreeMap::new();
    for s in spans {
        let Some(parent) = s.parent_id() else { continue };
        let parent_service = match service_of.get(&parent.0) {
            Some(p) => *p,
            None => match earlier.get(&parent.0) {
                Some(p) => p.as_str(),
                None => continue,
            },
        };
        let child_service = s.service_name();
        if parent_service == child_service {
            continue;
        }
        let bucket = s.start_unix_nanos / 1_000_000_000 / BUCKET_SECS * BUCKET_SECS;
        let c = counts.entry((bucket, parent_service, child_service)).or_default();
        c.0 += 1;
        c.1 += u64::from(s.is_error());
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
    use crate::model::{SpanId, StatusCode, TraceId, service_resource};

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
        let earlier = HashMap::from([([9; 8], "z".to_string())]);
        let e = edges(&[root, same, call, late], &earlier);
        assert_eq!(
            e,
            vec![
                DependencyEdge { bucket_start_secs: 120, parent: "a".into(), child: "b".into(), calls: 1, errors: 1 },
                DependencyEdge { bucket_start_secs: 180, parent: "z".into(), child: "c".into(), calls: 1, errors: 0 },
            ]
        );
    }
}
