//! Hand-built traces: skewed children, orphans, a missing root, parallel and sequential branches, cycles, and
//! 10,000-deep and 10,000-wide traces on a small stack.

use super::*;
use skein_model::{Span, SpanId, StatusCode, TraceId, service_resource};

const MS: u64 = 1_000_000;
const T0: u64 = 1_700_000_000_000_000_000;

fn id(n: u64) -> SpanId {
    SpanId((n + 1).to_be_bytes())
}

/// Span `n` of `service`, child of `parent`, from `start_ms` to `end_ms` after T0.
fn span(n: u64, parent: Option<u64>, service: &str, start_ms: i64, end_ms: i64) -> Span {
    let mut s = Span::minimal(TraceId([7; 16]), id(n), &format!("op{n}"), service_resource(service));
    s.parent_span_id = parent.map(|p| id(p).0.to_vec()).unwrap_or_default();
    s.start_unix_nanos = T0.checked_add_signed(start_ms * MS as i64).expect("time");
    s.end_unix_nanos = T0.checked_add_signed(end_ms * MS as i64).expect("time");
    s
}

fn ms(t: u64) -> i64 {
    (t as i64 - T0 as i64) / MS as i64
}

#[test]
fn a_child_from_another_service_that_starts_early_moves_in_with_its_subtree() {
    let mut spans = vec![
        span(0, None, "frontend", 0, 100),
        span(1, Some(0), "backend", -10, 40), // 10 ms early: another host's clock
        span(2, Some(1), "backend", -5, 30),  // same service as its parent: moves with it, no own skew
        span(3, Some(0), "frontend", -3, 10), // same service as the root: same clock, left alone
    ];
    let moved = adjust_skew(&mut spans);
    assert_eq!((ms(spans[1].start_unix_nanos), ms(spans[1].end_unix_nanos)), (0, 50));
    assert_eq!((ms(spans[2].start_unix_nanos), ms(spans[2].end_unix_nanos)), (5, 40));
    assert_eq!(ms(spans[3].start_unix_nanos), -3, "same service, same clock");
    assert_eq!(moved.len(), 2);
    assert_eq!(
        moved[0],
        Adjustment {
            span_id: id(1),
            offset_nanos: 10 * MS as i64,
            own_offset_nanos: 10 * MS as i64,
            original_start_unix_nanos: T0 - 10 * MS,
        }
    );
    assert_eq!((moved[1].offset_nanos, moved[1].own_offset_nanos), (10 * MS as i64, 0));
    assert!(
        spans[1].warnings[0].contains("+10ms") && spans[1].warnings[0].contains(&id(0).to_hex()),
        "{:?}",
        spans[1].warnings
    );
    assert!(spans[2].warnings[0].contains("+10ms with its parent"), "{:?}", spans[2].warnings);
    assert!(spans[0].warnings.is_empty() && spans[3].warnings.is_empty());
    // One pass over the tree gives the same as adjusting, then analyzing.
    let mut again = vec![
        span(0, None, "frontend", 0, 100),
        span(1, Some(0), "backend", -10, 40),
        span(2, Some(1), "backend", -5, 30),
        span(3, Some(0), "frontend", -3, 10),
    ];
    assert_eq!(analyze_skew_adjusted(&mut again), analyze(&spans, moved.clone()));
    assert_eq!(again, spans);
    // Idempotent: an adjusted trace needs no more adjusting.
    assert!(adjust_skew(&mut spans).is_empty());
}

#[test]
fn a_child_ending_late_moves_back_and_a_longer_child_only_stops_starting_early() {
    let mut spans = vec![
        span(0, None, "a", 0, 100),
        span(1, Some(0), "b", 80, 120),  // fits, ends 20 ms late: -20 ms
        span(2, Some(0), "c", -30, 150), // longer than its parent (async work): only the early start is fixed
        span(3, Some(0), "d", 10, 120),  // longer? no: 110 > 100, starts inside: left alone
    ];
    let moved = adjust_skew(&mut spans);
    assert_eq!((ms(spans[1].start_unix_nanos), ms(spans[1].end_unix_nanos)), (60, 100));
    assert_eq!((ms(spans[2].start_unix_nanos), ms(spans[2].end_unix_nanos)), (0, 180));
    assert_eq!(ms(spans[3].start_unix_nanos), 10);
    assert_eq!(moved.iter().map(|m| m.offset_nanos / MS as i64).collect::<Vec<_>>(), [-20, 30]);
    assert!(spans[1].warnings[0].contains("-20ms"), "{:?}", spans[1].warnings);
}

