//! Query-string parsing with Jaeger's exact semantics (REFERENCE §1, Jaeger `query_parser.go`).

use skein_config::parse_go_duration;
use skein_storage::TraceQuery;

/// Default search depth (`defaultQueryLimit`).
pub const DEFAULT_LIMIT: usize = 100;
/// Largest accepted `limit`; larger values are clamped.
pub const MAX_LIMIT: usize = 10_000;
/// Default search window when `start` is absent (`defaultTraceQueryLookbackDuration`), ns.
pub const DEFAULT_LOOKBACK_NANOS: u64 = 48 * 3600 * 1_000_000_000;
/// Default dependencies lookback (`defaultDependencyLookbackDuration`), ms.
pub const DEFAULT_DEPENDENCY_LOOKBACK_MS: u64 = 24 * 3600 * 1000;

/// The query string as ordered key/value pairs (repeated keys allowed).
pub type Pairs = Vec<(String, String)>;

/// Parses a raw query string.
pub fn pairs(raw: Option<&str>) -> Pairs {
    form_urlencoded::parse(raw.unwrap_or("").as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

/// The last value of `key`, if present and non-empty.
pub fn get<'a>(p: &'a Pairs, key: &str) -> Option<&'a str> {
    p.iter().rev().find(|(k, v)| k == key && !v.is_empty()).map(|(_, v)| v.as_str())
}

/// Every non-empty value of `key`.
pub fn all<'a>(p: &'a Pairs, key: &str) -> Vec<&'a str> {
    p.iter().filter(|(k, v)| k == key && !v.is_empty()).map(|(_, v)| v.as_str()).collect()
}

/// A requested result count as the search uses it: 0 (or none) means [`DEFAULT_LIMIT`], more than [`MAX_LIMIT`]
/// is clamped.
pub fn limit(requested: usize) -> usize {
    if requested == 0 { DEFAULT_LIMIT } else { requested.min(MAX_LIMIT) }
}

/// Tags from a JSON object (`{"http.status_code": "500"}`): string values as they are, others in their JSON form.
///
/// # Errors
/// The parser's message when `text` is not a JSON object.
pub fn json_tags(text: &str) -> Result<Vec<(String, String)>, serde_json::Error> {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)?;
    Ok(map
        .into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect())
}

fn parse_u64(p: &Pairs, key: &str) -> Result<Option<u64>, String> {
    get(p, key)
        .map(|v| {
            v.parse::<u64>().map_err(|_| format!("unable to parse param '{key}': {v:?} is not a non-negative integer"))
        })
        .transpose()
}

/// Parses `/api/traces` search parameters into a [`TraceQuery`] (service required).
///
/// # Errors
/// A message for the HTTP 400 answer: missing service, unparsable number, duration or tag, or
/// `maxDuration < minDuration`.
pub fn trace_query(p: &Pairs, now_unix_nanos: u64) -> Result<TraceQuery, String> {
    let service = get(p, "service").ok_or("parameter 'service' is required")?.to_string();
    let operation = get(p, "operation").map(str::to_string);
    let end_nanos = parse_u64(p, "end")?.map(|us| us.saturating_mul(1000)).unwrap_or(now_unix_nanos);
    let start_nanos = parse_u64(p, "start")?
        .map(|us| us.saturating_mul(1000))
        .unwrap_or_else(|| end_nanos.saturating_sub(DEFAULT_LOOKBACK_NANOS));
    let limit = limit(parse_u64(p, "limit")?.map_or(0, |l| l as usize));
    let min = get(p, "minDuration").map(parse_go_duration).transpose()?;
    let max = get(p, "maxDuration").map(parse_go_duration).transpose()?;
    if let (Some(min), Some(max)) = (min, max)
        && max < min
    {
        return Err("'maxDuration' should be greater than 'minDuration'".into());
    }
    let mut tags = Vec::new();
    for t in all(p, "tag") {
        let (k, v) =
            t.split_once(':').ok_or_else(|| format!("malformed 'tag' parameter {t:?}: expected 'key:value'"))?;
        tags.push((k.to_string(), v.to_string()));
    }
    for t in all(p, "tags") {
        tags.extend(
            json_tags(t).map_err(|e| format!("malformed 'tags' parameter: expected a JSON object of strings: {e}"))?,
        );
    }
    Ok(TraceQuery {
        service,
        operation,
        tags,
        start_min_unix_nanos: start_nanos,
        start_max_unix_nanos: end_nanos,
        duration_min_nanos: min,
        duration_max_nanos: max,
        limit,
    })
}

/// The first non-empty value among `keys` (api_v3's camelCase names and their snake_case aliases).
fn get_any<'a>(p: &'a Pairs, keys: &[&str]) -> Option<&'a str> {
    keys.iter().find_map(|k| get(p, k))
}

