//! `scaph riemann`: every snapshot as Riemann events, over TCP or mutual TLS.
//!
//! One event per series, with the metrics of the prometheus exporters
//! ([`crate::metrics`]; `--scaphandre-compat` adds Scaphandre's names). The
//! service is the metric's name, with the subject appended where several
//! series share a name, as Scaphandre did for processes
//! (`scaph_process_power_consumption_microwatts_<pid>_<exe file name>`).
//! Riemann's index keys events by host and service, so sockets, domains and
//! the other labelled series get theirs too (`scaph_socket_energy_joules_total_0`,
//! `scaph_domain_energy_joules_total_0_core`; the series summing unlisted
//! processes is `..._others`). Labels become attributes, energy values also
//! carry `sensor` and `estimated`; every event has a ttl and the tag
//! `scaphandre`.
//!
//! The protocol: each message is a 4-byte big-endian length and a protobuf
//! `Msg` (`proto/riemann.proto`), answered by the server with a `Msg` whose
//! `ok` is true. A server that is down, refuses the events or closes the
//! connection is logged (rate-limited) and retried with backoff at the next
//! snapshots; it never stops the agent (Scaphandre panicked there).
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant, UNIX_EPOCH},
};

use anyhow::Context as _;
use log::{debug, info};
use prost::Message as _;
use rustls_pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer, ServerName};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::TcpStream,
};

use super::{
    http,
    points::{self, Point},
    retry::Retry,
    ExportError, ExporterArgs, Measurement, Sink, SinkContext,
};

/// The Riemann protocol's messages, generated from `proto/riemann.proto`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/riemann.rs"));
}

use proto::{Attribute, Event, Msg};

/// Tag on every event (Scaphandre's, so that existing streams still match).
pub const TAG: &str = "scaphandre";
/// Events per message: keeps each message and its acknowledgement small.
pub const EVENTS_PER_MSG: usize = 1000;
/// Largest reply accepted from the server.
const MAX_REPLY_BYTES: u32 = 16 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for one message to be written and acknowledged.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// `scaph riemann` options (Scaphandre's).
#[derive(Clone, Debug, clap::Args)]
pub struct RiemannArgs {
    /// Riemann server: host name or IP address (with --mtls, the name its certificate is for).
    #[arg(short, long, default_value = "localhost")]
    pub address: String,

    /// Riemann TCP port.
    #[arg(short, long, default_value_t = 5555, value_parser = crate::cli_ranges::port)]
    pub port: u16,

    /// Seconds between measurements, each sent as one batch of events.
    #[arg(
        short,
        long = "dispatch-interval",
        visible_alias = "dispatch",
        default_value_t = 5,
        value_parser = crate::cli_ranges::step
    )]
    pub dispatch_interval: u64,

    /// Add a `vmname` attribute to qemu/KVM VM processes (run on a hypervisor).
    #[arg(short, long)]
    pub qemu: bool,

    /// Connect with mutual TLS (needs --ca, --cert and --key).
    #[arg(long, requires_all = ["ca", "cert", "key"])]
    pub mtls: bool,

    /// CA certificate(s) that sign the server's certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,

    /// Client certificate chain (PEM).
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,

    /// Client private key (PEM: PKCS#8, PKCS#1 RSA or SEC1 EC).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
}

impl ExporterArgs for RiemannArgs {
    type Sink = RiemannSink;

    fn name(&self) -> &'static str {
        "riemann"
    }

    fn step(&self) -> Duration {
        super::step(self.dispatch_interval)
    }

    fn qemu(&self) -> bool {
        self.qemu
    }

    fn sink(&self, _: &SinkContext<'_>) -> anyhow::Result<Self::Sink> {
        RiemannSink::from_args(self)
    }
}

/// Turns measurements into events and sends them.
pub struct RiemannSink {
    client: RiemannClient,
    host: String,
    ttl: f32,
}

