//! `scaph prometheus-push`: sends the exposition to a Prometheus pushgateway
//! after every measurement.
//!
//! It PUTs to `/<suffix>/job/<job>/instance/<hostname>`, which replaces the
//! whole group, so series of processes that are gone disappear from the
//! gateway too. A gateway that is down or refuses a push is logged
//! (rate-limited) and tried again at the next step; it never stops scaph.
//!
//! A gateway behind basic auth gets a user name (`--username`) and a password
//! from a file (`--password-file`) or [`PASSWORD_ENV`], never from the
//! command line; `--ca-file` makes scaph trust only the CAs in that PEM file.
use std::{
    fmt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use base64::Engine as _;
use log::{info, warn};
use reqwest::header::CONTENT_TYPE;

use super::{
    http::{self, ClientError, ClientOptions, HttpTarget, Redirects, Scheme},
    points::hostname,
    retry::Retry,
    secret::{self, SecretError},
    ExportError, ExporterArgs, Measurement, Sink, SinkContext,
};
use crate::{
    cli_ranges as ranges,
    metrics::{encode, CONTENT_TYPE as METRICS_CONTENT_TYPE},
};

/// Environment variable holding the pushgateway password.
pub const PASSWORD_ENV: &str = "SCAPH_PUSH_PASSWORD";

/// `scaph prometheus-push` options.
#[derive(Clone, Debug, clap::Args)]
pub struct PushArgs {
    /// Pushgateway host.
    #[arg(short = 'H', long, default_value = "localhost")]
    pub host: String,

    /// Pushgateway port.
    #[arg(short, long, default_value_t = 9091, value_parser = ranges::port)]
    pub port: u16,

    /// http or https.
    #[arg(short = 'S', long, default_value = "http", value_parser = scheme)]
    pub scheme: Scheme,

    /// Seconds between measurements (one push each).
    #[arg(short, long, default_value_t = 30, value_parser = ranges::step)]
    pub step: u64,

    /// URL path prefix of the pushgateway API.
    #[arg(long, default_value = "metrics")]
    pub suffix: String,

    /// Job name in the grouping key (/metrics/job/<job>/instance/<hostname>).
    #[arg(short, long, default_value = "scaphandre")]
    pub job: String,

    /// Accept any TLS certificate (self-signed pushgateway over https).
    #[arg(long, conflicts_with = "ca_file")]
    pub no_tls_check: bool,

    /// Trust only the CA certificates in this PEM file for an https pushgateway.
    #[arg(long, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,

    /// User name for a pushgateway behind basic auth. The password comes from
    /// --password-file or the SCAPH_PUSH_PASSWORD environment variable, never the command line.
    #[arg(long)]
    pub username: Option<String>,

    /// File holding the basic auth password (its first line).
    #[arg(long, value_name = "PATH", requires = "username")]
    pub password_file: Option<PathBuf>,

    /// Add a vmname label to qemu/KVM guest processes.
    #[arg(long)]
    pub qemu: bool,
}

/// `--scheme`: parsed like a value enum, with Scaphandre's free-text
/// option's message (and its help) kept.
fn scheme(text: &str) -> Result<Scheme, String> {
    Scheme::parse(text).ok_or_else(|| PushError::Scheme(text.to_owned()).to_string())
}

impl ExporterArgs for PushArgs {
    type Sink = PushSink;

    fn name(&self) -> &'static str {
        "prometheus-push"
    }

    fn step(&self) -> Duration {
        super::step(self.step)
    }

    fn qemu(&self) -> bool {
        self.qemu
    }

    fn sink(&self, _: &SinkContext<'_>) -> anyhow::Result<Self::Sink> {
        // Each push must end before the next step.
        let timeout = self
            .step()
            .clamp(Duration::from_secs(1), Duration::from_secs(10));
        match PushSink::from_args(self, timeout) {
            // As they always read: not under "pushing metrics".
            Err(e @ (PushError::Password(_) | PushError::NoPassword)) => Err(e.into()),
            other => Ok(other.context("pushing metrics")?),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("--scheme {0:?}: use http or https")]
    Scheme(String),
    #[error("{0}")]
    Client(#[source] ClientError),
    #[error("--ca-file {0}")]
    Ca(ClientError),
    #[error("the pushgateway password: {0}")]
    Password(#[from] SecretError),
    #[error("--username needs a password: --password-file or ${PASSWORD_ENV}")]
    NoPassword,
    #[error("sending to {url}: {source}")]
    Send {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered {status}: {body}")]
    Refused {
        url: String,
        status: reqwest::StatusCode,
        body: String,
    },
}

/// Where to push: the gateway and the group.
#[derive(Clone, Debug)]
pub struct PushTarget {
    pub server: HttpTarget,
    pub suffix: String,
    pub job: String,
    pub instance: String,
}

/// User name and password for the gateway (the password never printed).
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

impl BasicAuth {
    /// `username` with the password from `password_file`, else from
    /// [`PASSWORD_ENV`]; `None` without a user name.
    ///
    /// # Errors
    /// When the password cannot be read, or there is none.
    pub fn resolve(
        username: Option<&str>,
        password_file: Option<&Path>,
    ) -> Result<Option<Self>, PushError> {
        let Some(username) = username else {
            return Ok(None);
        };
        let password = match password_file {
            Some(path) => secret::from_file(path)?,
            None => secret::from_env(PASSWORD_ENV)?.ok_or(PushError::NoPassword)?,
        };
        Ok(Some(Self {
            username: username.to_owned(),
            password,
        }))
    }
}

impl PushTarget {
    /// The group's URL; label values go through the pushgateway's base64
    /// form when they would not survive as a path segment.
    #[must_use]
    pub fn url(&self) -> String {
        let suffix = self.suffix.trim_matches('/');
        let prefix = if suffix.is_empty() {
            String::new()
        } else {
            format!("/{suffix}")
        };
        self.server.url(&format!(
            "{prefix}/job{}/instance{}",
            grouping_segment(&self.job),
            grouping_segment(&self.instance)
        ))
    }
}

/// `/value`, or `@base64/<urlsafe base64>` for values with `/`, `%`, or
/// nothing in them (the pushgateway's documented escape).
fn grouping_segment(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if plain {
        format!("/{value}")
    } else {
        format!("@base64/{}", base64_url(value.as_bytes()))
    }
}

/// RFC 4648 §5 (URL-safe alphabet), with padding as the pushgateway accepts it.
fn base64_url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE.encode(bytes)
}

/// The sink: each measurement's exposition, PUT to the group.
pub struct PushSink {
    client: reqwest::Client,
    url: String,
    auth: Option<BasicAuth>,
    retry: Retry,
}

impl PushSink {
    /// The sink of `scaph prometheus-push`; `timeout` limits each request.
    ///
    /// # Errors
    /// An unusable CA file, or an unreadable password.
    pub fn from_args(args: &PushArgs, timeout: Duration) -> Result<Self, PushError> {
        let scheme = args.scheme;
        let target = PushTarget {
            server: HttpTarget {
                scheme,
                host: args.host.clone(),
                port: args.port,
            },
            suffix: args.suffix.clone(),
            job: args.job.clone(),
            instance: hostname(),
        };
        let auth = BasicAuth::resolve(args.username.as_deref(), args.password_file.as_deref())?;
        let ca = args
            .ca_file
            .as_deref()
            .map(http::ca_certificates)
            .transpose()
            .map_err(PushError::Ca)?
            .map(|ca| ca.certificates);
        let client = http::client(&ClientOptions {
            timeout: Some(timeout),
            ca,
            no_tls_check: args.no_tls_check,
            identity: None,
            redirects: Redirects::Follow,
        })
        .map_err(PushError::Client)?;
        let url = target.url();
        info!("pushing to {url}");
        if auth.is_some() && scheme == Scheme::Http {
            warn!(
                "basic auth over http: the password crosses the network in clear (use --scheme https)"
            );
        }
        Ok(Self {
            client,
            url,
            auth,
            retry: Retry::every_step(module_path!()).recovery_at(log::Level::Warn),
        })
    }
}

impl Sink for PushSink {
    async fn send(&mut self, measurement: &Measurement) -> Result<(), ExportError> {
        let body = bytes::Bytes::from(encode(&measurement.families));
        match push(&self.client, &self.url, self.auth.as_ref(), body).await {
            Ok(()) => {
                let url = &self.url;
                self.retry.succeeded(|n| {
                    format!("pushing to {url} works again after {n} failed attempts")
                });
            }
            Err(e) => self.retry.failed(Instant::now(), |streak| {
                format!(
                    "push failed ({} in a row, retrying every step): {e}",
                    streak.failures
                )
            }),
        }
        Ok(())
    }
}

async fn push(
    client: &reqwest::Client,
    url: &str,
    auth: Option<&BasicAuth>,
    body: bytes::Bytes,
) -> Result<(), PushError> {
    let mut request = client
        .put(url)
        .header(CONTENT_TYPE, METRICS_CONTENT_TYPE)
        .body(body);
    if let Some(auth) = auth {
        request = request.basic_auth(&auth.username, Some(&auth.password));
    }
    let response = request.send().await.map_err(|source| PushError::Send {
        url: url.to_owned(),
        source,
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.text().await.unwrap_or_default();
    Err(PushError::Refused {
        url: url.to_owned(),
        status,
        body: body.trim().chars().take(300).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> PushTarget {
        PushTarget {
            server: HttpTarget {
                scheme: Scheme::Http,
                host: "localhost".into(),
                port: 9091,
            },
            suffix: "metrics".into(),
            job: "scaphandre".into(),
            instance: "web-1".into(),
        }
    }

    fn at(host: &str, port: u16) -> HttpTarget {
        HttpTarget {
            scheme: Scheme::Http,
            host: host.into(),
            port,
        }
    }

    #[test]
    fn url_has_the_grouping_key() {
        assert_eq!(
            target().url(),
            "http://localhost:9091/metrics/job/scaphandre/instance/web-1"
        );
        let t = PushTarget {
            server: at("::1", 9091),
            job: "a/b".into(),
            ..target()
        };
        assert_eq!(
            t.url(),
            "http://[::1]:9091/metrics/job@base64/YS9i/instance/web-1"
        );
    }

    #[test]
    fn base64_matches_rfc_4648() {
        assert_eq!(base64_url(b""), "");
        assert_eq!(base64_url(b"f"), "Zg==");
        assert_eq!(base64_url(b"fo"), "Zm8=");
        assert_eq!(base64_url(b"foo"), "Zm9v");
        assert_eq!(base64_url(b"foob"), "Zm9vYg==");
        assert_eq!(base64_url(&[0xfb, 0xff]), "-_8=");
    }

    #[tokio::test]
    async fn an_unreachable_gateway_is_an_error_not_a_panic() {
        // A loopback port that was just free: nothing listens there.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let client = http::client(&ClientOptions {
            timeout: Some(Duration::from_secs(2)),
            ..ClientOptions::default()
        })
        .expect("client");
        let url = PushTarget {
            server: at("127.0.0.1", port),
            ..target()
        }
        .url();
        let err = push(&client, &url, None, bytes::Bytes::from_static(b"x 1\n"))
            .await
            .expect_err("nothing listens");
        assert!(matches!(err, PushError::Send { .. }), "{err}");
    }

    /// Answers one request with 200 and returns its head.
    fn one_request() -> (u16, std::thread::JoinHandle<String>) {
        use std::io::{BufRead as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let thread = std::thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            let mut reader = std::io::BufReader::new(stream);
            let mut head = String::new();
            while reader.read_line(&mut head).unwrap_or(0) > 2 && !head.ends_with("\r\n\r\n") {}
            let mut stream = reader.into_inner();
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .expect("reply");
            head
        });
        (port, thread)
    }

    #[tokio::test]
    async fn basic_auth_is_sent_and_never_printed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("password");
        std::fs::write(&file, "pa:ss word\n").expect("write");
        let auth = BasicAuth::resolve(Some("scaph"), Some(&file))
            .expect("readable")
            .expect("a user");
        assert!(!format!("{auth:?}").contains("pa:ss"), "{auth:?}");
        let (port, server) = one_request();
        let port = port.to_string();
        let sink = PushSink::from_args(
            &args(&[
                "-H",
                "127.0.0.1",
                "-p",
                &port,
                "--username",
                "scaph",
                "--password-file",
                file.to_str().expect("utf-8"),
            ]),
            Duration::from_secs(5),
        )
        .expect("sink");
        push(
            &sink.client,
            &sink.url,
            sink.auth.as_ref(),
            bytes::Bytes::from_static(b"x 1\n"),
        )
        .await
        .expect("pushed");
        let head = server.join().expect("server");
        let header = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("authorization:"));
        // base64("scaph:pa:ss word")
        assert_eq!(
            header,
            Some("authorization: Basic c2NhcGg6cGE6c3Mgd29yZA=="),
            "{head}"
        );
        assert!(BasicAuth::resolve(None, None).expect("no user").is_none());
    }

    fn args(extra: &[&str]) -> PushArgs {
        let mut argv = vec!["scaph", "prometheus-push"];
        argv.extend_from_slice(extra);
        let cli = <crate::cli::Cli as clap::Parser>::try_parse_from(argv).expect("parses");
        let crate::cli::Exporter::PrometheusPush(args) = cli.exporter else {
            panic!("prometheus-push")
        };
        args
    }

    #[test]
    fn bad_schemes_and_ca_files_are_refused_at_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, "not a certificate\n").expect("write");
        let second = Duration::from_secs(1);
        let sink = |extra: &[&str]| PushSink::from_args(&args(extra), second).err();
        let garbage = sink(&["--ca-file", file.to_str().expect("utf-8")]);
        assert!(matches!(garbage, Some(PushError::Ca(_))), "{garbage:?}");
        let missing = dir.path().join("missing.pem");
        let missing = sink(&["--ca-file", missing.to_str().expect("utf-8")]);
        assert!(
            missing.is_some_and(|e| e.to_string().starts_with("--ca-file ")),
            "the option is named"
        );
        assert!(sink(&["-S", "https"]).is_none());
        // A bad scheme is refused by the parser, in the same words.
        let ftp = <crate::cli::Cli as clap::Parser>::try_parse_from([
            "scaph",
            "prometheus-push",
            "-S",
            "ftp",
        ])
        .expect_err("ftp");
        assert!(
            ftp.to_string()
                .contains("--scheme \"ftp\": use http or https"),
            "{ftp}"
        );
    }
}
