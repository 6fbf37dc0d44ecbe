//! Registering the webhooks and keeping their TLS material current: the MutatingWebhookConfiguration and
//! ValidatingWebhookConfiguration built by pure functions ([`mutating`], [`validating`]) and server-side applied
//! with the CA bundle, the serving certificate kept in a Secret ([`ensure_secret`]) and reloaded into the running
//! server ([`keep_certificates`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use super::certs::{self, CertBundle, CertError, CertSettings};
use crate::FIELD_MANAGER;
use crate::metrics::Metrics;

/// Path of the pod-injection webhook.
pub const MUTATE_PATH: &str = "/mutate-pods";
/// Path of the pipeline-validation webhook.
pub const VALIDATE_PATH: &str = "/validate-tracingpipelines";
/// Name of the injection webhook inside its configuration.
pub const MUTATE_NAME: &str = "inject.skein.dev";
/// Name of the validation webhook inside its configuration.
pub const VALIDATE_NAME: &str = "validate.tracingpipelines.skein.dev";

/// Where the API server reaches the webhooks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// In cluster: a Service in front of the operator pods.
    Service {
        /// Service namespace (the operator's).
        namespace: String,
        /// Service name.
        name: String,
        /// Service port.
        port: i32,
    },
    /// Out of cluster (development, tests): a base URL such as `https://127.0.0.1:9443`.
    Url(String),
}

impl Target {
    /// The names the serving certificate must carry.
    pub fn cert_names(&self) -> Vec<String> {
        match self {
            Self::Service { namespace, name, .. } => vec![
                format!("{name}.{namespace}.svc"),
                format!("{name}.{namespace}.svc.cluster.local"),
                format!("{name}.{namespace}"),
                name.clone(),
            ],
            Self::Url(url) => {
                let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
                let authority = rest.split('/').next().unwrap_or_default();
                let host = match authority.strip_prefix('[') {
                    Some(v6) => v6.split(']').next().unwrap_or_default(),
                    None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
                };
                vec![host.to_string()]
            }
        }
    }

    fn client_config(&self, path: &str, ca_bundle: &str) -> serde_json::Value {
        let ca = ca_bundle_base64(ca_bundle);
        match self {
            Self::Service { namespace, name, port } => json!({
                "service": {"namespace": namespace, "name": name, "path": path, "port": port},
                "caBundle": ca,
            }),
            Self::Url(url) => json!({"url": format!("{}{path}", url.trim_end_matches('/')), "caBundle": ca}),
        }
    }
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([("app.kubernetes.io/managed-by".to_string(), FIELD_MANAGER.to_string())])
}

/// The injection webhook: pod CREATE in every namespace but `kube-system`, `kube-node-lease` and namespaces
/// labelled `skein.dev/injection: disabled`; `failurePolicy: Ignore`, `timeoutSeconds: 5` (pod creation never
/// waits on Skein); `sideEffects: NoneOnDryRun` (dry runs publish no Event).
///
/// # Errors
/// A JSON shape that does not match the Kubernetes type (a bug).
pub fn mutating(
    name: &str,
    target: &Target,
    ca_bundle: &str,
) -> Result<MutatingWebhookConfiguration, serde_json::Error> {
    serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name, "labels": labels()},
        "webhooks": [{
            "name": MUTATE_NAME,
            "admissionReviewVersions": ["v1"],
            "clientConfig": target.client_config(MUTATE_PATH, ca_bundle),
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "kube-node-lease"]},
                {"key": crate::inject::NAMESPACE_LABEL, "operator": "NotIn", "values": ["disabled"]},
            ]},
            "failurePolicy": "Ignore",
            "matchPolicy": "Equivalent",
            "reinvocationPolicy": "Never",
            "sideEffects": "NoneOnDryRun",
            "timeoutSeconds": 5,
        }],
    }))
}

/// The validation webhook: `TracingPipeline` CREATE and UPDATE, `failurePolicy: Fail` (an invalid pipeline is never
/// stored), `sideEffects: None`.
///
/// # Errors
/// A JSON shape that does not match the Kubernetes type (a bug).
pub fn validating(
    name: &str,
    target: &Target,
    ca_bundle: &str,
) -> Result<ValidatingWebhookConfiguration, serde_json::Error> {
    serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name, "labels": labels()},
        "webhooks": [{
            "name": VALIDATE_NAME,
            "admissionReviewVersions": ["v1"],
            "clientConfig": target.client_config(VALIDATE_PATH, ca_bundle),
            "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": ["skein.dev"], "apiVersions": ["v1alpha1"], "resources": ["tracingpipelines"], "scope": "Namespaced"}],
            "failurePolicy": "Fail",
            "matchPolicy": "Equivalent",
            "sideEffects": "None",
            "timeoutSeconds": 5,
        }],
    }))
}

