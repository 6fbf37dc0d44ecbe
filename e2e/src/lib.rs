//! Helpers for Skein's whole-system tests: start the real `skein-all-in-one` binary on free ports and a temp
//! directory, talk to its HTTP APIs, run `skein-replay`, and find the shipped datasets.
//!
//! The binaries are the ones `cargo test --workspace` builds next to the test executables (`target/<profile>/`).

pub mod otlp;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Path of a workspace binary built by cargo.
///
/// # Panics
/// When the binary has not been built (run `cargo build --workspace --bins` or `cargo test --workspace`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    // Tests run from target/<profile>/deps/, binaries (skein-bench) from target/<profile>/.
    let here = exe.parent().expect("executable directory");
    let path = [here.join(name), here.parent().map_or_else(|| here.join(name), |p| p.join(name))]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| here.join(name));
    assert!(path.exists(), "{} not built; run `cargo build --workspace --bins` first", path.display());
    path
}

/// The shared trace datasets (`../shared/trace-data` next to the repository).
pub fn trace_data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/trace-data")
}

/// The HotROD Elasticsearch dump (`jaeger-es-hotrod`): 14 traces of 6 services.
pub fn hotrod_es_dump() -> PathBuf {
    trace_data().join("jaeger-es-hotrod/jaeger-span-2023-01-24.json")
}

/// Spans in [`hotrod_es_dump`] (its `SOURCE.md`).
pub const HOTROD_ES_SPANS: u64 = 379;

/// A free TCP port on 127.0.0.1 for a listener that must keep its address across restarts.
///
/// The port comes from below the kernel's ephemeral range (`/proc/sys/net/ipv4/ip_local_port_range`), so no
/// port-0 listener and no outgoing connection of a concurrently running test can take it between this call and the
/// bind, nor while its process is down for a restart. Each call in a process moves on to the next candidate; the
/// start is spread by PID so test binaries do not pick the same ports.
///
/// # Panics
/// When no port in the range below the ephemeral one can be bound.
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    // Candidates: [10000, low) — or [1024, low) on a machine whose ephemeral range starts below 10000.
    let base = if low > 11000 { 10000 } else { 1024 };
    let span = low.saturating_sub(base).max(1);
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let i = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Ok(port) = u16::try_from(base + (start + i * 131) % span) else { continue };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in [{base}, {low})")
}

