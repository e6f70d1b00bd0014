//! `scaph prometheus`: serves the latest measurement over HTTP(S).
//!
//! The agent measures on its own timer and the [`Publisher`] sink encodes
//! each result once; a scrape only clones those bytes. Several scrapers
//! therefore see the same numbers, and a slow or stuck one holds nothing but
//! its own connection. The server itself (limits, TLS, authentication) is
//! [`super::web`]; this file only says what each path answers.
use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    header::{HeaderValue, ALLOW, CONTENT_TYPE},
    Method, Response, StatusCode,
};
use tokio::{net::TcpListener, sync::watch};

use super::{
    web::{
        self,
        reload::{Active, Reloader},
        Limits, Reply,
    },
    ExportError, ExporterArgs, Measurement, Sink, SinkContext,
};
use crate::{
    cli_ranges as ranges,
    metrics::{encode, Family, CONTENT_TYPE as METRICS_CONTENT_TYPE},
    util::GrowthTrim,
};

/// `scaph prometheus` options.
#[derive(Clone, Debug, clap::Args)]
pub struct PrometheusArgs {
    /// Address to listen on.
    #[arg(short, long, default_value = "0.0.0.0")]
    pub address: String,

    /// TCP port to listen on.
    #[arg(short, long, default_value_t = 8080)]
    pub port: u16,

    /// URL path of the metrics (`/metrics`).
    #[arg(short, long, default_value = "metrics")]
    pub suffix: String,

    /// Seconds between measurements. Measurement runs on this timer; a scrape
    /// only reads the latest result, so scrapers never change the numbers.
    #[arg(long, default_value_t = 2, value_parser = ranges::step)]
    pub step: u64,

    /// Add a vmname label to qemu/KVM guest processes.
    #[arg(long)]
    pub qemu: bool,

    /// TLS, basic authentication and response headers, in the Prometheus
    /// exporter-toolkit's format (node_exporter's --web.config.file). Re-read
    /// when it or a certificate it names changes.
    #[arg(long = "web.config.file", value_name = "PATH")]
    pub web_config_file: Option<PathBuf>,

    /// Connections open at once; more are closed as soon as accepted.
    #[arg(long = "web.max-connections", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub web_max_connections: u32,

    /// Connections open at once from one client address (an IPv6 client is its /64).
    #[arg(long = "web.max-connections-per-client", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub web_max_connections_per_client: u32,
}

impl ExporterArgs for PrometheusArgs {
    type Sink = Publisher;

    fn name(&self) -> &'static str {
        "prometheus"
    }

    fn step(&self) -> Duration {
        super::step(self.step)
    }

    fn qemu(&self) -> bool {
        self.qemu
    }

    async fn listen(&self) -> anyhow::Result<Option<Server>> {
        Server::bind(self).await.map(Some)
    }

    /// Its exposition starts with scaph's own metrics, before the first
    /// measurement.
    fn sink(&self, context: &SinkContext<'_>) -> anyhow::Result<Self::Sink> {
        let before_first = context
            .metrics
            .map(crate::metrics::MetricsState::before_first_measurement)
            .unwrap_or_default();
        Ok(Publisher::new(&before_first))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the measurement loop stopped; nothing more to serve")]
    MeasurementStopped,
}

/// The encoded exposition of the latest measurement.
pub type Exposition = watch::Receiver<Bytes>;

/// The sink of the pull exporter: encodes each measurement once, into the
/// bytes that every scrape until the next one serves.
pub struct Publisher {
    tx: watch::Sender<Bytes>,
    /// The exposition at scale (a series per process) allocates and frees
    /// tens of MB per cycle, which the allocator would otherwise keep.
    trim: GrowthTrim,
}

impl Publisher {
    /// A publisher whose exposition starts as `before_first` (scaph's own
    /// metrics before the first measurement).
    #[must_use]
    pub fn new(before_first: &[Family]) -> Self {
        Self {
            tx: watch::Sender::new(Bytes::from(encode(before_first))),
            trim: GrowthTrim::default(),
        }
    }
}