#[test]
fn orphans_get_placeholders_and_a_missing_root_is_reported() {
    // Root present, one span whose parent never arrived.
    let spans = vec![span(0, None, "a", 0, 100), span(1, Some(0), "b", 10, 20), span(5, Some(99), "c", 30, 40)];
    let a = analyze(&spans, Vec::new());
    assert_eq!(a.placeholders, [Placeholder { span_id: id(99), children: vec![id(5)] }]);
    assert_eq!(a.warnings.len(), 1);
    assert!(a.warnings[0].contains(&id(99).to_hex()) && a.warnings[0].contains(&id(5).to_hex()));
    assert_eq!(a.summary.roots, [id(0)]);

    // No root at all: two subtrees under the same missing parent.
    let spans = vec![span(1, Some(0), "b", 10, 50), span(2, Some(0), "c", 20, 90), span(3, Some(2), "c", 30, 80)];
    let a = analyze(&spans, Vec::new());
    assert!(a.warnings.iter().any(|w| w.contains("root span is missing")), "{:?}", a.warnings);
    assert_eq!(a.placeholders, [Placeholder { span_id: id(0), children: vec![id(1), id(2)] }]);
    assert!(a.summary.roots.is_empty());
    assert_eq!(a.summary.depth, 2);
    // The critical path starts at the top-level span that ends last.
    assert_eq!(a.critical_path[0].span_id, id(2));
}

#[test]
fn the_critical_path_follows_the_last_finishing_branch_of_parallel_work() {
    // root 0..100; X 10..60 and Y 20..90 in parallel; Z 30..80 inside Y.
    let spans = vec![
        span(0, None, "root", 0, 100),
        span(1, Some(0), "x", 10, 60),
        span(2, Some(0), "y", 20, 90),
        span(3, Some(2), "z", 30, 80),
    ];
    let a = analyze(&spans, Vec::new());
    let sections: Vec<(SpanId, i64, i64)> =
        a.critical_path_sections.iter().map(|s| (s.span_id, ms(s.start_unix_nanos), ms(s.end_unix_nanos))).collect();
    assert_eq!(sections, [(id(0), 90, 100), (id(2), 80, 90), (id(3), 30, 80), (id(2), 20, 30), (id(0), 0, 20)]);
    let self_ms: Vec<(SpanId, u64)> = a.critical_path.iter().map(|c| (c.span_id, c.self_time_nanos / MS)).collect();
    assert_eq!(self_ms, [(id(0), 30), (id(2), 20), (id(3), 50)]);
    assert!(!self_ms.iter().any(|(s, _)| *s == id(1)), "X ran in parallel and finished early: not critical");
    let total: u64 = a.critical_path.iter().map(|c| c.self_time_nanos).sum();
    assert_eq!(total, a.summary.duration_nanos, "the path accounts for the whole trace");
}

#[test]
fn sequential_children_are_all_on_the_path_and_children_outside_their_parent_are_clipped() {
    // A 5..40 then B 50..90; C starts before the root and is clipped to 0..4; D lies wholly outside and is ignored.
    let spans = vec![
        span(0, None, "root", 0, 100),
        span(1, Some(0), "a", 5, 40),
        span(2, Some(0), "b", 50, 90),
        span(3, Some(0), "c", -20, 4),
        span(4, Some(0), "d", 200, 300),
    ];
    let a = analyze(&spans, Vec::new());
    let self_ms: Vec<(SpanId, u64)> = a.critical_path.iter().map(|c| (c.span_id, c.self_time_nanos / MS)).collect();
    assert_eq!(self_ms, [(id(0), 21), (id(2), 40), (id(1), 35), (id(3), 4)]);
}

#[test]
fn summary_counts_services_errors_and_depth() {
    let mut spans = vec![
        span(0, None, "web", 0, 100),
        span(1, Some(0), "db", 10, 20),
        span(2, Some(1), "cache", 11, 12),
        span(3, Some(0), "db", 30, 40),
    ];
    spans[2].status_code = StatusCode::ERROR;
    spans[3].status_code = StatusCode::ERROR;
    let a = analyze(&spans, Vec::new());
    assert_eq!(a.summary.services, ["cache", "db", "web"]);
    assert_eq!((a.summary.span_count, a.summary.error_count, a.summary.depth), (4, 2, 3));
    assert_eq!((a.summary.start_unix_nanos, a.summary.duration_nanos), (T0, 100 * MS));
    assert!(a.warnings.is_empty() && a.placeholders.is_empty());
    let json = serde_json::to_value(&a).expect("json");
    assert_eq!(json["summary"]["spanCount"], 4);
    assert_eq!(json["criticalPath"][0]["spanId"], id(0).to_hex());
}

#[test]
fn parent_cycles_and_self_parents_are_broken_and_reported() {
    let spans = vec![
        span(0, None, "a", 0, 100),
        span(1, Some(2), "b", 10, 20), // 1 → 2 → 1
        span(2, Some(1), "b", 12, 18),
        span(3, Some(3), "c", 30, 40), // its own parent
    ];
    let mut adjusted = spans.clone();
    adjust_skew(&mut adjusted);
    let a = analyze(&spans, Vec::new());
    assert!(a.warnings.iter().any(|w| w.contains("cycle")), "{:?}", a.warnings);
    assert!(a.warnings.iter().any(|w| w.contains("names itself")), "{:?}", a.warnings);
    assert_eq!(a.summary.span_count, 4);
}

/// Runs `f` on a thread with a 256 KiB stack: recursion over 10,000 levels would overflow it.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new().stack_size(256 * 1024).spawn(f).expect("thread").join().expect("no stack overflow")
}

