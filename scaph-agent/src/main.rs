//! `scaph`: wires the command line to the measurement loop and an exporter.
use std::{
    io::Write,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::{Context as _, Result};
use scaph_agent::{
    agent::{self, Agent, SnapshotRx},
    attribution::IdlePolicy,
    cli::{
        Cli, Exporter as ExporterChoice, IdlePolicyChoice, JsonArgs, PrometheusArgs, PushArgs,
        StdoutArgs,
    },
    exporters::{
        self,
        json::{Consumers, JsonExporter},
        prometheus, prometheus_push,
        stdout::{Selection, StdoutExporter},
        web::{
            self,
            reload::{Active, Reloader},
        },
        Exporter,
    },
    host::HostReader,
    metrics::MetricsState,
    open,
    sensors::Topology,
};
use tokio::{
    net::TcpListener,
    signal::unix::{signal, SignalKind},
};

fn main() -> Result<()> {
    // One malloc arena for all threads: the agent has few threads and little
    // contention, and per-thread arenas kept the memory freed after bursts of
    // short-lived processes fragmented beyond what malloc_trim can return
    // (BENCHMARKS.md: RSS after process churn).
    // SAFETY: mallopt only changes allocator tuning, before any thread exists.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    // Buffers of 256 KiB and more (a scrape's text and series, a cycle's
    // tables at thousands of processes) live for one cycle or one scrape:
    // mapped on their own, they go back to the system when freed, instead
    // of raising the heap to the largest cycle's peak. (A fixed threshold
    // also stops glibc from raising it after the first such free.)
    // SAFETY: as above.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10) };
    let cli = Cli::parse_checked();
    init_logging(cli.verbose);
    // Two workers: an exporter's encoding or I/O never waits behind another
    // connection. Measurement has its own thread (agent::spawn).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting tokio")?;
    runtime.block_on(run(cli))
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
}

async fn run(cli: Cli) -> Result<()> {
    if !cli.no_header {
        eprintln!(
            "scaph {} — {} exporter",
            env!("CARGO_PKG_VERSION"),
            cli.exporter.name()
        );
    }
    // Bind and read the web configuration before loading anything: a busy
    // port or a broken file is reported at once.
    let listener = match &cli.exporter {
        ExporterChoice::Prometheus(args) => Some(web_server(args).await?),
        _ => None,
    };
    let cpu = open::cputime(&cli)?;
    let topology = Topology::from_sys_root(&cli.sys_root);
    let sensor = open::sensor(&cli, &topology)?;
    let policy = match cli.idle_policy {
        IdlePolicyChoice::Unattributed => IdlePolicy::Unattributed,
        IdlePolicyChoice::Proportional => IdlePolicy::Proportional,
    };
    let mut agent = Agent::new(cpu, sensor, topology, policy).with_retention(cli.retention);
    agent = agent.with_carbon(cli.carbon_source());
    if uses_metrics(&cli.exporter) {
        let mut reader = HostReader::new(cli.proc_root.clone(), cli.sys_root.clone());
        reader.host = cli.scaphandre_compat;
        reader.process_memory = cli.scaphandre_compat;
        agent = agent
            .with_host_stats(reader)
            .with_containers(cli.metrics_config(false).containers.as_ref());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (rx, measure) = agent::spawn(agent, cli.exporter.step(), stop.clone())
        .context("starting the measurement thread")?;

    let exporter = async {
        match &cli.exporter {
            ExporterChoice::Stdout(args) => run_stdout(&cli, args, rx).await,
            ExporterChoice::Json(args) => run_json(args, cli.cmdline_max_len(), rx).await,
            ExporterChoice::Prometheus(args) => match listener {
                Some((listener, config)) => run_prometheus(&cli, args, listener, config, rx).await,
                None => Ok(()),
            },
            ExporterChoice::PrometheusPush(args) => run_push(&cli, args, rx).await,
            ExporterChoice::Riemann(args) => {
                exporters::riemann::run(args, MetricsState::new(cli.metrics_config(args.qemu)), rx)
                    .await
            }
            ExporterChoice::Warp10(args) => {
                exporters::warp10::run(args, MetricsState::new(cli.metrics_config(args.qemu)), rx)
                    .await
            }
            ExporterChoice::Qemu(args) => exporters::qemu::run(args, rx).await,
            ExporterChoice::Otlp(args) => {
                exporters::otlp::run(args, MetricsState::new(cli.metrics_config(args.qemu)), rx)
                    .await
            }
        }
    };
    let result = tokio::select! {
        r = exporter => r,
        r = shutdown_signal() => r,
    };
    stop.store(true, Ordering::Relaxed);
    // The measurement thread notices within 100 ms; joining it drops the
    // kernel program, which detaches it.
    let _ = tokio::task::spawn_blocking(move || measure.join()).await;
    result
}

/// Exporters built on the metrics module (they show scaph's own footprint,
/// and Scaphandre's host statistics with --scaphandre-compat).
fn uses_metrics(exporter: &ExporterChoice) -> bool {
    match exporter {
        ExporterChoice::Stdout(args) => args.raw_metrics,
        ExporterChoice::Json(_) => false,
        ExporterChoice::Prometheus(_)
        | ExporterChoice::PrometheusPush(_)
        | ExporterChoice::Riemann(_)
        | ExporterChoice::Warp10(_)
        | ExporterChoice::Otlp(_) => true,
        ExporterChoice::Qemu(_) => false,
    }
}

async fn shutdown_signal() -> Result<()> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// Hands each new snapshot to a push-style exporter until `timeout` (if any).
async fn feed(
    exporter: &mut dyn Exporter,
    mut rx: SnapshotRx,
    timeout: Option<Duration>,
) -> Result<()> {
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    loop {
        let changed = match deadline {
            Some(at) => match tokio::time::timeout_at(at, rx.changed()).await {
                Ok(r) => r,
                Err(_) => return Ok(()),
            },
            None => rx.changed().await,
        };
        if changed.is_err() {
            return Ok(()); // measurement stopped
        }
        let snapshot = rx.borrow_and_update().clone();
        if let Some(snapshot) = snapshot {
            exporter.export(&snapshot)?;
        }
    }
}

/// Negative: no limit.
fn seconds(timeout: i64) -> Option<Duration> {
    (timeout >= 0).then(|| Duration::from_secs(timeout.unsigned_abs()))
}

async fn run_stdout(cli: &Cli, args: &StdoutArgs, rx: SnapshotRx) -> Result<()> {
    let selection = match &args.regex_filter {
        Some(re) => Selection::Matching(
            regex::Regex::new(re).with_context(|| format!("invalid --regex-filter {re:?}"))?,
        ),
        None => Selection::Top(args.processes),
    };
    let mut exporter = StdoutExporter::to_stdout(selection);
    if args.raw_metrics {
        exporter = exporter.with_raw_metrics(MetricsState::new(cli.metrics_config(false)));
    }
    feed(&mut exporter, rx, seconds(args.timeout)).await
}

async fn run_json(args: &JsonArgs, cmdline_max_len: usize, rx: SnapshotRx) -> Result<()> {
    let regex = match &args.process_regex {
        Some(re) => {
            Some(regex::Regex::new(re).with_context(|| format!("invalid --process-regex {re:?}"))?)
        }
        None => None,
    };
    let consumers = Consumers {
        max: args.max_top_consumers,
        regex,
        cmdline_max_len,
    };
    let out: Box<dyn Write + Send> = match &args.file {
        Some(path) => Box::new(
            exporters::json_file::FileOutput::create(path).context("opening the --file output")?,
        ),
        None => Box::new(std::io::stdout()),
    };
    let mut exporter = JsonExporter::new(out, consumers);
    feed(&mut exporter, rx, args.timeout.and_then(seconds)).await
}

/// The listening socket and the web configuration of `scaph prometheus`.
async fn web_server(args: &PrometheusArgs) -> Result<(TcpListener, Arc<Reloader>)> {
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
    Ok((listener, Arc::new(config)))
}

async fn run_prometheus(
    cli: &Cli,
    args: &PrometheusArgs,
    listener: TcpListener,
    config: Arc<Reloader>,
    rx: SnapshotRx,
) -> Result<()> {
    let (exposition, _publisher) =
        scaph_agent::exporters::publish(rx, MetricsState::new(cli.metrics_config(args.qemu)));
    if let Ok(addr) = listener.local_addr() {
        let scheme = if config.current().tls.is_some() {
            "https"
        } else {
            "http"
        };
        log::info!(
            "serving metrics at {scheme}://{addr}{}",
            prometheus::metrics_path(&args.suffix)
        );
    }
    let limits = web::Limits {
        max_connections: args.web_max_connections as usize,
        max_connections_per_client: args.web_max_connections_per_client as usize,
        ..web::Limits::default()
    };
    prometheus::serve(listener, &args.suffix, exposition, limits, config)
        .await
        .context("serving metrics")
}

async fn run_push(cli: &Cli, args: &PushArgs, rx: SnapshotRx) -> Result<()> {
    let (exposition, _publisher) =
        scaph_agent::exporters::publish(rx, MetricsState::new(cli.metrics_config(args.qemu)));
    let target = prometheus_push::PushTarget {
        scheme: args.scheme.clone(),
        host: args.host.clone(),
        port: args.port,
        suffix: args.suffix.clone(),
        job: args.job.clone(),
        instance: exporters::push::hostname(),
        no_tls_check: args.no_tls_check,
        ca_file: args.ca_file.clone(),
        auth: prometheus_push::BasicAuth::resolve(
            args.username.as_deref(),
            args.password_file.as_deref(),
        )?,
        timeout: cli
            .exporter
            .step()
            .clamp(Duration::from_secs(1), Duration::from_secs(10)),
    };
    prometheus_push::run(exposition, target)
        .await
        .context("pushing metrics")
}
