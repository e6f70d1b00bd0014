//! The web server's specification: the configuration file (a table of good
//! and bad files), and the server on real loopback sockets.
mod auth;
mod config;
mod server;
mod tls;

use std::{net::SocketAddr, path::Path, sync::Arc};

use bytes::Bytes;
use hyper::Method;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
};

use super::{reload::Reloader, serve, Limits, Reply};
use crate::exporters::prometheus::route;

/// A CA, a server certificate for 127.0.0.1 and a client certificate, in PEM.
pub struct Pki {
    pub ca: String,
    pub server_cert: String,
    pub server_key: String,
    pub client_cert: String,
    pub client_key: String,
}

impl Pki {
    pub fn new() -> Self {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "scaph test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_pem = ca.self_signed(&ca_key).expect("CA").pem();
        let issuer = Issuer::new(ca, ca_key);
        let leaf = |names: Vec<String>, usage| {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(names).expect("params");
            params.extended_key_usages = vec![usage];
            (
                params.signed_by(&key, &issuer).expect("signed").pem(),
                key.serialize_pem(),
            )
        };
        let (server_cert, server_key) = leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) =
            leaf(vec!["scraper".into()], ExtendedKeyUsagePurpose::ClientAuth);
        Self {
            ca: ca_pem,
            server_cert,
            server_key,
            client_cert,
            client_key,
        }
    }

    /// Writes ca.pem, server.pem, server.key, client.pem, client.key into `dir`.
    pub fn write(&self, dir: &Path) {
        for (name, text) in [
            ("ca.pem", &self.ca),
            ("server.pem", &self.server_cert),
            ("server.key", &self.server_key),
            ("client.pem", &self.client_cert),
            ("client.key", &self.client_key),
        ] {
            std::fs::write(dir.join(name), text).expect("writing PEM");
        }
    }
}

/// The prometheus routes over `body` on a loopback port.
pub async fn start(
    limits: Limits,
    config: Reloader,
    body: Bytes,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let answer = move |method: &Method, path: &str| -> Reply {
        route(method, path, "/metrics", body.clone())
    };
    let server = tokio::spawn(serve(listener, limits, Arc::new(config), answer));
    (addr, server)
}

/// Sends `request` on `stream` and reads until the server closes (5 s at most).
pub async fn exchange<S>(stream: &mut S, request: &[u8]) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let _ = stream.write_all(request).await;
    let mut reply = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut reply),
    )
    .await;
    assert!(read.is_ok(), "no reply within 5 s");
    String::from_utf8_lossy(&reply).into_owned()
}

pub const GET_METRICS: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
