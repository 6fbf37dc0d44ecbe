//! The Helm chart (`charts/skein`) against the operator it deploys, without a cluster: every flag and env variable
//! the chart passes exists in the operator's CLI, its enums and defaults agree with the operator's, the example
//! pipelines are valid `TracingPipeline`s, and real Helm (the Go SDK through `helm-sdkpy`) lints the chart with
//! its default values and with each example values file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::CommandFactory;
use serde_json::Value;
use skein_operator::crd::TracingPipeline;
use skein_operator::resources::{self, Defaults};
use skein_operator::run::Args;
use skein_operator::webhook::register;

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/skein")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml(path: &Path) -> Value {
    serde_yaml::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn templates() -> Vec<(String, String)> {
    let dir = chart().join("templates");
    let mut all: Vec<_> = std::fs::read_dir(&dir)
        .expect("templates/")
        .map(|e| e.expect("entry").path())
        .map(|p| (p.file_name().expect("name").to_string_lossy().into_owned(), read(&p)))
        .collect();
    all.sort();
    all
}

/// `--long-flag` tokens in `text` (after whitespace, `-` or a quote, so `---` document markers are not flags).
fn flags_in(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let mut rest = line;
        while let Some(i) = rest.find("--") {
            let before = rest[..i].chars().last();
            let after = &rest[i + 2..];
            let name: String = after.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
            if matches!(before, None | Some(' ' | '"' | '\'' | '-'))
                && name.starts_with(|c: char| c.is_ascii_lowercase())
            {
                found.insert(name.clone());
            }
            rest = &after[name.len()..];
        }
    }
    found
}

/// The operator's `--flag` definition.
fn arg(flag: &str) -> clap::Arg {
    Args::command().get_arguments().find(|a| a.get_long() == Some(flag)).cloned().unwrap_or_else(|| panic!("--{flag}"))
}

fn possible_values(flag: &str) -> BTreeSet<String> {
    arg(flag).get_possible_values().iter().map(|v| v.get_name().to_string()).collect()
}

fn default_of(flag: &str) -> String {
    arg(flag).get_default_values().iter().map(|v| v.to_string_lossy().into_owned()).collect::<Vec<_>>().join(",")
}

#[test]
fn every_flag_and_env_variable_the_chart_passes_exists_in_the_operator_cli() {
    let cmd = Args::command();
    let longs: BTreeSet<String> = cmd.get_arguments().filter_map(|a| a.get_long()).map(str::to_string).collect();
    let envs: BTreeSet<String> =
        cmd.get_arguments().filter_map(|a| a.get_env()).map(|e| e.to_string_lossy().into_owned()).collect();
    let mut passed = BTreeSet::new();
    for (file, text) in templates() {
        // NOTES.txt shows kubectl commands, not operator flags.
        let flags = if file == "NOTES.txt" { BTreeSet::new() } else { flags_in(&text) };
        for flag in flags {
            assert!(longs.contains(&flag), "templates/{file} passes --{flag}, which skein-operator does not have");
            passed.insert(flag);
        }
        for env in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("SKEIN_")) {
            assert!(envs.contains(env), "templates/{file} sets {env}, which skein-operator does not read");
        }
    }
    // Not vacuous: the flags the chart's design depends on are all there.
    for flag in [
        "leader-election",
        "lease-name",
        "metrics-addr",
        "collector-image",
        "query-image",
        "all-in-one-image",
        "agent-image",
        "agent-resources",
        "sidecar-mode",
        "webhook",
        "webhook-addr",
        "webhook-service",
        "webhook-service-port",
        "webhook-config-name",
        "webhook-registration",
        "webhook-secret",
        "webhook-cert-dir",
    ] {
        assert!(passed.contains(flag), "the chart no longer passes --{flag}");
    }
    let deployment = read(&chart().join("templates/deployment.yaml"));
    assert!(deployment.contains("--webhook-registration=ca-bundle"), "the chart owns the webhook configurations");
    for env in ["POD_NAMESPACE", "POD_NAME", "RUST_LOG"] {
        assert!(deployment.contains(&format!("name: {env}")), "{env} is what the operator reads for its namespace");
    }
}

