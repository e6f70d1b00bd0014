//! TLS, client certificates and reloading, with certificates made here.
use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use rustls::{
    pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer, ServerName},
    ClientConfig, RootCertStore,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{exchange, start, Pki, GET_METRICS};
use crate::exporters::web::{
    config,
    reload::{Active, Reloader},
    Limits,
};

/// A TLS client trusting `pki`'s CA, with its client certificate if `with_cert`.
fn connector(pki: &Pki, with_cert: bool) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca.as_bytes()).expect("CA"))
        .expect("root");
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
    let config = if with_cert {
        let cert = CertificateDer::from_pem_slice(pki.client_cert.as_bytes()).expect("client cert");
        let key = PrivateKeyDer::from_pem_slice(pki.client_key.as_bytes()).expect("client key");
        builder
            .with_client_auth_cert(vec![cert], key)
            .expect("client auth")
    } else {
        builder.with_no_client_auth()
    };
    TlsConnector::from(Arc::new(config))
}

/// The reply to GET /metrics over TLS, or the handshake's error.
async fn get(addr: std::net::SocketAddr, connector: &TlsConnector) -> Result<String, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let reply = exchange(&mut tls, GET_METRICS).await;
    if reply.is_empty() {
        return Err("closed without a reply".into());
    }
    Ok(reply)
}

fn web_config(dir: &std::path::Path, tls_extra: &str) -> std::path::PathBuf {
    let path = dir.join("web.yml");
    let yaml =
        format!("tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n{tls_extra}");
    std::fs::write(&path, yaml).expect("web.yml");
    path
}

#[tokio::test]
async fn tls_serves_and_plain_http_to_it_fails_cleanly() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    pki.write(dir.path());
    let config = Reloader::watching(web_config(dir.path(), "")).expect("config");
    let (addr, _server) = start(Limits::default(), config, Bytes::from_static(b"x 1\n")).await;
    let reply = get(addr, &connector(&pki, false))
        .await
        .expect("TLS scrape");
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.ends_with("x 1\n"),
        "{reply:?}"
    );
    let mut plain = TcpStream::connect(addr).await.expect("connect");
    let reply = exchange(&mut plain, GET_METRICS).await;
    assert!(
        !reply.contains("x 1"),
        "no metrics over plain HTTP: {reply:?}"
    );
    let reply = get(addr, &connector(&pki, false))
        .await
        .expect("still serving TLS");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply:?}");
}

#[tokio::test]
async fn require_and_verify_refuses_a_client_without_a_certificate() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    pki.write(dir.path());
    let extra = "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n";
    let config = Reloader::watching(web_config(dir.path(), extra)).expect("config");
    let (addr, _server) = start(Limits::default(), config, Bytes::from_static(b"x 1\n")).await;
    let refused = get(addr, &connector(&pki, false)).await;
    assert!(refused.is_err(), "no certificate, no metrics: {refused:?}");
    let reply = get(addr, &connector(&pki, true))
        .await
        .expect("with a certificate");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply:?}");
}

#[tokio::test]
async fn require_any_takes_a_certificate_from_any_ca() {
    let (pki, other) = (Pki::new(), Pki::new());
    let dir = tempfile::tempdir().expect("tempdir");
    pki.write(dir.path());
    let config = Reloader::watching(web_config(
        dir.path(),
        "  client_auth_type: RequireAnyClientCert\n",
    ))
    .expect("ok");
    let (addr, _server) = start(Limits::default(), config, Bytes::from_static(b"x 1\n")).await;
    assert!(
        get(addr, &connector(&pki, false)).await.is_err(),
        "a certificate is required"
    );
    // The server is still trusted through pki's CA; the client's is other's.
    let mixed = Pki {
        client_cert: other.client_cert,
        client_key: other.client_key,
        ..pki
    };
    let reply = get(addr, &connector(&mixed, true))
        .await
        .expect("any certificate");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply:?}");
}

