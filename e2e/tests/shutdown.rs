//! SIGTERM ends the real `skein-operator` within 2 s in every state, including the ones where its start-up steps
//! keep failing and retrying: the webhook certificate cannot be set up, or the webhooks are served but their
//! registration is refused. `/readyz` says which state it is in.
//!
//! The first two tests need no cluster: the operator's kubeconfig points at a loopback port where nothing listens,
//! so every API call fails as it does while an API server is unreachable. The third is a cluster test (`#[ignore]`d
//! without `KUBECONFIG`): registration is refused by a real API server.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use skein_operator::webhook::certs::{self, CertSettings};

/// The longest SIGTERM → exit the issue allows.
const EXIT_WITHIN: Duration = Duration::from_secs(2);

/// A kubeconfig for an API server at `https://127.0.0.1:<port>` where nothing listens.
fn unreachable_kubeconfig(dir: &Path) -> std::path::PathBuf {
    let port = skein_e2e::free_port();
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: c\n  cluster: {{server: 'https://127.0.0.1:{port}', insecure-skip-tls-verify: true}}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u, namespace: skein-system}}\nusers:\n- name: u\n  user: {{token: t}}\n"
    );
    std::fs::write(&path, text).expect("kubeconfig");
    path
}

/// Serving certificates in `dir` (`tls.crt`, `tls.key`, `ca.crt`), as `--webhook-cert-dir` reads them.
fn cert_dir(dir: &Path) -> std::path::PathBuf {
    let settings = CertSettings { names: vec!["127.0.0.1".into()], lifetime_secs: 3600, ca_lifetime_secs: 7200 };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64;
    let bundle = certs::issue(&settings, None, now).expect("issue");
    let out = dir.join("certs");
    std::fs::create_dir_all(&out).expect("mkdir");
    std::fs::write(out.join("tls.crt"), &bundle.cert_pem).expect("crt");
    std::fs::write(out.join("tls.key"), &bundle.key_pem).expect("key");
    std::fs::write(out.join("ca.crt"), &bundle.ca_bundle_pem).expect("ca");
    out
}