#[test]
fn chart_values_agree_with_the_operator_on_enums_ports_images_and_webhooks() {
    let values = yaml(&chart().join("values.yaml"));
    let schema: Value = serde_json::from_str(&read(&chart().join("values.schema.json"))).expect("schema JSON");
    let props = |path: &[&str]| {
        let mut v = &schema;
        for p in path {
            v = &v["properties"][p];
        }
        v.clone()
    };
    let strings = |v: &Value| -> BTreeSet<String> {
        v.as_array().expect("enum").iter().map(|s| s.as_str().expect("string").to_string()).collect()
    };
    // Every value the schema allows for a flag is one the operator accepts.
    assert_eq!(strings(&props(&["agent", "sidecarMode"])["enum"]), possible_values("sidecar-mode"));
    assert_eq!(strings(&props(&["operator", "logFormat"])["enum"]), possible_values("log-format"));
    assert!(possible_values("webhook-registration").contains("ca-bundle"));

    // Ports: the chart's defaults are the operator's (DESIGN §3: webhook 9443, metrics 8080; Service 443).
    let port = |v: &Value| v.as_u64().expect("port");
    assert_eq!(
        port(&values["webhook"]["port"]).to_string(),
        default_of("webhook-addr").rsplit(':').next().unwrap_or("")
    );
    assert_eq!(
        port(&values["operator"]["metricsPort"]).to_string(),
        default_of("metrics-addr").rsplit(':').next().unwrap_or("")
    );
    assert_eq!(port(&values["webhook"]["service"]["port"]).to_string(), default_of("webhook-service-port"));

    // Images: same repositories as the operator's defaults, and the chart's appVersion is the workspace version
    // (empty tags mean appVersion), so `helm install` and a bare `skein-operator` deploy the same images.
    let chart_yaml = yaml(&chart().join("Chart.yaml"));
    assert_eq!(chart_yaml["appVersion"], env!("CARGO_PKG_VERSION"));
    let d = Defaults::default();
    for (path, default) in [
        (&values["images"]["collector"], &d.collector_image),
        (&values["images"]["query"], &d.query_image),
        (&values["images"]["allInOne"], &d.all_in_one_image),
        (&values["agent"]["image"], &d.agent_image),
    ] {
        let repo = path["repository"].as_str().expect("repository");
        assert_eq!(format!("{repo}:{}", env!("CARGO_PKG_VERSION")), *default);
        assert_eq!(path["tag"], "");
    }
    assert!(values["operator"]["image"]["repository"].as_str().expect("repo").starts_with(resources::IMAGE_REPOSITORY));
    for binary in ["skein-operator", "skein-collector", "skein-query", "skein-all-in-one", "skein-agent"] {
        let dockerfile = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../docker/{binary}.Dockerfile"));
        assert!(read(&dockerfile).contains(binary), "{} builds {binary}", dockerfile.display());
    }

    // Webhooks: the names and paths the operator patches and serves.
    let hooks = read(&chart().join("templates/webhooks.yaml"));
    for s in [register::MUTATE_NAME, register::VALIDATE_NAME, register::MUTATE_PATH, register::VALIDATE_PATH] {
        assert!(hooks.contains(&format!(" {s}\n")), "templates/webhooks.yaml lacks {s}");
    }
    assert_eq!(values["webhook"]["injection"]["failurePolicy"], "Ignore", "pod creation never waits on Skein");
    assert_eq!(values["webhook"]["validation"]["failurePolicy"], "Fail", "an invalid pipeline is never stored");
    let selector = &values["webhook"]["injection"]["namespaceSelector"]["matchExpressions"];
    let operator_hook = register::mutating("x", &register::Target::Url("https://h".into()), "ca").expect("mutating");
    let operator_selector =
        serde_json::to_value(&operator_hook.webhooks.expect("webhooks")[0].namespace_selector).expect("selector");
    assert_eq!(
        *selector, operator_selector["matchExpressions"],
        "the chart and the operator select the same namespaces"
    );
}

/// `actual` holds every field of `given` with the same value: nothing in an example was an unknown (and so
/// silently pruned) field.
fn assert_contains(given: &Value, actual: &Value, path: &str) {
    match (given, actual) {
        (Value::Object(g), Value::Object(a)) => {
            for (k, v) in g {
                let child = a.get(k).unwrap_or_else(|| panic!("{path}.{k} is not a TracingPipeline field"));
                assert_contains(v, child, &format!("{path}.{k}"));
            }
        }
        (Value::Array(g), Value::Array(a)) => {
            assert_eq!(g.len(), a.len(), "{path}");
            for (i, (g, a)) in g.iter().zip(a).enumerate() {
                assert_contains(g, a, &format!("{path}[{i}]"));
            }
        }
        (Value::Number(g), Value::Number(a)) => assert_eq!(g.as_f64(), a.as_f64(), "{path}"),
        (g, a) => assert_eq!(g, a, "{path}"),
    }
}

