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

use log::{info, warn};
use reqwest::header::CONTENT_TYPE;

use super::{
    secret::{self, SecretError},
    Exposition,
};
use crate::metrics::CONTENT_TYPE as METRICS_CONTENT_TYPE;

/// Environment variable holding the pushgateway password.
pub const PASSWORD_ENV: &str = "SCAPH_PUSH_PASSWORD";

/// At most one failure message per this period (besides the first one).
const LOG_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("--scheme {0:?}: use http or https")]
    Scheme(String),
    #[error("setting up the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("--ca-file {path}: {why}")]
    Ca { path: PathBuf, why: String },
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

/// Where and how to push.
#[derive(Clone, Debug)]
pub struct PushTarget {
    pub scheme: String,
    pub host: String,
    pub port: u16,
    pub suffix: String,
    pub job: String,
    pub instance: String,
    pub no_tls_check: bool,
    /// PEM file of the CAs to trust instead of the built-in ones.
    pub ca_file: Option<PathBuf>,
    pub auth: Option<BasicAuth>,
    /// Per-request limit.
    pub timeout: Duration,
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
        let host = if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let suffix = self.suffix.trim_matches('/');
        let prefix = if suffix.is_empty() {
            String::new()
        } else {
            format!("/{suffix}")
        };
        format!(
            "{}://{host}:{}{prefix}/job{}/instance{}",
            self.scheme,
            self.port,
            grouping_segment(&self.job),
            grouping_segment(&self.instance)
        )
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
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(chunk.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(chunk.get(2).copied().unwrap_or(0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Logs failures at most once per [`LOG_EVERY`], and the recovery.
#[derive(Debug, Default)]
struct FailureLog {
    failures: u64,
    last_logged: Option<Instant>,
}

impl FailureLog {
    fn failed(&mut self, error: &PushError) {
        self.failures += 1;
        let due = self.last_logged.is_none_or(|at| at.elapsed() >= LOG_EVERY);
        if due {
            warn!(
                "push failed ({} in a row, retrying every step): {error}",
                self.failures
            );
            self.last_logged = Some(Instant::now());
        }
    }

    fn succeeded(&mut self, url: &str) {
        if self.failures > 0 {
            warn!(
                "pushing to {url} works again after {} failed attempts",
                self.failures
            );
        }
        self.failures = 0;
        self.last_logged = None;
    }
}

/// Pushes each new exposition until the measurement loop stops.
pub async fn run(mut exposition: Exposition, target: PushTarget) -> Result<(), PushError> {
    if target.scheme != "http" && target.scheme != "https" {
        return Err(PushError::Scheme(target.scheme));
    }
    let client = client(&target)?;
    let url = target.url();
    info!("pushing to {url}");
    if target.auth.is_some() && target.scheme == "http" {
        warn!(
            "basic auth over http: the password crosses the network in clear (use --scheme https)"
        );
    }
    let mut log = FailureLog::default();
    while exposition.changed().await.is_ok() {
        let body = exposition.borrow_and_update().clone();
        match push(&client, &url, target.auth.as_ref(), body).await {
            Ok(()) => log.succeeded(&url),
            Err(e) => log.failed(&e),
        }
    }
    Ok(())
}

/// The HTTP client: the CA file's certificates as the only roots when given.
///
/// # Errors
/// When the CA file cannot be read or holds no certificate.
pub fn client(target: &PushTarget) -> Result<reqwest::Client, PushError> {
    let mut builder = reqwest::Client::builder()
        .timeout(target.timeout)
        .danger_accept_invalid_certs(target.no_tls_check);
    if let Some(path) = &target.ca_file {
        let ca = |why: String| PushError::Ca {
            path: path.clone(),
            why,
        };
        let pem = std::fs::read(path).map_err(|e| ca(e.to_string()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca(e.to_string()))?;
        if certs.is_empty() {
            return Err(ca("no PEM certificate in it".into()));
        }
        builder = builder.tls_built_in_root_certs(false);
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(PushError::Client)
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
            scheme: "http".into(),
            host: "localhost".into(),
            port: 9091,
            suffix: "metrics".into(),
            job: "scaphandre".into(),
            instance: "web-1".into(),
            no_tls_check: false,
            ca_file: None,
            auth: None,
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn url_has_the_grouping_key() {
        assert_eq!(
            target().url(),
            "http://localhost:9091/metrics/job/scaphandre/instance/web-1"
        );
        let t = PushTarget {
            host: "::1".into(),
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
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("client");
        let url = PushTarget {
            host: "127.0.0.1".into(),
            port,
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
        let gateway = PushTarget {
            host: "127.0.0.1".into(),
            port,
            auth: Some(auth),
            ..target()
        };
        let client = client(&gateway).expect("client");
        push(
            &client,
            &gateway.url(),
            gateway.auth.as_ref(),
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

    #[test]
    fn a_ca_file_without_a_certificate_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, "not a certificate\n").expect("write");
        let garbage = PushTarget {
            ca_file: Some(file),
            ..target()
        };
        assert!(matches!(client(&garbage), Err(PushError::Ca { .. })));
        let missing = PushTarget {
            ca_file: Some(dir.path().join("missing.pem")),
            ..target()
        };
        assert!(matches!(client(&missing), Err(PushError::Ca { .. })));
    }
}
