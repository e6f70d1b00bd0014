//! What the HTTP exporters (prometheus-push, warp10, otlp) share: where a
//! server is, and the one way their client is built.
use std::{
    borrow::Cow,
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

/// `http` or `https`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    /// `http` or `https`; anything else is `None`.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "http" => Some(Self::Http),
            "https" => Some(Self::Https),
            _ => None,
        }
    }

    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A server: scheme, host (name or IP address) and port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpTarget {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
}

impl HttpTarget {
    /// `scheme://host:port`, an IPv6 address in brackets.
    #[must_use]
    pub fn origin(&self) -> String {
        format!("{}://{}:{}", self.scheme, bracketed(&self.host), self.port)
    }

    /// The origin followed by `path` (which starts with `/`).
    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }
}

/// `host` as a URL's authority holds it: an IPv6 address in brackets.
#[must_use]
pub fn bracketed(host: &str) -> Cow<'_, str> {
    if host.contains(':') && !host.starts_with('[') {
        Cow::Owned(format!("[{host}]"))
    } else {
        Cow::Borrowed(host)
    }
}

/// Which redirects the client follows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Redirects {
    /// None: the redirect is the answer.
    #[default]
    None,
    /// Up to [`MAX_REDIRECTS`], anywhere (reqwest's default; it drops
    /// `Authorization` and cookies when the host changes).
    Follow,
    /// Up to [`MAX_REDIRECTS`] within the first request's origin (scheme,
    /// host and port): a header carrying a token never leaves it.
    SameOrigin,
}

/// Redirects followed at most in a row (reqwest's default).
pub const MAX_REDIRECTS: usize = 10;

impl Redirects {
    fn policy(self) -> reqwest::redirect::Policy {
        use reqwest::redirect::Policy;
        match self {
            Self::None => Policy::none(),
            Self::Follow => Policy::limited(MAX_REDIRECTS),
            Self::SameOrigin => Policy::custom(|attempt| {
                let same = attempt
                    .previous()
                    .first()
                    .is_some_and(|first| first.origin() == attempt.url().origin());
                if attempt.previous().len() > MAX_REDIRECTS {
                    attempt.error("too many redirects")
                } else if same {
                    attempt.follow()
                } else {
                    attempt.stop()
                }
            }),
        }
    }
}

/// How the client reaches its server.
#[derive(Debug, Default)]
pub struct ClientOptions {
    /// Limit on one whole request (`None`: reqwest's default, none).
    pub timeout: Option<Duration>,
    /// Trust only these CA certificates ([`ca_certificates`]), instead of the built-in roots.
    pub ca: Option<Vec<reqwest::Certificate>>,
    /// Accept any certificate (a self-signed server).
    pub no_tls_check: bool,
    /// A client certificate chain and its key, PEM, for mutual TLS.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    pub redirects: Redirects,
}

/// The CA errors say their cause in one line (the option that names the
/// file is added by the caller).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{}: {error}", path.display())]
    CaRead {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: no PEM certificate in it", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: {error}", path.display())]
    CaParse {
        path: PathBuf,
        error: reqwest::Error,
    },
    #[error("setting up the HTTP client: {0}")]
    Build(#[source] reqwest::Error),
}

/// A PEM file of CA certificates: its text (for clients other than
/// reqwest's) and its certificates, at least one.
#[derive(Debug)]
pub struct CaCertificates {
    pub pem: Vec<u8>,
    pub certificates: Vec<reqwest::Certificate>,
}

