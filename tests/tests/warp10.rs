//! `scaph warp10` against a loopback HTTP receiver: method, path, token
//! header, and every line of every body parsed as Warp 10's GTS input format,
//! with labels holding spaces, commas, braces, `=`, `+`, `%` and non-ASCII
//! text (the burner's executable path and command line). The receiver
//! refuses the first request (503): its data must come again in the next one.
use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpListener,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    time::{Duration, Instant},
};

use scaph_integration_tests::{powercap::FakeRapl, require_root, scaph_binary};

const TOKEN: &str = "s3cr3t-write-token";
/// A command-line word with every character the format must protect.
const ODD_ARG: &str = "sp ace,com{ma}=é+100%";

/// Kills and reaps a child when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Request {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: String,
}

/// Serves at most 40 requests on 127.0.0.1, answering 503 to the first one
/// and 200 to the others; stops when dropped.
struct Receiver {
    port: u16,
    requests: mpsc::Receiver<Request>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let (tx, requests) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            let mut served = 0;
            while served < 40 && !stopping.load(Ordering::Relaxed) {
                let stream = match listener.accept() {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                };
                stream.set_nonblocking(false).expect("blocking");
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .expect("timeout");
                let Some(request) = read_request(&stream) else {
                    continue;
                };
                let status = if served == 0 {
                    "503 Service Unavailable"
                } else {
                    "200 OK"
                };
                let mut stream = stream;
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                served += 1;
                if tx.send(request).is_err() {
                    return;
                }
            }
        });
        Self {
            port,
            requests,
            stop,
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn read_request(stream: &std::net::TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 || line == "\r\n" {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let len: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body: String::from_utf8(body).ok()?,
    })
}

/// One parsed line of GTS input format.
#[derive(Debug)]
struct Gts {
    micros: u64,
    class: String,
    labels: HashMap<String, String>,
    value: f64,
}

