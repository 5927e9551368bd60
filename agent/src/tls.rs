//! The HTTPS identity: a self-signed certificate made at first start and kept in the data dir
//! (`ssl/rui.crt`, `ssl/rui.key`, as ESXi names them), its thumbprints, and the rustls config.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Why the TLS identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// Reading or writing the certificate files failed.
    #[error("certificate file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Generating the certificate failed.
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The stored files are not a PEM certificate and key.
    #[error("stored certificate or key is not valid PEM: {0}")]
    BadPem(String),
    /// rustls refused the certificate/key.
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The server's certificate, key and thumbprints.
pub struct TlsIdentity {
    /// DER certificate.
    pub cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    /// SHA-1 thumbprint, `AA:BB:...` (what govc's --thumbprint takes).
    pub sha1: String,
    /// SHA-256 thumbprint.
    pub sha256: String,
}

impl TlsIdentity {
    /// Loads `ssl/rui.crt` + `ssl/rui.key` from `data_dir`, creating them on first start.
    pub fn load_or_create(data_dir: &Path) -> Result<TlsIdentity, TlsSetupError> {
        let dir = data_dir.join("ssl");
        let (cert_path, key_path) = (dir.join("rui.crt"), dir.join("rui.key"));
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| TlsSetupError::Io { path, source }
        };
        if !cert_path.exists() || !key_path.exists() {
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            let names = vec!["localhost".to_string(), "127.0.0.1".to_string(), hostname()];
            let generated = rcgen::generate_simple_self_signed(names)?;
            write_private(&key_path, generated.signing_key.serialize_pem().as_bytes())
                .map_err(io(&key_path))?;
            std::fs::write(&cert_path, generated.cert.pem()).map_err(io(&cert_path))?;
        }
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
        let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
        let cert = pem_block(&cert_pem, "CERTIFICATE")?;
        let key = pem_block(&key_pem, "PRIVATE KEY")?;
        Ok(TlsIdentity {
            sha1: thumbprint(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &cert),
            sha256: thumbprint(&ring::digest::SHA256, &cert),
            cert: CertificateDer::from(cert),
            key: PrivatePkcs8KeyDer::from(key),
        })
    }

    /// A rustls server config presenting this identity (HTTP/1.1 only).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(
                vec![self.cert.clone()],
                PrivateKeyDer::Pkcs8(self.key.clone_key()),
            )?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

/// The DER bytes of the first PEM block with this label.
fn pem_block(pem: &str, label: &str) -> Result<Vec<u8>, TlsSetupError> {
    use base64::Engine;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem
        .find(&begin)
        .ok_or_else(|| TlsSetupError::BadPem(format!("no {label} block")))?
        + begin.len();
    let stop = pem[start..]
        .find(&end)
        .ok_or_else(|| TlsSetupError::BadPem(format!("unterminated {label} block")))?
        + start;
    let body: String = pem[start..stop].split_ascii_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| TlsSetupError::BadPem(e.to_string()))
}

fn thumbprint(algorithm: &'static ring::digest::Algorithm, der: &[u8]) -> String {
    let digest = ring::digest::digest(algorithm, der);
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// This machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}
