//! The measurement cycle: CPU time and energy are read on the agent's own
//! timer, joined, and published as one `Snapshot`. Exporters only read it.
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant, SystemTime},
};

use log::{info, warn};
use tokio::sync::watch;

use crate::{
    cli::Cli,
    cputime::{bpf::BpfSource, loader::LoadOptions, procfs::ProcfsSource, CpuSample, CpuTimeSource},
    processes::ProcessTable,
    snapshot::Snapshot,
};

/// How long exited processes stay visible with their final values.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(600);

pub type SnapshotRx = watch::Receiver<Option<Arc<Snapshot>>>;

pub struct Agent {
    cpu: Box<dyn CpuTimeSource>,
    processes: ProcessTable,
    started: Instant,
    retention: Duration,
}

/// Picks the CPU-time source: the kernel program unless told otherwise or
/// unable to load, in which case it says why, once, and uses procfs.
pub fn open_cputime(cli: &Cli) -> anyhow::Result<Box<dyn CpuTimeSource>> {
    if !cli.fallback_procfs {
        let options = LoadOptions { simulate_failure: cli.simulate_bpf_failure, force_timestamp: cli.bpf_timestamp };
        match BpfSource::new(cli.proc_root.clone(), options) {
            Ok(source) => {
                info!("CPU time source: {}", source.method());
                return Ok(Box::new(source));
            }
            Err(e) => warn!(
                "kernel program not loaded: {e}; falling back to procfs mode \
                 (CPU time from /proc/PID/stat, 10 ms resolution, processes shorter than --step are missed)"
            ),
        }
    }
    let source = ProcfsSource::new(cli.proc_root.clone())?;
    info!("CPU time source: {}", source.method());
    Ok(Box::new(source))
}

impl Agent {
    pub fn new(cpu: Box<dyn CpuTimeSource>) -> Self {
        Self { cpu, processes: ProcessTable::default(), started: Instant::now(), retention: DEFAULT_RETENTION }
    }

    /// Takes the baseline readings; the first real cycle follows one step later.
    pub fn baseline(&mut self) {
        if let Err(e) = self.cpu.sample() {
            warn!("CPU time baseline: {e}");
        }
    }

    /// One measurement cycle.
    pub fn cycle(&mut self) -> Snapshot {
        let sample = self.cpu.sample().unwrap_or_else(|e| {
            warn!("reading CPU time: {e}");
            CpuSample::default()
        });
        let uptime = self.started.elapsed();
        self.processes.update_cpu(&sample, uptime);
        self.processes.expire(uptime, self.retention);
        let secs = sample.interval.as_secs_f64();
        Snapshot {
            timestamp: SystemTime::now(),
            interval: sample.interval,
            cpu_method: self.cpu.method(),
            sensor: None,
            host: None,
            idle: None,
            sockets: Vec::new(),
            processes: self.processes.rows(sample.interval),
            cpu_idle_ratio: sample
                .idle_ns
                .iter()
                .map(|&ns| if secs > 0.0 { (ns as f64 / 1e9 / secs).min(1.0) } else { 0.0 })
                .collect(),
            losses: sample.losses,
            implausible_energy_dropped: 0,
        }
    }
}

/// Runs the cycle every `step` on a dedicated thread until `stop` is set.
pub fn spawn(
    mut agent: Agent,
    step: Duration,
    stop: Arc<AtomicBool>,
) -> std::io::Result<(SnapshotRx, thread::JoinHandle<()>)> {
    let (tx, rx) = watch::channel(None);
    let handle = thread::Builder::new()
        .name("scaph-measure".into())
        .spawn(move || {
            agent.baseline();
            let mut next = Instant::now() + step;
            while !stop.load(Ordering::Relaxed) {
                let now = Instant::now();
                if now < next {
                    thread::sleep((next - now).min(Duration::from_millis(100)));
                    continue;
                }
                next += step;
                if next < now {
                    next = now + step; // fell behind (suspend, overload): don't burst
                }
                tx.send_replace(Some(Arc::new(agent.cycle())));
            }
        })?;
    Ok((rx, handle))
}