#[test]
fn tls_material_errors_name_the_file() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    pki.write(dir.path());
    std::fs::write(dir.path().join("empty.pem"), "").expect("empty");
    let table: &[(&str, &str)] = &[
        (
            "  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n",
            "\"TLS_RSA_WITH_RC4_128_SHA\" is unknown or not supported",
        ),
        (
            "  curve_preferences: [CurveP521]\n",
            "\"CurveP521\" is unknown or not supported",
        ),
        (
            "  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: empty.pem\n",
            "empty.pem",
        ),
        (
            "  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: missing.pem\n",
            "missing.pem",
        ),
    ];
    for (extra, expected) in table {
        let path = web_config(dir.path(), extra);
        match Active::load(&path) {
            Ok(_) => panic!("{extra:?} was accepted"),
            Err(e) => assert!(
                e.to_string().contains(expected),
                "{extra:?}: {e} lacks {expected:?}"
            ),
        }
    }
    std::fs::write(dir.path().join("server.pem"), "not PEM").expect("garbage");
    let error = Active::load(&web_config(dir.path(), ""))
        .err()
        .expect("no certificate")
        .to_string();
    assert!(
        error.contains("server.pem") && error.contains("no certificate"),
        "{error}"
    );
    // Suites rustls has, by Go's names, and TLS 1.3 names (always on in Go).
    pki.write(dir.path());
    let good = "  cipher_suites: [TLS_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256]\n  \
                curve_preferences: [CurveP256, X25519]\n  max_version: TLS12\n";
    Active::load(&web_config(dir.path(), good)).expect("Go names rustls implements");
}

/// A changed file takes effect; a broken one keeps the last good
/// configuration; a fixed one takes effect again.
#[tokio::test]
async fn the_file_is_reread_when_it_changes_and_a_broken_one_is_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("web.yml");
    let users = |password: &str| {
        format!(
            "basic_auth_users:\n  alice: {}\n",
            bcrypt::hash(password, 4).expect("hash")
        )
    };
    std::fs::write(&path, users("one")).expect("write");
    let reloader = Reloader::watching(path.clone()).expect("good at start");
    let allows = |password: &'static str| {
        let active = reloader.current();
        async move {
            use base64::Engine as _;
            let header = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("alice:{password}"))
            );
            let header = hyper::header::HeaderValue::from_str(&header).expect("header");
            active
                .auth
                .as_ref()
                .expect("auth on")
                .check(Some(&header))
                .await
                == crate::exporters::web::auth::Verdict::Allowed
        }
    };
    assert!(allows("one").await);
    let wait = || {
        tokio::time::sleep(crate::exporters::web::reload::CHECK_EVERY + Duration::from_millis(50))
    };
    std::fs::write(&path, users("two")).expect("write");
    wait().await;
    assert!(
        allows("two").await && !allows("one").await,
        "the new password is in force"
    );
    std::fs::write(&path, "basic_auth_users: {alice: plaintext}\n").expect("write");
    wait().await;
    assert!(
        allows("two").await,
        "a broken file keeps the last good configuration"
    );
    std::fs::write(&path, users("three")).expect("write");
    wait().await;
    assert!(allows("three").await, "fixed again");
    std::fs::write(&path, "tls_server_config: {cert_file: a}\n").expect("write");
    assert!(config::load(&path).is_err());
    assert!(
        Reloader::watching(path).is_err(),
        "a broken file at start is an error"
    );
}

/// A file emptied, cut short or rewritten without TLS or users must not turn
/// a TLS port with passwords into plain, open HTTP: such a reload is refused,
/// while one that keeps both still takes effect.
#[tokio::test]
async fn a_reload_never_removes_tls_or_basic_auth() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    pki.write(dir.path());
    let hash = |password: &str| bcrypt::hash(password, 4).expect("hash");
    let users = |password: &str| format!("basic_auth_users:\n  alice: {}\n", hash(password));
    let path = web_config(dir.path(), &users("one"));
    let reloader = Arc::new(Reloader::watching(path.clone()).expect("config"));
    let wait = || {
        tokio::time::sleep(crate::exporters::web::reload::CHECK_EVERY + Duration::from_millis(50))
    };
    let tls_only = "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n";
    for (case, text) in [
        ("empty", String::new()),
        ("whitespace", " \n\n".into()),
        (
            "cut after basic_auth_users:",
            format!("{tls_only}basic_auth_users:\n"),
        ),
        (
            "cut after tls_server_config:",
            "tls_server_config:\n".into(),
        ),
        ("users without TLS", users("one")),
        ("TLS without users", tls_only.into()),
    ] {
        std::fs::write(&path, text).expect("write");
        wait().await;
        let active = reloader.current();
        assert!(active.tls.is_some(), "{case}: TLS kept");
        assert!(active.auth.is_some(), "{case}: basic auth kept");
    }
    std::fs::write(&path, format!("{tls_only}{}", users("two"))).expect("write");
    wait().await;
    let active = reloader.current();
    let header = {
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode("alice:two");
        hyper::header::HeaderValue::from_str(&format!("Basic {encoded}")).expect("header")
    };
    assert_eq!(
        active
            .auth
            .as_ref()
            .expect("auth")
            .check(Some(&header))
            .await,
        crate::exporters::web::auth::Verdict::Allowed,
        "a reload that keeps TLS and users takes effect"
    );
}