impl RiemannSink {
    /// # Errors
    /// When `--mtls` is given and its files cannot be used.
    pub fn from_args(args: &RiemannArgs) -> anyhow::Result<Self> {
        let tls = if args.mtls {
            let file = |f: &Option<PathBuf>, what: &str| {
                f.clone().with_context(|| format!("--mtls needs --{what}"))
            };
            let config = tls_config(
                &file(&args.ca, "ca")?,
                &file(&args.cert, "cert")?,
                &file(&args.key, "key")?,
            )?;
            let name = ServerName::try_from(args.address.clone()).with_context(|| {
                format!(
                    "--address {:?} cannot be checked against a certificate",
                    args.address
                )
            })?;
            Some((config, name))
        } else {
            None
        };
        let client = RiemannClient::new(args.address.clone(), args.port, tls);
        info!(
            "riemann: sending to {} every {} s",
            client.describe(),
            args.dispatch_interval
        );
        Ok(Self {
            client,
            host: points::hostname(),
            ttl: event_ttl(Duration::from_secs(args.dispatch_interval)),
        })
    }
}

impl Sink for RiemannSink {
    /// Failures are logged, not returned: the next measurement is the retry.
    async fn send(&mut self, measurement: &Measurement) -> Result<(), ExportError> {
        let events = events(measurement, &self.host, self.ttl);
        let _ = self.client.send(events, Instant::now()).await;
        Ok(())
    }
}

/// Seconds an event stays valid in Riemann's index: 60 s (Scaphandre's), or
/// three intervals when that is longer, so that values don't expire between
/// two batches.
#[must_use]
pub fn event_ttl(interval: Duration) -> f32 {
    (interval.as_secs_f32() * 3.0).max(60.0)
}

/// The events of one measurement, timed at the end of its cycle.
#[must_use]
pub fn events(measurement: &Measurement, host: &str, ttl: f32) -> Vec<Event> {
    let since_epoch = measurement
        .snapshot
        .timestamp
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let time = i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX);
    let time_micros = i64::try_from(since_epoch.as_micros()).unwrap_or(i64::MAX);
    points::points(measurement)
        .iter()
        .map(|p| Event {
            time: Some(time),
            time_micros: Some(time_micros),
            state: Some("ok".into()),
            service: Some(service(p)),
            host: Some(host.to_owned()),
            description: Some(p.def.help.to_owned()),
            tags: vec![TAG.into()],
            ttl: Some(ttl),
            attributes: p
                .labels
                .iter()
                .map(|(k, v)| Attribute {
                    key: (*k).to_owned(),
                    value: Some(v.clone()),
                })
                .collect(),
            metric_d: Some(p.value),
            ..Event::default()
        })
        .collect()
}

/// Labels that tell apart the series of one metric, in the order their
/// values are appended to the service name (processes aside).
const SERVICE_LABELS: &[&str] = &[
    "socket_id",
    "domain_name",
    "collector",
    "exe",
    "cgroup",
    "disk_mount_point",
    "disk_name",
];

/// The service name of a point (see the module documentation).
#[must_use]
pub fn service(p: &Point) -> String {
    let name = p.def.name;
    if let Some(pid) = p.label("pid") {
        if pid.is_empty() {
            return format!("{name}_others");
        }
        let exe = p
            .label("exe")
            .filter(|e| !e.is_empty())
            .map(|e| e.rsplit('/').next().unwrap_or(e));
        let exe = exe.or_else(|| p.label("comm")).unwrap_or_default();
        return format!("{name}_{pid}_{exe}");
    }
    let mut service = name.to_owned();
    for value in SERVICE_LABELS.iter().filter_map(|key| p.label(key)) {
        service.push('_');
        service.push_str(value);
    }
    service
}

