//! Trace analysis done by the query service, so every client gets it (Jaeger does these in its UI only):
//! clock-skew adjustment, missing parents with placeholders, the critical path and a summary.
//!
//! Everything works on span indices and explicit stacks, never recursion: a 10,000-deep trace is as safe as a
//! 10,000-wide one. The span tree follows parent span IDs only (OTLP `parent_span_id`, Jaeger `CHILD_OF`); links
//! (`FOLLOWS_FROM`) are not part of it.
//!
//! - **Clock skew** (after Jaeger's `adjuster/clockskew.go`, but with the smallest shift instead of centring): a
//!   child from another service that starts before its parent, or ends after it, is shifted by the smallest offset
//!   that puts it inside the parent (a child longer than its parent only no longer starts before it); its subtree
//!   moves with it. Spans of the same service share a clock and are never shifted.
//! - **Critical path** (Jaeger UI's `computeCriticalPath`): from the span that ends the trace, repeatedly follow
//!   the last-finishing child that ended before the point where the path left the parent; each span's sections
//!   on the path add up to its self time. Children are first clipped to their parent's interval.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use skein_model::{Span, SpanId, SpanKind};

/// The span tree of one trace, by index into its span slice.
struct Tree {
    /// Parent index (`None` for roots, orphans and cycle breaks).
    parent: Vec<Option<usize>>,
    /// Children indices, in span order.
    children: Vec<Vec<usize>>,
    /// Spans with no tree parent, in span order: roots (no parent ID), then orphans (parent ID not in the trace).
    tops: Vec<usize>,
    /// Depth-first pre-order over the whole trace (every span once; parents before children).
    order: Vec<usize>,
    /// Span ID → index of its first span.
    by_id: HashMap<SpanId, usize>,
}

fn build(spans: &[Span]) -> Tree {
    let mut by_id: HashMap<SpanId, usize> = HashMap::with_capacity(spans.len());
    for (i, s) in spans.iter().enumerate() {
        // Duplicated span IDs (Zipkin's shared client/server spans): children attach to the first.
        by_id.entry(s.span_id).or_insert(i);
    }
    let n = spans.len();
    let mut parent = vec![None; n];
    let mut children = vec![Vec::new(); n];
    let mut tops = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        match s.parent_id().and_then(|p| by_id.get(&p).copied()).filter(|&p| p != i) {
            Some(p) => {
                parent[i] = Some(p);
                children[p].push(i);
            }
            None => tops.push(i),
        }
    }
    let mut order = Vec::with_capacity(n);
    let mut seen = vec![false; n];
    for &t in &tops {
        walk(t, &children, &mut order, &mut seen);
    }
    // Whatever is left hangs in a parent cycle: break it at its first span.
    for i in 0..n {
        if !seen[i] {
            if let Some(p) = parent[i].take() {
                children[p].retain(|&c| c != i);
            }
            tops.push(i);
            walk(i, &children, &mut order, &mut seen);
        }
    }
    Tree { parent, children, tops, order, by_id }
}

/// Depth-first pre-order from `top` with an explicit stack, appending unseen spans to `order`.
fn walk(top: usize, children: &[Vec<usize>], order: &mut Vec<usize>, seen: &mut [bool]) {
    let mut stack = vec![top];
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut seen[i], true) {
            continue;
        }
        order.push(i);
        stack.extend(children[i].iter().rev());
    }
}

/// One span moved by the clock-skew adjustment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Adjustment {
    /// The span moved.
    #[serde(serialize_with = "hex_id")]
    pub span_id: SpanId,
    /// Total shift applied, nanoseconds (positive: later).
    pub offset_nanos: i64,
    /// The part of the shift detected at this span (zero when it only moved with an ancestor).
    pub own_offset_nanos: i64,
    /// Start before the adjustment, Unix nanoseconds.
    pub original_start_unix_nanos: u64,
}

fn hex_id<S: serde::Serializer>(id: &SpanId, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&id.to_hex())
}

fn shift(t: u64, by: i64) -> u64 {
    if by >= 0 { t.saturating_add(by.unsigned_abs()) } else { t.saturating_sub(by.unsigned_abs()) }
}