#[test]
fn a_10000_deep_trace_is_analyzed_without_recursion() {
    let a = on_small_stack(|| {
        // Span i really runs [i, 30000 - i] ms, nested in span i - 1; the odd ones come from service s1, whose
        // clock is 2 ms behind, so each of them appears to start 1 ms before its parent.
        let spans = (0..10_000u64).map(|i| {
            let (skew, service) = if i % 2 == 1 { (2, "s1") } else { (0, "s0") };
            span(i, i.checked_sub(1), service, i as i64 - skew, 30_000 - i as i64 - skew)
        });
        let mut spans: Vec<Span> = spans.collect();
        let moved = adjust_skew(&mut spans);
        analyze(&spans, moved)
    });
    assert_eq!(a.summary.depth, 10_000);
    assert_eq!(a.adjustments.len(), 5_000, "every s1 span moved +1 ms; s0 spans below moved back to where they were");
    assert!(a.adjustments.iter().all(|m| m.offset_nanos == MS as i64));
    let total: u64 = a.critical_path.iter().map(|c| c.self_time_nanos).sum();
    assert_eq!(total, a.summary.duration_nanos);
    assert_eq!(a.critical_path.len(), 10_000);
}

#[test]
fn a_10000_wide_trace_is_analyzed() {
    let a = on_small_stack(|| {
        let mut spans = vec![span(0, None, "root", 0, 20_000)];
        spans.extend((1..=10_000u64).map(|i| span(i, Some(0), "leaf", i as i64, i as i64 + 5)));
        let moved = adjust_skew(&mut spans);
        analyze(&spans, moved)
    });
    assert_eq!((a.summary.span_count, a.summary.depth), (10_001, 2));
    // Leaves overlap in pairs of start/end 5 ms apart; the path alternates root gaps and leaves back to 0.
    let total: u64 = a.critical_path.iter().map(|c| c.self_time_nanos).sum();
    assert_eq!(total, a.summary.duration_nanos);
    assert_eq!(a.critical_path[0].span_id, id(0));
}

#[test]
fn offsets_read_like_durations() {
    assert_eq!(format_offset(10 * MS as i64), "+10ms");
    assert_eq!(format_offset(-1_500_000), "-1.5ms");
    assert_eq!(format_offset(250_000), "+250µs");
    assert_eq!(format_offset(2_000_000_000), "+2s");
    assert_eq!(format_offset(12), "+12ns");
}

#[test]
fn zipkin_shared_span_ids_become_parent_and_child_and_the_server_fits_inside_its_client() {
    let root = span(0, None, "frontend", 0, 9);
    // The client half and the server half share span ID 1 (Zipkin "shared": true); the server's clock runs 1.5 ms
    // behind, so it seems to start before the call that made it.
    let mut client = span(1, Some(0), "frontend", 2, 6);
    client.kind = SpanKind::CLIENT;
    let mut server = span(1, Some(0), "backend", 0, 3);
    server.kind = SpanKind::SERVER;
    server.start_unix_nanos += MS / 2;
    let query = span(2, Some(1), "backend", 1, 2);
    let mut spans = vec![root, client.clone(), server.clone(), query];

    assert_eq!(dedupe_span_ids(&mut spans), 1);
    let ids: std::collections::HashSet<SpanId> = spans.iter().map(|s| s.span_id).collect();
    assert_eq!(ids.len(), spans.len(), "span IDs are unique");
    let new_server = spans[2].clone();
    assert_ne!(new_server.span_id, server.span_id);
    assert_eq!(new_server.parent_id(), Some(client.span_id), "the server half is the client half's child");
    assert_eq!(spans[3].parent_id(), Some(new_server.span_id), "the server half's children follow it");
    assert_eq!(spans[1].span_id, client.span_id, "the client half keeps its ID");
    assert_eq!(dedupe_span_ids(&mut spans), 0, "idempotent");

    adjust_skew(&mut spans);
    let (c, s) = (&spans[1], &spans[2]);
    assert!(
        s.start_unix_nanos >= c.start_unix_nanos && s.end_unix_nanos <= c.end_unix_nanos,
        "the server half fits inside the client half: {}..{} in {}..{}",
        s.start_unix_nanos,
        s.end_unix_nanos,
        c.start_unix_nanos,
        c.end_unix_nanos
    );
}

#[test]
fn unique_span_ids_and_shared_ids_without_a_client_are_left_alone() {
    let mut spans = vec![span(0, None, "a", 0, 9), span(1, Some(0), "b", 1, 2)];
    let before = spans.clone();
    assert_eq!(dedupe_span_ids(&mut spans), 0);
    assert_eq!(spans, before);
    // Two SERVER spans sharing an ID with no CLIENT span: not Zipkin's shared RPC, left as stored.
    let mut a = span(1, None, "a", 0, 9);
    a.kind = SpanKind::SERVER;
    let mut twins = vec![a.clone(), a];
    assert_eq!(dedupe_span_ids(&mut twins), 0);
}
