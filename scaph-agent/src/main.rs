//! `scaph`: wires the command line to the measurement loop and an exporter.
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::{Context as _, Result};
use clap::Parser as _;
use scaph_agent::{
    agent::{self, Agent, SnapshotRx},
    attribution::IdlePolicy,
    cli::{Cli, Exporter as ExporterChoice, IdlePolicyChoice, StdoutArgs},
    open,
    sensors::Topology,
    exporters::{
        stdout::{Selection, StdoutExporter},
        Exporter,
    },
};
use tokio::signal::unix::{signal, SignalKind};

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting tokio")?;
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
        eprintln!("scaph {} — {} exporter", env!("CARGO_PKG_VERSION"), exporter_name(&cli.exporter));
    }
    let cpu = open::cputime(&cli)?;
    let topology = Topology::from_sys_root(&cli.sys_root);
    let sensor = open::sensor(&cli, &topology)?;
    let policy = match cli.idle_policy {
        IdlePolicyChoice::Unattributed => IdlePolicy::Unattributed,
        IdlePolicyChoice::Proportional => IdlePolicy::Proportional,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let ExporterChoice::Stdout(args) = &cli.exporter;
    let step = Duration::from_secs(args.step.max(1));
    let agent = Agent::new(cpu, sensor, topology, policy);
    let (rx, measure) = agent::spawn(agent, step, stop.clone()).context("starting the measurement thread")?;

    let result = tokio::select! {
        r = run_stdout(args, rx) => r,
        r = shutdown_signal() => r,
    };
    stop.store(true, Ordering::Relaxed);
    // The measurement thread notices within 100 ms; joining it drops the
    // kernel program, which detaches it.
    let _ = tokio::task::spawn_blocking(move || measure.join()).await;
    result
}

fn exporter_name(exporter: &ExporterChoice) -> &'static str {
    match exporter {
        ExporterChoice::Stdout(_) => "stdout",
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

async fn run_stdout(args: &StdoutArgs, mut rx: SnapshotRx) -> Result<()> {
    let selection = match &args.regex_filter {
        Some(re) => Selection::Matching(regex::Regex::new(re).with_context(|| format!("invalid --regex-filter {re:?}"))?),
        None => Selection::Top(args.processes),
    };
    let mut exporter = StdoutExporter::to_stdout(selection);
    let deadline = (args.timeout >= 0).then(|| tokio::time::Instant::now() + Duration::from_secs(args.timeout.unsigned_abs()));
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
