//! Each server binary starts the components it runs and no others: the addresses it logs as bound are exactly
//! those of its components (`-` for the rest), and it stops cleanly on SIGTERM.
//!
//! (Also what makes `cargo test --workspace` build these binaries for the e2e tests: cargo builds a package's
//! binaries for its integration tests.)

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Every listener flag, each on port 0 (the bound address is logged).
const LISTENERS: [&str; 8] = [
    "--otlp-grpc-addr",
    "--otlp-http-addr",
    "--zipkin-addr",
    "--sampling-http-addr",
    "--sampling-grpc-addr",
    "--query-http-addr",
    "--query-grpc-addr",
    "--admin-addr",
];

/// The `listening` log line's fields of `binary` started on the embedded store, as `name → bound` (false: `-`).
fn bound_listeners(binary: &str) -> Vec<(String, bool)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(binary);
    cmd.args(["--storage", "embedded", "--data-dir"]).arg(dir.path().join("data"));
    cmd.arg("--wal-dir").arg(dir.path().join("wal"));
    for flag in LISTENERS {
        cmd.args([flag, "127.0.0.1:0"]);
    }
    let mut child = cmd.env("RUST_LOG", "info").stderr(Stdio::piped()).spawn().expect("binary starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut listening = None;
    let mut ready = false;
    while !ready {
        let line = rx.recv_timeout(Duration::from_secs(60)).expect("the binary logs `listening` and `ready`");
        if line.contains(" listening ") || line.ends_with(" listening") {
            listening = Some(line);
        } else if line.contains(" ready") {
            ready = true;
        }
    }
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill runs");
    assert!(status.success());
    assert!(child.wait().expect("exit status").success(), "{binary} stops cleanly on SIGTERM");
    let line = listening.expect("a `listening` line before `ready`");
    line.split_whitespace()
        .filter_map(|field| field.split_once('='))
        .filter(|(name, _)| {
            name.starts_with("otlp")
                || name.starts_with("query")
                || name.starts_with("sampling")
                || *name == "zipkin"
                || *name == "admin"
        })
        .map(|(name, addr)| (name.to_string(), addr != "-"))
        .collect()
}

fn check(binary: &str, expect_ingest: bool, expect_query: bool) {
    let listeners = bound_listeners(binary);
    assert_eq!(listeners.len(), LISTENERS.len(), "{binary}: {listeners:?}");
    for (name, bound) in listeners {
        let expected = match name.as_str() {
            "admin" => true,
            n if n.starts_with("query") => expect_query,
            _ => expect_ingest,
        };
        assert_eq!(bound, expected, "{binary}: {name} bound: {bound}");
    }
}

#[test]
fn all_in_one_runs_every_component() {
    check(env!("CARGO_BIN_EXE_skein-all-in-one"), true, true);
}

#[test]
fn collector_runs_ingest_and_remote_sampling_only() {
    check(env!("CARGO_BIN_EXE_skein-collector"), true, false);
}

#[test]
fn query_runs_the_query_service_only() {
    check(env!("CARGO_BIN_EXE_skein-query"), false, true);
}