/// A signed duration as text: `+1.5ms`, `-250µs`, `+2s`.
pub fn format_offset(nanos: i64) -> String {
    let sign = if nanos < 0 { '-' } else { '+' };
    let n = nanos.unsigned_abs() as f64;
    let (value, unit) = if n >= 1e9 {
        (n / 1e9, "s")
    } else if n >= 1e6 {
        (n / 1e6, "ms")
    } else if n >= 1e3 {
        (n / 1e3, "µs")
    } else {
        (n, "ns")
    };
    let text = format!("{value:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{sign}{text}{unit}")
}

/// Jaeger's span-ID deduplication (`SpanIDDeduper`, `model/adjuster/span_id_deduper.go`): Zipkin clients that
/// share one span ID between the client and the server half of an RPC (`"shared": true`) store two spans with the
/// same ID. Each SERVER span whose ID a CLIENT span of the trace also carries gets a new, unused ID (counting up
/// from the largest ID in the trace, as Jaeger does) and the shared ID as its parent, so the server half becomes
/// the child of the client half that called it; spans whose parent was the shared ID, other than the renamed
/// span itself, now name the new ID (the server half's children). Returns how many spans were renamed.
pub fn dedupe_span_ids(spans: &mut [Span]) -> usize {
    let mut used: HashSet<SpanId> = HashSet::with_capacity(spans.len());
    let mut clients: HashSet<SpanId> = HashSet::new();
    for s in spans.iter() {
        used.insert(s.span_id);
        if s.kind == SpanKind::CLIENT {
            clients.insert(s.span_id);
        }
    }
    if used.len() == spans.len() {
        return 0;
    }
    let mut next = used.iter().map(|id| u64::from_be_bytes(id.0)).max().unwrap_or(0);
    let mut renamed: HashMap<SpanId, SpanId> = HashMap::new();
    for s in spans.iter_mut() {
        if s.kind != SpanKind::SERVER || !clients.contains(&s.span_id) || renamed.contains_key(&s.span_id) {
            continue;
        }
        let fresh = loop {
            next = next.wrapping_add(1).max(1);
            let id = SpanId(next.to_be_bytes());
            if used.insert(id) {
                break id;
            }
        };
        renamed.insert(s.span_id, fresh);
        s.parent_span_id = s.span_id.0.to_vec();
        s.span_id = fresh;
    }
    for s in spans.iter_mut() {
        // The renamed span itself keeps the shared ID as its parent.
        if let Some(&new) = s.parent_id().and_then(|p| renamed.get(&p))
            && s.span_id != new
        {
            s.parent_span_id = new.0.to_vec();
        }
    }
    renamed.len()
}

/// Adjusts clock skew in place (module docs) and returns every moved span. Each moved span gets a warning naming
/// its offset and original start.
pub fn adjust_skew(spans: &mut [Span]) -> Vec<Adjustment> {
    adjust(&build(spans), spans)
}

/// [`adjust_skew`] over a built tree (adjusting moves times only, so the tree stays valid).
fn adjust(tree: &Tree, spans: &mut [Span]) -> Vec<Adjustment> {
    let mut offset = vec![0i64; spans.len()];
    let mut moved = Vec::new();
    for &i in &tree.order {
        let inherited = tree.parent[i].map_or(0, |p| offset[p]);
        let (start, end) = (shift(spans[i].start_unix_nanos, inherited), shift(spans[i].end_unix_nanos, inherited));
        let own = match tree.parent[i] {
            // The parent has already been moved (pre-order), so its times are final.
            Some(p) if spans[p].service_name() != spans[i].service_name() => {
                let (ps, pe) = (spans[p].start_unix_nanos, spans[p].end_unix_nanos);
                let fits = end.saturating_sub(start) <= pe.saturating_sub(ps);
                if start < ps {
                    i64::try_from(ps - start).unwrap_or(i64::MAX)
                } else if fits && end > pe {
                    -i64::try_from(end - pe).unwrap_or(i64::MAX)
                } else {
                    0
                }
            }
            _ => 0,
        };
        offset[i] = inherited.saturating_add(own);
        if offset[i] == 0 {
            continue;
        }
        let original = spans[i].start_unix_nanos;
        let s = &mut spans[i];
        s.start_unix_nanos = shift(s.start_unix_nanos, offset[i]);
        s.end_unix_nanos = shift(s.end_unix_nanos, offset[i]);
        let why = match tree.parent[i] {
            Some(p) if own != 0 => format!("to fit inside its parent {} from another service", spans[p].span_id),
            _ => "with its parent".to_string(),
        };
        spans[i].warnings.push(format!(
            "clock skew adjusted: shifted by {} {why} (original start {original} ns)",
            format_offset(offset[i])
        ));
        moved.push(Adjustment {
            span_id: spans[i].span_id,
            offset_nanos: offset[i],
            own_offset_nanos: own,
            original_start_unix_nanos: original,
        });
    }
    moved
}

