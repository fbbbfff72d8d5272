//! The tests' own certificate authority, made once per test process with
//! rcgen, and the TLS server configurations the fronts serve: a certificate
//! for `localhost` and `127.0.0.1` signed by that CA (what a private CA or a
//! VPC endpoint looks like to the host), and two that must be refused: one
//! for another name, one from a CA nobody trusts.

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// Which certificate a front presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Certificate {
    /// `localhost` and `127.0.0.1`, signed by the test CA.
    Good,
    /// Signed by the test CA, for `wrong-name.invalid` only.
    WrongName,
    /// `localhost` and `127.0.0.1`, signed by a CA that is in no bundle.
    UnknownCa,
}

struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Authority {
    fn new(name: &str) -> Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, name.to_string());
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(Authority { issuer })
    }

    /// A server certificate for `name` (and 127.0.0.1 with `loopback`).
    fn server_config(&self, name: &str, loopback: bool) -> Result<Arc<rustls::ServerConfig>> {
        let mut params = CertificateParams::new(vec![name.to_string()])?;
        if loopback {
            params
                .subject_alt_names
                .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        }
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let chain = vec![
            CertificateDer::from(cert.der().to_vec()),
            CertificateDer::from(self.issuer.der().to_vec()),
        ];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

struct Made {
    ca_file: PathBuf,
    ca_pem: String,
    good: Arc<rustls::ServerConfig>,
    wrong_name: Arc<rustls::ServerConfig>,
    unknown_ca: Arc<rustls::ServerConfig>,
}

fn made() -> Result<&'static Made> {
    static MADE: OnceLock<Result<Made, String>> = OnceLock::new();
    MADE.get_or_init(|| make().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow::anyhow!("making the test CA: {e}"))
}

fn make() -> Result<Made> {
    let ca = Authority::new("distributary test CA")?;
    let stranger = Authority::new("a CA nobody trusts")?;
    let dir = std::env::temp_dir().join(format!("distributary-test-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca_file = dir.join("ca.pem");
    let ca_pem = ca.issuer.pem();
    std::fs::write(&ca_file, &ca_pem).with_context(|| format!("writing {}", ca_file.display()))?;
    Ok(Made {
        ca_file,
        ca_pem,
        good: ca.server_config("localhost", true)?,
        wrong_name: ca.server_config("wrong-name.invalid", false)?,
        unknown_ca: stranger.server_config("localhost", true)?,
    })
}

/// The test CA's certificate as a PEM file (for `AWS_CA_BUNDLE`, `ca_bundle`).
pub fn ca_file() -> Result<PathBuf> {
    Ok(made()?.ca_file.clone())
}

/// The test CA's certificate, PEM.
pub fn ca_pem() -> Result<String> {
    Ok(made()?.ca_pem.clone())
}

pub fn server_config(which: Certificate) -> Result<Arc<rustls::ServerConfig>> {
    let m = made()?;
    Ok(match which {
        Certificate::Good => m.good.clone(),
        Certificate::WrongName => m.wrong_name.clone(),
        Certificate::UnknownCa => m.unknown_ca.clone(),
    })
}