/// The CA certificates of a PEM file, read and parsed once.
///
/// # Errors
/// When the file cannot be read or holds no certificate.
pub fn ca_certificates(path: &Path) -> Result<CaCertificates, ClientError> {
    let pem = std::fs::read(path).map_err(|error| ClientError::CaRead {
        path: path.to_path_buf(),
        error,
    })?;
    let certificates =
        reqwest::Certificate::from_pem_bundle(&pem).map_err(|error| ClientError::CaParse {
            path: path.to_path_buf(),
            error,
        })?;
    if certificates.is_empty() {
        return Err(ClientError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(CaCertificates { pem, certificates })
}

/// The one HTTP client builder: rustls, scaph's user agent, redirects as
/// `options` say.
///
/// # Errors
/// A client identity that does not parse, or a TLS backend that fails.
pub fn client(options: &ClientOptions) -> Result<reqwest::Client, ClientError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("scaph/", env!("CARGO_PKG_VERSION")))
        .redirect(options.redirects.policy())
        .danger_accept_invalid_certs(options.no_tls_check);
    if let Some(timeout) = options.timeout {
        builder = builder.timeout(timeout);
    }
    if let Some(certs) = &options.ca {
        builder = builder.tls_built_in_root_certs(false);
        for cert in certs {
            builder = builder.add_root_certificate(cert.clone());
        }
    }
    if let Some((cert, key)) = &options.identity {
        let pem = [cert.as_slice(), b"\n", key.as_slice()].concat();
        let identity = reqwest::Identity::from_pem(&pem).map_err(ClientError::Build)?;
        builder = builder.identity(identity);
    }
    builder.build().map_err(ClientError::Build)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let mut t = HttpTarget {
            scheme: Scheme::Http,
            host: "localhost".into(),
            port: 8080,
        };
        assert_eq!(
            t.url("/api/v0/update"),
            "http://localhost:8080/api/v0/update"
        );
        t.host = "::1".into();
        t.scheme = Scheme::Https;
        assert_eq!(t.origin(), "https://[::1]:8080");
        t.host = "[::1]".into();
        assert_eq!(t.origin(), "https://[::1]:8080");
        assert_eq!(Scheme::parse("ftp"), None);
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, "not a certificate\n").expect("write");
        let err = ca_certificates(&file).expect_err("no certificate");
        assert!(matches!(err, ClientError::NoCertificate { .. }), "{err}");
        assert!(err
            .to_string()
            .ends_with("ca.pem: no PEM certificate in it"));
        let missing = dir.path().join("missing.pem");
        assert!(matches!(
            ca_certificates(&missing),
            Err(ClientError::CaRead { .. })
        ));
    }

    /// A server on a thread that answers each request with `answer(path)`
    /// and records the paths asked for.
    fn server(
        answer: impl Fn(&str) -> String + Send + 'static,
    ) -> (u16, std::sync::mpsc::Receiver<String>) {
        use std::io::{BufRead as _, BufReader, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                let path = line.split(' ').nth(1).unwrap_or_default().to_owned();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {}
                let reply = answer(&path);
                let _ = tx.send(path);
                let _ = stream.write_all(reply.as_bytes());
            }
        });
        (port, rx)
    }

    fn redirect_to(location: &str) -> String {
        format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    }

    const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

    async fn status(redirects: Redirects, url: &str) -> u16 {
        let client = client(&ClientOptions {
            redirects,
            ..ClientOptions::default()
        })
        .expect("client");
        client
            .get(url)
            .send()
            .await
            .expect("answer")
            .status()
            .as_u16()
    }

    #[tokio::test]
    async fn redirects_are_followed_as_asked() {
        let (other, to_other) = server(|_| OK.to_owned());
        let (port, asked) = server(move |path| match path {
            "/here" => redirect_to("/there"),
            "/away" => redirect_to(&format!("http://127.0.0.1:{other}/elsewhere")),
            _ => OK.to_owned(),
        });
        let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
        assert_eq!(status(Redirects::None, &url("/here")).await, 302);
        assert_eq!(status(Redirects::SameOrigin, &url("/here")).await, 200);
        assert_eq!(status(Redirects::SameOrigin, &url("/away")).await, 302);
        assert!(to_other.try_recv().is_err(), "another origin is not asked");
        assert_eq!(status(Redirects::Follow, &url("/away")).await, 200);
        assert_eq!(to_other.try_recv().as_deref(), Ok("/elsewhere"));
        let paths: Vec<String> = asked.try_iter().collect();
        assert_eq!(paths, ["/here", "/here", "/there", "/away", "/away"]);
    }
}