fn start(kubeconfig: &Path, metrics_port: u16, extra: &[&str]) -> Child {
    let webhook = skein_e2e::free_port();
    Command::new(skein_e2e::bin("skein-operator"))
        .args(["--leader-election", "false", "--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
        .args([
            "--webhook-addr",
            &format!("127.0.0.1:{webhook}"),
            "--webhook-url",
            &format!("https://127.0.0.1:{webhook}"),
        ])
        .args(extra)
        .env("KUBECONFIG", kubeconfig)
        .env("POD_NAMESPACE", "skein-system")
        .env("RUST_LOG", "info,kube=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start skein-operator (cargo build --workspace --bins first)")
}

/// Polls `/readyz` until its body contains `wanted`; returns the status code and body.
fn readyz_until(metrics_port: u16, wanted: &str) -> (u16, String) {
    let url = format!("http://127.0.0.1:{metrics_port}/readyz");
    let mut last = (0, String::new());
    skein_e2e::wait_until(&format!("/readyz to say {wanted:?}"), Duration::from_secs(60), || {
        let Ok(r) = reqwest::blocking::get(&url) else { return false };
        last = (r.status().as_u16(), r.text().unwrap_or_default());
        last.1.contains(wanted)
    });
    last
}

/// Sends SIGTERM and returns how long the process took to exit, and whether it exited cleanly.
fn terminate(mut child: Child) -> (Duration, bool) {
    let sent = Instant::now();
    let ok = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(ok.success());
    let deadline = sent + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return (sent.elapsed(), status.success());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("skein-operator ignored SIGTERM for 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_ends_the_operator_within_2s_while_its_certificate_cannot_be_set_up() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let kubeconfig = unreachable_kubeconfig(tmp.path());
    let metrics = skein_e2e::free_port();
    let child = start(&kubeconfig, metrics, &[]);
    let (code, body) = readyz_until(metrics, "cannot set up the serving certificate");
    assert_eq!(code, 503, "{body}");
    let (took, clean) = terminate(child);
    assert!(took < EXIT_WITHIN, "exit took {took:?}");
    assert!(clean, "a SIGTERM is a clean exit");
}

#[test]
fn sigterm_ends_the_operator_within_2s_while_its_registration_keeps_failing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let kubeconfig = unreachable_kubeconfig(tmp.path());
    let certs = cert_dir(tmp.path());
    let metrics = skein_e2e::free_port();
    let child = start(&kubeconfig, metrics, &["--webhook-cert-dir", certs.to_str().expect("utf8")]);
    // Served (its own certificate needs no API call), never registered: /readyz says exactly that.
    let (code, body) = readyz_until(metrics, "served but their registration keeps failing");
    assert_eq!(code, 503, "{body}");
    let (took, clean) = terminate(child);
    assert!(took < EXIT_WITHIN, "exit took {took:?}");
    assert!(clean, "a SIGTERM is a clean exit");
}

/// The case reviewers hit: `--webhook-registration apply --webhook-url …` against configurations another manager
/// (the Helm chart) created with a `service` reference, which the API server refuses on every try (`exactly one
/// of url or service is required`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs KUBECONFIG (a real Kubernetes API server)"]
async fn sigterm_ends_the_operator_within_2s_while_a_real_api_server_refuses_its_registration() {
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

    let client = common::cluster().await;
    let id = std::process::id();
    let (ns, config) = (format!("skein-shutdown-e2e-{id}"), format!("skein-shutdown-e2e-{id}"));
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let body = serde_json::json!({"metadata": {"name": ns}});
    namespaces.create(&PostParams::default(), &serde_json::from_value(body).expect("ns")).await.expect("namespace");
    // Someone else's configuration of the same name, pointing at a Service.
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let theirs = serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": config},
        "webhooks": [{"name": "inject.skein.dev", "admissionReviewVersions": ["v1"], "sideEffects": "None",
                      "failurePolicy": "Ignore",
                      "clientConfig": {"service": {"namespace": ns, "name": "skein-operator-webhook", "path": "/mutate-pods"}},
                      "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
                      "objectSelector": {"matchLabels": {"skein-shutdown-e2e": "never"}}}]
    });
    mutating.patch(&config, &PatchParams::apply("helm").force(), &Patch::Apply(&theirs)).await.expect("their config");

    let metrics = skein_e2e::free_port();
    let kubeconfig = std::env::var("KUBECONFIG").expect("KUBECONFIG");
    let child = {
        let webhook = skein_e2e::free_port();
        Command::new(skein_e2e::bin("skein-operator"))
            .args(["--watch-namespace", &ns, "--lease-namespace", &ns])
            .args([
                "--metrics-addr",
                &format!("127.0.0.1:{metrics}"),
                "--webhook-addr",
                &format!("127.0.0.1:{webhook}"),
            ])
            .args(["--webhook-url", &format!("https://127.0.0.1:{webhook}"), "--webhook-config-name", &config])
            .args(["--webhook-registration", "apply"])
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAMESPACE", &ns)
            .env("RUST_LOG", "info,kube=warn")
            .spawn()
            .expect("start skein-operator")
    };
    let (code, body) =
        tokio::task::spawn_blocking(move || readyz_until(metrics, "registration keeps failing")).await.expect("readyz");
    assert_eq!(code, 503, "{body}");
    let (took, clean) = tokio::task::spawn_blocking(move || terminate(child)).await.expect("terminate");
    let dp = DeleteParams::default();
    let _ = mutating.delete(&config, &dp).await;
    let _ = Api::<k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration>::all(client.clone())
        .delete(&config, &dp)
        .await;
    let _ = namespaces.delete(&ns, &dp).await;
    assert!(took < EXIT_WITHIN, "exit took {took:?} ({body})");
    assert!(clean, "a SIGTERM is a clean exit");
}