/// A parent span the trace refers to but does not contain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Placeholder {
    /// The missing span's ID.
    #[serde(serialize_with = "hex_id")]
    pub span_id: SpanId,
    /// Spans that name it as parent.
    #[serde(serialize_with = "hex_ids")]
    pub children: Vec<SpanId>,
}

fn hex_ids<S: serde::Serializer>(ids: &[SpanId], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(ids.iter().map(SpanId::to_hex))
}

/// One span on the critical path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CriticalSpan {
    /// The span.
    #[serde(serialize_with = "hex_id")]
    pub span_id: SpanId,
    /// Time this span itself is on the path (its sections added up), nanoseconds.
    pub self_time_nanos: u64,
}

/// One section of the critical path: a span while nothing it waits for is running.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Section {
    /// The span.
    #[serde(serialize_with = "hex_id")]
    pub span_id: SpanId,
    /// Section start, Unix nanoseconds.
    pub start_unix_nanos: u64,
    /// Section end, Unix nanoseconds.
    pub end_unix_nanos: u64,
}

/// Counts and extent of a trace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Distinct services, sorted.
    pub services: Vec<String>,
    /// Spans.
    pub span_count: usize,
    /// Spans with status ERROR.
    pub error_count: usize,
    /// Levels of the deepest branch (a lone root is 1).
    pub depth: usize,
    /// Earliest start, Unix nanoseconds.
    pub start_unix_nanos: u64,
    /// Latest end minus earliest start, nanoseconds.
    pub duration_nanos: u64,
    /// Spans without a parent ID.
    #[serde(serialize_with = "hex_ids")]
    pub roots: Vec<SpanId>,
}

/// Everything [`analyze`] finds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    /// Counts and extent.
    pub summary: Summary,
    /// The critical path, in path order from the span that ends the trace, with self time per span.
    pub critical_path: Vec<CriticalSpan>,
    /// The sections the self times add up from, in path order (latest first).
    pub critical_path_sections: Vec<Section>,
    /// Spans moved by the clock-skew adjustment (empty unless asked for).
    pub adjustments: Vec<Adjustment>,
    /// Missing parents standing in for the spans that refer to them.
    pub placeholders: Vec<Placeholder>,
    /// Problems found: missing root, missing parents, parent cycles.
    pub warnings: Vec<String>,
}

/// Analyzes a trace's spans (already skew-adjusted when that is wanted; pass its adjustments to be reported).
pub fn analyze(spans: &[Span], adjustments: Vec<Adjustment>) -> Analysis {
    summarize(&build(spans), spans, adjustments)
}

/// Adjusts clock skew in `spans` ([`adjust_skew`]) and analyzes the result, building the span tree once.
pub fn analyze_skew_adjusted(spans: &mut [Span]) -> Analysis {
    let tree = build(spans);
    let adjustments = adjust(&tree, spans);
    summarize(&tree, spans, adjustments)
}

