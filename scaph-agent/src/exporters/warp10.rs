//! `scaph warp10` (Scaphandre's `warpten`): every snapshot as Warp 10 data
//! points, POSTed to `/api/v0/update` with the `X-Warp10-Token` header.
//!
//! One line per series, with the metrics of the prometheus exporters
//! ([`crate::metrics`]; `--scaphandre-compat` adds Scaphandre's names), in
//! Warp 10's GTS input format:
//!
//! ```text
//! TS// CLASS{LABELS} VALUE
//! 1700000000123456// scaph_host_energy_joules_total{host=hv1,sensor=powercap_rapl,estimated=false} 400.0
//! ```
//!
//! TS is microseconds since the epoch (Warp 10's default time unit), no
//! position or elevation. Class names, label names and label values are
//! percent-encoded as UTF-8 (everything but ASCII letters, digits and `-._~`),
//! which protects the format's own separators (`{`, `}`, `,`, `=`, space) as
//! well as `%` and `+` (Warp 10 decodes `+` as a space). Values always have a
//! decimal point, so that Warp 10 stores doubles, never a mix of longs and
//! doubles in one series. Every value has a `host` label; energy and power
//! values also carry `sensor` and `estimated`.
//!
//! A batch that could not be delivered (connection error, 5xx, 408, 429) is
//! kept and sent again with the next one, up to [`MAX_BACKLOG_BYTES`] (the
//! oldest batches go first); other 4xx answers (bad token, bad data) are
//! logged and their batch dropped, since sending it again cannot succeed.
//! Either way the agent goes on, backing off between attempts.
use std::{
    collections::VecDeque,
    fmt::Write as _,
    path::PathBuf,
    time::{Duration, Instant, UNIX_EPOCH},
};

use log::{debug, info, warn};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

pub use super::http::Scheme;
use super::{
    http::{self, ClientOptions, HttpTarget, Redirects},
    points,
    retry::{Retry, Throttle},
    secret, ExportError, ExporterArgs, Measurement, Sink, SinkContext,
};

/// Undelivered data kept for the next attempt, at most.
pub const MAX_BACKLOG_BYTES: usize = 8 << 20;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Environment variable holding the write token (Scaphandre's name).
pub const TOKEN_ENV: &str = "SCAPH_WARP10_WRITE_TOKEN";

/// What [`encode`] leaves as it is: ASCII letters, digits and `-._~`.
const GTS_ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `scaph warp10` options (Scaphandre's).
#[derive(Clone, Debug, clap::Args)]
pub struct Warp10Args {
    /// Warp 10 host name or IP address.
    #[arg(short = 'H', long, default_value = "localhost")]
    pub host: String,

    /// Warp 10 TCP port.
    #[arg(short, long, default_value_t = 8080, value_parser = crate::cli_ranges::port)]
    pub port: u16,

    /// http or https.
    #[arg(short = 'S', long, value_enum, default_value_t = Scheme::Http)]
    pub scheme: Scheme,

    /// Write token of the Warp 10 application. Given here, it shows in `ps` to every
    /// user: prefer --write-token-file or the environment variable.
    #[arg(short = 't', long, env = TOKEN_ENV, hide_env_values = true)]
    pub write_token: Option<String>,

    /// File holding the write token (its first line); used before --write-token and the
    /// environment.
    #[arg(long, value_name = "PATH")]
    pub write_token_file: Option<PathBuf>,

    /// Seconds between measurements, each sent as one request.
    #[arg(short, long, default_value_t = 2, value_parser = crate::cli_ranges::step)]
    pub step: u64,

    /// Add a `vmname` label to qemu/KVM VM processes (run on a hypervisor).
    #[arg(short, long)]
    pub qemu: bool,
}

impl Warp10Args {
    /// The write token: from --write-token-file, else --write-token or
    /// [`TOKEN_ENV`].
    ///
    /// # Errors
    /// When there is none, or it cannot be read or sent in a header.
    pub fn token(&self) -> Result<String, secret::SecretError> {
        match (&self.write_token_file, &self.write_token) {
            (Some(path), _) => secret::from_file(path),
            (None, Some(token)) => secret::check(token.clone(), "the write token"),
            (None, None) => Err(secret::SecretError::Empty {
                what: format!("the write token (give --write-token-file PATH or ${TOKEN_ENV})"),
            }),
        }
    }

    /// The update endpoint.
    #[must_use]
    pub fn url(&self) -> String {
        HttpTarget {
            scheme: self.scheme,
            host: self.host.clone(),
            port: self.port,
        }
        .url("/api/v0/update")
    }
}

impl ExporterArgs for Warp10Args {
    type Sink = Warp10Sink;

    fn name(&self) -> &'static str {
        "warp10"
    }

    fn step(&self) -> Duration {
        super::step(self.step)
    }

    fn qemu(&self) -> bool {
        self.qemu
    }

    fn sink(&self, _: &SinkContext<'_>) -> anyhow::Result<Self::Sink> {
        Warp10Sink::from_args(self)
    }
}

/// What one POST came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: the backlog is delivered.
    Delivered,
    /// Not attempted: backing off after a failure.
    Deferred,
    /// Failed; the data is kept for the next attempt.
    Retrying,
    /// Refused for good (4xx); the data was dropped.
    Dropped,
}

