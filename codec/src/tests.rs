use std::sync::Arc;

use super::*;
use crate::wire::put_uvarint;
use proptest::prelude::*;
use skein_model::{Event, KeyValue, Link, Resource, Scope, Span, SpanId, SpanKind, StatusCode, TraceId, Value};

fn value_strategy() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Empty),
        ".{0,40}".prop_map(|s| Value::Str(s.into())),
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
            trace_id, span_id: SpanId(span_id), parent_span_id: parent, trace_state, flags, name: name.into(),
            kind: SpanKind(kind), start_unix_nanos: start, end_unix_nanos: end, attributes,
            dropped_attributes_count: dropped.0,
            events: events.into_iter().map(|(t, name, attributes, d)| Event { time_unix_nanos: t, name: name.into(), attributes, dropped_attributes_count: d }).collect(),
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
        prop_assert_eq!(block[4], VERSION_2);
        let back = decode(&block).expect("decode");
        prop_assert_eq!(back, spans.clone());
        let v1 = encode_v1(&spans).expect("encode v1");
        prop_assert_eq!(v1[4], VERSION_1);
        prop_assert_eq!(decode(&v1).expect("decode v1"), spans.clone());
    }

    #[test]
    fn the_outline_is_the_trace_without_span_attributes(spans in trace_strategy()) {
        let without: Vec<Span> = spans.iter().cloned().map(|mut s| { s.attributes.clear(); s }).collect();
        for block in [encode(&spans).expect("encode"), encode_v1(&spans).expect("encode v1")] {
            prop_assert_eq!(crate::decode_outline_with(&block, &NoDict).expect("outline"), without.clone());
        }
    }

    #[test]
    fn round_trips_through_a_shared_dictionary(traces in proptest::collection::vec(trace_strategy(), 1..4)) {
        let mut dict = SharedDict::with_id(7);
        // Encode every trace twice, so values seen before are promoted into the dictionary on the second pass.
        let blocks: Vec<Vec<u8>> = traces.iter().chain(traces.iter())
            .map(|t| encode_with_dict(t, &mut dict).expect("encode")).collect();
        for (block, spans) in blocks.iter().zip(traces.iter().chain(traces.iter())) {
            prop_assert_eq!(&decode_with(block, &dict).expect("decode"), spans);
            if dictionary_of(block).expect("header").is_some() {
                prop_assert!(matches!(decode(block), Err(CodecError::MissingDictionary(7))));
            }
        }
    }

    #[test]
    fn a_pack_returns_each_trace_and_only_the_traces_asked_for(
        traces in proptest::collection::vec(trace_strategy(), 1..6),
        pick in any::<prop::sample::Index>(),
        shared in any::<bool>(),
    ) {
        let mut dict = SharedDict::with_id(5);
        let groups: Vec<&[Span]> = traces.iter().map(Vec::as_slice).collect();
        // A warm dictionary the second time round, so templates and frequent values come from it.
        let _ = encode_pack(&groups, shared.then_some(&mut dict)).expect("warm");
        let block = encode_pack(&groups, shared.then_some(&mut dict)).expect("encode");
        prop_assert_eq!(block[4], VERSION_3);
        let ids: Vec<TraceId> = traces.iter().map(|t| t[0].trace_id).collect();
        prop_assert_eq!(v3::trace_ids(&block).expect("trace table"), ids);
        prop_assert_eq!(decode_pack(&block, &dict, &|_| true, true).expect("decode"), traces.clone());
        prop_assert_eq!(decode_with(&block, &dict).expect("flat"), traces.concat());
        let k = pick.index(traces.len());
        let one = decode_pack(&block, &dict, &|i| i == k, true).expect("one trace");
        for (i, got) in one.iter().enumerate() {
            if i == k { prop_assert_eq!(got, &traces[k]); } else { prop_assert!(got.is_empty()); }
        }
        let outline = decode_pack(&block, &dict, &|i| i == k, false).expect("outline");
        let without: Vec<Span> = traces[k].iter().cloned().map(|mut s| { s.attributes.clear(); s }).collect();
        prop_assert_eq!(&outline[k], &without);
        for cut in [block.len() / 3, block.len() - 1] {
            prop_assert!(decode_pack(&block[..cut], &dict, &|_| true, true).is_err());
            let open = OpenPack::open(&block[..cut], &dict);
            prop_assert!(open.and_then(|mut o| (0..traces.len()).try_for_each(|i| o.trace(i, true).map(drop))).is_err());
        }
        // Opened once, any trace in any order, with or without attributes.
        let mut open = OpenPack::open(&block, &dict).expect("open");
        let table: Vec<(TraceId, usize)> = traces.iter().map(|t| (t[0].trace_id, t.len())).collect();
        prop_assert_eq!(open.traces(), table.as_slice());
        prop_assert_eq!(open.trace(k, false).expect("outline of one"), without);
        for i in (0..traces.len()).rev() {
            prop_assert_eq!(&open.trace(i, true).expect("trace of an open pack"), &traces[i]);
        }
        prop_assert!(open.trace(traces.len(), true).is_err());
        prop_assert!(open.heap_bytes() > 0);
        // Outlines and kept rows, from a freshly opened pack (so the trace is located by them, not by `trace`).
        let mut open = OpenPack::open(&block, &dict).expect("open");
        let outline = open.outline(k).expect("outline");
        prop_assert_eq!(outline.len(), traces[k].len());
        for (o, s) in outline.iter().zip(&traces[k]) {
            prop_assert_eq!(o.span_id, s.span_id);
            prop_assert_eq!((o.start_unix_nanos, o.end_unix_nanos), (s.start_unix_nanos, s.end_unix_nanos));
            prop_assert_eq!((o.name(), o.service_name(), o.template.kind), (s.name.as_str(), s.service_name(), s.kind));
            prop_assert_eq!(o.root, s.parent_id().is_none());
            prop_assert_eq!(o.status_code, s.status_code);
        }
        let median = traces[k][traces[k].len() / 2].start_unix_nanos;
        let kept = open.spans_where(k, true, &|_, start, _| start >= median).expect("kept rows");
        let expected: Vec<Span> = traces[k].iter().filter(|s| s.start_unix_nanos >= median).cloned().collect();
        prop_assert_eq!(kept, expected);
        prop_assert!(open.outline(traces.len()).is_err());
    }

    #[test]
    fn random_bytes_never_panic(version in 0u8..5, body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut block = MAGIC.to_vec();
        block.push(version);
        block.extend_from_slice(&body);
        let _ = decode(&block);
        let _ = decode_with(&block, &SharedDict::with_id(u64::from_le_bytes(body.get(..8).and_then(|b| b.try_into().ok()).unwrap_or_default())));
        let _ = decode(&body);
    }

    #[test]
    fn random_dictionary_entries_never_panic(entries in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16)) {
        let _ = decode_dictionary(entries.iter().map(Vec::as_slice));
    }

    #[test]
    fn corrupt_blocks_are_errors_not_panics(spans in trace_strategy(), cut in any::<prop::sample::Index>(), flip in any::<u8>()) {
        let mut dict = SharedDict::with_id(3);
        let _ = encode_with_dict(&spans, &mut dict).expect("warm");
        let block = encode_with_dict(&spans, &mut dict).expect("encode");
        // A truncated block is always an error. A flipped bit is an error or, where the format cannot tell (a value
        // inside the payload, a bit the decoder ignores), a decode — never a panic, which fails the property.
        let truncated = decode_with(&block[..cut.index(block.len())], &dict);
        prop_assert!(truncated.is_err(), "v2 block truncated at {} of {} decoded", cut.index(block.len()), block.len());
        let mut flipped = block.clone();
        let i = cut.index(flipped.len());
        flipped[i] ^= flip | 1;
        let _ = decode_with(&flipped, &dict);
        let block = encode_v1(&spans).expect("encode");
        // Truncation and bit flips inside the compressed payload and inside the raw body.
        let truncated = decode(&block[..cut.index(block.len())]);
        prop_assert!(truncated.is_err(), "v1 block truncated at {} of {} decoded", cut.index(block.len()), block.len());
        let mut flipped = block.clone();
        let i = cut.index(flipped.len());
        flipped[i] ^= flip | 1;
        let _ = decode(&flipped);
    }
}

