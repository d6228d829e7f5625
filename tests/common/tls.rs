//! TLS helpers for tests: certificates made with the `openssl` CLI in a
//! temp dir (a CA, server pairs it signed, an expired one), and a rustls
//! client (HTTPS requests, WebSocket over TLS through tungstenite).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::DEADLINE;

/// A TLS stream to the server.
pub type Tls = StreamOwned<ClientConnection, TcpStream>;

/// Files made by [`Pki::new`] in its own temp dir.
pub struct Pki {
    pub dir: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    /// A fresh dir with `ca.pem`/`ca.key` (CN test-ca) and `other-ca.pem`.
    pub fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("shardcast-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for ca in ["ca", "other-ca"] {
            openssl(
                &dir,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    &format!("{ca}.key"),
                    "-out",
                    &format!("{ca}.pem"),
                    "-days",
                    "3",
                    "-subj",
                    &format!("/CN={ca}"),
                ],
            );
        }
        std::fs::write(dir.join("index.txt"), "").unwrap();
        std::fs::write(dir.join("serial"), "1000\n").unwrap();
        std::fs::write(
            dir.join("ca.cnf"),
            "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\n\
             default_md = sha256\npolicy = p\nunique_subject = no\ncopy_extensions = copy\n[p]\ncommonName = supplied\n",
        )
        .unwrap();
        Pki { dir }
    }

    pub fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    /// `NAME.pem` and `NAME.key` for localhost/127.0.0.1, signed by the CA;
    /// `key`: `rsa` or `ec`; `dates`: openssl ca's -startdate/-enddate
    /// (None: valid from now for 2 days).
    pub fn server(&self, name: &str, key: &str, dates: Option<(&str, &str)>) -> (String, String) {
        let newkey = if key == "ec" { "ec" } else { "rsa:2048" };
        let mut req = vec![
            "req",
            "-newkey",
            newkey,
            "-nodes",
            "-keyout",
            "K",
            "-out",
            "C",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ];
        if key == "ec" {
            req.extend(["-pkeyopt", "ec_paramgen_curve:prime256v1"]);
        }
        let (k, csr) = (format!("{name}.key"), format!("{name}.csr"));
        let req: Vec<&str> = req
            .into_iter()
            .map(|a| match a {
                "K" => k.as_str(),
                "C" => csr.as_str(),
                other => other,
            })
            .collect();
        openssl(&self.dir, &req);
        let pem = format!("{name}.pem");
        let mut sign = vec![
            "ca", "-batch", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key", "-in", &csr,
            "-out", &pem, "-notext",
        ];
        match dates {
            Some((from, to)) => sign.extend(["-startdate", from, "-enddate", to]),
            None => sign.extend(["-days", "2"]),
        }
        openssl(&self.dir, &sign);
        (self.path(&pem), self.path(&k))
    }

    /// A client trusting `ca_file` (a name in this dir).
    pub fn client(&self, ca_file: &str) -> Arc<ClientConfig> {
        client_trusting(&self.dir.join(ca_file))
    }
}

/// A client trusting the certificates in the PEM file `path`.
pub fn client_trusting(path: &Path) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// A TLS connection to `addr` for `localhost`, handshake done.
pub fn connect(addr: SocketAddr, client: &Arc<ClientConfig>) -> Result<Tls, rustls::Error> {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(DEADLINE)).unwrap();
    tcp.set_write_timeout(Some(DEADLINE)).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(client.clone(), name).unwrap();
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        if let Err(e) = tls.conn.complete_io(&mut tls.sock) {
            return Err(e
                .into_inner()
                .and_then(|inner| inner.downcast::<rustls::Error>().ok())
                .map_or(rustls::Error::General("handshake I/O".into()), |b| *b));
        }
    }
    Ok(tls)
}

/// One HTTPS request on a fresh connection (`Connection: close`); returns
/// (status, body).
pub fn request(
    addr: SocketAddr,
    client: &Arc<ClientConfig>,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    let mut tls = connect(addr, client).expect("TLS handshake");
    let auth = format!("Authorization: Bearer {}\r\n", super::API_KEY);
    write!(
        tls,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = Vec::new();
    // A close without close_notify is fine for a Connection: close answer.
    let _ = tls.read_to_end(&mut out);
    super::split_response(&String::from_utf8_lossy(&out))
}

/// A WebSocket over TLS on `path`.
pub fn ws(addr: SocketAddr, client: &Arc<ClientConfig>, path: &str) -> tungstenite::WebSocket<Tls> {
    let tls = connect(addr, client).expect("TLS handshake");
    let url = format!("wss://localhost:{}{path}", addr.port());
    let (ws, resp) = tungstenite::client(url, tls).expect("websocket handshake over TLS");
    assert_eq!(resp.status().as_u16(), 101);
    ws
}

/// The SHA-256 of the certificate the server presented on `tls`.
pub fn peer_cert(tls: &Tls) -> Vec<u8> {
    tls.conn.peer_certificates().unwrap()[0].to_vec()
}
