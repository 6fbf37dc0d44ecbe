//! The webhook's TLS material without cert-manager: a CA and a serving certificate made with `rcgen`, kept in a
//! Secret the operator owns, renewed before expiry, and turned into a `rustls` server configuration (ring, no
//! aws-lc).
//!
//! Renewal keeps the CA while it outlives the new serving certificate (so the `caBundle` the API server trusts does
//! not change); a new CA is made only when the old one is about to expire, and the bundle then carries both until
//! the old one does. User-provided certificates (`--webhook-cert-dir`) go through the same [`CertBundle`] and
//! [`server_config`].

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Secret key: the serving certificate (PEM).
pub const TLS_CRT: &str = "tls.crt";
/// Secret key: the serving key (PEM, PKCS#8).
pub const TLS_KEY: &str = "tls.key";
/// Secret key: the CA bundle the API server trusts (PEM, one or two certificates).
pub const CA_CRT: &str = "ca.crt";
/// Secret key: the current CA's key (PEM), for renewals.
pub const CA_KEY: &str = "ca.key";
/// Secret annotation: serving certificate expiry, Unix seconds.
pub const NOT_AFTER_ANNOTATION: &str = "skein.dev/not-after";
/// Secret annotation: current CA expiry, Unix seconds.
pub const CA_NOT_AFTER_ANNOTATION: &str = "skein.dev/ca-not-after";
/// Secret annotation: the serving certificate's names (DNS names and IP addresses, comma-separated).
pub const NAMES_ANNOTATION: &str = "skein.dev/names";
const CA_COMMON_NAME: &str = "skein-operator-webhook-ca";
/// Certificates are valid from this long before they are made (clock skew between nodes), seconds.
const BACKDATE_SECS: i64 = 300;

/// What to issue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSettings {
    /// Subject alternative names: DNS names (`<service>.<namespace>.svc`) or IP addresses (`127.0.0.1`).
    pub names: Vec<String>,
    /// Serving certificate lifetime, seconds; renewed when less than a third is left.
    pub lifetime_secs: i64,
    /// CA lifetime, seconds.
    pub ca_lifetime_secs: i64,
}

/// A serving certificate and the CAs that vouch for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertBundle {
    /// PEM of the CAs clients should trust (the current one first).
    pub ca_bundle_pem: String,
    /// PEM key of the current CA; `None` for user-provided certificates (never renewed by Skein).
    pub ca_key_pem: Option<String>,
    /// Current CA expiry, Unix seconds.
    pub ca_not_after: i64,
    /// Serving certificate chain, PEM.
    pub cert_pem: String,
    /// Serving key, PEM.
    pub key_pem: String,
    /// Serving certificate expiry, Unix seconds.
    pub not_after: i64,
    /// The serving certificate's names.
    pub names: Vec<String>,
}

/// Certificates that cannot be made, read or served.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// `rcgen` refused the parameters (e.g. a name that is neither a DNS name nor an IP address).
    #[error("issuing a certificate: {0}")]
    Issue(#[from] rcgen::Error),
    /// PEM or key material that does not parse.
    #[error("reading certificates: {0}")]
    Pem(String),
    /// `rustls` refused the certificate and key.
    #[error("tls configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The Secret lacks a key or annotation.
    #[error("secret {0}")]
    Secret(String),
}

fn at(unix: i64) -> Result<time::OffsetDateTime, CertError> {
    time::OffsetDateTime::from_unix_timestamp(unix).map_err(|e| CertError::Pem(e.to_string()))
}

fn ca_params(not_before: i64, not_after: i64) -> Result<CertificateParams, CertError> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, CA_COMMON_NAME);
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p.not_before = at(not_before)?;
    p.not_after = at(not_after)?;
    Ok(p)
}

/// The first certificate of a PEM bundle.
fn first_pem(bundle: &str) -> Option<String> {
    const END: &str = "-----END CERTIFICATE-----";
    bundle.find(END).map(|i| format!("{}\n", bundle[..i + END.len()].trim_start()))
}

/// Issues a serving certificate for `settings` at `now` (Unix seconds), reusing `previous`'s CA while it outlives
/// the new certificate.
///
/// # Errors
/// [`CertError::Issue`] for names `rcgen` refuses; [`CertError::Pem`] for an unreadable previous CA key.
pub fn issue(settings: &CertSettings, previous: Option<&CertBundle>, now: i64) -> Result<CertBundle, CertError> {
    let not_after = now + settings.lifetime_secs;
    let reusable = previous.filter(|p| p.ca_key_pem.is_some() && p.ca_not_after > not_after);
    let (ca_key, ca_pem, ca_not_after, bundle) = match reusable {
        Some(p) => {
            let key = KeyPair::from_pem(p.ca_key_pem.as_deref().unwrap_or_default())?;
            let pem = first_pem(&p.ca_bundle_pem).ok_or_else(|| CertError::Pem("empty CA bundle".into()))?;
            (key, pem, p.ca_not_after, p.ca_bundle_pem.clone())
        }
        None => {
            let key = KeyPair::generate()?;
            let ca_not_after = now + settings.ca_lifetime_secs.max(settings.lifetime_secs + 1);
            let pem = ca_params(now - BACKDATE_SECS, ca_not_after)?.self_signed(&key)?.pem();
            // Keep trusting the old CA while certificates it signed may still be served by other replicas.
            let old = previous.filter(|p| p.ca_not_after > now).and_then(|p| first_pem(&p.ca_bundle_pem));
            let bundle = format!("{pem}{}", old.unwrap_or_default());
            (key, pem, ca_not_after, bundle)
        }
    };
    let issuer = Issuer::new(ca_params(now - BACKDATE_SECS, ca_not_after)?, &ca_key);
    let mut params = CertificateParams::new(settings.names.clone())?;
    params.distinguished_name.push(DnType::CommonName, settings.names.first().map(String::as_str).unwrap_or("skein"));
    params.not_before = at(now - BACKDATE_SECS)?;
    let not_after = not_after.min(ca_not_after);
    params.not_after = at(not_after)?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(CertBundle {
        ca_bundle_pem: bundle,
        ca_key_pem: Some(ca_key.serialize_pem()),
        ca_not_after,
        // The chain: leaf, then the CA that signed it.
        cert_pem: format!("{}{ca_pem}", cert.pem()),
        key_pem: key.serialize_pem(),
        not_after,
        names: settings.names.clone(),
    })
}