/// Registration or certificate upkeep failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The Kubernetes API refused a call.
    #[error("kubernetes api: {0}")]
    Kube(#[from] kube::Error),
    /// Certificates could not be issued or read.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// A configuration object could not be built.
    #[error("building a webhook configuration: {0}")]
    Build(#[from] serde_json::Error),
}

/// Server-side applies both webhook configurations (forced, field manager `skein-operator`).
///
/// # Errors
/// [`RegisterError::Kube`] when the API server refuses (RBAC: `patch` on the two configuration kinds).
pub async fn apply_configurations(
    client: &Client,
    name: &str,
    target: &Target,
    ca_bundle: &str,
) -> Result<(), RegisterError> {
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let m: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    m.patch(name, &pp, &Patch::Apply(&mutating(name, target, ca_bundle)?)).await?;
    let v: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    v.patch(name, &pp, &Patch::Apply(&validating(name, target, ca_bundle)?)).await?;
    Ok(())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Returns the certificate in Secret `name`, issuing (and storing) a new one when it is missing, unreadable, for
/// other names, or due for renewal. Replicas race safely: writes carry the read `resourceVersion` (or are creates),
/// and the loser of a conflict takes the winner's certificate.
///
/// # Errors
/// [`RegisterError::Kube`] when the Secret cannot be read or written; [`RegisterError::Cert`] when issuing fails.
pub async fn ensure_secret(
    api: &Api<Secret>,
    name: &str,
    settings: &CertSettings,
    metrics: &Metrics,
) -> Result<CertBundle, RegisterError> {
    let now = unix_now();
    let existing = api.get_opt(name).await?;
    let current = existing.as_ref().map(certs::from_secret);
    if let Some(Ok(b)) = &current
        && !certs::due(b, settings, now)
    {
        return Ok(b.clone());
    }
    if let Some(Err(e)) = &current {
        tracing::warn!(secret = name, error = %e, "the webhook certificate Secret is unreadable; issuing a new one");
    }
    let previous = current.and_then(Result::ok);
    let fresh = certs::issue(settings, previous.as_ref(), now)?;
    let (data, annotations) = certs::to_secret(&fresh);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(labels()),
            annotations: Some(annotations),
            resource_version: existing.as_ref().and_then(|s| s.metadata.resource_version.clone()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Default::default()
    };
    let written = match &existing {
        Some(_) => api.replace(name, &PostParams::default(), &secret).await,
        None => api.create(&PostParams::default(), &secret).await,
    };
    match written {
        Ok(_) => {
            metrics.certificate_renewals.inc();
            tracing::info!(secret = name, not_after = fresh.not_after, "issued the webhook serving certificate");
            Ok(fresh)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {
            // Another replica wrote first: serve what it wrote.
            Ok(certs::from_secret(&api.get(name).await?)?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Where the serving certificate comes from.
#[derive(Clone, Debug)]
pub enum CertSource {
    /// Issued by the operator and kept in a Secret.
    Managed {
        /// The Secret's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
        /// What to issue.
        settings: CertSettings,
    },
    /// Files provided by the user (`tls.crt`, `tls.key`, optional `ca.crt`), re-read on every pass.
    Dir(PathBuf),
}

/// Who owns the webhook configurations, and so what the operator writes into them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// The operator server-side applies both configurations whole ([`mutating`], [`validating`]): out-of-cluster
    /// runs, tests, installs without the Helm chart.
    Apply,
    /// Another tool (the Helm chart) creates the configurations with its own rules, selectors and failure policies;
    /// the operator only patches `caBundle` into the webhooks named [`MUTATE_NAME`] and [`VALIDATE_NAME`], as
    /// cert-manager's CA injector does.
    CaBundle,
    /// The operator writes nothing; the configurations and their `caBundle` are someone else's.
    Off,
}

/// Registration settings for [`keep_certificates`].
#[derive(Clone, Debug)]
pub struct Registration {
    /// Name of both webhook configurations.
    pub config_name: String,
    /// How the API server reaches the webhooks.
    pub target: Target,
    /// What the operator writes into the configurations.
    pub mode: Mode,
}

/// The certificate to serve now: from the Secret (renewed if due) or the user's directory.
///
/// # Errors
/// Any API or certificate failure.
pub async fn current(client: &Client, source: &CertSource, metrics: &Metrics) -> Result<CertBundle, RegisterError> {
    Ok(match source {
        CertSource::Managed { namespace, name, settings } => {
            ensure_secret(&Api::namespaced(client.clone(), namespace), name, settings, metrics).await?
        }
        CertSource::Dir(dir) => certs::from_dir(dir)?,
    })
}

/// The strategic merge patch that sets `caBundle` (PEM, base64-encoded on the wire) in the webhook `name` of a
/// Mutating- or ValidatingWebhookConfiguration, leaving every other field and webhook as it is (`webhooks` merges
/// on `name`).
pub fn ca_bundle_patch(name: &str, ca_bundle_pem: &str) -> serde_json::Value {
    json!({"webhooks": [{"name": name, "clientConfig": {"caBundle": ca_bundle_base64(ca_bundle_pem)}}]})
}

/// `caBundle` as the API carries it: the PEM text, base64-encoded.
fn ca_bundle_base64(pem: &str) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, pem)
}

/// Patches `caBundle` into configurations created by someone else (the Helm chart).
///
/// # Errors
/// [`RegisterError::Kube`]: 404 while the configurations do not exist yet, 403 without `patch` on them.
pub async fn patch_ca_bundles(client: &Client, name: &str, ca_bundle_pem: &str) -> Result<(), RegisterError> {
    let pp = PatchParams::default();
    let m: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    m.patch(name, &pp, &Patch::Strategic(ca_bundle_patch(MUTATE_NAME, ca_bundle_pem))).await?;
    let v: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    v.patch(name, &pp, &Patch::Strategic(ca_bundle_patch(VALIDATE_NAME, ca_bundle_pem))).await?;
    Ok(())
}

/// Writes `bundle`'s CA into the configurations as `registration.mode` says (nothing when there is no CA to trust).
///
/// # Errors
/// [`RegisterError::Kube`] when the API server refuses.
pub async fn register(client: &Client, registration: &Registration, bundle: &CertBundle) -> Result<(), RegisterError> {
    if bundle.ca_bundle_pem.is_empty() {
        return Ok(());
    }
    let (name, ca) = (&registration.config_name, &bundle.ca_bundle_pem);
    match registration.mode {
        Mode::Apply => apply_configurations(client, name, &registration.target, ca).await,
        Mode::CaBundle => patch_ca_bundles(client, name, ca).await,
        Mode::Off => Ok(()),
    }
}

/// One pass: the current certificate (renewed if due), and the configurations applied with its CA bundle (which
/// also repairs a configuration deleted or edited by hand).
///
/// # Errors
/// Any API or certificate failure.
pub async fn refresh(
    client: &Client,
    source: &CertSource,
    registration: &Registration,
    metrics: &Metrics,
) -> Result<CertBundle, RegisterError> {
    let bundle = current(client, source, metrics).await?;
    register(client, registration, &bundle).await?;
    Ok(bundle)
}

/// What [`keep_certificates`] maintains.
#[derive(Clone, Debug)]
pub struct Upkeep {
    /// Where the certificate comes from.
    pub source: CertSource,
    /// The configurations to keep applied.
    pub registration: Registration,
    /// Time between passes ([`check_interval`]).
    pub interval: Duration,
}

/// Keeps the served certificate and the registrations current until `shutdown`: every `upkeep.interval`,
/// [`refresh`], and reload the TLS configuration of the running server when the certificate changed.
pub async fn keep_certificates(
    client: Client,
    upkeep: Upkeep,
    tls: RustlsConfig,
    mut served: CertBundle,
    metrics: Arc<Metrics>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let Upkeep { source, registration, interval } = upkeep;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        match refresh(&client, &source, &registration, &metrics).await {
            Ok(bundle) if bundle != served => match certs::server_config(&bundle) {
                Ok(config) => {
                    tls.reload_from_config(config);
                    metrics.certificate_expiry.set(bundle.not_after);
                    tracing::info!(not_after = bundle.not_after, "serving the renewed webhook certificate");
                    served = bundle;
                }
                Err(e) => tracing::error!(error = %e, "the renewed webhook certificate cannot be served"),
            },
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "webhook certificate or registration upkeep failed; retrying"),
        }
    }
}

/// How often [`keep_certificates`] runs for a certificate lifetime: a tenth of it, between 1 s and 5 min.
pub fn check_interval(lifetime_secs: i64) -> Duration {
    Duration::from_secs((lifetime_secs / 10).clamp(1, 300) as u64)
}