/// Percent-decoding of one class name, label name or value; `None` when the
/// raw text holds a character the format reserves, or a bad escape.
fn decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = raw.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b if b.is_ascii_alphanumeric() || b"-._~".contains(&b) => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// `TS/LAT:LON/ELEV CLASS{LABELS} VALUE` with an empty position and
/// elevation, as scaph writes it; panics with the line when it does not parse.
fn parse_gts(line: &str) -> Gts {
    let fail = || -> ! { panic!("not GTS input format: {line:?}") };
    let (head, rest) = line.split_once(' ').unwrap_or_else(|| fail());
    let micros = head
        .strip_suffix("//")
        .and_then(|ts| ts.parse().ok())
        .unwrap_or_else(|| fail());
    let (series, value) = rest.rsplit_once(' ').unwrap_or_else(|| fail());
    let (class, labels) = series.split_once('{').unwrap_or_else(|| fail());
    let labels = labels.strip_suffix('}').unwrap_or_else(|| fail());
    let class = decode(class)
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| fail());
    let labels = labels
        .split(',')
        .filter(|l| !l.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or_else(|| fail());
            (
                decode(k).unwrap_or_else(|| fail()),
                decode(v).unwrap_or_else(|| fail()),
            )
        })
        .collect();
    // A double: Warp 10 reads a number with a decimal point as one.
    assert!(
        value.contains('.') && !value.contains(['e', 'E']),
        "{line:?}: value {value:?}"
    );
    let value = value.parse().unwrap_or_else(|_| fail());
    Gts {
        micros,
        class,
        labels,
        value,
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into our buffer.
    unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

#[test]
fn warp10_posts_gts_lines_with_escaped_labels_and_retries() {
    require_root();
    let rapl = FakeRapl::start(40.0, 0);
    // The burner, copied to a path with reserved and non-ASCII characters,
    // with a command line that looks like a VM and carries ODD_ARG.
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = dir.path().join("b ur{n},é=1+%");
    std::fs::copy(scaph_binary().with_file_name("scaph-burn"), &exe).expect("copy the burner");
    let burner = Guard(
        Command::new("bash")
            .args(["-c", r#"exec -a qemu-system-x86_64 "$0" "$@""#])
            .arg(&exe)
            .args([
                "--ms",
                "60000",
                "--",
                "-name",
                "guest=vm1,debug-threads=on",
                ODD_ARG,
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("starting the burner"),
    );
    let pid = burner.0.id().to_string();
    let receiver = Receiver::start();
    let mut scaph = Guard(
        Command::new(scaph_binary())
            .args(["--no-header", "--powercap-root"])
            .arg(rapl.root())
            .args([
                "-s",
                "powercap_rapl",
                // Command lines are shown only when asked for.
                "--cmdline-max-len",
                "200",
                "warpten",
                "-H",
                "127.0.0.1",
                "-p",
                &receiver.port.to_string(),
                "-s",
                "1",
                "--qemu",
            ])
            .env("SCAPH_WARP10_WRITE_TOKEN", TOKEN)
            .stdout(Stdio::null())
            .spawn()
            .expect("starting scaph warp10"),
    );

    // Until a delivered request (the 2nd or later) lists the burner.
    let deadline = Instant::now() + Duration::from_secs(25);
    let mut requests = Vec::new();
    let mut burner_seen = false;
    while !burner_seen {
        let left = deadline
            .checked_duration_since(Instant::now())
            .expect("the burner's series within 25 s");
        let request = receiver
            .requests
            .recv_timeout(left)
            .expect("a request within 25 s");
        burner_seen = !requests.is_empty() && request.body.contains(&format!("pid={pid},"));
        requests.push(request);
    }
    assert!(
        matches!(scaph.0.try_wait(), Ok(None)),
        "scaph survives the 503"
    );

    let host = hostname();
    let mut stamps_per_request = Vec::new();
    for r in &requests {
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("POST", "/api/v0/update")
        );
        assert_eq!(
            r.headers.get("x-warp10-token").map(String::as_str),
            Some(TOKEN)
        );
        assert!(
            r.headers
                .get("content-type")
                .is_some_and(|c| c.starts_with("text/plain")),
            "{:?}",
            r.headers
        );
        assert!(r.body.ends_with('\n'));
        let lines: Vec<Gts> = r.body.lines().map(parse_gts).collect();
        assert!(
            lines.iter().all(|l| l.labels.get("host") == Some(&host)),
            "every line has host={host}"
        );
        let mut stamps: Vec<u64> = lines.iter().map(|l| l.micros).collect();
        stamps.dedup();
        stamps_per_request.push(stamps);
    }
    // The refused first batch is sent again, first, in the next request.
    let (first, second) = (&stamps_per_request[0], &stamps_per_request[1]);
    assert_eq!(first.len(), 1);
    assert_eq!(second.first(), first.first(), "retried batch first");
    assert!(
        second.len() >= 2,
        "the retry carries the refused batch and a new one: {second:?}"
    );

    let last: Vec<Gts> = requests
        .last()
        .unwrap()
        .body
        .lines()
        .map(parse_gts)
        .collect();
    let host_energy = last
        .iter()
        .find(|l| l.class == "scaph_host_energy_joules_total")
        .expect("host energy");
    assert_eq!(
        host_energy.labels.get("estimated").map(String::as_str),
        Some("false")
    );
    assert_eq!(
        host_energy.labels.get("sensor").map(String::as_str),
        Some("powercap_rapl")
    );
    assert!(host_energy.value > 0.0);
    let mine = |class: &str| {
        last.iter()
            .find(|l| l.class == class && l.labels.get("pid") == Some(&pid))
            .unwrap_or_else(|| panic!("{class} of the burner"))
    };
    let energy = mine("scaph_process_energy_joules_total");
    assert_eq!(
        energy.labels.get("exe").map(String::as_str),
        Some(exe.to_str().unwrap()),
        "exe label decoded exactly"
    );
    assert_eq!(energy.labels.get("vmname").map(String::as_str), Some("vm1"));
    assert!(energy.value > 0.0);
    let info = mine("scaph_process_info");
    let cmdline =
        format!("qemu-system-x86_64 --ms 60000 -- -name guest=vm1,debug-threads=on {ODD_ARG}");
    assert_eq!(
        info.labels.get("cmdline"),
        Some(&cmdline),
        "cmdline label decoded exactly"
    );

    drop(receiver);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(scaph.0.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Ok(Some(status)) = scaph.0.try_wait() {
            break status;
        }
        assert!(Instant::now() < deadline, "scaph did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}