impl Sink for Publisher {
    async fn send(&mut self, measurement: &Measurement) -> Result<(), ExportError> {
        self.tx
            .send_replace(Bytes::from(encode(&measurement.families)));
        let started = std::time::Instant::now();
        if self.trim.after_cycle() {
            log::debug!(
                "free heap given back to the system in {:?}",
                started.elapsed()
            );
        }
        Ok(())
    }

    fn exposition(&self) -> Option<Exposition> {
        Some(self.tx.subscribe())
    }
}

/// The listening socket and the web configuration of `scaph prometheus`,
/// ready before anything is loaded: a busy port or a broken file is
/// reported at once.
pub struct Server {
    listener: TcpListener,
    config: Arc<Reloader>,
    limits: Limits,
    suffix: String,
}

impl Server {
    /// Binds the port and reads `--web.config.file`.
    ///
    /// # Errors
    /// A port that cannot be bound, or a web configuration that cannot be used.
    pub async fn bind(args: &PrometheusArgs) -> anyhow::Result<Self> {
        let wanted = u64::from(args.web_max_connections) + 64;
        match web::raise_fd_limit() {
            Ok(limit) if limit < wanted => log::warn!(
                "open files are limited to {limit}: fewer than --web.max-connections={} needs",
                args.web_max_connections
            ),
            Ok(_) => {}
            Err(e) => log::warn!("raising the limit on open files: {e}"),
        }
        let config = match &args.web_config_file {
            Some(path) => Reloader::watching(path.clone()).context("--web.config.file")?,
            None => Reloader::fixed(Active::default()),
        };
        let listener = TcpListener::bind((args.address.as_str(), args.port))
            .await
            .with_context(|| format!("listening on {}:{}", args.address, args.port))?;
        Ok(Self {
            listener,
            config: Arc::new(config),
            limits: Limits {
                max_connections: args.web_max_connections as usize,
                max_connections_per_client: args.web_max_connections_per_client as usize,
                ..Limits::default()
            },
            suffix: args.suffix.clone(),
        })
    }

    /// Serves `exposition` until its publisher ends.
    ///
    /// # Errors
    /// When measurement stops.
    pub async fn serve(self, exposition: Exposition) -> Result<(), ServeError> {
        if let Ok(addr) = self.listener.local_addr() {
            let scheme = if self.config.current().tls.is_some() {
                "https"
            } else {
                "http"
            };
            log::info!(
                "serving metrics at {scheme}://{addr}{}",
                metrics_path(&self.suffix)
            );
        }
        serve(
            self.listener,
            &self.suffix,
            exposition,
            self.limits,
            self.config,
        )
        .await
    }
}

/// `/metrics` from `metrics`, `/metrics/`, `metrics/`.
#[must_use]
pub fn metrics_path(suffix: &str) -> String {
    format!("/{}", suffix.trim_matches('/'))
}

/// Serves until the exposition's publisher ends.
///
/// # Errors
/// When measurement stops.
pub async fn serve(
    listener: TcpListener,
    suffix: &str,
    exposition: Exposition,
    limits: Limits,
    config: Arc<Reloader>,
) -> Result<(), ServeError> {
    let path = metrics_path(suffix);
    let latest = exposition.clone();
    let answer = move |method: &Method, uri_path: &str| {
        route(method, uri_path, &path, latest.borrow().clone())
    };
    let mut exposition = exposition;
    tokio::select! {
        () = web::serve(listener, limits, config, answer) => Ok(()),
        () = async { while exposition.changed().await.is_ok() {} } => Err(ServeError::MeasurementStopped),
    }
}

