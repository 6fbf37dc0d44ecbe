use super::*;
use crate::{Dictionaries, prepare_chunk};
use skein_model::{SpanId, StatusCode, service_resource};

fn chunk(id: u8, spans_per_service: usize, error: bool, dicts: &Dictionaries) -> PreparedChunk {
    let t = TraceId([id; 16]);
    let mut spans = Vec::new();
    for (k, service) in ["frontend", "cart"].iter().enumerate() {
        for i in 0..spans_per_service {
            let mut s = Span::minimal(t, SpanId([(k * 100 + i + 1) as u8; 8]), "op", service_resource(service));
            s.start_unix_nanos = 1_700_000_000_000_000_000 + i as u64;
            s.end_unix_nanos = s.start_unix_nanos + 10;
            if k == 1 {
                s.parent_span_id = vec![1; 8];
            }
            if error {
                s.status_code = StatusCode::ERROR;
            }
            spans.push(s);
        }
    }
    prepare_chunk(
        &spans,
        skein_model::dependencies::edges(&spans, &Default::default()),
        Some(dicts),
        error,
        crate::StoreLayout::PerTrace,
    )
    .expect("prepare")
}

#[test]
fn rows_per_chunk_are_one_trace_row_plus_one_index_row_per_service() {
    let dicts = Dictionaries::new(BUCKET_SECS);
    let mut cache = WriteCache::default();
    let day = Duration::from_secs(86_400);
    let first = WriteBatch { chunks: vec![chunk(1, 10, false, &dicts)], packs: Vec::new() };
    let rows = plan_rows(&first, day, 2 * day, &mut cache);
    let count = |rows: &[Row], f: fn(&Row) -> bool| rows.iter().filter(|r| f(r)).count();
    assert_eq!(count(&rows, |r| matches!(r, Row::Trace { .. })), 1);
    assert_eq!(count(&rows, |r| matches!(r, Row::Index { .. })), 2);
    assert_eq!(count(&rows, |r| matches!(r, Row::Operation { .. })), 2);
    assert_eq!(count(&rows, |r| matches!(r, Row::ServiceBucket { .. })), 2);
    assert_eq!(count(&rows, |r| matches!(r, Row::Dependency { .. })), 1);
    assert!(count(&rows, |r| matches!(r, Row::Dictionary { .. })) > 0);
    assert!(matches!(rows[0], Row::Dictionary { .. }), "dictionary rows come first");

    // The next batch repeats nothing the write cache and dictionary already hold.
    let second = WriteBatch { chunks: vec![chunk(2, 10, false, &dicts)], packs: Vec::new() };
    let rows = plan_rows(&second, day, 2 * day, &mut cache);
    assert_eq!(
        count(&rows, |r| matches!(r, Row::Operation { .. } | Row::ServiceBucket { .. } | Row::Dictionary { .. })),
        0
    );
    assert_eq!(rows.len(), 4, "trace + 2 index + 1 dependency row for 20 spans: {rows:?}");
    // Important traces (their own dictionary tier) get the long TTL; ordinary ones the short.
    let third = WriteBatch { chunks: vec![chunk(3, 10, true, &dicts)], packs: Vec::new() };
    for (rows, want) in [(rows, 86_400), (plan_rows(&third, day, 2 * day, &mut cache), 2 * 86_400)] {
        assert!(rows.iter().all(|r| match r {
            Row::Trace { ttl, .. } | Row::Index { ttl, .. } => *ttl == want,
            _ => true,
        }));
    }
}

#[test]
fn retried_chunks_keep_their_row_keys() {
    let dicts = Dictionaries::new(BUCKET_SECS);
    let c = chunk(3, 2, false, &dicts);
    assert_eq!(chunk_id(&c), chunk_id(&c.clone()));
    let other = chunk(4, 2, false, &dicts);
    assert_ne!(chunk_id(&c), chunk_id(&other));
}

#[test]
fn consistency_names_parse() {
    assert_eq!(parse_consistency("local_quorum"), Ok(Consistency::LocalQuorum));
    assert_eq!(parse_consistency("ONE"), Ok(Consistency::One));
    assert!(parse_consistency("most").is_err());
}

#[test]
fn a_batch_writes_one_index_page_per_service_and_the_pages_hold_every_entry() {
    let dicts = Dictionaries::new(BUCKET_SECS);
    let mut cache = WriteCache::default();
    let day = Duration::from_secs(86_400);
    let batch = WriteBatch { chunks: (1..=40).map(|id| chunk(id, 3, false, &dicts)).collect(), packs: Vec::new() };
    let rows = plan_rows(&batch, day, 2 * day, &mut cache);
    let pages: Vec<(&String, Vec<PageEntry>)> = rows
        .iter()
        .filter_map(|r| match r {
            Row::Index { service, page, page_end, .. } => {
                let entries = decode_page(page).expect("page");
                let newest = entries.iter().map(|e| e.start_unix_nanos).max().unwrap_or(0);
                assert_eq!(*page_end, newest as i64);
                Some((service, entries))
            }
            _ => None,
        })
        .collect();
    // 40 traces × 2 services: 2 page rows instead of 80 index rows.
    assert_eq!(pages.len(), 2);
    for (service, entries) in &pages {
        assert_eq!(entries.len(), 40, "{service}");
        let traces: HashSet<TraceId> = entries.iter().map(|e| e.trace_id).collect();
        assert_eq!(traces.len(), 40);
    }
    let traces = rows.iter().filter(|r| matches!(r, Row::Trace { .. })).count();
    assert_eq!(traces, 40);
    // Retrying the same batch produces the same page keys (idempotent upserts).
    let again = plan_rows(&batch, day, 2 * day, &mut WriteCache::default());
    let keys = |rows: &[Row]| -> Vec<i64> {
        rows.iter()
            .filter_map(|r| match r {
                Row::Index { page_id, .. } => Some(*page_id),
                _ => None,
            })
            .collect()
    };
    assert_eq!(keys(&rows), keys(&again));
}