pub struct Warp10Sink {
    client: reqwest::Client,
    url: String,
    token: reqwest::header::HeaderValue,
    host: String,
    backlog: VecDeque<String>,
    backlog_bytes: usize,
    retry: Retry,
    /// Batches dropped from a full backlog since the last line about it.
    dropped: usize,
    overflow: Throttle,
}

impl Warp10Sink {
    /// # Errors
    /// When the token cannot be an HTTP header value, or the HTTP client
    /// cannot be built.
    pub fn from_args(args: &Warp10Args) -> anyhow::Result<Self> {
        let mut token = reqwest::header::HeaderValue::from_str(&args.token()?).map_err(|_| {
            anyhow::anyhow!("the write token has characters an HTTP header cannot carry")
        })?;
        token.set_sensitive(true);
        let client = http::client(&ClientOptions {
            timeout: Some(REQUEST_TIMEOUT),
            // The token header never leaves the server's origin.
            redirects: Redirects::SameOrigin,
            ..ClientOptions::default()
        })?;
        let url = args.url();
        info!("warp10: sending to {url} every {} s", args.step);
        Ok(Self {
            client,
            url,
            token,
            host: points::hostname(),
            backlog: VecDeque::new(),
            backlog_bytes: 0,
            dropped: 0,
            overflow: Throttle::default(),
            retry: Retry::backoff(
                module_path!(),
                Duration::from_secs(1),
                Duration::from_secs(60),
            ),
        })
    }

    /// Queues the measurement's lines and sends everything queued, unless
    /// backing off.
    pub async fn export(&mut self, measurement: &Measurement, now: Instant) -> Outcome {
        self.queue(gts_lines(measurement, &self.host));
        if !self.retry.ready(now) {
            return Outcome::Deferred;
        }
        let body: String = self.backlog.iter().map(String::as_str).collect();
        let result = self
            .client
            .post(&self.url)
            .header("X-Warp10-Token", &self.token)
            .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(body)
            .send()
            .await;
        let (error, keep) = match result {
            Ok(response) if response.status().is_success() => {
                let url = &self.url;
                self.retry
                    .succeeded(|n| format!("warp10: {url} works again after {n} failed attempts"));
                debug!("warp10: {} batches delivered", self.backlog.len());
                self.clear();
                return Outcome::Delivered;
            }
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                let text: String = text.chars().take(200).collect();
                let retry = status.is_server_error()
                    || status == reqwest::StatusCode::REQUEST_TIMEOUT
                    || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
                (format!("HTTP {status}: {}", text.trim()), retry)
            }
            Err(e) => (format!("{e}"), true),
        };
        let what = if keep {
            "kept for the next attempt"
        } else {
            "dropped (sending it again cannot succeed)"
        };
        let (url, batches) = (&self.url, self.backlog.len());
        self.retry.failed(now, |streak| {
            format!(
                "warp10: POST {url} failed ({} times in a row): {error}; {batches} batches {what}{}",
                streak.failures,
                streak.next_try()
            )
        });
        if keep {
            Outcome::Retrying
        } else {
            self.clear();
            Outcome::Dropped
        }
    }

    fn queue(&mut self, batch: String) {
        self.backlog_bytes += batch.len();
        self.backlog.push_back(batch);
        let mut dropped = 0;
        while self.backlog_bytes > MAX_BACKLOG_BYTES && self.backlog.len() > 1 {
            if let Some(old) = self.backlog.pop_front() {
                self.backlog_bytes -= old.len();
                dropped += 1;
            }
        }
        if dropped > 0 {
            self.dropped += dropped;
            if self.overflow.due(Instant::now()).is_some() {
                let dropped = std::mem::take(&mut self.dropped);
                warn!(
                    "warp10: backlog over {MAX_BACKLOG_BYTES} bytes, {dropped} oldest batches dropped"
                );
            }
        }
    }

    fn clear(&mut self) {
        self.backlog.clear();
        self.backlog_bytes = 0;
    }

    /// Undelivered batches.
    #[must_use]
    pub fn backlog_len(&self) -> usize {
        self.backlog.len()
    }
}

