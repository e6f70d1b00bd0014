//! Sending one request over OTLP/HTTP (protobuf body, `POST .../v1/metrics`,
//! through reqwest) or OTLP/gRPC (the generated tonic client). Both use
//! rustls: the CA file's certificates as the only roots when given, else the
//! Mozilla roots; an optional client certificate for mutual TLS.
use std::{io::Write as _, path::PathBuf};

use opentelemetry_proto::tonic::collector::metrics::v1::{
    metrics_service_client::MetricsServiceClient, ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
};
use prost::Message as _;
use tonic::{
    codec::CompressionEncoding,
    metadata::{MetadataKey, MetadataValue},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

use super::config::{Protocol, Settings};
use crate::exporters::http::{self, ClientOptions, HttpTarget, Redirects, Scheme};

/// Longest answer body read from an HTTP collector.
const MAX_ANSWER_BYTES: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("reading {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate in it")]
    NoCertificate { path: PathBuf },
    #[error("{0}")]
    HttpClient(#[from] http::ClientError),
    #[error("setting up the gRPC channel: {0}")]
    GrpcChannel(#[source] tonic::transport::Error),
    #[error("compressing the request: {0}")]
    Gzip(#[source] std::io::Error),
    #[error("sending to {url}: {source}")]
    Http {
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
    #[error("gRPC export to {url}: {status}")]
    Grpc { url: String, status: tonic::Status },
}

fn read(path: &PathBuf) -> Result<Vec<u8>, SendError> {
    std::fs::read(path).map_err(|source| SendError::File {
        path: path.clone(),
        source,
    })
}

/// A connection to the collector (opened lazily, re-opened after failures).
pub enum Transport {
    Http {
        client: reqwest::Client,
        url: String,
        /// `url` without its credentials, for logs and errors.
        shown: String,
        headers: reqwest::header::HeaderMap,
        gzip: bool,
    },
    Grpc {
        client: MetricsServiceClient<Channel>,
        url: String,
        headers: Vec<(
            MetadataKey<tonic::metadata::Ascii>,
            MetadataValue<tonic::metadata::Ascii>,
        )>,
    },
}

impl Transport {
    /// # Errors
    /// When a TLS file cannot be read or used.
    pub fn new(settings: &Settings) -> Result<Self, SendError> {
        // Read and checked here for both transports (tonic would only fail
        // at the first connection).
        let ca = settings
            .ca_file
            .as_deref()
            .map(http::ca_certificates)
            .transpose()
            .map_err(|e| match e {
                http::ClientError::CaRead { path, error } => SendError::File {
                    path,
                    source: error,
                },
                http::ClientError::NoCertificate { path }
                | http::ClientError::CaParse { path, .. } => SendError::NoCertificate { path },
                other => other.into(),
            })?;
        let identity = match (&settings.client_cert, &settings.client_key) {
            (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
            _ => None,
        };
        match settings.protocol {
            Protocol::HttpProtobuf => {
                // No redirects: the headers (credentials) would follow.
                let client = http::client(&ClientOptions {
                    timeout: Some(settings.timeout),
                    ca: ca.map(|ca| ca.certificates),
                    no_tls_check: false,
                    identity,
                    redirects: Redirects::None,
                })?;
                let mut headers = reqwest::header::HeaderMap::new();
                for (k, v) in &settings.headers {
                    // Validated by `config::resolve`.
                    if let (Ok(k), Ok(v)) = (
                        reqwest::header::HeaderName::from_bytes(k.as_bytes()),
                        reqwest::header::HeaderValue::from_str(v),
                    ) {
                        headers.insert(k, v);
                    }
                }
                Ok(Self::Http {
                    client,
                    url: settings.endpoint.to_string(),
                    shown: shown(&settings.endpoint),
                    headers,
                    gzip: settings.gzip,
                })
            }
            Protocol::Grpc => {
                let url = &settings.endpoint;
                let origin = HttpTarget {
                    scheme: Scheme::parse(url.scheme()).unwrap_or(Scheme::Http),
                    // host_str() already brackets an IPv6 address.
                    host: url.host_str().unwrap_or("localhost").to_owned(),
                    port: url.port_or_known_default().unwrap_or(4317),
                }
                .origin();
                let mut endpoint = Endpoint::from_shared(origin.clone())
                    .map_err(SendError::GrpcChannel)?
                    .timeout(settings.timeout)
                    .connect_timeout(settings.timeout);
                if url.scheme() == "https" {
                    let mut tls = ClientTlsConfig::new();
                    tls = match &ca {
                        Some(ca) => tls.ca_certificate(Certificate::from_pem(&ca.pem)),
                        None => tls.with_webpki_roots(),
                    };
                    if let Some((cert, key)) = &identity {
                        tls = tls.identity(Identity::from_pem(cert, key));
                    }
                    endpoint = endpoint.tls_config(tls).map_err(SendError::GrpcChannel)?;
                }
                let mut client = MetricsServiceClient::new(endpoint.connect_lazy())
                    .max_decoding_message_size(MAX_ANSWER_BYTES);
                if settings.gzip {
                    client = client.send_compressed(CompressionEncoding::Gzip);
                }
                let headers = settings
                    .headers
                    .iter()
                    .filter_map(|(k, v)| {
                        Some((MetadataKey::from_bytes(k.as_bytes()).ok()?, v.parse().ok()?))
                    })
                    .collect();
                Ok(Self::Grpc {
                    client,
                    url: origin,
                    headers,
                })
            }
        }
    }

    /// Where requests go.
    #[must_use]
    pub fn url(&self) -> &str {
        match self {
            Self::Http { shown, .. } => shown,
            Self::Grpc { url, .. } => url,
        }
    }

    /// Sends `request`; returns the collector's answer (which may say that it
    /// rejected some points).
    ///
    /// # Errors
    /// A collector that is down, too slow, or refuses the request.
    pub async fn export(
        &mut self,
        request: ExportMetricsServiceRequest,
    ) -> Result<ExportMetricsServiceResponse, SendError> {
        match self {
            Self::Http {
                client,
                url,
                shown,
                headers,
                gzip,
            } => {
                let mut body = request.encode_to_vec();
                let mut post = client
                    .post(url.as_str())
                    .headers(headers.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf");
                if *gzip {
                    let mut encoder =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                    encoder.write_all(&body).map_err(SendError::Gzip)?;
                    body = encoder.finish().map_err(SendError::Gzip)?;
                    post = post.header(reqwest::header::CONTENT_ENCODING, "gzip");
                }
                let fail = |source: reqwest::Error| SendError::Http {
                    url: shown.clone(),
                    source: source.without_url(),
                };
                let mut answer = post.body(body).send().await.map_err(fail)?;
                let status = answer.status();
                let mut bytes = Vec::new();
                while let Some(chunk) = answer.chunk().await.map_err(fail)? {
                    let room = MAX_ANSWER_BYTES.saturating_sub(bytes.len());
                    bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if room <= chunk.len() {
                        break;
                    }
                }
                if status.is_success() {
                    return Ok(
                        ExportMetricsServiceResponse::decode(bytes.as_slice()).unwrap_or_default()
                    );
                }
                Err(SendError::Refused {
                    url: shown.clone(),
                    status,
                    body: String::from_utf8_lossy(&bytes)
                        .trim()
                        .chars()
                        .filter(|c| !c.is_control())
                        .take(300)
                        .collect(),
                })
            }
            Self::Grpc {
                client,
                url,
                headers,
            } => {
                let mut call = tonic::Request::new(request);
                for (k, v) in headers.iter() {
                    call.metadata_mut().insert(k.clone(), v.clone());
                }
                client
                    .export(call)
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|status| SendError::Grpc {
                        url: url.clone(),
                        status,
                    })
            }
        }
    }
}

/// `url` as logs may show it: without a user name or password.
pub(super) fn shown(url: &reqwest::Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.to_string()
}
