//! `scaph otlp` against an independent receiver: a Python server that decodes
//! with the PyPI packages `opentelemetry-proto` (and `grpcio` for gRPC)
//! (`tests/otlp_receiver.py`). The agent runs on the real kernel with a fake
//! RAPL package of known power, once over OTLP/HTTP (gzip) and once over
//! OTLP/gRPC; each run checks names, units, kinds, resource attributes, that
//! every counter is cumulative, monotonic and keeps its start time, that
//! Σ processes + idle = host in the received data, and that a receiver that
//! goes away and comes back gets counters that went on (no reset).
//!
//! Needs `opentelemetry-proto` and `grpcio` for python3: `cargo xtask test`
//! installs them in `target/otlp-venv` (or set SCAPH_TEST_OTLP_PYTHON).
use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use scaph_integration_tests::{powercap::FakeRapl, require_root, scaph_binary};
use serde_json::Value;

const WATTS: f64 = 40.0;

/// Kills and reaps a child when dropped, so no test leaves a process behind.
struct Guard(Child);

impl Guard {
    fn running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }

    /// SIGTERM, then waits up to 10 s; true when it exited with status 0.
    fn terminate(&mut self) -> bool {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const IMPORTS: &str =
    "import grpc, opentelemetry.proto.collector.metrics.v1.metrics_service_pb2_grpc";

/// A python3 that has `opentelemetry-proto` and `grpcio`.
fn python() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf();
    let candidates = std::env::var_os("SCAPH_TEST_OTLP_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain([workspace.join("target/otlp-venv/bin/python3")])
        .chain([PathBuf::from("python3")]);
    for python in candidates {
        let ok = Command::new(&python)
            .args(["-c", IMPORTS])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return python;
        }
    }
    panic!(
        "no python3 with opentelemetry-proto and grpcio: run `cargo xtask test` (it installs them in target/otlp-venv), \
         or set SCAPH_TEST_OTLP_PYTHON"
    );
}

/// One decoded request, as the receiver printed it.
struct Batch(Value);

impl Batch {
    fn metric(&self, name: &str) -> Option<&Value> {
        self.0["metrics"]
            .as_array()?
            .iter()
            .find(|m| m["name"] == name)
    }

    fn points(&self, name: &str) -> &[Value] {
        self.metric(name)
            .and_then(|m| m["points"].as_array())
            .map_or(&[], Vec::as_slice)
    }

    fn total(&self, name: &str) -> f64 {
        self.points(name)
            .iter()
            .map(|p| p["value"].as_f64().expect("value"))
            .sum()
    }

    /// Every counter point: (name and attributes) -> (start, value).
    fn counters(&self) -> HashMap<String, (u64, f64)> {
        let mut out = HashMap::new();
        for m in self.0["metrics"].as_array().into_iter().flatten() {
            if m["kind"] != "sum" {
                continue;
            }
            for p in m["points"].as_array().into_iter().flatten() {
                let key = format!("{}{}", m["name"], p["attributes"]);
                let start = p["start"].as_u64().expect("start");
                out.insert(key, (start, p["value"].as_f64().expect("value")));
            }
        }
        out
    }
}

/// The receiver process and the requests it decoded.
struct Receiver {
    _child: Guard,
    port: u16,
    batches: mpsc::Receiver<Batch>,
}

impl Receiver {
    fn start(protocol: &str, port: u16) -> Self {
        Self::start_with(protocol, port, &[])
    }