/// Why a batch was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum RiemannError {
    #[error("connecting: {0}")]
    Connect(#[source] std::io::Error),
    #[error("TLS handshake: {0}")]
    Tls(#[source] std::io::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the server closed the connection")]
    Closed,
    #[error("reply of {0} bytes is too large")]
    ReplyTooLarge(u32),
    #[error("undecodable reply: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("the server refused the events: {0}")]
    Refused(String),
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Stream for T {}

/// A connection to one Riemann server, opened on demand and reopened after
/// failures (with backoff).
pub struct RiemannClient {
    address: String,
    port: u16,
    /// `tcp://host:port` or `tls://host:port`, for messages.
    server: String,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    conn: Option<Box<dyn Stream>>,
    retry: Retry,
}

impl RiemannClient {
    /// A client for `address:port`; over TLS when `tls` is given, checking
    /// the server's certificate against the name given with it.
    #[must_use]
    pub fn new(
        address: String,
        port: u16,
        tls: Option<(rustls::ClientConfig, ServerName<'static>)>,
    ) -> Self {
        let tls =
            tls.map(|(config, name)| (tokio_rustls::TlsConnector::from(Arc::new(config)), name));
        let scheme = if tls.is_some() { "tls" } else { "tcp" };
        let server = format!("{scheme}://{}:{port}", http::bracketed(&address));
        Self {
            address,
            port,
            server,
            tls,
            conn: None,
            retry: Retry::backoff(
                module_path!(),
                Duration::from_secs(1),
                Duration::from_secs(60),
            ),
        }
    }

    /// `tcp://host:port` or `tls://host:port`, for messages.
    #[must_use]
    pub fn describe(&self) -> &str {
        &self.server
    }

    /// Sends `events` in messages of [`EVENTS_PER_MSG`], each acknowledged
    /// by the server. While backing off after a failure this does nothing and
    /// returns `Ok(false)`; `Ok(true)` when every message was acknowledged.
    /// An existing connection that fails is replaced at once, once (servers
    /// close idle connections); any other failure is logged and backs off.
    ///
    /// # Errors
    /// The failure, already logged.
    pub async fn send(&mut self, events: Vec<Event>, now: Instant) -> Result<bool, RiemannError> {
        if !self.retry.ready(now) {
            debug!("riemann: backing off, {} events dropped", events.len());
            return Ok(false);
        }
        let mut messages = Vec::with_capacity(events.len().div_ceil(EVENTS_PER_MSG));
        let mut rest = events;
        while !rest.is_empty() {
            let tail = rest.split_off(rest.len().min(EVENTS_PER_MSG));
            messages.push(Msg {
                events: rest,
                ..Msg::default()
            });
            rest = tail;
        }
        let reused = self.conn.is_some();
        let mut result = self.try_send(&messages).await;
        if reused && matches!(result, Err(RiemannError::Io(_) | RiemannError::Closed)) {
            debug!("riemann: the connection failed, reconnecting");
            self.conn = None;
            result = self.try_send(&messages).await;
        }
        match result {
            Ok(()) => {
                let server = &self.server;
                self.retry.succeeded(|n| {
                    format!("riemann: {server} works again after {n} failed attempts")
                });
                Ok(true)
            }
            Err(e) => {
                self.conn = None;
                let server = &self.server;
                self.retry.failed(now, |streak| {
                    format!(
                        "riemann: sending to {server} failed ({} times in a row): {e}{}",
                        streak.failures,
                        streak.next_try()
                    )
                });
                Err(e)
            }
        }
    }

    /// One attempt: connect if needed, then send each message and wait for
    /// its acknowledgement.
    async fn try_send(&mut self, messages: &[Msg]) -> Result<(), RiemannError> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => self.conn.insert(self.connect().await?),
        };
        for msg in messages {
            tokio::time::timeout(ACK_TIMEOUT, round_trip(conn, msg))
                .await
                .map_err(|_| RiemannError::Timeout(ACK_TIMEOUT))??;
        }
        Ok(())
    }

    async fn connect(&self) -> Result<Box<dyn Stream>, RiemannError> {
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((self.address.as_str(), self.port)),
        )
        .await
        .map_err(|_| RiemannError::Timeout(CONNECT_TIMEOUT))?
        .map_err(RiemannError::Connect)?;
        let _ = tcp.set_nodelay(true);
        debug!("riemann: connected to {}", self.describe());
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some((connector, name)) => {
                let tls =
                    tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), tcp))
                        .await
                        .map_err(|_| RiemannError::Timeout(CONNECT_TIMEOUT))?
                        .map_err(RiemannError::Tls)?;
                Ok(Box::new(tls))
            }
        }
    }
}

