//! The measurement cycle: CPU time and energy are read on the agent's own
//! timer, joined, labelled (containers, pods, units) and published as one
//! `Snapshot`. Exporters only read it.
//!
//! Every read of the host that a cycle needs happens here, on the agent's
//! thread ([`spawn`]), never on an exporter's async worker.
mod assemble;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant, SystemTime},
};

use log::{debug, warn};
use tokio::sync::watch;

use crate::{
    amounts::Amounts,
    attribution::{attribute, Accumulator, IdlePolicy, Stamp},
    containers::{ContainersConfig, Tracker},
    cputime::{CpuSample, CpuTimeSource},
    host::HostReader,
    metrics::regressions::Regressions,
    processes::ProcessTable,
    sensors::{EnergyReading, EnergySensor, Topology, Utilisation},
    snapshot::{SensorInfo, Snapshot},
};

/// How long exited processes stay visible with their final values.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(600);

pub type SnapshotRx = watch::Receiver<Option<Arc<Snapshot>>>;

pub struct Agent {
    cpu: Box<dyn CpuTimeSource>,
    sensor: Option<Box<dyn EnergySensor>>,
    topology: Topology,
    policy: IdlePolicy,
    processes: ProcessTable,
    energy: Accumulator,
    /// Cycles run so far (numbers each cycle's energy amounts).
    cycles: u64,
    implausible_dropped: u64,
    started: Instant,
    retention: Duration,
    /// Consecutive failed sensor polls (logged at 1, 2, 4, 8, ...).
    sensor_failures: u64,
    /// Energy amounts the accumulator refused, as last logged.
    energy_regressions: u64,
    regressions_log: Regressions,
    /// Host/self statistics read each cycle for the exporters that show them.
    host_reader: Option<HostReader>,
    heap: crate::util::HeapTrim,
    /// Carbon intensity, asked once per cycle (`--carbon-intensity*`).
    carbon: Option<crate::carbon::IntensitySource>,
    /// Container, pod and unit labels, and container totals (`--containers`).
    containers: Option<Tracker>,
}

impl Agent {
    pub fn new(
        cpu: Box<dyn CpuTimeSource>,
        sensor: Option<Box<dyn EnergySensor>>,
        topology: Topology,
        policy: IdlePolicy,
    ) -> Self {
        Self {
            cpu,
            sensor,
            topology,
            policy,
            processes: ProcessTable::default(),
            energy: Accumulator::new(),
            cycles: 0,
            implausible_dropped: 0,
            started: Instant::now(),
            retention: DEFAULT_RETENTION,
            sensor_failures: 0,
            energy_regressions: 0,
            regressions_log: Regressions::default(),
            host_reader: None,
            heap: crate::util::HeapTrim::default(),
            carbon: None,
            containers: None,
        }
    }

    /// Labels every process with its container, pod and systemd unit, and
    /// counts energy and CPU time per container (`--containers`). Detects
    /// the cgroup layout now, and starts the Kubernetes pod watch (on its
    /// own thread) when the configuration asks for it.
    #[must_use]
    pub fn with_containers(mut self, config: Option<&ContainersConfig>) -> Self {
        self.containers = config.map(Tracker::new);
        self
    }

    /// Also reads host and self statistics each cycle (what the reader's
    /// flags ask for) and carries them in the snapshot.
    #[must_use]
    pub fn with_host_stats(mut self, reader: HostReader) -> Self {
        self.host_reader = Some(reader);
        self
    }

    /// Sets how long exited processes stay visible.
    #[must_use]
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Puts the carbon intensity in force into each snapshot.
    #[must_use]
    pub fn with_carbon(mut self, source: Option<crate::carbon::IntensitySource>) -> Self {
        self.carbon = source;
        self
    }

    /// Takes the baseline readings; the first real cycle follows one step later.
    pub fn baseline(&mut self) {
        if let Err(e) = self.cpu.sample() {
            warn!("CPU time baseline: {e}");
        }
        let _ = self.poll_energy(&Utilisation::default());
    }