impl Sink for Warp10Sink {
    async fn send(&mut self, measurement: &Measurement) -> Result<(), ExportError> {
        self.export(measurement, Instant::now()).await;
        Ok(())
    }
}

/// The measurement in GTS input format, one line per series (each ending
/// in `\n`), timed at the end of its cycle.
#[must_use]
pub fn gts_lines(measurement: &Measurement, host: &str) -> String {
    let micros = measurement
        .snapshot
        .timestamp
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    let host = encode(host);
    let mut out = String::new();
    for p in points::points(measurement) {
        let Some(value) = gts_double(p.value) else {
            continue;
        };
        let _ = write!(out, "{micros}// {}{{host={host}", encode(p.def.name));
        for (k, v) in &p.labels {
            let _ = write!(out, ",{}={}", encode(k), encode(v));
        }
        let _ = writeln!(out, "}} {value}");
    }
    out
}

/// Percent-encodes everything but ASCII letters, digits and `-._~`, as UTF-8.
#[must_use]
pub fn encode(s: &str) -> String {
    utf8_percent_encode(s, GTS_ESCAPED).to_string()
}

/// A double as Warp 10 reads one: always with a decimal point, never an
/// exponent; `None` for NaN and infinities, which it cannot store.
#[must_use]
pub fn gts_double(v: f64) -> Option<String> {
    if !v.is_finite() {
        return None;
    }
    let mut s = format!("{v}");
    if !s.contains('.') {
        s.push_str(".0");
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use std::{
        io::{BufRead as _, BufReader, Read as _, Write as _},
        net::TcpListener,
        sync::{mpsc, Arc},
    };

    use super::*;
    use crate::{
        exporters::points::tests::{sample_measurement, sample_snapshot},
        metrics::{MetricsConfig, MetricsState},
        sensors::EnergyOrigin,
        snapshot::Snapshot,
    };

    #[test]
    fn escaping_table() {
        let table = [
            ("scaph_host_power_watts", "scaph_host_power_watts"),
            ("a b", "a%20b"),
            ("a,b", "a%2Cb"),
            ("{x}", "%7Bx%7D"),
            ("k=v", "k%3Dv"),
            ("100%", "100%25"),
            ("1+1", "1%2B1"),
            ("/usr/bin/x", "%2Fusr%2Fbin%2Fx"),
            ("é", "%C3%A9"),
            ("日本", "%E6%97%A5%E6%9C%AC"),
            ("tab\tnew\nline", "tab%09new%0Aline"),
            ("-._~", "-._~"),
            ("", ""),
        ];
        for (raw, want) in table {
            assert_eq!(encode(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn doubles() {
        assert_eq!(gts_double(40.0).as_deref(), Some("40.0"));
        assert_eq!(gts_double(0.0).as_deref(), Some("0.0"));
        assert_eq!(gts_double(-1.5).as_deref(), Some("-1.5"));
        assert_eq!(gts_double(1e-7).as_deref(), Some("0.0000001"));
        assert_eq!(
            gts_double(1e21).as_deref(),
            Some("1000000000000000000000.0")
        );
        assert_eq!(gts_double(f64::NAN), None);
        assert_eq!(gts_double(f64::INFINITY), None);
    }

    #[test]
    fn lines_of_a_measurement() {
        let config = MetricsConfig {
            qemu: true,
            cmdline_max_len: 128,
            ..MetricsConfig::default()
        };
        let m = sample_measurement(EnergyOrigin::Estimated, config);
        let text = gts_lines(&m, "hv 1");
        assert!(text.ends_with('\n'));
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines.contains(
                &"1700000000123456// scaph_host_energy_joules_total{host=hv%201,sensor=estimate,estimated=true} 400.0"
            ),
            "{text}"
        );
        let vm = lines
            .iter()
            .find(|l| {
                l.starts_with(
                    "1700000000123456// scaph_process_energy_joules_total{host=hv%201,pid=4242,",
                )
            })
            .unwrap();
        assert!(
            vm.contains(",vmname=vm1,") && vm.ends_with("} 200.0"),
            "{vm}"
        );
        let weird = lines
            .iter()
            .find(|l| l.contains("scaph_process_energy_joules_total") && l.contains("pid=17,"))
            .unwrap();
        assert!(
            weird.contains(",exe=%2Fopt%2Fmy%20app%2Fw%C3%ABird%7B1%7D"),
            "{weird}"
        );
        let info = lines
            .iter()
            .find(|l| l.contains("scaph_process_info") && l.contains("pid=17,"))
            .unwrap();
        assert!(
            info.contains(",cmdline=%2Fopt%2Fmy%20app%2Fw%C3%ABird%7B1%7D%20a%2Cb%3Dc"),
            "{info}"
        );
        for line in &lines {
            // TS// CLASS{LABELS} VALUE, with exactly two spaces and one pair of braces
            assert_eq!(line.matches(' ').count(), 2, "{line}");
            assert_eq!(
                (line.matches('{').count(), line.matches('}').count()),
                (1, 1),
                "{line}"
            );
            assert!(line.is_ascii(), "{line}");
            let value = line.rsplit(' ').next().unwrap();
            assert!(
                value.contains('.') && value.parse::<f64>().is_ok(),
                "{line}"
            );
        }
    }

    #[test]
    fn url_forms() {
        let mut args = Warp10Args {
            host: "localhost".into(),
            port: 8080,
            scheme: Scheme::Http,
            write_token: Some("t".into()),
            write_token_file: None,
            step: 2,
            qemu: false,
        };
        assert_eq!(args.url(), "http://localhost:8080/api/v0/update");
        args.host = "::1".into();
        args.scheme = Scheme::Https;
        assert_eq!(args.url(), "https://[::1]:8080/api/v0/update");
    }

    /// A loopback HTTP server that answers each request with the next status
    /// of `statuses` and reports (request head, body).
    fn server(statuses: Vec<u16>) -> (u16, mpsc::Receiver<(String, String)>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for status in statuses {
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
                let mut reader = BufReader::new(stream);
                let mut head = String::new();
                let mut len = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    head.push_str(&line);
                }
                let mut body = vec![0; len];
                reader.read_exact(&mut body).unwrap();
                let mut stream = reader.into_inner();
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope"
                );
                stream.write_all(reply.as_bytes()).unwrap();
                let _ = tx.send((head, String::from_utf8(body).unwrap()));
            }
        });
        (port, rx)
    }

    fn exporter(port: u16) -> Warp10Sink {
        Warp10Sink::from_args(&Warp10Args {
            host: "127.0.0.1".into(),
            port,
            scheme: Scheme::Http,
            write_token: Some("s3cret".into()),
            write_token_file: None,
            step: 1,
            qemu: false,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn retries_server_errors_and_drops_client_errors() {
        let (port, rx) = server(vec![500, 200, 403, 200]);
        let mut exp = exporter(port);
        let mut snap = sample_snapshot(EnergyOrigin::Measured);
        let measure = |snap: &Snapshot| {
            let snapshot = Arc::new(snap.clone());
            let families = MetricsState::new(MetricsConfig::default()).update(&snapshot);
            Measurement { snapshot, families }
        };
        let t0 = Instant::now();
        assert_eq!(exp.export(&measure(&snap), t0).await, Outcome::Retrying);
        let (head, first) = rx.recv().unwrap();
        assert!(
            head.starts_with("POST /api/v0/update HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("x-warp10-token: s3cret\r\n"),
            "{head}"
        );
        // Backing off: queued, not sent.
        snap.timestamp += Duration::from_secs(1);
        assert_eq!(exp.export(&measure(&snap), t0).await, Outcome::Deferred);
        assert_eq!(exp.backlog_len(), 2);
        snap.timestamp += Duration::from_secs(1);
        assert_eq!(
            exp.export(&measure(&snap), t0 + Duration::from_secs(1))
                .await,
            Outcome::Delivered
        );
        let (_, second) = rx.recv().unwrap();
        assert!(
            second.starts_with(&first),
            "the failed batch is sent again first"
        );
        let stamps: std::collections::BTreeSet<&str> = second
            .lines()
            .map(|l| l.split("//").next().unwrap())
            .collect();
        assert_eq!(stamps.len(), 3, "three snapshots in the retry");
        assert_eq!(exp.backlog_len(), 0);
        // 403: dropped, not retried.
        assert_eq!(
            exp.export(&measure(&snap), t0 + Duration::from_secs(2))
                .await,
            Outcome::Dropped
        );
        assert_eq!(exp.backlog_len(), 0);
        let _ = rx.recv().unwrap();
        assert_eq!(
            exp.export(&measure(&snap), t0 + Duration::from_secs(10))
                .await,
            Outcome::Delivered
        );
        let (_, last) = rx.recv().unwrap();
        assert_eq!(
            last.lines().count(),
            first.lines().count(),
            "only the new batch"
        );
    }

    #[tokio::test]
    async fn connection_refused_is_kept() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut exp = exporter(port);
        let m = sample_measurement(EnergyOrigin::Measured, MetricsConfig::default());
        assert_eq!(exp.export(&m, Instant::now()).await, Outcome::Retrying);
        assert_eq!(exp.backlog_len(), 1);
    }

    #[test]
    fn token_must_fit_in_a_header() {
        let mut args = Warp10Args {
            host: "localhost".into(),
            port: 8080,
            scheme: Scheme::Http,
            write_token: Some("bad\ntoken".into()),
            write_token_file: None,
            step: 2,
            qemu: false,
        };
        assert!(Warp10Sink::from_args(&args).is_err());
        args.write_token = Some("good-token".into());
        assert!(Warp10Sink::from_args(&args).is_ok());
        args.write_token = None;
        assert!(Warp10Sink::from_args(&args).is_err(), "no token at all");
    }

    #[test]
    fn token_from_a_file_before_the_option() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "from-file\n").unwrap();
        let parse = |extra: &[&str]| {
            let mut argv = vec!["scaph", "warp10"];
            argv.extend_from_slice(extra);
            let cli = <crate::cli::Cli as clap::Parser>::try_parse_from(argv).unwrap();
            let crate::cli::Exporter::Warp10(args) = cli.exporter else {
                panic!("warp10")
            };
            args.token()
        };
        let file = path.to_str().unwrap();
        assert_eq!(parse(&["--write-token-file", file]).unwrap(), "from-file");
        assert_eq!(
            parse(&["--write-token-file", file, "-t", "opt"]).unwrap(),
            "from-file"
        );
        assert_eq!(parse(&["-t", "opt"]).unwrap(), "opt");
        assert!(parse(&["--write-token-file", "/nonexistent/token"]).is_err());
    }

    #[test]
    fn token_from_the_environment() {
        // SAFETY: no other test of this binary reads or writes this variable.
        unsafe { std::env::set_var(TOKEN_ENV, "from-env") };
        let cli = <crate::cli::Cli as clap::Parser>::try_parse_from(["scaph", "warp10"]);
        // SAFETY: as above.
        unsafe { std::env::remove_var(TOKEN_ENV) };
        let crate::cli::Exporter::Warp10(args) = cli.unwrap().exporter else {
            panic!("warp10")
        };
        assert_eq!(args.token().unwrap(), "from-env");
    }

    #[test]
    fn backlog_is_bounded() {
        let mut exp = exporter(1);
        let batch = "x".repeat(MAX_BACKLOG_BYTES / 3);
        for _ in 0..5 {
            exp.queue(batch.clone());
        }
        assert_eq!(exp.backlog_len(), 3);
        assert!(exp.backlog_bytes <= MAX_BACKLOG_BYTES);
    }
}
