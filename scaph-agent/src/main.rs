//! `scaph`: wires the command line to the measurement loop and an exporter.
use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use anyhow::{Context as _, Result};
use scaph_agent::{
    agent::{self, Agent, SnapshotRx},
    attribution::IdlePolicy,
    cli::{Cli, IdlePolicyChoice},
    exporters::{driver, prometheus::Server, ExporterArgs, Sink as _, SinkContext, WithArgs},
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
    cli.exporter.with_args(Run { cli: &cli }).await
}

/// The rest of `run`, with the chosen exporter's options.
struct Run<'a> {
    cli: &'a Cli,
}

impl<'a> WithArgs<'a> for Run<'a> {
    type Output = Pin<Box<dyn Future<Output = Result<()>> + 'a>>;

    fn call<A: ExporterArgs>(self, args: &'a A) -> Self::Output {
        Box::pin(run_with(self.cli, args))
    }
}

async fn run_with<A: ExporterArgs>(cli: &Cli, args: &A) -> Result<()> {
    // Bind and read the web configuration before loading anything: a busy
    // port or a broken file is reported at once.
    let server = args.listen().await?;
    let cpu = open::cputime(cli)?;
    let topology = Topology::from_sys_root(&cli.sys_root);
    let sensor = open::sensor(cli, &topology)?;
    let policy = match cli.idle_policy {
        IdlePolicyChoice::Unattributed => IdlePolicy::Unattributed,
        IdlePolicyChoice::Proportional => IdlePolicy::Proportional,
    };
    let mut agent = Agent::new(cpu, sensor, topology, policy).with_retention(cli.retention);
    agent = agent.with_carbon(cli.carbon_source());
    // Exporters built on the metrics module show scaph's own footprint, and
    // Scaphandre's host statistics with --scaphandre-compat.
    if args.uses_metrics() {
        let mut reader = HostReader::new(cli.proc_root.clone(), cli.sys_root.clone());
        reader.host = cli.scaphandre_compat;
        reader.process_memory = cli.scaphandre_compat;
        agent = agent
            .with_host_stats(reader)
            .with_containers(cli.containers_config().as_ref());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (rx, measure) = agent::spawn(agent, args.step(), stop.clone())
        .context("starting the measurement thread")?;

    let exporter = export(cli, args, server, rx);
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

async fn shutdown_signal() -> Result<()> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// Runs the exporter's sink until measurement stops (or its `--timeout`);
/// the pull exporter serves what its sink publishes meanwhile.
async fn export<A: ExporterArgs>(
    cli: &Cli,
    args: &A,
    server: Option<Server>,
    rx: SnapshotRx,
) -> Result<()> {
    let metrics = args
        .uses_metrics()
        .then(|| MetricsState::new(cli.metrics_config(args.qemu())));
    let context = SinkContext {
        cmdline_max_len: cli.cmdline_max_len(),
        metrics: metrics.as_ref(),
    };
    let sink = args.sink(&context)?;
    let Some((server, exposition)) = server.zip(sink.exposition()) else {
        return Ok(driver::run(rx, metrics, sink, args.timeout()).await?);
    };
    // Serving ends the exporter; when measurement stops, the publisher goes
    // and serving ends with an error saying so.
    let serving = server.serve(exposition);
    tokio::pin!(serving);
    tokio::select! {
        served = &mut serving => return served.context("serving metrics"),
        driven = driver::run(rx, metrics, sink, args.timeout()) => driven?,
    }
    serving.await.context("serving metrics")
}