    /// One measurement cycle.
    pub fn cycle(&mut self) -> Snapshot {
        let started = Instant::now();
        self.cycles += 1;
        let cycle = self.cycles;
        let mut cputime_ok = true;
        let sample = self.cpu.sample().unwrap_or_else(|e| {
            warn!("reading CPU time: {e}");
            cputime_ok = false;
            CpuSample::default()
        });
        let sampled = Instant::now();
        let reading = self.poll_energy(&utilisation(&sample));
        let energy_ok = self.sensor.is_none() || reading.is_some();
        let uptime = self.started.elapsed();
        let intensity = self
            .carbon
            .as_mut()
            .and_then(crate::carbon::IntensitySource::current);
        self.processes.update_cpu(&sample, uptime);
        if let Some(reading) = &reading {
            self.implausible_dropped = reading.implausible_dropped;
            if !reading.zones.is_empty() && !sample.interval.is_zero() {
                let mut split = attribute(
                    &reading.zones,
                    &sample,
                    &self.topology,
                    sample.interval,
                    self.policy,
                );
                // The CPU times set the shares; the energy read has its own
                // interval, which differs from the CPU sample's when either
                // read was delayed (a loaded host): watts divide by it.
                split.interval = reading.interval;
                let stamp = Stamp {
                    now: uptime,
                    cycle,
                    grams_per_kwh: intensity,
                };
                self.energy.add(&reading.zones, &split, stamp);
                let held = self.energy.regressions();
                self.regressions_log.log(
                    "the energy accumulator",
                    held - self.energy_regressions,
                    || "a negative or non-finite energy delta was refused".to_owned(),
                );
                self.energy_regressions = held;
            }
        }
        let expired = self.processes.expire(uptime, self.retention);
        self.energy.retire_sorted(&expired);
        let attributed = Instant::now();
        let sensor = self.sensor.as_ref().map(|s| SensorInfo {
            name: s.name(),
            origin: s.origin(),
        });
        let mut snapshot = assemble::build(assemble::Parts {
            timestamp: SystemTime::now(),
            sample: &sample,
            cpu_method: self.cpu.method(),
            sensor,
            energy: &self.energy,
            processes: &self.processes,
            implausible_energy_dropped: self.implausible_dropped,
        });
        snapshot.cputime_ok = cputime_ok;
        snapshot.online_cpus = self.topology.num_cpus();
        snapshot.energy_ok = energy_ok;
        snapshot.carbon_intensity = intensity;
        if let Some(tracker) = &mut self.containers {
            let (energy, processes) = (&self.energy, &self.processes);
            tracker.update(&mut snapshot, |key| Amounts {
                cpu_seconds: processes
                    .get(key)
                    .map_or(0.0, |p| p.cpu_ns_last as f64 / 1e9),
                ..energy.added_in_cycle(key, cycle)
            });
        }
        if let Some(reader) = &mut self.host_reader {
            read_host_stats(reader, &mut snapshot);
        }
        if self.heap.observe(snapshot.processes.len()) {
            debug!(
                "{} processes tracked, half of the peak: free heap returned to the system",
                snapshot.processes.len()
            );
        }
        debug!(
            "cycle: {} processes; CPU time {:?}, energy and attribution {:?}, snapshot {:?}",
            snapshot.processes.len(),
            sampled - started,
            attributed - sampled,
            attributed.elapsed()
        );
        snapshot
    }

    fn poll_energy(&mut self, utilisation: &Utilisation) -> Option<EnergyReading> {
        let sensor = self.sensor.as_mut()?;
        match sensor.poll(utilisation) {
            Ok(reading) => {
                if self.sensor_failures > 0 {
                    warn!("energy sensor {} works again", sensor.name());
                }
                self.sensor_failures = 0;
                Some(reading)
            }
            Err(e) => {
                self.sensor_failures += 1;
                if self.sensor_failures.is_power_of_two() {
                    warn!(
                        "energy sensor {} failed ({} times in a row): {e}",
                        sensor.name(),
                        self.sensor_failures
                    );
                }
                None
            }
        }
    }
}

/// Fills the snapshot's host, self and per-process memory statistics.
fn read_host_stats(reader: &mut HostReader, snapshot: &mut Snapshot) {
    snapshot.self_stats = reader.self_stats();
    if reader.host {
        snapshot.host_stats = Some(reader.host_stats());
    }
    if reader.process_memory {
        for process in snapshot.processes.iter_mut().filter(|p| !p.exited) {
            process.memory = reader.process_memory(process.key.pid);
        }
    }
}

/// Busy fraction per CPU, from the sample's idle time.
fn utilisation(sample: &CpuSample) -> Utilisation {
    let secs = sample.interval.as_secs_f64();
    let busy = if secs > 0.0 {
        sample
            .idle_ns
            .iter()
            .map(|&idle| (1.0 - idle as f64 / 1e9 / secs).clamp(0.0, 1.0))
            .collect()
    } else {
        Vec::new()
    };
    Utilisation { busy }
}

/// Runs the cycle every `step` on a dedicated thread until `stop` is set;
/// whoever sets it unparks the thread (`handle.thread().unpark()`), which
/// otherwise sleeps until its next cycle.
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
                    // Woken early by the unpark that goes with `stop`.
                    thread::park_timeout(next - now);
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

#[cfg(test)]
mod tests;