#[test]
fn example_pipelines_are_valid_and_use_only_known_fields() {
    let dir = chart().join("examples");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("examples/") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("name").to_string_lossy().into_owned();
        if !name.starts_with("pipeline-") {
            continue;
        }
        let given = yaml(&path);
        let mut tp: TracingPipeline =
            serde_json::from_value(given.clone()).unwrap_or_else(|e| panic!("{name}: not a TracingPipeline: {e}"));
        assert_contains(&given["spec"], &serde_json::to_value(&tp.spec).expect("spec"), &format!("{name}: spec"));
        tp.metadata.namespace = Some("tracing".into());
        // The validation the reconciler and the validating webhook run.
        resources::validate(&tp).unwrap_or_else(|e| panic!("{name}: {e}"));
        seen.push(name);
    }
    seen.sort();
    assert_eq!(
        seen,
        ["pipeline-dev.yaml", "pipeline-head-sampling.yaml", "pipeline-production.yaml", "pipeline-redaction.yaml"]
    );
}

/// The Python interpreter with `helm-sdkpy` (`.ci/run` installs it and sets `SKEIN_PYTHON`); `None` (test skipped)
/// only on a developer machine without it.
fn helm_python() -> Option<String> {
    let set = std::env::var("SKEIN_PYTHON").ok();
    let py = set.clone().unwrap_or_else(|| "python3".into());
    if Command::new(&py).args(["-c", "import helm_sdkpy"]).status().is_ok_and(|s| s.success()) {
        return Some(py);
    }
    let msg = format!("{py} lacks helm-sdkpy: .venv/bin/pip install --ignore-requires-python helm-sdkpy");
    assert!(set.is_none() && std::env::var_os("CI").is_none(), "{msg}");
    eprintln!("SKIPPED: {msg}");
    None
}

/// Helm's values semantics: maps merge key by key, everything else (lists too) is replaced.
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let path = entry.expect("entry").path();
        let target = to.join(path.file_name().expect("name"));
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).expect("copy");
        }
    }
}

/// A copy of the chart in a temporary directory (removed when the guard drops).
fn chart_copy() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let copy = tmp.path().join("skein");
    copy_dir(&chart(), &copy);
    (tmp, copy)
}

/// Lints a copy of the chart whose values are `defaults` with `overlay` merged over them.
fn lint_with(py: &str, defaults: &Value, overlay: &Value) -> (bool, String) {
    let (_tmp, copy) = chart_copy();
    let mut values = defaults.clone();
    merge(&mut values, overlay);
    std::fs::write(copy.join("values.yaml"), serde_json::to_string_pretty(&values).expect("json")).expect("write");
    lint(py, &copy)
}

fn lint(py: &str, chart_dir: &Path) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/helm.py");
    let out = Command::new(py).arg(&script).arg("lint").arg(chart_dir).output().expect("run scripts/helm.py");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn helm_lints_the_chart_with_default_and_example_values() {
    let Some(py) = helm_python() else { return };
    let (ok, report) = lint(&py, &chart());
    assert!(ok, "helm lint charts/skein (default values):\n{report}");

    let defaults = yaml(&chart().join("values.yaml"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart().join("examples"))
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("values-")))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "example values files: {files:?}");
    for file in &files {
        let (ok, report) = lint_with(&py, &defaults, &yaml(file));
        assert!(ok, "helm lint with {}:\n{report}", file.display());
    }

    // The lint is real: a value the schema forbids and a template that cannot render both fail it.
    for (what, breaks) in [
        ("a sidecar mode the operator lacks", "agent:\n  sidecarMode: sometimes\n"),
        ("an unknown top-level value", "replicas: 3\n"),
    ] {
        assert!(!lint_with(&py, &defaults, &serde_yaml::from_str(breaks).expect("yaml")).0, "lint passed with {what}");
    }
    let (_tmp, copy) = chart_copy();
    std::fs::write(copy.join("templates/broken.yaml"), "{{ .Values.operator.nothing.here }}\n").expect("write");
    assert!(!lint(&py, &copy).0, "lint passed a template that cannot render");
}
