//! `scaph otlp` options, and the `OTEL_EXPORTER_OTLP_*` environment
//! variables, resolved as the OpenTelemetry specification orders them: a
//! command-line option wins over the metrics-specific variable
//! (`OTEL_EXPORTER_OTLP_METRICS_*`), which wins over the generic one
//! (`OTEL_EXPORTER_OTLP_*`), which wins over the default.
//!
//! Endpoints: the metrics-specific variable is used as it is; the generic
//! one gets `/v1/metrics` appended for HTTP; `--endpoint` too when its URL has
//! no path. Defaults: `http://localhost:4318/v1/metrics` (http/protobuf, the
//! specification's default protocol) and `http://localhost:4317` (grpc).
use std::{path::PathBuf, time::Duration};

use clap::ValueEnum;
use reqwest::Url;

/// Longest accepted `--export-timeout` / `OTEL_EXPORTER_OTLP_TIMEOUT`, in ms.
const MAX_TIMEOUT_MS: u64 = 600_000;
/// The specification's default request timeout.
const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// At most this many headers (they come from a file or the environment that
/// could be anything).
const MAX_HEADERS: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// OTLP over gRPC (default port 4317).
    Grpc,
    /// OTLP over HTTP with a protobuf body, POSTed to /v1/metrics (default port 4318).
    #[value(name = "http/protobuf")]
    HttpProtobuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Compression {
    Gzip,
    None,
}

/// `scaph otlp` options. Each has an `OTEL_EXPORTER_OTLP_*` counterpart that
/// it overrides.
#[derive(Clone, Debug, clap::Args)]
pub struct OtlpArgs {
    /// Collector URL [env: OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT]
    /// (http/protobuf: /v1/metrics is added to a URL without a path).
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,

    /// Transport [env: OTEL_EXPORTER_OTLP_METRICS_PROTOCOL, OTEL_EXPORTER_OTLP_PROTOCOL] [default: http/protobuf].
    #[arg(long, value_enum)]
    pub protocol: Option<Protocol>,

    /// Header sent with every request, as KEY=VALUE; repeatable; added to (and
    /// overriding) those of OTEL_EXPORTER_OTLP_[METRICS_]HEADERS. Prefer the
    /// variable for secrets: the command line is visible to every user.
    #[arg(long = "header", value_name = "KEY=VALUE")]
    pub headers: Vec<String>,

    /// Trust only the CA certificates in this PEM file [env: OTEL_EXPORTER_OTLP_[METRICS_]CERTIFICATE].
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// Client certificate chain, PEM, for mutual TLS [env: OTEL_EXPORTER_OTLP_[METRICS_]CLIENT_CERTIFICATE].
    #[arg(long, value_name = "FILE", requires = "client_key")]
    pub client_cert: Option<PathBuf>,

    /// Client private key, PEM [env: OTEL_EXPORTER_OTLP_[METRICS_]CLIENT_KEY].
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    pub client_key: Option<PathBuf>,

    /// Request body compression [env: OTEL_EXPORTER_OTLP_[METRICS_]COMPRESSION] [default: none].
    #[arg(long, value_enum)]
    pub compression: Option<Compression>,

    /// Milliseconds one export may take [env: OTEL_EXPORTER_OTLP_[METRICS_]TIMEOUT] [default: 10000].
    #[arg(long, value_name = "MS")]
    pub export_timeout: Option<u64>,

    /// Seconds between measurements (one export each).
    #[arg(short, long, default_value_t = 10, value_parser = crate::cli_ranges::step)]
    pub step: u64,

    /// Add a `vmname` attribute to qemu/KVM VM processes (run on a hypervisor).
    #[arg(short, long)]
    pub qemu: bool,
}

