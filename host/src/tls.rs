//! Which certificate authorities the process trusts, for every client it
//! makes: the SDK's (Kinesis, DynamoDB, STS, the credential providers) and
//! the direct PutRecords path agree, because both take their roots here.
//!
//! - With a CA bundle (`ca_bundle = "path.pem"` on a source, output or
//!   `[checkpoint]`, else `AWS_CA_BUNDLE`), exactly the certificates in that
//!   file are trusted, as the AWS CLI and the other SDKs do: a private CA or
//!   a VPC endpoint with its own certificate.
//! - Otherwise the system's roots, through `rustls-native-certs`, which
//!   honours `SSL_CERT_FILE` and `SSL_CERT_DIR` as OpenSSL does.
//!
//! Also: `certificate_failure` finds a refused certificate in an error's
//! chain (a configuration error, never an outage to wait out), and `probe`
//! makes one TLS handshake for `distributary check`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The CA bundle in force for a client: its own `ca_bundle`, else `AWS_CA_BUNDLE`.
pub fn bundle(configured: Option<&Path>) -> Option<PathBuf> {
    configured.map(Path::to_path_buf).or_else(|| {
        std::env::var_os("AWS_CA_BUNDLE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
}

/// Which roots are trusted, in words, for error messages.
pub fn trust_text() -> String {
    match bundle(None) {
        Some(path) => format!("the CA bundle {} (AWS_CA_BUNDLE)", path.display()),
        None => match std::env::var_os("SSL_CERT_FILE") {
            Some(file) => format!(
                "the system's roots from SSL_CERT_FILE {}",
                file.to_string_lossy()
            ),
            None => "the system's roots (set ca_bundle or AWS_CA_BUNDLE for a private CA)".into(),
        },
    }
}

/// The endpoint a Kinesis client of `configured` endpoint and `region`
/// talks to, as the SDK resolves it (for messages).
pub fn kinesis_endpoint(configured: Option<&str>, region: Option<&str>) -> String {
    configured
        .map(str::to_string)
        .or_else(|| std::env::var("AWS_ENDPOINT_URL_KINESIS").ok())
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| {
            format!(
                "https://kinesis.{}.amazonaws.com",
                region.map_or_else(
                    || std::env::var("AWS_REGION").unwrap_or_else(|_| "<region>".into()),
                    str::to_string
                )
            )
        })
}

/// The PEM text of a bundle, checked to hold at least one certificate.
pub fn read_bundle(path: &Path) -> anyhow::Result<Vec<u8>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let pem =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("CA bundle {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("CA bundle {}: not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("CA bundle {}: holds no certificate", path.display());
    }
    Ok(pem)
}

/// The roots a client trusts with `bundle` (None: the system's).
pub fn root_store(bundle: Option<&Path>) -> anyhow::Result<Arc<rustls::RootCertStore>> {
    type Stores = Mutex<Vec<(Option<PathBuf>, Arc<rustls::RootCertStore>)>>;
    static STORES: OnceLock<Stores> = OnceLock::new();
    let stores = STORES.get_or_init(Default::default);
    if let Ok(s) = stores.lock()
        && let Some((_, store)) = s.iter().find(|(b, _)| b.as_deref() == bundle)
    {
        return Ok(store.clone());
    }
    let mut roots = rustls::RootCertStore::empty();
    match bundle {
        Some(path) => {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            let pem = read_bundle(path)?;
            for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
                roots
                    .add(cert)
                    .map_err(|e| anyhow::anyhow!("CA bundle {}: {e}", path.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::warn!(%error, "loading the system's TLS roots");
            }
            let (valid, _) = roots.add_parsable_certificates(found.certs);
            if valid == 0 {
                tracing::warn!(
                    "no system TLS root certificates found (set AWS_CA_BUNDLE, SSL_CERT_FILE or ca_bundle)"
                );
            }
        }
    }
    let store = Arc::new(roots);
    if let Ok(mut s) = stores.lock() {
        s.push((bundle.map(Path::to_path_buf), store.clone()));
    }
    Ok(store)
}

/// A rustls client configuration with `bundle`'s roots (HTTP/1.1).
pub fn client_config(bundle: Option<&Path>) -> anyhow::Result<rustls::ClientConfig> {
    let roots = root_store(bundle)?;
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| anyhow::anyhow!("TLS configuration: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// The SDK's HTTP client trusting `bundle` (None: the SDK's own default,
/// the system's roots).
pub fn sdk_http_client(
    bundle: Option<&Path>,
) -> anyhow::Result<Option<aws_sdk_kinesis::config::SharedHttpClient>> {
    use aws_smithy_http_client::tls;
    let Some(path) = bundle else {
        return Ok(None);
    };
    let pem = read_bundle(path)?;
    let context = tls::TlsContext::builder()
        .with_trust_store(tls::TrustStore::empty().with_pem_certificate(pem))
        .build()
        .map_err(|e| anyhow::anyhow!("CA bundle {}: {e}", path.display()))?;
    Ok(Some(
        aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::AwsLc,
            ))
            .tls_context(context)
            .build_https(),
    ))
}

/// The refused certificate in `error`'s chain, if that is why it failed:
/// e.g. "invalid peer certificate: UnknownIssuer".
pub fn certificate_failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return is_certificate(tls).then(|| tls.to_string());
        }
        // io::Error's `source` skips the error it wraps (which may be
        // another io::Error around the rustls one): descend into it.
        next = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

fn is_certificate(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::UnsupportedNameType
    )
}

