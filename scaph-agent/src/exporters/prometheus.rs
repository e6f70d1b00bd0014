//! `scaph prometheus`: serves the latest measurement over HTTP.
//!
//! The agent measures on its own timer and [`super::publish`] encodes each
//! result once; a scrape only clones those bytes. Several scrapers therefore
//! see the same numbers, and a slow or stuck one holds nothing but its own
//! connection.
use std::{convert::Infallible, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    body::Incoming,
    header::{ALLOW, CONTENT_TYPE},
    server::conn::http1,
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use log::{debug, warn};
use tokio::net::TcpListener;

use super::Exposition;
use crate::metrics::CONTENT_TYPE as METRICS_CONTENT_TYPE;

/// A client that sends no complete request head within this time is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the measurement loop stopped; nothing more to serve")]
    MeasurementStopped,
}

/// `/metrics` from `metrics`, `/metrics/`, `metrics/`.
#[must_use]
pub fn metrics_path(suffix: &str) -> String {
    format!("/{}", suffix.trim_matches('/'))
}

/// Accepts connections until the exposition's publisher ends.
pub async fn serve(
    listener: TcpListener,
    suffix: &str,
    mut exposition: Exposition,
) -> Result<(), ServeError> {
    let path = metrics_path(suffix);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            closed = exposition.changed() => {
                if closed.is_err() {
                    return Err(ServeError::MeasurementStopped);
                }
                continue;
            }
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait, never give up serving.
                warn!("accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let exposition = exposition.clone();
        let path = path.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let body = exposition.borrow().clone();
                let response = route(req.method(), req.uri().path(), &path, body);
                async move { Ok::<_, Infallible>(response) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                debug!("HTTP connection: {e}");
            }
        });
    }
}

/// The response to one request: the metrics, 405 for other methods on the
/// metrics path, 404 with a hint elsewhere.
#[must_use]
pub fn route(
    method: &Method,
    path: &str,
    metrics_path: &str,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, message: String| {
        let mut response = Response::new(Full::new(Bytes::from(message)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    };
    if path.trim_end_matches('/') != metrics_path {
        return text(
            StatusCode::NOT_FOUND,
            format!("Not found. scaph serves its metrics at {metrics_path}\n"),
        );
    }
    if method != Method::GET && method != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "Use GET.\n".into());
        response
            .headers_mut()
            .insert(ALLOW, hyper::header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let mut response = Response::new(Full::new(body));
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(METRICS_CONTENT_TYPE),
    );
    response
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
        let response = route(&Method::GET, "/", &metrics_path("/custom/"), Bytes::new());
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert!(body(response).await.contains("/custom"));
    }

    #[tokio::test]
    async fn other_methods_get_405() {
        let response = route(&Method::POST, "/metrics", "/metrics", Bytes::new());
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[ALLOW], "GET, HEAD");
    }

    /// A real server on a loopback port: a connection that never sends a
    /// request does not keep another client from getting the metrics.
    #[tokio::test]
    async fn a_stuck_client_does_not_block_others() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (_tx, rx) = tokio::sync::watch::channel(Bytes::from_static(b"scaph_build_info 1\n"));
        let server = tokio::spawn(async move { serve(listener, "metrics", rx).await });
        let _stuck = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        client
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut reply = String::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_string(&mut reply))
            .await
            .expect("in time")
            .expect("read");
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.contains("scaph_build_info 1"));
        server.abort();
    }
}