/// Writes one length-prefixed message and reads the server's answer.
async fn round_trip<S: AsyncRead + AsyncWrite + Unpin + ?Sized>(
    stream: &mut S,
    msg: &Msg,
) -> Result<(), RiemannError> {
    stream.write_all(&frame(msg)).await?;
    stream.flush().await?;
    let reply = read_frame(stream).await?;
    match reply.ok {
        Some(true) => Ok(()),
        _ => Err(RiemannError::Refused(
            reply.error.unwrap_or_else(|| "no reason given".into()),
        )),
    }
}

/// A message as it goes on the wire: its length (4 bytes, big-endian), then it.
#[must_use]
pub fn frame(msg: &Msg) -> Vec<u8> {
    let len = msg.encoded_len();
    let mut buf = Vec::with_capacity(4 + len);
    buf.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    msg.encode(&mut buf).expect("a Vec grows as needed");
    buf
}

/// Reads one length-prefixed message.
async fn read_frame<S: AsyncRead + Unpin + ?Sized>(stream: &mut S) -> Result<Msg, RiemannError> {
    let mut len = [0u8; 4];
    stream
        .read_exact(&mut len)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => RiemannError::Closed,
            _ => RiemannError::Io(e),
        })?;
    let len = u32::from_be_bytes(len);
    if len > MAX_REPLY_BYTES {
        return Err(RiemannError::ReplyTooLarge(len));
    }
    let mut body = vec![0u8; len as usize];
    stream.read_exact(&mut body).await?;
    Ok(Msg::decode(body.as_slice())?)
}