/// Parses an RFC 3339 timestamp (nanosecond precision, any offset) into ns since the Unix epoch.
///
/// # Errors
/// A message naming `key` and the bad value, or a time before 1970.
pub fn parse_rfc3339(key: &str, value: &str) -> Result<u64, String> {
    let t = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("unable to parse param '{key}': {value:?} is not an RFC 3339 time ({e})"))?;
    u64::try_from(t.unix_timestamp_nanos()).map_err(|_| format!("'{key}': {value:?} is before 1970"))
}

/// Parses api_v3's `GET /api/v3/traces` parameters (REFERENCE §2; camelCase canonical, snake_case accepted):
/// `query.serviceName` (required), `query.operationName`, `query.attributes` (a JSON object of values),
/// `query.startTimeMin` and `query.startTimeMax` (RFC 3339, required, as Jaeger's gateway requires them),
/// `query.durationMin`/`query.durationMax` (Go durations), `query.searchDepth` (alias `query.num_traces`;
/// the result limit). `query.rawTraces` is accepted; traces are never adjusted here.
///
/// # Errors
/// A message for the HTTP 400 answer, naming the parameter.
pub fn v3_trace_query(p: &Pairs) -> Result<TraceQuery, String> {
    let service = get_any(p, &["query.serviceName", "query.service_name"])
        .ok_or("parameter 'query.serviceName' is required")?
        .to_string();
    let operation = get_any(p, &["query.operationName", "query.operation_name"]).map(str::to_string);
    let (min_key, max_key) = ("query.startTimeMin", "query.startTimeMax");
    let start_min = get_any(p, &[min_key, "query.start_time_min"]);
    let start_max = get_any(p, &[max_key, "query.start_time_max"]);
    let (Some(start_min), Some(start_max)) = (start_min, start_max) else {
        return Err(format!(
            "parameters '{min_key}' and '{max_key}' are required (RFC 3339, e.g. 2024-05-01T12:00:00Z)"
        ));
    };
    let (start_min, start_max) = (parse_rfc3339(min_key, start_min)?, parse_rfc3339(max_key, start_max)?);
    if start_max < start_min {
        return Err(format!("'{max_key}' must not be before '{min_key}'"));
    }
    let min = get_any(p, &["query.durationMin", "query.duration_min"]).map(parse_go_duration).transpose()?;
    let max = get_any(p, &["query.durationMax", "query.duration_max"]).map(parse_go_duration).transpose()?;
    if let (Some(min), Some(max)) = (min, max)
        && max < min
    {
        return Err("'query.durationMax' must not be less than 'query.durationMin'".into());
    }
    let tags = match get_any(p, &["query.attributes"]) {
        Some(attrs) => json_tags(attrs).map_err(|e| {
            format!(
                "malformed 'query.attributes': expected a JSON object such as {{\"http.status_code\":\"500\"}}: {e}"
            )
        })?,
        None => Vec::new(),
    };
    let depth_keys = ["query.searchDepth", "query.search_depth", "query.num_traces"];
    let limit = limit(match get_any(p, &depth_keys) {
        Some(v) => v.parse::<usize>().map_err(|_| format!("unable to parse param 'query.searchDepth': {v:?}"))?,
        None => 0,
    });
    Ok(TraceQuery {
        service,
        operation,
        tags,
        start_min_unix_nanos: start_min,
        start_max_unix_nanos: start_max,
        duration_min_nanos: min,
        duration_max_nanos: max,
        limit,
    })
}