fn text(status: StatusCode, content_type: &'static str, message: String) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(message)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The response to one request: the metrics, a landing page at `/`,
/// `/-/healthy`, 405 for methods other than GET and HEAD, 404 elsewhere.
#[must_use]
pub fn route(method: &Method, path: &str, metrics_path: &str, body: Bytes) -> Reply {
    const PLAIN: &str = "text/plain; charset=utf-8";
    let known = path == "/" || path == "/-/healthy" || path.trim_end_matches('/') == metrics_path;
    if !known {
        return text(
            StatusCode::NOT_FOUND,
            PLAIN,
            format!("Not found. scaph serves its metrics at {metrics_path}\n"),
        );
    }
    if method != Method::GET && method != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, PLAIN, "Use GET.\n".into());
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        "/" => text(
            StatusCode::OK,
            "text/html; charset=utf-8",
            landing_page(metrics_path),
        ),
        "/-/healthy" => text(StatusCode::OK, PLAIN, "Healthy\n".into()),
        _ => {
            let mut response = Response::new(Full::new(body));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
            response
        }
    }
}

fn landing_page(metrics_path: &str) -> String {
    let href: String = metrics_path
        .chars()
        .map(|c| match c {
            '&' => "&amp;".into(),
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '"' => "&quot;".into(),
            c => c.to_string(),
        })
        .collect();
    format!(
        "<!DOCTYPE html>\n<html>\n<head><meta charset=\"utf-8\"><title>scaph</title></head>\n<body>\n<h1>scaph</h1>\n\
         <p>Energy per process, from exact kernel CPU time and RAPL.</p>\n\
         <ul>\n<li><a href=\"{href}\">Metrics</a></li>\n<li><a href=\"/-/healthy\">Health</a></li>\n</ul>\n</body>\n</html>\n"
    )
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;

    async fn body(response: Response<Full<Bytes>>) -> String {
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    }

    #[tokio::test]
    async fn metrics_path_serves_the_text_format_with_its_content_type() {
        let response = route(
            &Method::GET,
            "/metrics",
            &metrics_path("metrics"),
            Bytes::from_static(b"x 1\n"),
        );
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[CONTENT_TYPE],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        assert_eq!(body(response).await, "x 1\n");
    }

    #[tokio::test]
    async fn unknown_paths_get_404_with_a_hint() {
        for path in ["/metrics", "/index.html", "/-/ready", "/custom/x"] {
            let response = route(&Method::GET, path, &metrics_path("/custom/"), Bytes::new());
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
            assert!(body(response).await.contains("/custom"), "{path}");
        }
    }

    #[tokio::test]
    async fn other_methods_get_405() {
        for path in ["/metrics", "/", "/-/healthy"] {
            let response = route(&Method::POST, path, "/metrics", Bytes::new());
            assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
            assert_eq!(response.headers()[ALLOW], "GET, HEAD");
        }
    }

    #[tokio::test]
    async fn the_landing_page_links_to_the_metrics_path() {
        let response = route(&Method::GET, "/", &metrics_path("a\"b"), Bytes::new());
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        let page = body(response).await;
        assert!(page.contains("<a href=\"/a&quot;b\">"), "{page}");
    }

    #[tokio::test]
    async fn healthy_answers_200() {
        let response = route(&Method::GET, "/-/healthy", "/metrics", Bytes::new());
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(body(response).await, "Healthy\n");
    }

    /// A real server on a loopback port: a connection that never sends a
    /// request does not keep another client from getting the metrics.
    #[tokio::test]
    async fn a_stuck_client_does_not_block_others() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (_tx, rx) = tokio::sync::watch::channel(Bytes::from_static(b"scaph_build_info 1\n"));
        let config = Arc::new(Reloader::fixed(web::reload::Active::default()));
        let server =
            tokio::spawn(
                async move { serve(listener, "metrics", rx, Limits::default(), config).await },
            );
        let _stuck = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        client
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut reply = String::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            client.read_to_string(&mut reply),
        )
        .await
        .expect("in time")
        .expect("read");
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.contains("scaph_build_info 1"));
        server.abort();
    }
}
