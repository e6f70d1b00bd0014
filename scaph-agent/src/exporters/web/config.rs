//! `--web.config.file`: the web configuration of the Prometheus
//! exporter-toolkit (node_exporter's `--web.config.file`), same keys, same
//! meaning, so an operator can reuse the file they already have.
//!
//! Parsing is strict, as the toolkit's: an unknown key is an error that names
//! it. Relative file paths are taken from the directory of the file.
use std::{
    collections::BTreeMap,
    io::Read as _,
    path::{Path, PathBuf},
};

use hyper::header::{HeaderName, HeaderValue};
use serde::Deserialize;

/// No configuration, certificate or key file is larger than this.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: larger than {MAX_FILE_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("{path}: {source}")]
    Yaml {
        path: PathBuf,
        source: serde_norway::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Tls {
        path: PathBuf,
        source: rustls::Error,
    },
}

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    tls_server_config: Option<RawTls>,
    http_server_config: Option<RawHttp>,
    basic_auth_users: Option<BTreeMap<String, String>>,
    rate_limit: Option<serde_norway::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTls {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    client_ca_file: Option<String>,
    client_auth_type: Option<String>,
    cipher_suites: Option<Vec<String>>,
    curve_preferences: Option<Vec<String>>,
    min_version: Option<String>,
    max_version: Option<String>,
    prefer_server_cipher_suites: Option<bool>,
    client_allowed_sans: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawHttp {
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

/// PEM text, from a file or written in the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pem {
    File(PathBuf),
    Inline(String),
}

impl Pem {
    /// The PEM bytes, and what to call them in an error.
    pub fn read(&self, what: &str) -> Result<(Vec<u8>, PathBuf), WebConfigError> {
        match self {
            Self::File(path) => Ok((read_bounded(path)?, path.clone())),
            Self::Inline(text) => Ok((
                text.as_bytes().to_vec(),
                PathBuf::from(format!("<inline {what}>")),
            )),
        }
    }
}

/// `client_auth_type`, with Go's meaning (crypto/tls ClientAuthType).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// No certificate asked for.
    NoClientCert,
    /// A certificate asked for, none required, none verified.
    RequestClientCert,
    /// A certificate required, not verified against a CA.
    RequireAnyClientCert,
    /// A certificate optional, verified against `client_ca_file` when given.
    VerifyClientCertIfGiven,
    /// A certificate required and verified against `client_ca_file`.
    RequireAndVerifyClientCert,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert: Pem,
    pub key: Pem,
    pub client_ca: Option<Pem>,
    pub client_auth: ClientAuth,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
    /// Go names; empty: rustls's defaults.
    pub cipher_suites: Vec<String>,
    /// Go names; empty: rustls's defaults.
    pub curves: Vec<String>,
    pub prefer_server_cipher_suites: bool,
}

/// A checked configuration. TLS material is read by [`super::tls`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WebConfig {
    pub tls: Option<TlsSettings>,
    /// Added to every response.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// User name to bcrypt hash; empty: no authentication.
    pub users: BTreeMap<String, String>,
}

impl WebConfig {
    /// The files the configuration refers to (a change to any of them is a
    /// change to the configuration).
    #[must_use]
    pub fn files(&self) -> Vec<PathBuf> {
        let Some(tls) = &self.tls else {
            return Vec::new();
        };
        [Some(&tls.cert), Some(&tls.key), tls.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|pem| match pem {
                Pem::File(path) => Some(path.clone()),
                Pem::Inline(_) => None,
            })
            .collect()
    }
}