/// Whether `bundle` must be replaced at `now`: other names, or less than a third of its lifetime left.
pub fn due(bundle: &CertBundle, settings: &CertSettings, now: i64) -> bool {
    bundle.ca_key_pem.is_some()
        && (bundle.names != settings.names || bundle.not_after - now < settings.lifetime_secs / 3)
}

/// A `rustls` server configuration (ring provider, TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`) serving `bundle`.
///
/// # Errors
/// [`CertError::Pem`] for unreadable PEM; [`CertError::Tls`] when the key does not match the certificate.
pub fn server_config(bundle: &CertBundle) -> Result<Arc<ServerConfig>, CertError> {
    let chain = CertificateDer::pem_slice_iter(bundle.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Pem(format!("certificate: {e}")))?;
    if chain.is_empty() {
        return Err(CertError::Pem("no certificate in the PEM".into()));
    }
    let key =
        PrivateKeyDer::from_pem_slice(bundle.key_pem.as_bytes()).map_err(|e| CertError::Pem(format!("key: {e}")))?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A `rustls` client configuration (ring provider) trusting only the CAs in `ca_bundle_pem` — what the API server
/// does with a webhook's `caBundle`; for tests, benchmarks and tools that call the webhook.
///
/// # Errors
/// [`CertError::Pem`] when the bundle holds no readable certificate.
pub fn client_config(ca_bundle_pem: &str) -> Result<Arc<rustls::ClientConfig>, CertError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_bundle_pem.as_bytes()) {
        let cert = cert.map_err(|e| CertError::Pem(format!("CA bundle: {e}")))?;
        roots.add(cert).map_err(|e| CertError::Pem(format!("CA bundle: {e}")))?;
    }
    if roots.is_empty() {
        return Err(CertError::Pem("no certificate in the CA bundle".into()));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The Secret data and annotations holding `bundle`.
pub fn to_secret(bundle: &CertBundle) -> (BTreeMap<String, ByteString>, BTreeMap<String, String>) {
    let mut data = BTreeMap::from([
        (TLS_CRT.to_string(), ByteString(bundle.cert_pem.clone().into_bytes())),
        (TLS_KEY.to_string(), ByteString(bundle.key_pem.clone().into_bytes())),
        (CA_CRT.to_string(), ByteString(bundle.ca_bundle_pem.clone().into_bytes())),
    ]);
    if let Some(k) = &bundle.ca_key_pem {
        data.insert(CA_KEY.to_string(), ByteString(k.clone().into_bytes()));
    }
    let annotations = BTreeMap::from([
        (NOT_AFTER_ANNOTATION.to_string(), bundle.not_after.to_string()),
        (CA_NOT_AFTER_ANNOTATION.to_string(), bundle.ca_not_after.to_string()),
        (NAMES_ANNOTATION.to_string(), bundle.names.join(",")),
    ]);
    (data, annotations)
}

/// Reads a bundle written by [`to_secret`].
///
/// # Errors
/// [`CertError::Secret`] naming the missing or unreadable key or annotation.
pub fn from_secret(secret: &Secret) -> Result<CertBundle, CertError> {
    let data = secret.data.clone().unwrap_or_default();
    let text = |key: &str| {
        data.get(key)
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .ok_or_else(|| CertError::Secret(format!("has no {key}")))
    };
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    let number = |key: &str| {
        annotations
            .get(key)
            .and_then(|v| v.parse::<i64>().ok())
            .ok_or_else(|| CertError::Secret(format!("has no numeric annotation {key}")))
    };
    Ok(CertBundle {
        ca_bundle_pem: text(CA_CRT)?,
        ca_key_pem: Some(text(CA_KEY)?),
        ca_not_after: number(CA_NOT_AFTER_ANNOTATION)?,
        cert_pem: text(TLS_CRT)?,
        key_pem: text(TLS_KEY)?,
        not_after: number(NOT_AFTER_ANNOTATION)?,
        names: annotations
            .get(NAMES_ANNOTATION)
            .map(|n| n.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect())
            .unwrap_or_default(),
    })
}

/// Reads user-provided certificates from a directory with `tls.crt`, `tls.key` and optionally `ca.crt` (the layout
/// of a cert-manager or `kubernetes.io/tls` Secret volume). They are served as they are and never renewed here.
///
/// # Errors
/// [`CertError::Pem`] when `tls.crt` or `tls.key` cannot be read.
pub fn from_dir(dir: &std::path::Path) -> Result<CertBundle, CertError> {
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .map_err(|e| CertError::Pem(format!("{}: {e}", dir.join(name).display())))
    };
    Ok(CertBundle {
        ca_bundle_pem: read(CA_CRT).unwrap_or_default(),
        ca_key_pem: None,
        ca_not_after: 0,
        cert_pem: read(TLS_CRT)?,
        key_pem: read(TLS_KEY)?,
        not_after: 0,
        names: Vec::new(),
    })
}