    fn start_with(protocol: &str, port: u16, extra: &[&str]) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("otlp_receiver.py");
        let mut child = Command::new(python())
            .arg(script)
            .args(["--protocol", protocol, "--port", &port.to_string()])
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the receiver");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first: Value = serde_json::from_str(
            &lines
                .next()
                .expect("receiver output")
                .expect("receiver line"),
        )
        .expect("JSON");
        let port = u16::try_from(first["listening"].as_u64().expect("listening")).expect("port");
        let (tx, batches) = mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let value: Value = serde_json::from_str(&line).expect("receiver JSON");
                if tx.send(Batch(value)).is_err() {
                    return;
                }
            }
        });
        Self {
            _child: Guard(child),
            port,
            batches,
        }
    }

    /// The next request that holds process energy, within `timeout`.
    fn next(&self, timeout: Duration) -> Option<Batch> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.batches.recv_timeout(left) {
                Ok(b) if !b.points("scaph_process_energy_joules_total").is_empty() => {
                    return Some(b)
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into our buffer.
    unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

fn scaph_otlp(rapl: &FakeRapl, protocol: &str, port: u16, extra: &[&str]) -> Guard {
    scaph_otlp_to(
        rapl,
        protocol,
        &format!("http://127.0.0.1:{port}"),
        extra,
        &[],
    )
}

fn scaph_otlp_to(
    rapl: &FakeRapl,
    protocol: &str,
    endpoint: &str,
    extra: &[&str],
    env: &[(&str, &Path)],
) -> Guard {
    let child = Command::new(scaph_binary())
        .arg("--no-header")
        .args(rapl.scaph_args())
        .args(["-s", "powercap_rapl", "otlp", "--step", "1"])
        .args(["--endpoint", endpoint])
        .envs(env.iter().copied())
        .args([
            "--protocol",
            if protocol == "grpc" {
                "grpc"
            } else {
                "http/protobuf"
            },
        ])
        .args(extra)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env(
            "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
            "x-scope-orgid=tenant%201",
        )
        .stdout(Stdio::null())
        .spawn()
        .expect("starting scaph otlp");
    Guard(child)
}

/// Every counter of `later` that `earlier` had: same start, value not lower.
fn assert_continues(earlier: &Batch, later: &Batch, what: &str) -> usize {
    let before = earlier.counters();
    let after = later.counters();
    let mut compared = 0;
    for (key, (start, value)) in &after {
        if let Some((start0, value0)) = before.get(key) {
            assert_eq!(
                start, start0,
                "{what}: {key} changed its start time (a reset)"
            );
            assert!(
                value >= value0,
                "{what}: {key} went back from {value0} to {value}"
            );
            compared += 1;
        }
    }
    compared
}

fn scenario(protocol: &str, extra: &[&str]) {
    require_root();
    let rapl = FakeRapl::start(WATTS, 0);
    let receiver = Receiver::start(protocol, 0);
    let mut scaph = scaph_otlp(&rapl, protocol, receiver.port, extra);

    let first = receiver
        .next(Duration::from_secs(20))
        .expect("a request from scaph within 20 s");
    let batch = receiver
        .next(Duration::from_secs(10))
        .expect("a second request");
    let b = &batch.0;
    eprintln!(
        "{protocol}: {} metrics, {} process series, encoding {:?}",
        b["metrics"].as_array().map_or(0, Vec::len),
        batch.points("scaph_process_energy_joules_total").len(),
        b["encoding"]
    );
    if protocol == "http" {
        assert_eq!(b["path"], "/v1/metrics");
        assert_eq!(b["content_type"], "application/x-protobuf");
        // grpcio decompresses without showing grpc-encoding to the service.
        assert_eq!(b["encoding"], "gzip");
    }
    assert_eq!(
        b["headers"]["x-scope-orgid"], "tenant 1",
        "{}",
        b["headers"]
    );
    assert_eq!(b["resource"]["host.name"], hostname().as_str());
    assert_eq!(b["resource"]["service.name"], "scaph");
    assert!(
        b["resource"]["service.version"]
            .as_str()
            .is_some_and(|v| !v.is_empty()),
        "{}",
        b["resource"]
    );

    // Names, units and kinds: those of the prometheus exporter.
    for (name, unit, kind) in [
        ("scaph_host_energy_joules_total", "J", "sum"),
        ("scaph_idle_energy_joules_total", "J", "sum"),
        ("scaph_process_energy_joules_total", "J", "sum"),
        ("scaph_process_cpu_seconds_total", "s", "sum"),
        ("scaph_socket_energy_joules_total", "J", "sum"),
        ("scaph_sensor_info", "1", "gauge"),
        ("scaph_measurement_timestamp_seconds", "s", "gauge"),
    ] {
        let m = batch
            .metric(name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(
            (m["unit"].as_str(), m["kind"].as_str()),
            (Some(unit), Some(kind)),
            "{name}"
        );
        if kind == "sum" {
            assert_eq!(m["monotonic"], true, "{name}");
            assert_eq!(m["temporality"], "cumulative", "{name}");
        }
    }
    let host = &batch.points("scaph_host_energy_joules_total")[0];
    assert_eq!(host["attributes"]["sensor"], "powercap_rapl");
    assert_eq!(host["attributes"]["estimated"], "false");
    assert!(host["start"].as_u64() < host["time"].as_u64(), "{host}");

    // Σ processes + idle = host, in what the receiver decoded.
    let host_j = batch.total("scaph_host_energy_joules_total");
    let gap = (batch.total("scaph_process_energy_joules_total")
        + batch.total("scaph_idle_energy_joules_total")
        - host_j)
        .abs();
    eprintln!("{protocol}: host {host_j:.3} J, |Σ processes + idle − host| = {gap:e} J");
    assert!(host_j > 0.0);
    assert!(
        gap <= 1e-6 * host_j.max(1.0),
        "Σ processes + idle differs from host by {gap} J"
    );
    let compared = assert_continues(&first, &batch, "consecutive requests");
    assert!(compared > 5, "{compared} counters in both requests");

    // The receiver goes away: scaph keeps running, backing off.
    let port = receiver.port;
    drop(receiver);
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        scaph.running(),
        "scaph must survive a collector that went away"
    );

    // It comes back on the same port: the counters went on, same start.
    let receiver = Receiver::start(protocol, port);
    let after = receiver
        .next(Duration::from_secs(40))
        .expect("requests again after the restart");
    let compared = assert_continues(&batch, &after, "across the restart");
    assert!(compared > 5, "{compared} counters before and after");
    let grown = after.total("scaph_host_energy_joules_total") - host_j;
    eprintln!("{protocol}: host energy grew {grown:.3} J across the outage");
    assert!(
        grown > WATTS * 3.0,
        "host energy grew only {grown} J in over 4 s at {WATTS} W"
    );
    assert!(scaph.running());
    assert!(scaph.terminate(), "scaph exits cleanly on SIGTERM");
}

#[test]
fn otlp_http_protobuf_decodes_independently_and_survives_a_collector_restart() {
    scenario("http", &["--compression", "gzip"]);
}

#[test]
fn otlp_grpc_decodes_independently_and_survives_a_collector_restart() {
    scenario("grpc", &["--compression", "gzip"]);
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate whose
/// common name is `scaph-otlp-client`, as PEM files in `dir`.
fn make_pki(dir: &Path) -> [PathBuf; 5] {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "scaph otlp test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_pem = dir.join("ca.pem");
    std::fs::write(&ca_pem, ca.self_signed(&ca_key).expect("CA").pem()).expect("ca.pem");
    let issuer = Issuer::new(ca, ca_key);
    let mut files = vec![ca_pem];
    for (name, san, cn, usage) in [
        (
            "server",
            "127.0.0.1",
            "127.0.0.1",
            ExtendedKeyUsagePurpose::ServerAuth,
        ),
        (
            "client",
            "scaph-otlp-client",
            "scaph-otlp-client",
            ExtendedKeyUsagePurpose::ClientAuth,
        ),
    ] {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec![san.to_owned()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &issuer).expect("signed");
        let (cert_path, key_path) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).expect("cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("key");
        files.extend([cert_path, key_path]);
    }
    files.try_into().expect("five files")
}

/// Mutual TLS, both transports: the files from the options (HTTP) and from
/// the standard variables (gRPC); the receiver sees scaph's client certificate.
#[test]
fn otlp_over_mutual_tls() {
    require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let [ca, server_cert, server_key, client_cert, client_key] = make_pki(dir.path());
    let rapl = FakeRapl::start(WATTS, 0);
    for protocol in ["http", "grpc"] {
        let tls: Vec<&str> = [&ca, &server_cert, &server_key]
            .iter()
            .map(|p| p.to_str().expect("UTF-8 path"))
            .collect();
        let mut extra = vec!["--tls"];
        extra.extend(tls);
        let receiver = Receiver::start_with(protocol, 0, &extra);
        let endpoint = format!("https://127.0.0.1:{}", receiver.port);
        let mut scaph = if protocol == "http" {
            let files = [
                ("--ca-file", &ca),
                ("--client-cert", &client_cert),
                ("--client-key", &client_key),
            ];
            let args: Vec<String> = files
                .iter()
                .flat_map(|(o, p)| [(*o).to_owned(), p.display().to_string()])
                .collect();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            scaph_otlp_to(&rapl, protocol, &endpoint, &args, &[])
        } else {
            let env = [
                ("OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE", ca.as_path()),
                (
                    "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                    client_cert.as_path(),
                ),
                ("OTEL_EXPORTER_OTLP_CLIENT_KEY", client_key.as_path()),
            ];
            scaph_otlp_to(&rapl, protocol, &endpoint, &[], &env)
        };
        let batch = receiver
            .next(Duration::from_secs(20))
            .unwrap_or_else(|| panic!("{protocol}: a request over mutual TLS within 20 s"));
        assert_eq!(batch.0["tls_peer"], "scaph-otlp-client", "{protocol}");
        assert!(batch.total("scaph_host_energy_joules_total") > 0.0);
        assert!(
            scaph.terminate(),
            "{protocol}: scaph exits cleanly on SIGTERM"
        );
    }
}
