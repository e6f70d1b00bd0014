//! `scaph prometheus --web.config.file` scraped by a real Prometheus, as it
//! would scrape node_exporter with the same file: over TLS with basic auth
//! (up; down with a 401 for a wrong password), and with client certificates
//! required (up with one, down without). Certificates are made here (rcgen).
//! Needs no root: procfs CPU time, estimated energy.
mod exporter_support;

use std::{path::Path, time::Duration};

use exporter_support::{free_port, http_get, quick_prometheus_args, tool, wait_for, Proc};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Writes ca.pem, server.pem/.key (for 127.0.0.1) and client.pem/.key into `dir`.
fn write_pki(dir: &Path) {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "scaph web_tls CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    std::fs::write(
        dir.join("ca.pem"),
        ca.self_signed(&ca_key).expect("CA").pem(),
    )
    .expect("ca.pem");
    let issuer = Issuer::new(ca, ca_key);
    for (name, san, usage) in [
        ("server", "127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth),
        ("client", "prometheus", ExtendedKeyUsagePurpose::ClientAuth),
    ] {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec![san.to_owned()]).expect("params");
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &issuer).expect("signed");
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).expect("cert");
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).expect("key");
    }
}

/// scaph prometheus on a free port with `web_yml` as its web configuration.
fn scaph_with(dir: &Path, name: &str, web_yml: &str) -> (Proc, u16) {
    let config = dir.join(format!("{name}.yml"));
    std::fs::write(&config, web_yml).expect("web config");
    let port = free_port();
    let args = quick_prometheus_args(
        &port.to_string(),
        &["--web.config.file", &config.display().to_string()],
    );
    (
        Proc::start(name, &scaph_integration_tests::scaph_binary(), &args),
        port,
    )
}

/// Prometheus's view of each job's target: (job, health, lastError).
fn targets(port: u16) -> Option<Vec<(String, String, String)>> {
    let response = http_get(port, "/api/v1/targets").ok()?;
    let json: serde_json::Value = serde_json::from_str(&response.body).ok()?;
    let targets = json["data"]["activeTargets"].as_array()?;
    let field = |t: &serde_json::Value, k: &str| t[k].as_str().unwrap_or_default().to_owned();
    Some(
        targets
            .iter()
            .map(|t| {
                (
                    field(t, "scrapePool"),
                    field(t, "health"),
                    field(t, "lastError"),
                )
            })
            .collect(),
    )
}

#[test]
fn prometheus_scrapes_over_tls_with_basic_auth_and_client_certificates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    write_pki(d);
    let hash = bcrypt::hash("right horse", 4).expect("bcrypt");
    let (mut auth, auth_port) = scaph_with(
        d,
        "scaph-auth",
        &format!(
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n\
             basic_auth_users:\n  prometheus: {hash}\n"
        ),
    );
    let (mut mtls, mtls_port) = scaph_with(
        d,
        "scaph-mtls",
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  \
         client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n",
    );
    let ca = d.join("ca.pem").display().to_string();
    let job = |name: &str, port: u16, extra: &str| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    tls_config:\n      ca_file: {ca}\n{extra}    \
             static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        )
    };
    let client = format!(
        "      cert_file: {}\n      key_file: {}\n",
        d.join("client.pem").display(),
        d.join("client.key").display()
    );
    let prometheus_yml = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n{}{}{}{}",
        job(
            "password",
            auth_port,
            "    basic_auth:\n      username: prometheus\n      password: right horse\n"
        ),
        job(
            "wrong_password",
            auth_port,
            "    basic_auth:\n      username: prometheus\n      password: wrong\n"
        ),
        job("client_cert", mtls_port, &client),
        job("no_client_cert", mtls_port, ""),
    );
    std::fs::write(d.join("prometheus.yml"), prometheus_yml).expect("prometheus.yml");
    let port = free_port();
    let mut prometheus = Proc::start(
        "prometheus",
        &tool("prometheus", "prometheus"),
        &[
            format!("--config.file={}", d.join("prometheus.yml").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            format!("--storage.tsdb.path={}", d.join("tsdb").display()),
        ],
    );
    let seen = wait_for(
        "Prometheus to scrape every target",
        Duration::from_secs(60),
        || {
            assert!(
                prometheus.running(),
                "prometheus exited:\n{}",
                prometheus.log()
            );
            assert!(
                auth.running() && mtls.running(),
                "scaph exited:\n{}\n{}",
                auth.log(),
                mtls.log()
            );
            let targets = targets(port)?;
            (targets.len() == 4 && targets.iter().all(|(_, health, _)| health != "unknown"))
                .then_some(targets)
        },
    );
    eprintln!("Prometheus targets: {seen:#?}");
    let find = |job: &str| seen.iter().find(|(j, _, _)| j == job).cloned().expect(job);
    assert_eq!(find("password").1, "up", "{seen:?}");
    let (_, health, error) = find("wrong_password");
    assert!(health == "down" && error.contains("401"), "{seen:?}");
    assert_eq!(find("client_cert").1, "up", "{seen:?}");
    let (_, health, error) = find("no_client_cert");
    assert!(health == "down" && !error.is_empty(), "{seen:?}");

    // Plain HTTP to a TLS port gets no metrics, and scaph keeps serving.
    let plain = http_get(auth_port, "/metrics");
    assert!(
        plain
            .as_ref()
            .map_or(true, |r| r.status != 200 && !r.body.contains("scaph_")),
        "plain HTTP answered"
    );
    std::thread::sleep(Duration::from_secs(2));
    let seen = targets(port).expect("targets");
    assert!(
        seen.iter().any(|(j, h, _)| j == "password" && h == "up"),
        "{seen:?}"
    );
    assert!(auth.running(), "{}", auth.log());
}
