//! `--web.config.file` parsing: what the exporter-toolkit accepts is
//! accepted with the same meaning; what it rejects is rejected, with a
//! message naming the problem.
use std::path::{Path, PathBuf};

use super::super::config::{parse, ClientAuth, Pem, TlsVersion, WebConfig};

const HASH: &str = "$2y$04$Z6xQ5LBJwKcz2YX2mVXnZOsJtBUMm4OMyl0JzAq2T7gV2X8cYyHZy";

fn parsed(yaml: &str) -> Result<WebConfig, String> {
    parse(yaml.as_bytes(), Path::new("/etc/scaph/web.yml")).map_err(|e| e.to_string())
}

#[test]
fn good_files() {
    let empty = parsed("").expect("an empty file");
    assert_eq!(
        empty,
        WebConfig::default(),
        "an empty file: plain HTTP, no authentication"
    );
    assert_eq!(
        parsed("tls_server_config:\nhttp_server_config:\n").expect("empty sections"),
        WebConfig::default()
    );

    let tls = parsed("tls_server_config:\n  cert_file: server.pem\n  key_file: /keys/server.key\n")
        .expect("tls");
    let settings = tls.tls.expect("TLS on");
    assert_eq!(
        settings.cert,
        Pem::File(PathBuf::from("/etc/scaph/server.pem")),
        "relative to the file's directory"
    );
    assert_eq!(settings.key, Pem::File(PathBuf::from("/keys/server.key")));
    assert_eq!(settings.client_auth, ClientAuth::NoClientCert);
    assert_eq!(
        (settings.min_version, settings.max_version),
        (TlsVersion::Tls12, TlsVersion::Tls13)
    );
    assert!(settings.prefer_server_cipher_suites);
    assert_eq!(tls.users.len(), 0);

    let mtls = parsed(
        "tls_server_config:\n  cert: |\n    PEM\n  key: PEM\n  client_ca_file: ca.pem\n  \
         client_auth_type: RequireAndVerifyClientCert\n  min_version: TLS13\n  \
         cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]\n  curve_preferences: [X25519]\n",
    )
    .expect("mutual TLS")
    .tls
    .expect("TLS on");
    assert_eq!(mtls.cert, Pem::Inline("PEM\n".into()));
    assert_eq!(
        mtls.client_ca,
        Some(Pem::File(PathBuf::from("/etc/scaph/ca.pem")))
    );
    assert_eq!(mtls.client_auth, ClientAuth::RequireAndVerifyClientCert);
    assert_eq!(mtls.min_version, TlsVersion::Tls13);
    assert_eq!(
        mtls.cipher_suites,
        ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"]
    );

    let old_name = parsed(
        "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireClientCert\n  client_ca_file: c\n",
    )
    .expect("the old name of RequireAnyClientCert");
    assert_eq!(
        old_name.tls.expect("TLS").client_auth,
        ClientAuth::RequireAnyClientCert
    );

    let auth = parsed(&format!(
        "basic_auth_users:\n  alice: {HASH}\nhttp_server_config:\n  http2: false\n  headers:\n    \
         X-Frame-Options: deny\n    Strict-Transport-Security: max-age=31536000\n"
    ))
    .expect("users and headers");
    assert_eq!(auth.users.get("alice").map(String::as_str), Some(HASH));
    let headers: Vec<(String, String)> = auth
        .headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    assert_eq!(
        headers,
        [
            (
                "strict-transport-security".to_owned(),
                "max-age=31536000".to_owned()
            ),
            ("x-frame-options".to_owned(), "deny".to_owned())
        ]
    );
    assert!(auth.tls.is_none());
}

#[test]
fn bad_files_name_their_problem() {
    let table: &[(&str, &str)] = &[
        ("tls_config:\n  cert_file: a\n", "unknown field `tls_config`"),
        ("tls_server_config:\n  certfile: a\n", "unknown field `certfile`"),
        ("http_server_config:\n  header: {}\n", "unknown field `header`"),
        ("basic_auth_users: [alice]\n", "basic_auth_users"),
        ("tls_server_config:\n  cert_file: a\n", "missing one of key or key_file"),
        ("tls_server_config:\n  key_file: a\n", "missing one of cert or cert_file"),
        ("tls_server_config:\n  client_auth_type: RequireAndVerifyClientCert\n", "missing one of cert"),
        ("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_ca_file: c\n", "without a client_auth_type"),
        ("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: Maybe\n", "invalid client_auth_type"),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: VerifyClientCertIfGiven\n",
            "needs client_ca_file",
        ),
        ("tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS11\n", "TLS11 is not supported"),
        ("tls_server_config:\n  cert_file: a\n  key_file: b\n  max_version: TLS14\n", "unknown TLS version"),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS13\n  max_version: TLS12\n",
            "min_version is above max_version",
        ),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAnyClientCert\n  \
             client_allowed_sans: [x]\n",
            "client_allowed_sans is not supported",
        ),
        ("http_server_config:\n  headers:\n    Server: scaph\n", "\"Server\" can not be configured"),
        ("http_server_config:\n  headers:\n    X-Frame-Options: allow\n", "must be one of"),
        ("http_server_config:\n  headers:\n    X-Content-Type-Options: sniff\n", "must be one of"),
        ("basic_auth_users:\n  alice: secret\n", "\"alice\" is not a bcrypt hash"),
        ("rate_limit:\n  interval: 1s\n  burst: 10\n", "rate_limit is not supported"),
        ("{{{", "/etc/scaph/web.yml"),
    ];
    for (yaml, expected) in table {
        match parsed(yaml) {
            Ok(config) => panic!("{yaml:?} was accepted: {config:?}"),
            Err(message) => assert!(
                message.contains(expected),
                "{yaml:?}: {message:?} lacks {expected:?}"
            ),
        }
    }
}