/// Where and how to export, every source applied.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    pub protocol: Protocol,
    pub endpoint: Url,
    /// Lower-case names, validated for HTTP and gRPC metadata.
    pub headers: Vec<(String, String)>,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub gzip: bool,
    pub timeout: Duration,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("Settings")
            .field("protocol", &self.protocol)
            .field("endpoint", &self.endpoint.as_str())
            .field("headers (values hidden)", &names)
            .field("ca_file", &self.ca_file)
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .field("gzip", &self.gzip)
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{source_name} = {value:?}: {why}")]
    Invalid {
        source_name: String,
        value: String,
        why: String,
    },
    #[error("{0}: a client certificate needs a client key, and a key a certificate")]
    HalfIdentity(String),
}

/// The option's value, else the metrics variable's, else the generic one's
/// (empty variables count as unset), with where it came from.
fn pick<T: Clone>(
    cli: Option<&T>,
    cli_name: &str,
    suffix: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<(Source<T>, String)> {
    if let Some(v) = cli {
        return Some((Source::Cli(v.clone()), cli_name.to_owned()));
    }
    [
        format!("OTEL_EXPORTER_OTLP_METRICS_{suffix}"),
        format!("OTEL_EXPORTER_OTLP_{suffix}"),
    ]
    .into_iter()
    .find_map(|name| {
        let value = env(&name).filter(|v| !v.trim().is_empty())?;
        let source = if name.contains("_METRICS_") {
            Source::MetricsEnv(value.trim().to_owned())
        } else {
            Source::GenericEnv(value.trim().to_owned())
        };
        Some((source, name))
    })
}

enum Source<T> {
    Cli(T),
    MetricsEnv(String),
    GenericEnv(String),
}

fn invalid(source_name: &str, value: &str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        source_name: source_name.to_owned(),
        value: value.to_owned(),
        why: why.into(),
    }
}