fn summarize(tree: &Tree, spans: &[Span], adjustments: Vec<Adjustment>) -> Analysis {
    let mut warnings = Vec::new();
    let roots: Vec<SpanId> = spans.iter().filter(|s| s.parent_id().is_none()).map(|s| s.span_id).collect();
    if roots.is_empty() && !spans.is_empty() {
        warnings.push("the root span is missing: no span in the trace is without a parent".to_string());
    }
    let mut missing: BTreeMap<SpanId, Vec<SpanId>> = BTreeMap::new();
    for &t in &tree.tops {
        match spans[t].parent_id() {
            Some(p) if !tree.by_id.contains_key(&p) => missing.entry(p).or_default().push(spans[t].span_id),
            Some(p) if p == spans[t].span_id => {
                warnings.push(format!("span {} names itself as its parent", spans[t].span_id));
            }
            Some(p) => warnings.push(format!("span {} is in a parent cycle through {p}", spans[t].span_id)),
            None => {}
        }
    }
    for (p, children) in &missing {
        let list: Vec<String> = children.iter().map(SpanId::to_hex).collect();
        warnings.push(format!("parent span {p} is not in the trace (referred to by {})", list.join(", ")));
    }
    let placeholders = missing.into_iter().map(|(span_id, children)| Placeholder { span_id, children }).collect();

    let mut depth = vec![0usize; spans.len()];
    for &i in &tree.order {
        depth[i] = tree.parent[i].map_or(1, |p| depth[p] + 1);
    }
    let mut services: Vec<String> = spans.iter().map(|s| s.service_name().to_string()).collect();
    services.sort();
    services.dedup();
    let start = spans.iter().map(|s| s.start_unix_nanos).min().unwrap_or(0);
    let end = spans.iter().map(|s| s.end_unix_nanos).max().unwrap_or(0);
    let summary = Summary {
        services,
        span_count: spans.len(),
        error_count: spans.iter().filter(|s| s.is_error()).count(),
        depth: depth.iter().copied().max().unwrap_or(0),
        start_unix_nanos: start,
        duration_nanos: end.saturating_sub(start),
        roots,
    };
    let sections = critical_path(spans, tree);
    let mut self_time: Vec<(SpanId, u64)> = Vec::new();
    let mut position: HashMap<SpanId, usize> = HashMap::new();
    for s in &sections {
        let len = s.end_unix_nanos - s.start_unix_nanos;
        match position.get(&s.span_id) {
            Some(&at) => self_time[at].1 += len,
            None => {
                position.insert(s.span_id, self_time.len());
                self_time.push((s.span_id, len));
            }
        }
    }
    let critical_path =
        self_time.into_iter().map(|(span_id, self_time_nanos)| CriticalSpan { span_id, self_time_nanos }).collect();
    Analysis { summary, critical_path, critical_path_sections: sections, adjustments, placeholders, warnings }
}

/// The critical path's sections (module docs), iteratively.
fn critical_path(spans: &[Span], tree: &Tree) -> Vec<Section> {
    let n = spans.len();
    // Intervals clipped to the (clipped) parent; children entirely outside their parent are left out.
    let mut clip: Vec<Option<(u64, u64)>> = vec![None; n];
    for &i in &tree.order {
        let (s, e) = (spans[i].start_unix_nanos, spans[i].end_unix_nanos.max(spans[i].start_unix_nanos));
        clip[i] = match tree.parent[i] {
            None => Some((s, e)),
            Some(p) => match clip[p] {
                Some((ps, pe)) if s <= pe && e >= ps => Some((s.max(ps), e.min(pe))),
                _ => None,
            },
        };
    }
    // Kept children, latest end first (ties: later start first, then span order, so the result is deterministic).
    let kids: Vec<Vec<usize>> = (0..n)
        .map(|i| {
            let mut k: Vec<usize> = tree.children[i].iter().copied().filter(|&c| clip[c].is_some()).collect();
            k.sort_by_key(|&c| {
                let (s, e) = clip[c].unwrap_or_default();
                (std::cmp::Reverse(e), std::cmp::Reverse(s), c)
            });
            k
        })
        .collect();
    // The path starts at the top-level span that ends last.
    let Some(top) = tree.tops.iter().copied().max_by_key(|&t| (clip[t].map_or(0, |c| c.1), std::cmp::Reverse(t)))
    else {
        return Vec::new();
    };
    let end_of = |c: usize| clip[c].map_or(0, |x| x.1);
    let mut sections = Vec::new();
    let (mut cur, mut spawn): (usize, Option<u64>) = (top, None);
    while let Some((cs, ce)) = clip[cur] {
        let section_end = spawn.unwrap_or(ce);
        // The last-finishing child that ended before the path left this span (strictly, as Jaeger UI).
        let next = match spawn {
            None => kids[cur].first().copied(),
            Some(t) => {
                let k = &kids[cur];
                k.get(k.partition_point(|&c| end_of(c) >= t)).copied()
            }
        };
        match next {
            Some(child) => {
                let child_end = end_of(child);
                if child_end < section_end {
                    sections.push(Section {
                        span_id: spans[cur].span_id,
                        start_unix_nanos: child_end,
                        end_unix_nanos: section_end,
                    });
                }
                cur = child;
                spawn = None;
            }
            None => {
                if cs < section_end {
                    sections.push(Section {
                        span_id: spans[cur].span_id,
                        start_unix_nanos: cs,
                        end_unix_nanos: section_end,
                    });
                }
                match tree.parent[cur] {
                    Some(p) if cur != top => {
                        spawn = Some(cs);
                        cur = p;
                    }
                    _ => break,
                }
            }
        }
    }
    sections
}

#[cfg(test)]
mod tests;