/// Parses `/api/dependencies` parameters into `(end_ns, lookback_ns)`.
///
/// # Errors
/// A message when `endTs` or `lookback` is not a non-negative integer of milliseconds.
pub fn dependencies(p: &Pairs, now_unix_nanos: u64) -> Result<(u64, u64), String> {
    let end_ms = parse_u64(p, "endTs")?.unwrap_or(now_unix_nanos / 1_000_000);
    let lookback_ms = parse_u64(p, "lookback")?.unwrap_or(DEFAULT_DEPENDENCY_LOOKBACK_MS);
    Ok((end_ms.saturating_mul(1_000_000), lookback_ms.saturating_mul(1_000_000)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_parameters_like_jaeger() {
        let raw = "service=frontend&operation=HTTP+GET&tag=http.url:%2Fa%3Ab&tags=%7B%22error%22%3A%22true%22%7D\
                   &minDuration=1ms&maxDuration=2s&start=1000&end=2000&limit=5&lookback=1h";
        let q = trace_query(&pairs(Some(raw)), 0).expect("valid");
        assert_eq!(q.service, "frontend");
        assert_eq!(q.operation.as_deref(), Some("HTTP GET"));
        assert_eq!(q.tags, vec![("http.url".into(), "/a:b".into()), ("error".into(), "true".into())]);
        assert_eq!((q.start_min_unix_nanos, q.start_max_unix_nanos), (1_000_000, 2_000_000));
        assert_eq!((q.duration_min_nanos, q.duration_max_nanos), (Some(1_000_000), Some(2_000_000_000)));
        assert_eq!(q.limit, 5);
    }

    #[test]
    fn search_defaults_and_errors() {
        let now = 100 * DEFAULT_LOOKBACK_NANOS;
        let q = trace_query(&pairs(Some("service=a")), now).expect("valid");
        assert_eq!(q.start_max_unix_nanos, now);
        assert_eq!(q.start_min_unix_nanos, now - DEFAULT_LOOKBACK_NANOS);
        assert_eq!(q.limit, DEFAULT_LIMIT);
        assert_eq!(
            trace_query(&pairs(Some("operation=x")), now).expect_err("service is required"),
            "parameter 'service' is required"
        );
        assert!(trace_query(&pairs(Some("service=a&minDuration=2s&maxDuration=1s")), now).is_err());
        assert!(trace_query(&pairs(Some("service=a&start=yesterday")), now).is_err());
        assert!(trace_query(&pairs(Some("service=a&tag=novalue")), now).is_err());
        assert!(trace_query(&pairs(Some("service=a&tags=%5B1%5D")), now).is_err());
    }

    #[test]
    fn api_v3_search_parameters_in_both_spellings() {
        let raw = "query.serviceName=frontend&query.operationName=HTTP+GET&query.attributes=%7B%22http.status_code%22%3A500%7D\
                   &query.startTimeMin=2024-01-02T03:04:05.123456789Z&query.startTimeMax=2024-01-02T05:04:05%2B01:00\
                   &query.durationMin=1ms&query.durationMax=2s&query.searchDepth=7";
        let q = v3_trace_query(&pairs(Some(raw))).expect("valid");
        assert_eq!((q.service.as_str(), q.operation.as_deref()), ("frontend", Some("HTTP GET")));
        assert_eq!(q.tags, vec![("http.status_code".into(), "500".into())]);
        assert_eq!(q.start_min_unix_nanos, 1_704_164_645_123_456_789);
        assert_eq!(q.start_max_unix_nanos, 1_704_168_245_000_000_000, "an offset is honoured");
        assert_eq!((q.duration_min_nanos, q.duration_max_nanos, q.limit), (Some(1_000_000), Some(2_000_000_000), 7));
        let snake = "query.service_name=a&query.start_time_min=2024-01-01T00:00:00Z&query.start_time_max=2024-01-02T00:00:00Z&query.num_traces=3";
        let q = v3_trace_query(&pairs(Some(snake))).expect("snake_case aliases");
        assert_eq!((q.service.as_str(), q.limit), ("a", 3));
    }

    #[test]
    fn api_v3_search_errors_name_the_parameter() {
        let window = "&query.startTimeMin=2024-01-01T00:00:00Z&query.startTimeMax=2024-01-02T00:00:00Z";
        let err = |raw: &str| v3_trace_query(&pairs(Some(raw))).expect_err(raw);
        assert!(err(&format!("query.operationName=x{window}")).contains("query.serviceName"));
        assert!(err("query.serviceName=a").contains("query.startTimeMin"));
        assert!(
            err("query.serviceName=a&query.startTimeMin=yesterday&query.startTimeMax=2024-01-02T00:00:00Z")
                .contains("RFC 3339")
        );
        assert!(err(&format!("query.serviceName=a{window}&query.durationMin=fast")).contains("duration"));
        assert!(err(&format!("query.serviceName=a{window}&query.attributes=%5B%5D")).contains("query.attributes"));
        assert!(err(&format!("query.serviceName=a{window}&query.searchDepth=-1")).contains("searchDepth"));
        let backwards =
            "query.serviceName=a&query.startTimeMin=2024-01-02T00:00:00Z&query.startTimeMax=2024-01-01T00:00:00Z";
        assert!(err(backwards).contains("before"));
    }

    #[test]
    fn dependency_parameters_are_milliseconds() {
        assert_eq!(dependencies(&pairs(Some("endTs=5000&lookback=1000")), 0), Ok((5_000_000_000, 1_000_000_000)));
        let (end, lookback) = dependencies(&pairs(None), 7_000_000_000).expect("defaults");
        assert_eq!((end, lookback), (7_000_000_000, DEFAULT_DEPENDENCY_LOOKBACK_MS * 1_000_000));
    }
}