/// Reads at most [`MAX_FILE_BYTES`] of `path`.
pub fn read_bounded(path: &Path) -> Result<Vec<u8>, WebConfigError> {
    let read = |source| WebConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(WebConfigError::TooLarge {
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

/// Reads and checks the file at `path`.
pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
    let text = read_bounded(path)?;
    parse(&text, path)
}

/// Checks `text`, the content of the file at `path`.
pub fn parse(text: &[u8], path: &Path) -> Result<WebConfig, WebConfigError> {
    let invalid = |message: String| WebConfigError::Invalid {
        path: path.to_owned(),
        message,
    };
    let raw: RawConfig = if text.iter().all(u8::is_ascii_whitespace) {
        RawConfig::default()
    } else {
        serde_norway::from_slice(text).map_err(|source| WebConfigError::Yaml {
            path: path.to_owned(),
            source,
        })?
    };
    if raw.rate_limit.is_some() {
        return Err(invalid(
            "rate_limit is not supported by scaph (--web.max-connections bounds the load)".into(),
        ));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let tls = raw
        .tls_server_config
        .map(|t| tls_settings(t, dir))
        .transpose()
        .map_err(invalid)?
        .flatten();
    let headers = match raw.http_server_config {
        Some(http) => headers(http.headers.unwrap_or_default()).map_err(invalid)?,
        None => Vec::new(),
    };
    let users = raw.basic_auth_users.unwrap_or_default();
    for (user, hash) in &users {
        hash.parse::<bcrypt::HashParts>().map_err(|e| {
            invalid(format!(
                "basic_auth_users: the password of {user:?} is not a bcrypt hash: {e}"
            ))
        })?;
    }
    Ok(WebConfig {
        tls,
        headers,
        users,
    })
}

/// The TLS part, or None when it sets nothing (plain HTTP, as the toolkit).
fn tls_settings(raw: RawTls, dir: &Path) -> Result<Option<TlsSettings>, String> {
    let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
    let file = |s: Option<String>| nonempty(s).map(|s| Pem::File(dir.join(s)));
    let inline = |s: Option<String>| nonempty(s).map(Pem::Inline);
    let cert = file(raw.cert_file).or_else(|| inline(raw.cert));
    let key = file(raw.key_file).or_else(|| inline(raw.key));
    let client_ca = file(raw.client_ca_file).or_else(|| inline(raw.client_ca));
    let auth_type = nonempty(raw.client_auth_type);
    if cert.is_none() && key.is_none() && client_ca.is_none() && auth_type.is_none() {
        return Ok(None);
    }
    let cert = cert.ok_or("tls_server_config: missing one of cert or cert_file")?;
    let key = key.ok_or("tls_server_config: missing one of key or key_file")?;
    let client_auth = match auth_type.as_deref().unwrap_or("NoClientCert") {
        "NoClientCert" => ClientAuth::NoClientCert,
        "RequestClientCert" => ClientAuth::RequestClientCert,
        "RequireAnyClientCert" | "RequireClientCert" => ClientAuth::RequireAnyClientCert,
        "VerifyClientCertIfGiven" => ClientAuth::VerifyClientCertIfGiven,
        "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerifyClientCert,
        other => {
            return Err(format!(
                "tls_server_config: invalid client_auth_type {other:?}"
            ))
        }
    };
    match (client_auth, &client_ca) {
        (ClientAuth::NoClientCert, Some(_)) => {
            return Err(
                "tls_server_config: client CAs are configured without a client_auth_type".into(),
            )
        }
        (ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert, None) => {
            return Err(format!(
                "tls_server_config: client_auth_type {client_auth:?} needs client_ca_file"
            ))
        }
        _ => {}
    }
    if raw.client_allowed_sans.is_some() {
        return Err("tls_server_config: client_allowed_sans is not supported by scaph".into());
    }
    let version = |s: Option<String>, default| match nonempty(s).as_deref() {
        None => Ok(default),
        Some("TLS12") => Ok(TlsVersion::Tls12),
        Some("TLS13") => Ok(TlsVersion::Tls13),
        Some(v @ ("TLS10" | "TLS11")) => Err(format!(
            "tls_server_config: {v} is not supported (rustls: TLS12 or TLS13)"
        )),
        Some(v) => Err(format!(
            "tls_server_config: unknown TLS version {v:?} (TLS12 or TLS13)"
        )),
    };
    let min_version = version(raw.min_version, TlsVersion::Tls12)?;
    let max_version = version(raw.max_version, TlsVersion::Tls13)?;
    if min_version > max_version {
        return Err("tls_server_config: min_version is above max_version".into());
    }
    Ok(Some(TlsSettings {
        cert,
        key,
        client_ca,
        client_auth,
        min_version,
        max_version,
        cipher_suites: raw.cipher_suites.unwrap_or_default(),
        curves: raw.curve_preferences.unwrap_or_default(),
        prefer_server_cipher_suites: raw.prefer_server_cipher_suites.unwrap_or(true),
    }))
}

/// `http_server_config.headers`: only the toolkit's security headers, with
/// its allowed values where it has a list.
fn headers(raw: BTreeMap<String, String>) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    const ALLOWED: &[(&str, &[&str])] = &[
        ("Strict-Transport-Security", &[]),
        ("X-Content-Type-Options", &["nosniff"]),
        ("X-Frame-Options", &["deny", "sameorigin"]),
        ("X-XSS-Protection", &[]),
        ("Content-Security-Policy", &[]),
    ];
    raw.into_iter()
        .map(|(name, value)| {
            let Some((_, values)) = ALLOWED.iter().find(|(n, _)| *n == name) else {
                return Err(format!(
                    "http_server_config: HTTP header {name:?} can not be configured"
                ));
            };
            if !values.is_empty() && !values.contains(&value.as_str()) {
                return Err(format!(
                    "http_server_config: {name} must be one of {values:?}, not {value:?}"
                ));
            }
            let header_value = HeaderValue::from_str(&value).map_err(|_| {
                format!("http_server_config: {name}: {value:?} is not a valid header value")
            })?;
            let header_name =
                HeaderName::from_bytes(name.as_bytes()).map_err(|e| format!("{name}: {e}"))?;
            Ok((header_name, header_value))
        })
        .collect()
}
