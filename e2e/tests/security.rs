//! Security end to end (issue #10): agent → collector over TLS with mutual authentication, between the real
//! binaries. A collector started with `--otlp-tls-cert-file/--otlp-tls-key-file/--otlp-tls-client-ca-file`
//! stores spans from an agent presenting a certificate its CA signed — with the pipeline's redaction applied on
//! the way — and refuses plaintext clients, agents without a client certificate and agents whose certificate
//! another CA signed (their spans stay buffered, never sent in the clear). An agent whose certificate files
//! appear only after it started (a Secret volume filled late) forwards once they do.

use std::path::Path;
use std::time::Duration;

use skein_e2e::otlp::{request_for, trace_hex};
use skein_e2e::{Agent, AllInOne, free_port, wait_until};
use skein_proto::trace_service_client::TraceServiceClient;

struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
    rogue_client: (String, String),
}

fn ca(name: &str) -> (rcgen::Certificate, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
    let cert = params.self_signed(&key).expect("CA certificate");
    (cert, rcgen::Issuer::new(params, key))
}

fn leaf(names: &[&str], issuer: &rcgen::Issuer<'static, rcgen::KeyPair>, client: bool) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("params");
    params.extended_key_usages = vec![if client {
        rcgen::ExtendedKeyUsagePurpose::ClientAuth
    } else {
        rcgen::ExtendedKeyUsagePurpose::ServerAuth
    }];
    let cert = params.signed_by(&key, issuer).expect("certificate");
    (cert.pem(), key.serialize_pem())
}

fn pki() -> Pki {
    let (ca_cert, issuer) = ca("skein test CA");
    let (_, other) = ca("someone else's CA");
    Pki {
        ca: ca_cert.pem(),
        server: leaf(&["127.0.0.1", "localhost"], &issuer, false),
        client: leaf(&["skein-agent"], &issuer, true),
        rogue_client: leaf(&["skein-agent"], &other, true),
    }
}

fn write(dir: &Path, name: &str, pem: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, pem).expect("write PEM");
    p.to_str().expect("UTF-8 path").to_string()
}

fn send(agent: &Agent, service: &str, requests: u32) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut client = TraceServiceClient::connect(format!("http://{}", agent.otlp_grpc)).await.expect("connect");
        for i in 0..requests {
            client.export(request_for(service, i, 2, 5, 0)).await.expect("the agent accepts");
        }
    });
}

const REDACT_PAYLOAD: &str = "redaction:\n- {key: '^payload$', action: mask}\n";

#[test]
fn mutual_tls_between_agent_and_collector_with_redaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let pki = pki();
    let ca = write(d, "ca.crt", &pki.ca);
    let (server_cert, server_key) = (write(d, "tls.crt", &pki.server.0), write(d, "tls.key", &pki.server.1));
    let (client_cert, client_key) = (write(d, "client.crt", &pki.client.0), write(d, "client.key", &pki.client.1));
    let (rogue_cert, rogue_key) =
        (write(d, "rogue.crt", &pki.rogue_client.0), write(d, "rogue.key", &pki.rogue_client.1));
    let addr = format!("127.0.0.1:{}", free_port());
    let s = AllInOne::start_with(
        &d.join("data"),
        200,
        &[
            "--otlp-grpc-addr",
            &addr,
            "--otlp-tls-cert-file",
            &server_cert,
            "--otlp-tls-key-file",
            &server_key,
            "--otlp-tls-client-ca-file",
            &ca,
        ],
    );

    // The right client certificate: stored, with the payload attribute masked by the agent.
    let good = Agent::start(&[
        "--collector",
        &addr,
        "--collector-tls-ca",
        &ca,
        "--collector-tls-cert",
        &client_cert,
        "--collector-tls-key",
        &client_key,
        "--config-yaml",
        REDACT_PAYLOAD,
    ]);
    send(&good, "mtls", 10);
    good.wait_forwarded(100, Duration::from_secs(30));
    s.wait_until_written();
    let (status, trace) = s.get(&format!("/api/traces/{}", trace_hex(3, 1)));
    assert_eq!(status, 200, "{trace}");
    let spans = trace["data"][0]["spans"].as_array().cloned().unwrap_or_default();
    assert_eq!(spans.len(), 5);
    for span in &spans {
        let payload = span["tags"].as_array().into_iter().flatten().find(|t| t["key"] == "payload");
        assert_eq!(payload.map(|t| t["value"].clone()), Some(serde_json::json!("****")), "redacted: {span}");
    }
    assert!(good.metric("skein_agent_attributes_redacted_total") >= 100.0);

    // Plaintext gRPC to the TLS port fails.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let plain = rt.block_on(async {
        let mut c = TraceServiceClient::connect(format!("http://{addr}")).await?;
        c.export(request_for("plain", 0, 1, 1, 0)).await.map(|_| ()).map_err(Into::into)
    });
    let plain: Result<(), Box<dyn std::error::Error>> = plain;
    assert!(plain.is_err(), "a plaintext export must not be accepted");

    // No client certificate, or one another CA signed: the handshake fails, nothing is sent, spans stay buffered.
    let anonymous = Agent::start(&["--collector", &addr, "--collector-tls-ca", &ca]);
    let rogue = Agent::start(&[
        "--collector",
        &addr,
        "--collector-tls-ca",
        &ca,
        "--collector-tls-cert",
        &rogue_cert,
        "--collector-tls-key",
        &rogue_key,
    ]);
    for (agent, service) in [(&anonymous, "anonymous"), (&rogue, "rogue")] {
        send(agent, service, 2);
        wait_until(&format!("{service}: the collector counts as down"), Duration::from_secs(30), || {
            agent.metric(&format!("skein_agent_endpoint_healthy{{endpoint=\"{addr}\"}}")) == 0.0
        });
        assert_eq!(agent.metric("skein_agent_spans_forwarded_total"), 0.0, "{service}");
        assert_eq!(agent.metric("skein_agent_buffer_spans{tier=\"memory\"}"), 20.0, "{service}: kept for later");
    }
    let (_, services) = s.get("/api/services");
    assert_eq!(services["data"], serde_json::json!(["mtls"]), "only the authenticated agent's spans are stored");

    // Certificate files that appear after the agent started (a Secret volume filled late) apply to the next
    // connection: the buffered spans go out then.
    let late_dir = d.join("late");
    std::fs::create_dir_all(&late_dir).expect("dir");
    let late = |n: &str| late_dir.join(n).to_str().expect("UTF-8").to_string();
    let waiting = Agent::start(&[
        "--collector",
        &addr,
        "--collector-tls-ca",
        &late("ca.crt"),
        "--collector-tls-cert",
        &late("tls.crt"),
        "--collector-tls-key",
        &late("tls.key"),
    ]);
    send(&waiting, "late-secret", 3);
    // The agent has the spans and has tried (and failed) to set up its collector connection since.
    let tried = waiting.metric("skein_agent_endpoint_setup_failures_total");
    wait_until("a failed connection set-up after the spans arrived", Duration::from_secs(30), || {
        waiting.metric("skein_agent_endpoint_setup_failures_total") > tried
    });
    assert_eq!(waiting.metric("skein_agent_spans_forwarded_total"), 0.0, "no TLS files yet: nothing sent");
    write(&late_dir, "ca.crt", &pki.ca);
    write(&late_dir, "tls.crt", &pki.client.0);
    write(&late_dir, "tls.key", &pki.client.1);
    waiting.wait_forwarded(30, Duration::from_secs(30));
    s.wait_until_written();
    let (_, services) = s.get("/api/services");
    assert_eq!(services["data"], serde_json::json!(["late-secret", "mtls"]));
}
