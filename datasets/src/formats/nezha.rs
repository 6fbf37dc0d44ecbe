//! The Nezha dataset's CSV (`TraceID,SpanID,ParentID,PodName,OperationName,StartTimeUnixNano,EndTimeUnixNano,
//! Duration`; `ParentID` is `root` for root spans).

use skein_proto::otlp_trace as pt;

use skein_model::build::{group, span_id_bytes, str_kv, trace_id_bytes};

/// The service of a Kubernetes pod name: the name without its two trailing `-<suffix>` parts (ReplicaSet hash
/// and pod hash); names with fewer parts are kept whole.
pub fn service_of_pod(pod: &str) -> &str {
    let mut end = pod.len();
    for _ in 0..2 {
        match pod[..end].rfind('-') {
            Some(i) if i > 0 => end = i,
            _ => return pod,
        }
    }
    &pod[..end]
}

pub(super) fn read(text: &str) -> Result<Vec<pt::ResourceSpans>, String> {
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(text.as_bytes());
    let headers = reader.headers().map_err(|e| format!("CSV header: {e}"))?.clone();
    let col = |name: &str| headers.iter().position(|h| h == name).ok_or(format!("CSV has no {name} column"));
    let (c_trace, c_span, c_parent, c_pod, c_op, c_start, c_end) = (
        col("TraceID")?,
        col("SpanID")?,
        col("ParentID")?,
        col("PodName")?,
        col("OperationName")?,
        col("StartTimeUnixNano")?,
        col("EndTimeUnixNano")?,
    );
    let mut items = Vec::new();
    for (i, row) in reader.records().enumerate() {
        let row = row.map_err(|e| format!("CSV row {}: {e}", i + 2))?;
        let field = |c: usize| row.get(c).unwrap_or("");
        let line = i + 2;
        let parent = match field(c_parent) {
            "" | "root" => Vec::new(),
            p => span_id_bytes(p, "ParentID").map_err(|e| format!("line {line}: {e}"))?,
        };
        let pod = field(c_pod);
        let span = pt::Span {
            trace_id: trace_id_bytes(field(c_trace), "TraceID").map_err(|e| format!("line {line}: {e}"))?,
            span_id: span_id_bytes(field(c_span), "SpanID").map_err(|e| format!("line {line}: {e}"))?,
            parent_span_id: parent,
            name: field(c_op).to_string(),
            start_time_unix_nano: field(c_start).parse().map_err(|_| format!("line {line}: bad StartTimeUnixNano"))?,
            end_time_unix_nano: field(c_end).parse().map_err(|_| format!("line {line}: bad EndTimeUnixNano"))?,
            ..Default::default()
        };
        items.push((vec![str_kv("service.name", service_of_pod(pod)), str_kv("k8s.pod.name", pod)], None, span));
    }
    Ok(group(items))
}
