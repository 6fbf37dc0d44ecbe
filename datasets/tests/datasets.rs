//! Every span of every shipped dataset (../shared/trace-data) decodes from OTLP protobuf straight into the model as
//! prost + `convert` decode it and round-trips the trace-block codec, and OTLP → model → OTLP is lossless on the
//! OTLP captures.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prost::Message as _;
use skein_datasets::formats;
use skein_model::otlp::{Limits, convert, decode_export, to_otlp};
use skein_model::{Span, TraceId};
use skein_proto::otlp_collector_trace::ExportTraceServiceRequest;

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/trace-data")
}

fn dataset_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("trace-data is readable") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            dataset_files(&path, out);
        } else {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let is_trace_data = (name.ends_with(".csv") && name.contains("trace"))
                || (name.ends_with(".json")
                    && !name.contains("manifest")
                    && !name.contains("mappings")
                    && !name.contains("jaeger-service")
                    && !name.starts_with("root_cause")
                    && !name.contains("fault_list")
                    && path.parent().is_some_and(|p| !p.ends_with("jaeger-ui-dependency-graph")));
            if is_trace_data {
                out.push(path);
            }
        }
    }
}

#[test]
fn every_dataset_decodes_directly_and_round_trips_the_codec() {
    let mut files = Vec::new();
    dataset_files(&data_dir(), &mut files);
    files.sort();
    assert!(files.len() >= 60, "expected the shipped datasets, found {}", files.len());
    let mut total = 0usize;
    let processes = skein_model::otlp::Processes::new(1 << 20);
    for file in &files {
        let rs = formats::read_file(file, None).unwrap_or_else(|e| panic!("{e}"));
        let bytes = ExportTraceServiceRequest { resource_spans: rs.clone() }.encode_to_vec();
        let direct =
            decode_export(&bytes, &Limits::default(), &processes).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let converted = convert(rs, &Limits::default());
        assert!(direct.spans == converted.spans, "{}: decode_export differs from prost + convert", file.display());
        assert_eq!(converted.rejected_count(), 0, "{}: {}", file.display(), converted.rejection_message());
        let mut by_trace: BTreeMap<TraceId, Vec<Span>> = BTreeMap::new();
        for s in converted.spans {
            by_trace.entry(s.trace_id).or_default().push(s);
        }
        // One shared dictionary per file, as the store keeps one per partition.
        let mut dict = skein_codec::SharedDict::with_id(1);
        for spans in by_trace.values() {
            let v2 = skein_codec::encode_with_dict(spans, &mut dict).expect("encode v2");
            let v1 = skein_codec::encode_v1(spans).expect("encode v1");
            for block in [&v2, &v1] {
                let back = skein_codec::decode_with(block, &dict).expect("decode");
                assert_eq!(
                    &back,
                    spans,
                    "{}: trace {} differs after the round trip",
                    file.display(),
                    spans[0].trace_id
                );
            }
            total += spans.len();
        }
    }
    assert!(total > 268_000, "all dataset spans round-tripped: {total}");
}

#[test]
fn otlp_json_captures_are_lossless_through_the_model() {
    let dir = data_dir().join("jaeger-otlp-hotrod-oteldemo");
    for name in ["n_plus_one_full_serial.json", "error_timeout_masked.json", "apiv3_getTrace_hotrod.json"] {
        let original = formats::read_file(&dir.join(name), None).expect("read");
        let converted = convert(original.clone(), &Limits::default());
        let back = to_otlp(&converted.spans);
        let flat = |rs: &[skein_proto::otlp_trace::ResourceSpans]| {
            let mut v: Vec<_> = rs
                .iter()
                .flat_map(|r| {
                    r.scope_spans.iter().flat_map(move |s| {
                        s.spans.iter().map(move |sp| (r.resource.clone(), s.scope.clone(), sp.clone()))
                    })
                })
                .map(|(r, sc, mut sp)| {
                    // proto3: an absent message and an empty one mean the same; compare semantically.
                    let sc = sc.unwrap_or_default();
                    if sp.status.as_ref().is_some_and(|s| s.code == 0 && s.message.is_empty()) {
                        sp.status = None;
                    }
                    format!("{r:?}|{sc:?}|{sp:?}")
                })
                .collect();
            v.sort();
            v
        };
        let (got, want) = (flat(&back), flat(&original));
        assert_eq!(got.len(), want.len(), "{name}: span count");
        if let Some((g, w)) = got.iter().zip(&want).find(|(g, w)| g != w) {
            panic!("{name}: first difference\n got: {g}\nwant: {w}");
        }
    }
}
