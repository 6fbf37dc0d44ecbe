//! Test support shared by every crate's tests: one way to wait for a condition (poll with a deadline, never a fixed
//! sleep), one way to read a Prometheus `/metrics` text, one wall clock.
//!
//! It holds no Skein types, so any crate can take it as a dev-dependency without a cycle. Test *data* (span and
//! request builders) stays next to the types it builds.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often the pollers check their condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Polls `cond` every [`POLL_INTERVAL`] (blocking the thread) until it holds.
///
/// # Panics
/// After `timeout`, naming `what`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Polls `check` every [`POLL_INTERVAL`] until it returns `Some`, and returns that value.
///
/// # Panics
/// After `timeout`, naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The value of one metric sample (its name with labels exactly as rendered, e.g.
/// `skein_agent_spans_dropped_total{reason="rejected_by_collector"}`) in a Prometheus text, or 0 when absent.
pub fn metric_in(text: &str, sample: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0.0)
}

/// The sum of every sample of metric `name` (all label sets) in a Prometheus text; 0 when absent.
pub fn metric_sum_in(text: &str, name: &str) -> f64 {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = if rest.starts_with('{') { rest.split_once("} ")?.1 } else { rest.strip_prefix(' ')? };
            value.trim().parse::<f64>().ok()
        })
        .fold(0.0, |a, b| a + b)
}

/// Wall-clock time, nanoseconds since the Unix epoch (0 if the clock is before it).
pub fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The OpenMetrics text of `registry`, as the admin endpoint serves it.
///
/// # Panics
/// When a metric cannot be encoded (a bug in its label set).
pub fn render(registry: &prometheus_client::registry::Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry).expect("metrics encode");
    out
}

/// For a metrics struct `pub struct <name> { pub field: Type, … }` in `source` (its file's text), the number of
/// fields and those never registered: a field is registered when the source passes `m.<field>.clone()` to the
/// registry, as every `register` constructor does. A field counted in memory but never registered is invisible to
/// Prometheus; this finds it.
///
/// # Panics
/// When `source` has no such struct.
pub fn unregistered_fields(source: &str, name: &str) -> (usize, Vec<String>) {
    let start = source.find(&format!("pub struct {name} {{")).expect("metrics struct");
    let end = start + source[start..].find("\n}").expect("end of struct");
    let fields: Vec<&str> = source[start..end]
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub ")?.split_once(':').map(|(field, _)| field))
        .collect();
    let missing =
        fields.iter().filter(|f| !source.contains(&format!("m.{f}.clone()"))).map(|f| f.to_string()).collect();
    (fields.len(), missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP x_total X\nx_total{a=\"1\"} 2\nx_total{a=\"2\"} 3.5\nx_total_more 7\ny 4\n";

    #[test]
    fn reads_samples_and_sums_families() {
        assert_eq!(metric_in(TEXT, "x_total{a=\"2\"}"), 3.5);
        assert_eq!(metric_in(TEXT, "y"), 4.0);
        assert_eq!(metric_in(TEXT, "x_total"), 0.0, "a family's name alone is no sample");
        assert_eq!(metric_sum_in(TEXT, "x_total"), 5.5, "x_total_more is another metric");
        assert_eq!(metric_sum_in(TEXT, "absent"), 0.0);
    }

    #[test]
    fn polling_returns_as_soon_as_the_condition_holds_and_fails_at_the_deadline() {
        let mut n = 0;
        wait_until("the third poll", Duration::from_secs(10), || {
            n += 1;
            n == 3
        });
        assert_eq!(n, 3);
        let failed = std::panic::catch_unwind(|| wait_until("never", Duration::from_millis(1), || false));
        let message = failed.expect_err("times out");
        let text = message.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(text.contains("waiting for never"), "{text}");
    }

    #[tokio::test]
    async fn eventually_returns_the_value() {
        let mut n = 0;
        let v = eventually("the second poll", Duration::from_secs(10), || {
            n += 1;
            let ready = n == 2;
            async move { ready.then_some(n) }
        })
        .await;
        assert_eq!(v, 2);
        assert!(now_nanos() > 1_600_000_000_000_000_000);
    }
}
