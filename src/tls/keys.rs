//! The server's certificate chain and private key: read from PEM files and
//! checked (readable, parseable, key matching the certificate, within its
//! validity period), or generated for localhost (`--tls-self-signed`); held
//! behind one lock so SIGHUP can swap them (new handshakes use the new pair,
//! established sessions keep theirs); and the rustls server configuration
//! built around them (TLS 1.2 and 1.3, ALPN `http/1.1`, no renegotiation:
//! rustls has none).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::tls::der;

/// Where the pair comes from.
enum Source {
    Files { cert: PathBuf, key: PathBuf },
    SelfSigned,
}

/// The current pair, as rustls asks for it on every handshake.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().ok().map(|key| key.clone())
    }
}

/// The server's TLS identity and configuration, shared by every shard.
pub struct Keys {
    source: Source,
    current: Arc<Current>,
    config: Arc<ServerConfig>,
    /// `notAfter` of the current certificate (Unix seconds).
    not_after: AtomicU64,
}

/// A generated certificate: where its PEM was written and its SHA-256.
pub struct SelfSigned {
    pub pem_path: PathBuf,
    pub fingerprint: String,
}

impl Keys {
    /// Loads and checks the pair; the error is one line naming the file and
    /// the problem.
    pub fn load(cert: &Path, key: &Path) -> Result<Keys, String> {
        let (pair, not_after) = read_pair(cert, key)?;
        let source = Source::Files {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        };
        Keys::with(source, pair, not_after)
    }

    /// A throwaway certificate for localhost and 127.0.0.1, valid 30 days;
    /// its PEM is written to `dir` so that clients can trust it.
    pub fn self_signed(dir: &Path) -> Result<(Keys, SelfSigned), String> {
        let names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        let mut params = rcgen::CertificateParams::new(names).map_err(|e| format!("tls_self_signed: {e}"))?;
        let now = std::time::SystemTime::now();
        params.not_before = (now - std::time::Duration::from_secs(3600)).into();
        params.not_after = (now + std::time::Duration::from_secs(30 * 86_400)).into();
        let key = rcgen::KeyPair::generate().map_err(|e| format!("tls_self_signed: {e}"))?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| format!("tls_self_signed: {e}"))?;
        let fingerprint = ring::digest::digest(&ring::digest::SHA256, cert.der())
            .as_ref()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        let pem_path = dir.join(format!("shardcast-self-signed-{}.pem", std::process::id()));
        std::fs::write(&pem_path, cert.pem())
            .map_err(|e| format!("tls_self_signed: cannot write {}: {e}", pem_path.display()))?;
        let der_key =
            PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| format!("tls_self_signed: {e}"))?;
        let provider = rustls::crypto::ring::default_provider();
        let pair = CertifiedKey::from_der(vec![cert.der().clone()], der_key, &provider)
            .map_err(|e| format!("tls_self_signed: {e}"))?;
        let not_after = der::validity(cert.der()).map_or(0, |(_, to)| to);
        let keys = Keys::with(Source::SelfSigned, pair, not_after)?;
        Ok((
            keys,
            SelfSigned {
                pem_path,
                fingerprint,
            },
        ))
    }

    fn with(source: Source, pair: CertifiedKey, not_after: i64) -> Result<Keys, String> {
        let current = Arc::new(Current(RwLock::new(Arc::new(pair))));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("tls: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Keys {
            source,
            current,
            config: Arc::new(config),
            not_after: AtomicU64::new(not_after.max(0) as u64),
        })
    }

    /// The configuration every new handshake starts from.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }

    /// Re-reads the files (SIGHUP). On failure the old pair stays in use;
    /// the error names the file and the problem.
    pub fn reload(&self) -> Result<(), String> {
        let Source::Files { cert, key } = &self.source else {
            return Err("tls: a self-signed certificate has no files to reload".into());
        };
        let (pair, not_after) = read_pair(cert, key)?;
        if let Ok(mut current) = self.current.0.write() {
            *current = Arc::new(pair);
        }
        self.not_after.store(not_after.max(0) as u64, Relaxed);
        Ok(())
    }

    /// `notAfter` of the certificate in use, Unix seconds.
    pub fn not_after(&self) -> u64 {
        self.not_after.load(Relaxed)
    }
}

/// Reads, parses and checks one pair; returns it with its `notAfter`.
fn read_pair(cert: &Path, key: &Path) -> Result<(CertifiedKey, i64), String> {
    let cert_text = std::fs::read(cert).map_err(|e| format!("tls_cert: {}: {e}", cert.display()))?;
    let chain = CertificateDer::pem_slice_iter(&cert_text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls_cert: {}: not a PEM certificate chain: {e:?}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("tls_cert: {}: no CERTIFICATE block", cert.display()));
    }
    let key_text = std::fs::read(key).map_err(|e| format!("tls_key: {}: {e}", key.display()))?;
    let private = PrivateKeyDer::from_pem_slice(&key_text).map_err(|e| {
        format!(
            "tls_key: {}: no PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC): {e:?}",
            key.display()
        )
    })?;
    let (not_before, not_after) = der::validity(&chain[0]).ok_or_else(|| {
        format!(
            "tls_cert: {}: the first certificate's validity period cannot be read",
            cert.display()
        )
    })?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let instant = |secs: i64| {
        crate::time::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64))
    };
    if now > not_after {
        return Err(format!(
            "tls_cert: {}: the certificate expired at {}",
            cert.display(),
            instant(not_after)
        ));
    }
    if now < not_before {
        return Err(format!(
            "tls_cert: {}: the certificate is not valid before {}",
            cert.display(),
            instant(not_before)
        ));
    }
    let provider = rustls::crypto::ring::default_provider();
    let pair = CertifiedKey::from_der(chain, private, &provider).map_err(|e| {
        format!(
            "tls_key: {}: {e} (is it the key of {}?)",
            key.display(),
            cert.display()
        )
    })?;
    Ok((pair, not_after))
}
