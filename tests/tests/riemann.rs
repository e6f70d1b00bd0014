//! `scaph riemann` against an independent receiver: a Python server that
//! decodes with the protobuf module of the PyPI package `riemann-client`
//! (`tests/riemann_receiver.py`) and acknowledges every message. The agent
//! runs on the real kernel with a fake RAPL package of known power; a process
//! that looks like a qemu VM burns one CPU.
//!
//! Needs `riemann-client` for python3: `cargo xtask test` installs it in
//! `target/riemann-venv` (or set SCAPH_TEST_PYTHON to a python that has it).
use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use scaph_integration_tests::{powercap::FakeRapl, require_root, scaph_binary};

const WATTS: f64 = 40.0;

/// Kills and reaps a child when dropped, so no test leaves a process behind.
struct Guard(Child);

impl Guard {
    fn pid(&self) -> u32 {
        self.0.id()
    }

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

/// A CPU burner whose command line looks like a libvirt VM named `vm1`:
/// `qemu-system-x86_64 --ms 60000 -- -name guest=vm1,debug-threads=on`.
fn vm_like() -> Guard {
    let burner = scaph_binary().with_file_name("scaph-burn");
    let child = Command::new("bash")
        .args(["-c", r#"exec -a qemu-system-x86_64 "$0" "$@""#])
        .arg(&burner)
        .args(["--ms", "60000", "--", "-name", "guest=vm1,debug-threads=on"])
        .stdout(Stdio::null())
        .spawn()
        .expect("starting the VM-like burner");
    Guard(child)
}

/// A python3 with `riemann_client` importable.
fn python() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf();
    let target = scaph_binary()
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf);
    let candidates = std::env::var_os("SCAPH_TEST_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain([workspace.join("target/riemann-venv/bin/python3")])
        .chain(target.map(|t| t.join("riemann-venv/bin/python3")))
        .chain([PathBuf::from("python3")]);
    for python in candidates {
        let ok = Command::new(&python)
            .args(["-c", "import riemann_client.riemann_pb2"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return python;
        }
    }
    panic!(
        "no python3 with the riemann-client package: run `cargo xtask test` (it installs it in target/riemann-venv), \
         or `pip install riemann-client`, or set SCAPH_TEST_PYTHON"
    );
}

#[derive(Debug)]
struct Event {
    service: String,
    host: String,
    metric: f64,
    ttl: f64,
    time: i64,
    description: String,
    tags: Vec<String>,
    attrs: HashMap<String, String>,
}

impl Event {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attrs.get(key).map(String::as_str)
    }
}

/// What the receiver printed: the events of one message, and its TLS peer.
struct Batch {
    events: Vec<Event>,
    tls_peer: String,
}

impl Batch {
    fn service(&self, name: &str) -> Option<&Event> {
        self.events.iter().find(|e| e.service == name)
    }
}

fn unquote(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ascii");
            out.push(u8::from_str_radix(hex, 16).expect("hex escape"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("UTF-8 after decoding")
}

fn parse_event(line: &str) -> Event {
    let mut e = Event {
        service: String::new(),
        host: String::new(),
        metric: f64::NAN,
        ttl: 0.0,
        time: 0,
        description: String::new(),
        tags: Vec::new(),
        attrs: HashMap::new(),
    };
    for field in line.split(' ').skip(1) {
        let (key, value) = field.split_once('=').expect("key=value");
        match key {
            "service" => e.service = unquote(value),
            "host" => e.host = unquote(value),
            "metric" => e.metric = value.parse().expect("metric"),
            "ttl" => e.ttl = value.parse().expect("ttl"),
            "time" => e.time = value.parse().expect("time"),
            "description" => e.description = unquote(value),
            "tags" => {
                e.tags = value
                    .split(',')
                    .filter(|t| !t.is_empty())
                    .map(unquote)
                    .collect()
            }
            "state" => {}
            attr => {
                let name = attr.strip_prefix("attr.").expect("attr.");
                e.attrs.insert(unquote(name), unquote(value));
            }
        }
    }
    e
}

/// The receiver process and the batches it reports.
struct Receiver {
    _child: Guard,
    port: u16,
    batches: mpsc::Receiver<Batch>,
}

impl Receiver {
    fn start(port: u16, tls: Option<[&Path; 3]>) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("riemann_receiver.py");
        let mut cmd = Command::new(python());
        cmd.arg(script).args(["--port", &port.to_string()]);
        if let Some(files) = tls {
            cmd.arg("--tls").args(files);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the receiver");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = lines
            .next()
            .expect("receiver output")
            .expect("receiver line");
        let port: u16 = first
            .strip_prefix("listening ")
            .expect("listening line")
            .parse()
            .expect("port");
        let (tx, batches) = mpsc::channel();
        std::thread::spawn(move || {
            let mut events = Vec::new();
            for line in lines.map_while(Result::ok) {
                if line.starts_with("event ") {
                    events.push(parse_event(&line));
                } else if let Some(rest) = line.strip_prefix("msg ") {
                    let peer = rest
                        .split(' ')
                        .find_map(|f| f.strip_prefix("tls_peer="))
                        .unwrap_or_default();
                    let batch = Batch {
                        events: std::mem::take(&mut events),
                        tls_peer: unquote(peer),
                    };
                    if tx.send(batch).is_err() {
                        return;
                    }
                }
            }
        });
        Self {
            _child: Guard(child),
            port,
            batches,
        }
    }

    /// The events of the next step that holds `service`, within `timeout`.
    /// A step's events span several messages past scaph's 1000 events per
    /// message (a busy machine has that many processes): its messages are
    /// merged (they share the step's time), and the step is complete when a
    /// message of the next one arrives.
    fn wait_for(&self, service: &str, timeout: Duration) -> Option<Batch> {
        let deadline = Instant::now() + timeout;
        let mut step: Option<Batch> = None;
        loop {
            let found = step.as_ref().is_some_and(|s| s.service(service).is_some());
            let batch = deadline
                .checked_duration_since(Instant::now())
                .and_then(|left| self.batches.recv_timeout(left).ok());
            let Some(batch) = batch else {
                return step.filter(|_| found);
            };
            let time = |b: &Batch| b.events.first().map(|e| e.time);
            match &mut step {
                Some(current) if time(current) == time(&batch) => {
                    current.events.extend(batch.events);
                }
                _ if found => return step,
                _ => step = Some(batch),
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

/// CPUs of the fake package's one socket (`FakeRapl::sys_root`).
fn cpus() -> f64 {
    FakeRapl::cpus() as f64
}

fn scaph_riemann(rapl: &FakeRapl, port: u16, extra: &[&str]) -> Guard {
    let child = Command::new(scaph_binary())
        .args(["--no-header", "--scaphandre-compat"])
        .args(rapl.scaph_args())
        .args([
            "-s",
            "powercap_rapl",
            "riemann",
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-d",
            "1",
            "--qemu",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .expect("starting scaph riemann");
    Guard(child)
}

#[test]
fn riemann_events_decode_independently_and_survive_a_receiver_restart() {
    require_root();
    let rapl = FakeRapl::start(WATTS, 0);
    let vm = vm_like();
    let receiver = Receiver::start(0, None);
    let mut scaph = scaph_riemann(&rapl, receiver.port, &[]);

    let process_service = format!(
        "scaph_process_power_consumption_microwatts_{}_scaph-burn",
        vm.pid()
    );
    let batch = receiver
        .wait_for(&process_service, Duration::from_secs(20))
        .expect("events from scaph within 20 s");
    eprintln!("{} events in one step", batch.events.len());

    let power = batch
        .service("scaph_host_power_microwatts")
        .expect("host power");
    eprintln!("host power {} µW (fake RAPL draws {WATTS} W)", power.metric);
    assert!(
        (power.metric / 1e6 - WATTS).abs() / WATTS < 0.02,
        "host power {} µW",
        power.metric
    );
    assert_eq!(power.host, hostname());
    assert!(
        power.tags.iter().any(|t| t == "scaphandre"),
        "{:?}",
        power.tags
    );
    assert!(power.ttl >= 60.0, "ttl {}", power.ttl);
    assert!(!power.description.is_empty());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (power.time - now).abs() < 60,
        "event time {} vs now {now}",
        power.time
    );
    assert_eq!(
        (power.attr("sensor"), power.attr("estimated")),
        (Some("powercap_rapl"), Some("false"))
    );

    let energy = batch
        .service("scaph_host_energy_joules_total")
        .expect("host energy counter");
    assert!(energy.metric > 0.0);

    let vm_power = batch.service(&process_service).expect("VM process power");
    let one_cpu = WATTS * 1e6 / cpus();
    eprintln!(
        "VM-like process {} µW (one busy CPU of {}: {one_cpu} µW)",
        vm_power.metric,
        cpus()
    );
    // Magnitude only (µW, one CPU's share): other load on the machine moves a
    // single cycle's attribution; its accuracy is checked by energy_e2e.
    assert!(
        vm_power.metric > 0.3 * one_cpu && vm_power.metric < 1.7 * one_cpu,
        "{} µW",
        vm_power.metric
    );
    assert_eq!(vm_power.attr("pid"), Some(vm.pid().to_string().as_str()));
    assert!(
        vm_power
            .attr("exe")
            .is_some_and(|e| e.ends_with("/scaph-burn")),
        "{:?}",
        vm_power.attrs
    );
    assert!(
        vm_power
            .attr("cmdline")
            .is_some_and(|c| c.starts_with("qemu-system-x86_64 --ms")),
        "{:?}",
        vm_power.attrs
    );
    assert_eq!(vm_power.attr("vmname"), Some("vm1"), "--qemu");
    let vm_energy = format!("scaph_process_energy_joules_total_{}_scaph-burn", vm.pid());
    assert!(
        batch
            .service(&vm_energy)
            .is_some_and(|e| e.attr("vmname") == Some("vm1")),
        "{vm_energy}"
    );

    // The receiver goes away: scaph keeps running, backing off.
    let port = receiver.port;
    drop(receiver);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        scaph.running(),
        "scaph must survive a server that went away"
    );

    // It comes back on the same port: scaph reconnects.
    let receiver = Receiver::start(port, None);
    let batch = receiver
        .wait_for(&process_service, Duration::from_secs(30))
        .expect("events again after the restart");
    assert!(batch.service("scaph_host_power_microwatts").is_some());
    assert!(scaph.running());
    assert!(scaph.terminate(), "scaph exits cleanly on SIGTERM");
}

/// `--mtls`: the receiver requires a client certificate signed by its CA.
#[test]
fn riemann_over_mutual_tls() {
    require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::create(dir.path());
    let rapl = FakeRapl::start(WATTS, 0);
    let receiver = Receiver::start(0, Some([&pki.ca, &pki.server_cert, &pki.server_key]));
    let mut scaph = {
        let mut args = vec![
            "--mtls".to_owned(),
            "--ca".into(),
            pki.ca.display().to_string(),
        ];
        args.extend([
            "--cert".into(),
            pki.client_cert.display().to_string(),
            "--key".into(),
            pki.client_key.display().to_string(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // The server's certificate is for "localhost".
        let child = Command::new(scaph_binary())
            .args(["--no-header", "--powercap-root"])
            .arg(rapl.root())
            .args([
                "-s",
                "powercap_rapl",
                "riemann",
                "-a",
                "localhost",
                "-p",
                &receiver.port.to_string(),
                "-d",
                "1",
            ])
            .args(&args)
            .stdout(Stdio::null())
            .spawn()
            .expect("starting scaph riemann --mtls");
        Guard(child)
    };
    let batch = receiver
        .wait_for("scaph_host_energy_joules_total", Duration::from_secs(20))
        .expect("events over mTLS");
    assert_eq!(
        batch.tls_peer, "scaph-client",
        "the receiver saw our client certificate"
    );
    assert!(scaph.running());
    assert!(scaph.terminate());
}

/// A CA, a server certificate for localhost and a client certificate, made
/// with the openssl command.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl Pki {
    fn create(dir: &Path) -> Self {
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl (apt-get install openssl)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .expect("ext");
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").expect("ext");
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=scaph-test-ca",
        ]);
        for (name, cn) in [("server", "localhost"), ("client", "scaph-client")] {
            openssl(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={cn}"),
            ]);
            openssl(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
            ]);
        }
        Self {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        }
    }
}