/// Applies the specification's order to `args` and the environment `env`.
///
/// # Errors
/// A value that cannot be used, naming the option or variable it came from.
pub fn resolve(
    args: &OtlpArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Settings, ConfigError> {
    let protocol = match pick(args.protocol.as_ref(), "--protocol", "PROTOCOL", env) {
        None => Protocol::HttpProtobuf,
        Some((Source::Cli(p), _)) => p,
        Some((Source::MetricsEnv(v) | Source::GenericEnv(v), name)) => match v.as_str() {
            "grpc" => Protocol::Grpc,
            "http/protobuf" => Protocol::HttpProtobuf,
            _ => return Err(invalid(&name, &v, "scaph speaks grpc or http/protobuf")),
        },
    };
    let endpoint = endpoint(args, protocol, env)?;
    let headers = headers(args, env)?;
    let path = |cli: &Option<PathBuf>, cli_name: &str, suffix: &str| {
        pick(cli.as_ref(), cli_name, suffix, env).map(|(s, _)| match s {
            Source::Cli(p) => p,
            Source::MetricsEnv(v) | Source::GenericEnv(v) => PathBuf::from(v),
        })
    };
    let ca_file = path(&args.ca_file, "--ca-file", "CERTIFICATE");
    let client_cert = path(&args.client_cert, "--client-cert", "CLIENT_CERTIFICATE");
    let client_key = path(&args.client_key, "--client-key", "CLIENT_KEY");
    if client_cert.is_some() != client_key.is_some() {
        return Err(ConfigError::HalfIdentity(
            "OTEL_EXPORTER_OTLP_[METRICS_]CLIENT_CERTIFICATE / CLIENT_KEY".into(),
        ));
    }
    let gzip = match pick(
        args.compression.as_ref(),
        "--compression",
        "COMPRESSION",
        env,
    ) {
        None => false,
        Some((Source::Cli(c), _)) => c == Compression::Gzip,
        Some((Source::MetricsEnv(v) | Source::GenericEnv(v), name)) => match v.as_str() {
            "gzip" => true,
            "none" => false,
            _ => return Err(invalid(&name, &v, "use gzip or none")),
        },
    };
    let timeout_ms = match pick(
        args.export_timeout.as_ref(),
        "--export-timeout",
        "TIMEOUT",
        env,
    ) {
        None => DEFAULT_TIMEOUT_MS,
        Some((Source::Cli(ms), name)) => check_timeout(&name, &ms.to_string())?,
        Some((Source::MetricsEnv(v) | Source::GenericEnv(v), name)) => check_timeout(&name, &v)?,
    };
    Ok(Settings {
        protocol,
        endpoint,
        headers,
        ca_file,
        client_cert,
        client_key,
        gzip,
        timeout: Duration::from_millis(timeout_ms),
    })
}

fn check_timeout(name: &str, value: &str) -> Result<u64, ConfigError> {
    match value.parse::<u64>() {
        Ok(ms) if (1..=MAX_TIMEOUT_MS).contains(&ms) => Ok(ms),
        _ => Err(invalid(
            name,
            value,
            format!("milliseconds from 1 to {MAX_TIMEOUT_MS}"),
        )),
    }
}

fn endpoint(
    args: &OtlpArgs,
    protocol: Protocol,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Url, ConfigError> {
    let http = protocol == Protocol::HttpProtobuf;
    let (text, name, append) = match pick(args.endpoint.as_ref(), "--endpoint", "ENDPOINT", env) {
        None if http => (
            "http://localhost:4318/v1/metrics".to_owned(),
            String::new(),
            false,
        ),
        None => ("http://localhost:4317".to_owned(), String::new(), false),
        Some((Source::Cli(v), name)) => (v, name, http),
        Some((Source::MetricsEnv(v), name)) => (v, name, false),
        Some((Source::GenericEnv(v), name)) => (v, name, http),
    };
    let mut url = Url::parse(&text).map_err(|e| invalid(&name, &text, e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid(
            &name,
            &text,
            "an http:// or https:// URL with a host",
        ));
    }
    let generic = name == "OTEL_EXPORTER_OTLP_ENDPOINT";
    if append && (generic || url.path() == "/") {
        let path = format!("{}/v1/metrics", url.path().trim_end_matches('/'));
        url.set_path(&path);
    }
    Ok(url)
}

/// `OTEL_EXPORTER_OTLP_[METRICS_]HEADERS` (the metrics one replaces the
/// generic one: `k=v,k2=v2`, values percent-encoded), then each `--header`,
/// which replaces a header of the same name.
fn headers(
    args: &OtlpArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut add = |name: &str, key: &str, value: String| -> Result<(), ConfigError> {
        let key = key.trim().to_ascii_lowercase();
        let shown = format!("{key}=<hidden>");
        reqwest::header::HeaderName::from_bytes(key.as_bytes())
            .map_err(|_| invalid(name, &shown, "not a header name"))?;
        tonic::metadata::MetadataKey::<tonic::metadata::Ascii>::from_bytes(key.as_bytes())
            .map_err(|_| invalid(name, &shown, "not a gRPC metadata key"))?;
        if key.ends_with("-bin") || key.starts_with("grpc-") || key == "content-type" {
            return Err(invalid(name, &shown, "a header scaph sets itself"));
        }
        let value = value.trim().to_owned();
        reqwest::header::HeaderValue::from_str(&value)
            .map_err(|_| invalid(name, &shown, "the value is not printable ASCII"))?;
        out.retain(|(k, _)| *k != key);
        if out.len() == MAX_HEADERS {
            return Err(invalid(
                name,
                &shown,
                format!("more than {MAX_HEADERS} headers"),
            ));
        }
        out.push((key, value));
        Ok(())
    };
    if let Some((Source::MetricsEnv(v) | Source::GenericEnv(v), name)) =
        pick::<String>(None, "", "HEADERS", env)
    {
        for pair in v.split(',').filter(|p| !p.trim().is_empty()) {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(invalid(&name, "<hidden>", "expected KEY=VALUE,KEY=VALUE"));
            };
            let value = percent_encoding::percent_decode_str(value)
                .decode_utf8()
                .map_err(|_| invalid(&name, "<hidden>", "a value is not UTF-8 once decoded"))?;
            add(&name, key, value.into_owned())?;
        }
    }
    for pair in &args.headers {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(invalid("--header", "<hidden>", "expected KEY=VALUE"));
        };
        add("--header", key, value.to_owned())?;
    }
    Ok(out)
}