/// The client TLS configuration of `--mtls`: the server must present a
/// certificate signed by `ca`; we present `cert` with `key`.
///
/// # Errors
/// A file that cannot be read or holds nothing usable.
pub fn tls_config(ca: &Path, cert: &Path, key: &Path) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("reading --ca {}", ca.display()))?
    {
        roots.add(c.with_context(|| format!("parsing --ca {}", ca.display()))?)?;
    }
    anyhow::ensure!(
        !roots.is_empty(),
        "--ca {}: no certificate in it",
        ca.display()
    );
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading --cert {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing --cert {}", cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "--cert {}: no certificate in it",
        cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading --key {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .context("client certificate and key do not match")
}

#[cfg(test)]
mod tests {
    use tokio::{io::duplex, net::TcpListener};

    use super::*;
    use crate::{
        exporters::points::tests::sample_measurement, metrics::MetricsConfig, sensors::EnergyOrigin,
    };

    fn attr<'a>(e: &'a Event, key: &str) -> Option<&'a str> {
        e.attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.as_deref())
    }

    fn by_service<'a>(events: &'a [Event], service: &str) -> &'a Event {
        events
            .iter()
            .find(|e| e.service.as_deref() == Some(service))
            .unwrap_or_else(|| panic!("no {service}"))
    }

    #[test]
    fn events_of_a_measurement() {
        let config = MetricsConfig {
            qemu: true,
            ..MetricsConfig::default()
        };
        let m = sample_measurement(EnergyOrigin::Estimated, config);
        let events = events(&m, "hv1", 60.0);
        let host = by_service(&events, "scaph_host_energy_joules_total");
        assert_eq!(host.metric_d, Some(400.0));
        assert_eq!(host.host.as_deref(), Some("hv1"));
        assert_eq!(host.time, Some(1_700_000_000));
        assert_eq!(host.time_micros, Some(1_700_000_000_123_456));
        assert_eq!(host.tags, [TAG]);
        assert_eq!(host.ttl, Some(60.0));
        assert_eq!(host.state.as_deref(), Some("ok"));
        assert_eq!(attr(host, "estimated"), Some("true"));
        assert!(host
            .description
            .as_deref()
            .is_some_and(|d| d.contains("host")));
        assert_eq!(
            by_service(&events, "scaph_socket_energy_joules_total_0").metric_d,
            Some(400.0)
        );
        assert_eq!(
            by_service(&events, "scaph_domain_energy_joules_total_0_core").metric_d,
            Some(300.0)
        );
        let vm = by_service(
            &events,
            "scaph_process_energy_joules_total_4242_qemu-system-x86_64",
        );
        assert_eq!(vm.metric_d, Some(200.0));
        assert_eq!(attr(vm, "pid"), Some("4242"));
        assert_eq!(attr(vm, "exe"), Some("/usr/bin/qemu-system-x86_64"));
        assert_eq!(attr(vm, "vmname"), Some("vm1"));
        let weird = by_service(&events, "scaph_process_energy_joules_total_17_wëird{1}");
        assert_eq!(attr(weird, "exe"), Some("/opt/my app/wëird{1}"));
        by_service(&events, "scaph_process_cpu_seconds_total_17_wëird{1}");
        by_service(&events, "scaph_process_energy_joules_total_others");
        by_service(&events, "scaph_scrape_collector_success_energy");
        let mut services: Vec<_> = events.iter().map(|e| e.service.clone().unwrap()).collect();
        services.sort();
        let before = services.len();
        services.dedup();
        assert_eq!(
            services.len(),
            before,
            "one event per service: {services:?}"
        );
    }

    #[test]
    fn scaphandre_service_names_with_compat() {
        let config = MetricsConfig {
            compat: true,
            cmdline_max_len: 128,
            ..MetricsConfig::default()
        };
        let m = sample_measurement(EnergyOrigin::Measured, config);
        let events = events(&m, "hv1", 60.0);
        let vm = by_service(
            &events,
            "scaph_process_power_consumption_microwatts_4242_qemu-system-x86_64",
        );
        assert_eq!(vm.metric_d, Some(20e6));
        assert!(
            attr(vm, "cmdline").is_some_and(|c| c.starts_with("/usr/bin/qemu-system-x86_64 -name"))
        );
        assert_eq!(
            by_service(&events, "scaph_host_power_microwatts").metric_d,
            Some(40e6)
        );
        by_service(&events, "scaph_domain_power_microwatts_0_core");
    }

    #[test]
    fn ttl_outlives_the_interval() {
        assert_eq!(event_ttl(Duration::from_secs(5)), 60.0);
        assert_eq!(event_ttl(Duration::from_secs(60)), 180.0);
    }

    #[test]
    fn frame_roundtrip() {
        let m = sample_measurement(EnergyOrigin::Measured, MetricsConfig::default());
        let msg = Msg {
            events: events(&m, "h", 60.0),
            ..Msg::default()
        };
        let bytes = frame(&msg);
        assert_eq!(
            u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize,
            bytes.len() - 4
        );
        assert_eq!(Msg::decode(&bytes[4..]).unwrap(), msg);
        // Field numbers of the protocol, checked on the encoding itself:
        // Msg.ok = 2 (varint), Event.service = 3, Attribute.key = 1.
        let ok = Msg {
            ok: Some(true),
            ..Msg::default()
        }
        .encode_to_vec();
        assert_eq!(ok, [0x10, 0x01]);
        let ev = Event {
            service: Some("s".into()),
            metric_d: Some(1.0),
            ..Event::default()
        }
        .encode_to_vec();
        assert_eq!(ev, [0x1a, 0x01, b's', 0x71, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f]);
    }

    /// A server on a duplex pipe: acknowledges `ok` messages, then refuses.
    #[tokio::test]
    async fn round_trip_waits_for_the_ack() {
        let (mut client, mut server) = duplex(1 << 20);
        let srv = tokio::spawn(async move {
            let msg = read_frame(&mut server).await.unwrap();
            assert_eq!(msg.events.len(), 1);
            server
                .write_all(&frame(&Msg {
                    ok: Some(true),
                    ..Msg::default()
                }))
                .await
                .unwrap();
            let _ = read_frame(&mut server).await.unwrap();
            let refusal = Msg {
                ok: Some(false),
                error: Some("no thanks".into()),
                ..Msg::default()
            };
            server.write_all(&frame(&refusal)).await.unwrap();
            // then hang up
        });
        let msg = Msg {
            events: vec![Event::default()],
            ..Msg::default()
        };
        round_trip(&mut client, &msg).await.unwrap();
        let err = round_trip(&mut client, &msg).await.unwrap_err();
        assert!(
            matches!(&err, RiemannError::Refused(why) if why == "no thanks"),
            "{err}"
        );
        srv.await.unwrap();
        let err = round_trip(&mut client, &msg).await.unwrap_err();
        assert!(
            matches!(err, RiemannError::Closed | RiemannError::Io(_)),
            "{err}"
        );
    }

    /// Server down, then up: failures back off, then the client reconnects;
    /// a server that drops the connection is reconnected at once.
    #[tokio::test]
    async fn reconnects_after_failures() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener); // nothing listens: connection refused
        let mut client = RiemannClient::new("127.0.0.1".into(), port, None);
        let t0 = Instant::now();
        let err = client.send(vec![Event::default()], t0).await.unwrap_err();
        assert!(matches!(err, RiemannError::Connect(_)), "{err}");
        assert!(
            !client.send(vec![Event::default()], t0).await.unwrap(),
            "backing off"
        );

        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let server = tokio::spawn(async move {
            // First connection: one ack, then hang up.
            let (mut s, _) = listener.accept().await.unwrap();
            read_frame(&mut s).await.unwrap();
            s.write_all(&frame(&Msg {
                ok: Some(true),
                ..Msg::default()
            }))
            .await
            .unwrap();
            drop(s);
            // Second connection: ack everything.
            let (mut s, _) = listener.accept().await.unwrap();
            let mut n = 0;
            while let Ok(msg) = read_frame(&mut s).await {
                n += msg.events.len();
                s.write_all(&frame(&Msg {
                    ok: Some(true),
                    ..Msg::default()
                }))
                .await
                .unwrap();
            }
            n
        });
        let later = t0 + Duration::from_secs(2);
        assert!(client.send(vec![Event::default()], later).await.unwrap());
        // The server hung up: the next send reconnects without an error.
        let many = vec![Event::default(); EVENTS_PER_MSG + 1];
        assert!(client.send(many, later).await.unwrap());
        drop(client);
        assert_eq!(server.await.unwrap(), EVENTS_PER_MSG + 1);
    }

    #[test]
    fn tls_config_reports_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let err = tls_config(&missing, &missing, &missing).unwrap_err();
        assert!(format!("{err:#}").contains("--ca"), "{err:#}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let err = tls_config(&empty, &empty, &empty).unwrap_err();
        assert!(format!("{err:#}").contains("no certificate"), "{err:#}");
    }

    #[test]
    fn an_ipv6_server_is_shown_in_brackets() {
        let client = RiemannClient::new("::1".into(), 5555, None);
        assert_eq!(client.describe(), "tcp://[::1]:5555");
        let client = RiemannClient::new("riemann.local".into(), 5555, None);
        assert_eq!(client.describe(), "tcp://riemann.local:5555");
    }
}