/// Current and peak resident set size of a process, KiB (`VmRSS`, `VmHWM`).
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |k: &str| {
        text.lines().find(|l| l.starts_with(k)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The `p` quantile (0–1, nearest rank) of sorted samples; 0 when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub use skein_testkit::{metric_in, metric_sum_in, wait_until};

/// Starts a workspace binary with `args`, forwarding its stderr (prefixed) and waiting for its `listening` line.
fn spawn_listening(path: &Path, args: &[&str], env: &[(&str, &str)]) -> (Child, String) {
    let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    let mut child = Command::new(path)
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    let stderr = child.stderr.take().expect("stderr piped");
    let (tx, rx) = mpsc::channel();
    let tag = name.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[{tag}] {line}");
            if line.contains("listening") {
                let _ = tx.send(line.clone());
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| panic!("{name} did not start listening"));
    (child, line)
}

/// A running `skein-agent`; killed on drop unless stopped.
pub struct Agent {
    child: Option<Child>,
    /// OTLP/gRPC address.
    pub otlp_grpc: String,
    /// OTLP/HTTP address.
    pub otlp_http: String,
    /// Remote-sampling proxy base URL.
    pub sampling: String,
    /// Admin base URL.
    pub admin: String,
    http: reqwest::blocking::Client,
}

impl Agent {
    /// Starts the agent on 127.0.0.1 port 0 (all four listeners) with `args` (`--collector`, `--spill-dir`, …).
    ///
    /// # Panics
    /// When it does not report its listen addresses within 30 s.
    pub fn start(args: &[&str]) -> Self {
        Self::start_bin(&bin("skein-agent"), args)
    }

    /// [`Agent::start`] forwarding to `collector` with a `memory_bytes` memory buffer that spills to `spill_dir`, at
    /// most `spill_bytes` there.
    ///
    /// # Panics
    /// When it does not report its listen addresses within 30 s.
    pub fn start_buffered(collector: &str, spill_dir: &Path, memory_bytes: u64, spill_bytes: u64) -> Self {
        let (memory, disk) = (memory_bytes.to_string(), spill_bytes.to_string());
        let spill = spill_dir.to_string_lossy();
        Self::start(&[
            "--collector",
            collector,
            "--spill-dir",
            &spill,
            "--memory-max-bytes",
            &memory,
            "--spill-max-bytes",
            &disk,
        ])
    }

    /// [`Agent::start`] with the binary at `path` (another build profile, say).
    ///
    /// # Panics
    /// When it does not report its listen addresses within 30 s.
    pub fn start_bin(path: &Path, args: &[&str]) -> Self {
        let mut all = vec!["--otlp-grpc-addr", "127.0.0.1:0", "--otlp-http-addr", "127.0.0.1:0"];
        all.extend(["--sampling-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"]);
        all.extend(args);
        let (child, line) = spawn_listening(path, &all, &[("RUST_LOG", "info")]);
        let get = |k: &str| field(&line, k).unwrap_or_else(|| panic!("no {k} in {line:?}"));
        Self {
            child: Some(child),
            otlp_grpc: get("otlp_grpc"),
            otlp_http: get("otlp_http"),
            sampling: format!("http://{}", get("sampling")),
            admin: format!("http://{}", get("admin")),
            http: reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().expect("client"),
        }
    }

    /// The admin `/metrics` text.
    pub fn metrics(&self) -> String {
        self.http.get(format!("{}/metrics", self.admin)).send().and_then(|r| r.text()).unwrap_or_default()
    }

    /// The sum of every sample of metric `name` (see [`metric_sum_in`]).
    pub fn metric_sum(&self, name: &str) -> f64 {
        metric_sum_in(&self.metrics(), name)
    }

    /// One metric sample (see [`metric_in`]).
    pub fn metric(&self, sample: &str) -> f64 {
        metric_in(&self.metrics(), sample)
    }

    /// Waits until nothing is buffered or in flight and `skein_agent_spans_forwarded_total` reaches `spans`.
    pub fn wait_forwarded(&self, spans: u64, timeout: Duration) {
        wait_until(&format!("agent forwarded {spans} spans"), timeout, || {
            let m = self.metrics();
            metric_in(&m, "skein_agent_spans_forwarded_total") >= spans as f64
                && metric_in(&m, "skein_agent_buffer_spans{tier=\"memory\"}") == 0.0
                && metric_in(&m, "skein_agent_buffer_spans{tier=\"disk\"}") == 0.0
                && metric_in(&m, "skein_agent_inflight_spans") == 0.0
        });
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Kills the process with SIGKILL and waits for it.
    pub fn kill(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A running `skein-all-in-one`; killed on drop unless stopped.
pub struct AllInOne {
    child: Option<Child>,
    /// OTLP/gRPC address.
    pub otlp_grpc: String,
    /// OTLP/HTTP address.
    pub otlp_http: String,
    /// Query API base URL (`http://host:port`).
    pub query: String,
    /// Query gRPC endpoint (`http://host:port`).
    pub query_grpc: String,
    /// Admin base URL.
    pub admin: String,
    /// Zipkin receiver base URL.
    pub zipkin: String,
    /// Remote-sampling HTTP base URL.
    pub sampling_http: String,
    /// Remote-sampling gRPC address.
    pub sampling_grpc: String,
    /// HTTP client.
    pub http: reqwest::blocking::Client,
}

fn field(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!("{key}="))? + key.len() + 1;
    Some(line[start..].split_whitespace().next()?.to_string())
}

impl AllInOne {
    /// Starts the binary on 127.0.0.1 port 0 with `data_dir` and `trace_idle_ms`, waiting until it listens.
    ///
    /// # Panics
    /// When the process does not report its listen addresses within 30 s.
    pub fn start(data_dir: &Path, trace_idle_ms: u64) -> Self {
        Self::start_with(data_dir, trace_idle_ms, &[])
    }

    /// [`AllInOne::start`] with extra flags (`--config`, `--max-inflight-bytes`, …).
    ///
    /// # Panics
    /// When the process does not report its listen addresses within 30 s or does not turn ready within 60 s.
    pub fn start_with(data_dir: &Path, trace_idle_ms: u64, extra: &[&str]) -> Self {
        let defaults = [
            "--otlp-grpc-addr",
            "--otlp-http-addr",
            "--query-http-addr",
            "--query-grpc-addr",
            "--admin-addr",
            "--zipkin-addr",
            "--sampling-http-addr",
            "--sampling-grpc-addr",
        ];
        // Flags given in `extra` (a fixed port, say) replace the port-0 defaults.
        let ports = defaults.iter().filter(|f| !extra.contains(f)).flat_map(|f| [*f, "127.0.0.1:0"]);
        let idle = trace_idle_ms.to_string();
        let data_dir = data_dir.to_str().expect("UTF-8 data dir");
        let mut args: Vec<&str> = ports.collect();
        args.extend(extra);
        args.extend(["--data-dir", data_dir, "--trace-idle-ms", &idle]);
        let (child, line) =
            spawn_listening(&bin("skein-all-in-one"), &args, &[("RUST_LOG", "info,lsm_tree=warn,fjall=warn")]);
        let get = |k: &str| field(&line, k).unwrap_or_else(|| panic!("no {k} in {line:?}"));
        let me = Self {
            child: Some(child),
            otlp_grpc: get("otlp_grpc"),
            otlp_http: get("otlp_http"),
            query: format!("http://{}", get("query_http")),
            query_grpc: format!("http://{}", get("query_grpc")),
            admin: format!("http://{}", get("admin")),
            zipkin: format!("http://{}", get("zipkin")),
            sampling_http: format!("http://{}", get("sampling_http")),
            sampling_grpc: get("sampling_grpc"),
            http: reqwest::blocking::Client::builder().timeout(Duration::from_secs(120)).build().expect("client"),
        };
        me.wait_until("ready", Duration::from_secs(60), || {
            me.http.get(format!("{}/readyz", me.admin)).send().is_ok_and(|r| r.status().is_success())
        });
        me
    }

    /// GET a query API path, returning status and JSON body.
    ///
    /// # Panics
    /// When the request fails or the body is not JSON.
    pub fn get(&self, path_and_query: &str) -> (u16, serde_json::Value) {
        let resp = self.http.get(format!("{}{}", self.query, path_and_query)).send().expect("query request");
        let status = resp.status().as_u16();
        (status, resp.json().expect("JSON body"))
    }

    /// The admin `/metrics` text.
    pub fn metrics(&self) -> String {
        self.http.get(format!("{}/metrics", self.admin)).send().and_then(|r| r.text()).unwrap_or_default()
    }

    /// The sum of every sample of metric `name` (see [`metric_sum_in`]).
    pub fn metric_sum(&self, name: &str) -> f64 {
        metric_sum_in(&self.metrics(), name)
    }

    /// Waits until no trace is held in the assembler and the written-span count is stable.
    pub fn wait_until_written(&self) {
        let mut last = -1.0;
        self.wait_until("all traces written", Duration::from_secs(120), || {
            let text = self.metrics();
            let live = metric_in(&text, "skein_live_traces");
            let pending = metric_in(&text, "skein_pending_chunks");
            let written = metric_in(&text, "skein_spans_written_total");
            let stable = live == 0.0 && pending == 0.0 && written == last;
            last = written;
            if !stable {
                std::thread::sleep(Duration::from_millis(300));
            }
            stable
        });
    }

    /// Polls `cond` until it holds.
    ///
    /// # Panics
    /// After `timeout`.
    pub fn wait_until(&self, what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
        wait_until(what, timeout, cond);
    }

    /// Sends SIGTERM and waits for the exit status.
    ///
    /// # Panics
    /// When the process does not exit within 60 s.
    pub fn terminate(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let ok = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "skein-all-in-one did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the process with SIGKILL (no drain) and waits for it.
    pub fn kill(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Runs `skein-replay` against this instance; returns its JSON summary.
    ///
    /// # Panics
    /// When the replay fails.
    pub fn replay(&self, files: &[PathBuf]) -> serde_json::Value {
        let out = Command::new(bin("skein-replay"))
            .arg("--endpoint")
            .arg(format!("http://{}", self.otlp_grpc))
            .arg("--json")
            .args(files)
            .output()
            .expect("run skein-replay");
        assert!(out.status.success(), "skein-replay failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("replay summary JSON")
    }

    /// Replays [`hotrod_es_dump`] and waits until every span of it is written.
    ///
    /// # Panics
    /// When the replay fails or the instance accepts fewer than [`HOTROD_ES_SPANS`] spans.
    pub fn load_hotrod(&self) {
        let summary = self.replay(&[hotrod_es_dump()]);
        assert_eq!(summary["accepted"], HOTROD_ES_SPANS);
        self.wait_until_written();
    }
}

impl Drop for AllInOne {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
