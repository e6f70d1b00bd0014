//! The HTTP(S) server of `scaph prometheus`, built to outlast any network
//! peer: a cap on connections (in total and per client address), small
//! request heads, deadlines on every read and write, TLS and basic
//! authentication from an exporter-toolkit web configuration file.
//!
//! Each connection costs a bounded amount: hyper's buffer of at most
//! [`Limits::max_header_bytes`], TLS buffers, and a share of the response
//! bytes, which all scrapes share.
pub mod auth;
pub mod config;
pub mod reload;
pub mod slots;
pub mod tls;
mod watchdog;

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    body::Incoming,
    header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE},
    server::conn::http1,
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use log::{debug, warn};
use tokio::net::{TcpListener, TcpStream};

use self::{
    auth::Verdict,
    reload::{Active, Reloader},
    slots::{Slot, Slots},
    watchdog::Watchdog,
};
use super::retry::Throttle;

pub type Reply = Response<Full<Bytes>>;

/// What one peer may cost the server.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections open at once; more are closed as soon as accepted.
    pub max_connections: usize,
    /// Connections open at once from one client address (IPv6: one /64).
    pub max_connections_per_client: usize,
    /// Largest request head; a larger one gets 431. hyper's minimum is 8 KiB.
    pub max_header_bytes: usize,
    /// A request head must arrive within this time (also bounds how long a
    /// keep-alive connection waits for its next request).
    pub header_read_timeout: Duration,
    /// A TLS handshake must end within this time.
    pub handshake_timeout: Duration,
    /// A write that makes no progress for this long ends the connection.
    pub write_stall: Duration,
    /// No byte either way for this long ends the connection.
    pub idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 200,
            max_connections_per_client: 32,
            max_header_bytes: 8192,
            header_read_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            write_stall: Duration::from_secs(10),
            idle: Duration::from_secs(60),
        }
    }
}

/// Raises the soft limit on open files to the hard limit (at most 2^20):
/// connections over the cap are accepted before they are closed, so they
/// need descriptors too. Returns the soft limit now in force.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills a plain struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let wanted = limit.rlim_max.min(1 << 20);
    if limit.rlim_cur >= wanted {
        return Ok(limit.rlim_cur);
    }
    let raised = libc::rlimit {
        rlim_cur: wanted,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit reads a plain struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(wanted)
}

/// Serves `route` on `listener` until the future is dropped. Accept errors
/// (out of descriptors...) back off, and never end the server.
pub async fn serve<R>(listener: TcpListener, limits: Limits, config: Arc<Reloader>, route: R)
where
    R: Fn(&Method, &str) -> Reply + Clone + Send + Sync + 'static,
{
    let slots = Slots::new(limits.max_connections, limits.max_connections_per_client);
    let limits = Arc::new(limits);
    let mut backoff = Duration::ZERO;
    let mut refused = Refused::default();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                backoff = (backoff * 2).clamp(Duration::from_millis(5), Duration::from_secs(1));
                warn!("accepting a connection: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        backoff = Duration::ZERO;
        let Some(slot) = slots.take(peer.ip()) else {
            refused.one(peer, slots.in_use());
            drop(stream);
            continue;
        };
        let (config, limits, route) = (config.clone(), limits.clone(), route.clone());
        tokio::spawn(connection(stream, peer, slot, config, limits, route));
    }
}

/// Reports connections refused over the caps, at most once a minute
/// ([`Throttle`]).
#[derive(Default)]
struct Refused(Throttle);

impl Refused {
    fn one(&mut self, peer: SocketAddr, open: usize) {
        debug!("connection from {peer} closed: over the connection caps");
        if let Some(count) = self.0.due(std::time::Instant::now()) {
            warn!("{count} connection(s) closed at once: over the connection caps ({open} open)");
        }
    }
}

async fn connection<R>(
    stream: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    config: Arc<Reloader>,
    limits: Arc<Limits>,
    route: R,
) where
    R: Fn(&Method, &str) -> Reply + Clone + Send + Sync + 'static,
{
    let _ = stream.set_nodelay(true);
    let active = config.current();
    let io = Watchdog::new(stream, limits.write_stall, limits.idle);
    match &active.tls {
        None => http(TokioIo::new(io), peer, config, &limits, route).await,
        Some(acceptor) => {
            match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(io)).await {
                Ok(Ok(tls)) => http(TokioIo::new(tls), peer, config, &limits, route).await,
                Ok(Err(e)) => debug!("TLS handshake with {peer}: {e}"),
                Err(_) => debug!("TLS handshake with {peer}: timed out"),
            }
        }
    }
    drop(slot);
}

async fn http<I, R>(io: I, peer: SocketAddr, config: Arc<Reloader>, limits: &Limits, route: R)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    R: Fn(&Method, &str) -> Reply + Clone + Send + Sync + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        let (config, route) = (config.clone(), route.clone());
        async move { Ok::<_, Infallible>(respond(&request, &config.current(), &route).await) }
    });
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .serve_connection(io, service)
        .await;
    if let Err(e) = served {
        debug!("HTTP connection from {peer}: {e}");
    }
}

/// Authentication, then the route, then the configured headers.
async fn respond<R>(request: &Request<Incoming>, active: &Active, route: &R) -> Reply
where
    R: Fn(&Method, &str) -> Reply,
{
    let verdict = match &active.auth {
        Some(auth) => auth.check(request.headers().get(AUTHORIZATION)).await,
        None => Verdict::Allowed,
    };
    let mut reply = match verdict {
        Verdict::Allowed => route(request.method(), request.uri().path()),
        Verdict::Denied => unauthorized(),
        Verdict::Busy => busy(),
    };
    for (name, value) in &active.headers {
        reply.headers_mut().insert(name.clone(), value.clone());
    }
    reply
}

/// Credentials not checked: too many password checks already queued. Not
/// 401, which would tell a scraper its password is wrong.
fn busy() -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from_static(
        b"Too many password checks at once; retry\n",
    )));
    *reply.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    reply
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    reply.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    reply
}

fn unauthorized() -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from_static(b"Unauthorized\n")));
    *reply.status_mut() = StatusCode::UNAUTHORIZED;
    reply.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"scaph\""),
    );
    reply.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    reply
}

#[cfg(test)]
mod tests;
