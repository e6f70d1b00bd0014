//! `scaph`: wires the command line to the measurement loop and an exporter.
use std::{
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
    cli::{Cli, Exporter as ExporterChoice, IdlePolicyChoice},
    exporters::{
        driver,
        json::JsonExporter,
        otlp::OtlpSink,
        prometheus::{Publisher, Server},
        prometheus_push::PushSink,
        qemu::QemuExporter,
        riemann::RiemannSink,
        stdout::StdoutExporter,
        warp10::Warp10Sink,
        Sink,
    },
    host::HostReader,
    metrics::MetricsState,
    open,
    sensors::Topology,
};
use tokio::signal::unix::{signal, SignalKind};

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
    let server = match &cli.exporter {
        ExporterChoice::Prometheus(args) => Some(Server::bind(args).await?),
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

    let exporter = export(&cli, server, rx);
    let result = tokio::select! {
        r = exporter => r,
        r = shutdown_signal() => r,
    };
    stop.store(true, Ordering::Relaxed);
    // Woken, the measurement thread notices at once; joining it drops the
    // kernel program, which detaches it.
    measure.thread().unpark();
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

/// Runs the chosen exporter's sink until measurement stops (or its `--timeout`).
async fn export(cli: &Cli, server: Option<Server>, rx: SnapshotRx) -> Result<()> {
    // The metric families, for the exporters built on them (with their `--qemu`).
    let metrics = |qemu: bool| {
        uses_metrics(&cli.exporter).then(|| MetricsState::new(cli.metrics_config(qemu)))
    };
    match &cli.exporter {
        ExporterChoice::Stdout(args) => {
            let sink = StdoutExporter::from_args(args)?;
            drive(rx, metrics(false), sink, seconds(args.timeout)).await
        }
        ExporterChoice::Json(args) => {
            let sink = JsonExporter::from_args(args, cli.cmdline_max_len())?;
            drive(rx, None, sink, args.timeout.and_then(seconds)).await
        }
        ExporterChoice::Prometheus(args) => {
            let Some(server) = server else {
                return Ok(());
            };
            let metrics = MetricsState::new(cli.metrics_config(args.qemu));
            let (publisher, exposition) = Publisher::new(&metrics.before_first_measurement());
            // Serving ends the exporter; when measurement stops, the
            // publisher goes and serving ends with an error saying so.
            let serving = server.serve(exposition);
            tokio::pin!(serving);
            tokio::select! {
                served = &mut serving => return served.context("serving metrics"),
                driven = drive(rx, Some(metrics), publisher, None) => driven?,
            }
            serving.await.context("serving metrics")
        }
        ExporterChoice::PrometheusPush(args) => {
            // Each push must end before the next step.
            let timeout = cli
                .exporter
                .step()
                .clamp(Duration::from_secs(1), Duration::from_secs(10));
            let sink = PushSink::new(args, timeout).context("pushing metrics")?;
            drive(rx, metrics(args.qemu), sink, None).await
        }
        ExporterChoice::Riemann(args) => {
            drive(rx, metrics(args.qemu), RiemannSink::new(args)?, None).await
        }
        ExporterChoice::Warp10(args) => {
            drive(rx, metrics(args.qemu), Warp10Sink::new(args)?, None).await
        }
        ExporterChoice::Otlp(args) => {
            drive(rx, metrics(args.qemu), OtlpSink::new(args)?, None).await
        }
        ExporterChoice::Qemu(args) => drive(rx, None, QemuExporter::from_args(args)?, None).await,
    }
}

async fn drive<S: Sink>(
    rx: SnapshotRx,
    metrics: Option<MetricsState>,
    sink: S,
    timeout: Option<Duration>,
) -> Result<()> {
    Ok(driver::run(rx, metrics, sink, timeout).await?)
}

/// Negative: no limit.
fn seconds(timeout: i64) -> Option<Duration> {
    (timeout >= 0).then(|| Duration::from_secs(timeout.unsigned_abs()))
}