#[test]
fn rejects_mixed_traces_and_foreign_data() {
    let r = skein_model::service_resource("a");
    let a = Span::minimal(TraceId([1; 16]), SpanId([1; 8]), "a", r.clone());
    let b = Span::minimal(TraceId([2; 16]), SpanId([1; 8]), "b", r);
    assert!(matches!(encode(&[a.clone(), b]), Err(CodecError::NotOneTrace(_))));
    assert!(matches!(encode(&[]), Err(CodecError::NotOneTrace(_))));
    assert!(matches!(decode(b"nope"), Err(CodecError::BadMagic)));
    let mut block = encode(&[a]).expect("encode");
    block[4] = 99;
    assert!(matches!(decode(&block), Err(CodecError::UnsupportedVersion(99))));
    let mut block =
        encode_v1(&[Span::minimal(TraceId([1; 16]), SpanId([1; 8]), "a", skein_model::service_resource("a"))])
            .expect("encode");
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

#[test]
fn dictionary_grows_and_only_new_entries_are_handed_out() {
    let r = skein_model::service_resource("checkout");
    let mut s = Span::minimal(TraceId([1; 16]), SpanId([1; 8]), "GET /cart", r);
    s.attributes.push(KeyValue::new("http.route", Value::Str("/cart".into())));
    let mut dict = SharedDict::with_id(9);
    let first = encode_with_dict(std::slice::from_ref(&s), &mut dict).expect("encode");
    // Service, operation, keys and the new template's default values are shared at once.
    assert!(dict.strings().any(|e| e == "checkout"));
    assert!(dict.strings().any(|e| e == "GET /cart"));
    assert!(dict.strings().any(|e| e == "/cart"));
    // The resource and the span template enter whole; the template carries the first span's values as defaults.
    let entries = decode_dictionary(dict.raw_entries().iter().map(|e| &e[..])).expect("dictionary");
    assert!(entries.iter().any(|e| matches!(e, DictEntry::Resource(r) if *r == s.resource)));
    assert!(entries.iter().any(|e| matches!(e, DictEntry::Template(t)
        if t.name == "GET /cart" && t.defaults == vec![Some(Value::Str("/cart".into()))])));
    let (from, added) = dict.take_unpersisted();
    assert_eq!((from as usize, added.len()), (0, dict.len()));
    // The same span again adds nothing and its block is smaller; a value that differs from the default is kept
    // in the block the first time and shared once seen again ("frequent values").
    let second = encode_with_dict(std::slice::from_ref(&s), &mut dict).expect("encode");
    assert!(dict.take_unpersisted().1.is_empty());
    assert!(second.len() <= first.len());
    let mut other = s.clone();
    other.attributes[0].value = Value::Str("/cart/items".into());
    let third = encode_with_dict(std::slice::from_ref(&other), &mut dict).expect("encode");
    assert!(dict.take_unpersisted().1.is_empty());
    let fourth = encode_with_dict(std::slice::from_ref(&other), &mut dict).expect("encode");
    let (from, added) = dict.take_unpersisted();
    assert_eq!(added.iter().map(|e| &e[..]).collect::<Vec<_>>(), vec![&b"\0/cart/items"[..]]);
    assert_eq!(from as usize, dict.len() - 1);
    assert_eq!(dictionary_of(&fourth).expect("header"), Some((9, dict.len())));
    for (block, span) in [(&first, &s), (&second, &s), (&third, &other), (&fourth, &other)] {
        assert_eq!(decode_with(block, &dict).expect("decode"), vec![span.clone()]);
    }
    // A reader whose copy is older than the block must not guess.
    let mut stale = SharedDict::with_id(9);
    let _ = encode_with_dict(
        std::slice::from_ref(&Span::minimal(TraceId([2; 16]), SpanId([2; 8]), "x", skein_model::service_resource("y"))),
        &mut stale,
    );
    assert!(matches!(decode_with(&second, &stale), Err(CodecError::MissingDictionary(9))));
}

#[test]
fn template_defaults_compare_exact_bits() {
    // -0.0 == 0.0 and NaN != NaN under PartialEq; a default must only stand in for a bit-identical value.
    let r = skein_model::service_resource("svc");
    let mut spans = Vec::new();
    for (i, d) in [0.0, -0.0, f64::NAN, 0.0].into_iter().enumerate() {
        let mut s = Span::minimal(TraceId([4; 16]), SpanId([i as u8 + 1; 8]), "op", r.clone());
        s.attributes.push(KeyValue::new("ratio", Value::Double(d)));
        spans.push(s);
    }
    let mut dict = SharedDict::with_id(5);
    for block in [encode_with_dict(&spans, &mut dict).expect("encode"), encode(&spans).expect("encode")] {
        let back = decode_with(&block, &dict).expect("decode");
        let bits = |s: &[Span]| -> Vec<u64> {
            s.iter()
                .map(|s| match s.attributes[0].value {
                    Value::Double(d) => d.to_bits(),
                    _ => 0,
                })
                .collect()
        };
        assert_eq!(bits(&back), bits(&spans));
    }
}