/// What one TLS handshake with an endpoint found.
#[derive(Debug)]
pub enum Probe {
    Trusted,
    /// The certificate was refused: the configuration must change.
    Refused(String),
    /// Nothing answered (or not TLS): an outage, not a configuration error.
    Unreachable(String),
}

/// Connects to `endpoint` (an `https://` URL) and makes a TLS handshake
/// with `bundle`'s roots, within `timeout` for each step.
pub async fn probe(endpoint: &str, bundle: Option<&Path>, timeout: Duration) -> Probe {
    let Ok(uri) = endpoint.parse::<http::Uri>() else {
        return Probe::Unreachable(format!("{endpoint} is not a URL"));
    };
    let Some(host) = uri.host().map(str::to_string) else {
        return Probe::Unreachable(format!("{endpoint} has no host"));
    };
    let port = uri.port_u16().unwrap_or(443);
    let config = match client_config(bundle) {
        Ok(c) => Arc::new(c),
        Err(e) => return Probe::Refused(format!("{e:#}")),
    };
    let Ok(name) = rustls::pki_types::ServerName::try_from(host.clone()) else {
        return Probe::Refused(format!("{host} is not a valid TLS server name"));
    };
    let tcp = match tokio::time::timeout(
        timeout,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Probe::Unreachable(format!("{host}:{port}: {e}")),
        Err(_) => {
            return Probe::Unreachable(format!("{host}:{port}: no answer within {timeout:?}"));
        }
    };
    let connector = tokio_rustls::TlsConnector::from(config);
    match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
        Ok(Ok(_)) => Probe::Trusted,
        Ok(Err(e)) => match certificate_failure(&e) {
            Some(why) => Probe::Refused(format!("{host}:{port}: TLS: {why}")),
            None => Probe::Unreachable(format!("{host}:{port}: TLS handshake: {e}")),
        },
        Err(_) => Probe::Unreachable(format!(
            "{host}:{port}: TLS handshake: no answer within {timeout:?}"
        )),
    }
}

/// The HTTPS endpoints a configuration names (its `endpoint_url` keys, and
/// `AWS_ENDPOINT_URL_KINESIS` / `_DYNAMODB` / `AWS_ENDPOINT_URL` where a key
/// is unset), with the key they come from and the CA bundle in force. AWS's
/// own endpoints (nothing set) are not listed: `check` stays off the
/// network for them.
pub fn named_endpoints(config: &crate::config::Config) -> Vec<(String, String, Option<PathBuf>)> {
    use crate::config::StoreKind;
    let env = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
    };
    let kinesis_env = || env(&["AWS_ENDPOINT_URL_KINESIS", "AWS_ENDPOINT_URL"]);
    let mut out = Vec::new();
    for (name, s) in &config.sources {
        if let Some(url) = s.endpoint_url.clone().or_else(kinesis_env) {
            out.push((
                format!("sources.{name}"),
                url,
                bundle(s.ca_bundle.as_deref()),
            ));
        }
    }
    for (name, o) in &config.outputs {
        if let Some(url) = o.endpoint_url.clone().or_else(kinesis_env) {
            out.push((
                format!("outputs.{name}"),
                url,
                bundle(o.ca_bundle.as_deref()),
            ));
        }
    }
    let c = &config.checkpoint;
    if c.store == StoreKind::Dynamodb
        && let Some(url) = c
            .endpoint_url
            .clone()
            .or_else(|| env(&["AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL"]))
    {
        out.push(("checkpoint".into(), url, bundle(c.ca_bundle.as_deref())));
    }
    out.retain(|(_, url, _)| url.starts_with("https://"));
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_certificate_is_found_through_nested_io_errors() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let nested =
            std::io::Error::other(std::io::Error::new(std::io::ErrorKind::InvalidData, tls));
        assert_eq!(
            certificate_failure(&nested).as_deref(),
            Some("invalid peer certificate: UnknownIssuer")
        );
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(
            certificate_failure(&refused),
            None,
            "an outage, not a certificate"
        );
    }
}
