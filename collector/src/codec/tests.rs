use super::*;
use crate::model::{Event, KeyValue, Link, Resource, Scope, Span, SpanId, SpanKind, StatusCode, TraceId, Value};
use proptest::prelude::*;

fn value_strategy() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Empty),
        ".{0,12}".prop_map(Value::Str),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<f64>().prop_filter("NaN never equals itself", |d| !d.is_nan()).prop_map(Value::Double),
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(Value::Bytes),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec(("[a-z.]{1,6}", inner).prop_map(|(k, v)| KeyValue::new(k, v)), 0..4)
                .prop_map(Value::KvList),
        ]
    })
}

fn attrs_strategy() -> impl Strategy<Value = Vec<KeyValue>> {
    proptest::collection::vec(("[a-z.]{1,8}", value_strategy()).prop_map(|(k, v)| KeyValue::new(k, v)), 0..5)
}

fn resource_strategy() -> impl Strategy<Value = Arc<Resource>> {
    (attrs_strategy(), any::<u32>(), ".{0,5}").prop_map(|(attributes, dropped_attributes_count, schema_url)| {
        Arc::new(Resource { attributes, dropped_attributes_count, schema_url })
    })
}

fn scope_strategy() -> impl Strategy<Value = Arc<Scope>> {
    (".{0,6}", ".{0,4}", attrs_strategy(), any::<u32>(), ".{0,5}").prop_map(
        |(name, version, attributes, dropped_attributes_count, schema_url)| {
            Arc::new(Scope { name, version, attributes, dropped_attributes_count, schema_url })
        },
    )
}

prop_compose! {
    fn span_strategy(trace_id: TraceId)(
        span_id in any::<[u8; 8]>(),
        parent in prop_oneof![Just(Vec::new()), proptest::collection::vec(any::<u8>(), 0..10)],
        trace_state in ".{0,8}",
        flags in any::<u32>(),
        name in ".{1,10}",
        kind in -2i32..8,
        start in any::<u64>(),
        end in any::<u64>(),
        attributes in attrs_strategy(),
        dropped in any::<(u32, u32, u32)>(),
        events in proptest::collection::vec((any::<u64>(), ".{0,6}", attrs_strategy(), any::<u32>()), 0..3),
        links in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..17),
            proptest::collection::vec(any::<u8>(), 0..9), ".{0,4}", attrs_strategy(), any::<u32>(), any::<u32>()), 0..3),
        status in (any::<i32>(), ".{0,8}"),
        warnings in proptest::collection::vec(".{0,10}", 0..2),
        resource in resource_strategy(),
        scope in scope_strategy(),
    ) -> Span {
        Span {
            trace_id, span_id: SpanId(span_id), parent_span_id: parent, trace_state, flags, name,
            kind: SpanKind(kind), start_unix_nanos: start, end_unix_nanos: end, attributes,
            dropped_attributes_count: dropped.0,
            events: events.into_iter().map(|(t, name, attributes, d)| Event { time_unix_nanos: t, name, attributes, dropped_attributes_count: d }).collect(),
            dropped_events_count: dropped.1,
            links: links.into_iter().map(|(trace_id, span_id, trace_state, attributes, d, flags)| Link { trace_id, span_id, trace_state, attributes, dropped_attributes_count: d, flags }).collect(),
            dropped_links_count: dropped.2,
            status_code: StatusCode(status.0), status_message: status.1,
            resource, scope, warnings,
        }
    }
}

fn trace_strategy() -> impl Strategy<Value = Vec<Span>> {
    any::<[u8; 16]>().prop_flat_map(|t| {
        proptest::collection::vec(span_strategy(TraceId(t)), 1..6).prop_map(|mut spans| {
            // Make some parents point inside the block, as real traces do.
            let ids: Vec<SpanId> = spans.iter().map(|s| s.span_id).collect();
            for (i, s) in spans.iter_mut().enumerate() {
                if i > 0 && i % 2 == 0 {
                    s.parent_span_id = ids[i / 2].0.to_vec();
                }
            }
            spans
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn every_field_round_trips(spans in trace_strategy()) {
        let block = encode(&spans).expect("encode");
        let back = decode(&block).expect("decode");
        prop_assert_eq!(back, spans);
    }

    #[test]
    fn corrupt_blocks_are_errors_not_panics(spans in trace_strategy(), cut in any::<prop::sample::Index>(), flip in any::<u8>()) {
        let block = encode(&spans).expect("encode");
        // Truncation and bit flips inside the compressed payload and inside the raw body.
        let _ = decode(&block[..cut.index(block.len())]);
        let mut flipped = block.clone();
        let i = cut.index(flipped.len());
        flipped[i] ^= flip | 1;
        let _ = decode(&flipped);
    }
}

#[test]
fn rejects_mixed_traces_and_foreign_data() {
    let r = crate::model::service_resource("a");
    let a = Span::minimal(TraceId([1; 16]), SpanId([1; 8]), "a", r.clone());
    let b = Span::minimal(TraceId([2; 16]), SpanId([1; 8]), "b", r);
    assert!(matches!(encode(&[a.clone(), b]), Err(CodecError::NotOneTrace(_))));
    assert!(matches!(encode(&[]), Err(CodecError::NotOneTrace(_))));
    assert!(matches!(decode(b"nope"), Err(CodecError::BadMagic)));
    let mut block = encode(&[a]).expect("encode");
    block[4] = 99;
    assert!(matches!(decode(&block), Err(CodecError::UnsupportedVersion(99))));
}

#[test]
fn body_bytes_that_lie_about_counts_are_rejected() {
    // A body claiming 2^60 strings must not allocate.
    let mut body = vec![1u8; 16];
    put_uvarint(&mut body, 0);
    put_uvarint(&mut body, 1 << 60);
    let mut block = MAGIC.to_vec();
    block.push(VERSION_1);
    block.extend_from_slice(&zstd::bulk::compress(&body, 1).expect("zstd"));
    assert!(matches!(decode(&block), Err(CodecError::Corrupt(_))));
}
