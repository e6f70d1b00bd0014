//! What the exporters that send one value per series (riemann, warp10)
//! share: the metrics of each snapshot (the same names and labels as the
//! prometheus exporters, from [`crate::metrics`]), flattened to points; the
//! host name; and retry pacing.
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{sync::watch, task::JoinHandle};

use crate::{
    agent::SnapshotRx,
    metrics::{
        names::{Def, Unit},
        Family, MetricsState,
    },
    snapshot::Snapshot,
};

/// One snapshot and its metric families.
#[derive(Debug)]
pub struct Measurement {
    pub snapshot: Arc<Snapshot>,
    pub families: Vec<Family>,
}

pub type MeasurementRx = watch::Receiver<Option<Arc<Measurement>>>;

/// Feeds every snapshot, in order, to `state` and publishes the result. A
/// sender that is slow (a server that does not answer) reads only the latest
/// measurement, but the metrics' bookkeeping never misses a snapshot. The
/// task ends when measurement stops.
#[must_use]
pub fn feed(mut snapshots: SnapshotRx, mut state: MetricsState) -> (MeasurementRx, JoinHandle<()>) {
    let (tx, rx) = watch::channel(None);
    let task = tokio::spawn(async move {
        while snapshots.changed().await.is_ok() {
            let snapshot = snapshots.borrow_and_update().clone();
            if let Some(snapshot) = snapshot {
                let families = state.update(&snapshot);
                tx.send_replace(Some(Arc::new(Measurement { snapshot, families })));
            }
        }
    });
    (rx, task)
}

/// One value of one series.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub def: &'static Def,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

impl Point {
    /// The value of label `key`, if the point has it.
    #[must_use]
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Every sample of every family, in order. Energy and power values also get
/// `sensor` (the sensor's name) and `estimated` (`true` when the energy is
/// computed from CPU use instead of measured), so that an estimate can never
/// pass for a measurement. Non-finite values are left out.
#[must_use]
pub fn points(measurement: &Measurement) -> Vec<Point> {
    let source: Vec<(&'static str, String)> =
        measurement
            .snapshot
            .sensor
            .as_ref()
            .map_or_else(Vec::new, |s| {
                vec![
                    ("sensor", s.name.to_owned()),
                    ("estimated", s.estimated().to_string()),
                ]
            });
    let mut out = Vec::with_capacity(measurement.families.iter().map(|f| f.samples.len()).sum());
    for family in &measurement.families {
        let energy = matches!(
            family.def.unit,
            Unit::Joules | Unit::Microjoules | Unit::Microwatts
        );
        for sample in family.samples.iter().filter(|s| s.value.is_finite()) {
            let mut labels = sample.labels.clone();
            if energy {
                labels.extend(
                    source
                        .iter()
                        .filter(|(k, _)| !sample.labels.iter().any(|(l, _)| l == k))
                        .cloned(),
                );
            }
            out.push(Point {
                def: family.def,
                labels,
                value: sample.value,
            });
        }
    }
    out
}

/// This machine's host name (`localhost` if it cannot be read).
#[must_use]
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer we own.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    if ok && len > 0 {
        String::from_utf8_lossy(&buf[..len]).into_owned()
    } else {
        "localhost".into()
    }
}

/// Paces attempts after failures: the wait doubles from `min` up to `max`,
/// and success resets it. Also says when a failure deserves a log line (the
/// 1st, 2nd, 4th, 8th... in a row), so that an unreachable server does not
/// flood the log.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next_wait: Duration,
    not_before: Option<Instant>,
    failures: u64,
}

impl Backoff {
    #[must_use]
    pub const fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            next_wait: min,
            not_before: None,
            failures: 0,
        }
    }

    /// Whether an attempt may be made at `now`.
    #[must_use]
    pub fn ready(&self, now: Instant) -> bool {
        self.not_before.is_none_or(|t| now >= t)
    }

    /// Records a failure at `now`; returns the wait before the next attempt
    /// and whether to log this failure.
    pub fn failed(&mut self, now: Instant) -> (Duration, bool) {
        self.failures += 1;
        let wait = self.next_wait;
        self.not_before = Some(now + wait);
        self.next_wait = (wait * 2).min(self.max);
        (wait, self.failures.is_power_of_two())
    }

    /// Records a success; returns how many failures in a row preceded it.
    pub fn succeeded(&mut self) -> u64 {
        self.next_wait = self.min;
        self.not_before = None;
        std::mem::take(&mut self.failures)
    }

    /// Failures in a row so far.
    #[must_use]
    pub const fn failures(&self) -> u64 {
        self.failures
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::{
        cputime::{CpuTimeMethod, LossCounters, ProcessKey},
        metrics::MetricsConfig,
        sensors::{DomainKind, EnergyOrigin},
        snapshot::{DomainSnapshot, Energy, ProcessSnapshot, SensorInfo, SocketSnapshot},
    };

    /// A snapshot with every kind of value, for the exporters' tests: a VM
    /// (pid 4242, `vm1`), a process with odd characters everywhere (pid 17),
    /// and an exited one.
    pub(crate) fn sample_snapshot(origin: EnergyOrigin) -> Snapshot {
        let e = |watts: f64, joules_total: f64| Energy {
            joules_total,
            watts,
        };
        let process = |pid: u32,
                       comm: &str,
                       exe: Option<&str>,
                       cmdline: &[&str],
                       energy: Energy,
                       exited: bool| ProcessSnapshot {
            key: ProcessKey { pid, start_ns: 1 },
            comm: comm.into(),
            exe: exe.map(|e| std::sync::Arc::from(std::path::Path::new(e))),
            cmdline: cmdline.join(" ").into(),
            vm_name: crate::vm_label::vm_name(cmdline).map(Into::into),
            cgroup_id: None,
            cgroup_path: None,
            cpu_seconds_total: 3.5,
            cpu_ratio: if exited { 0.0 } else { 0.5 },
            energy: Some(energy),
            exited,
            memory: None,
            workload: None,
        };
        Snapshot {
            timestamp: SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456),
            interval: Duration::from_secs(2),
            cpu_method: CpuTimeMethod::Procfs,
            sensor: Some(SensorInfo {
                name: if origin == EnergyOrigin::Estimated {
                    "estimate"
                } else {
                    "powercap_rapl"
                },
                origin,
            }),
            host: Some(e(40.0, 400.0)),
            idle: Some(e(10.0, 100.0)),
            sockets: vec![SocketSnapshot {
                id: 0,
                energy: e(40.0, 400.0),
                domains: vec![DomainSnapshot {
                    kind: DomainKind::Core,
                    name: "core".into(),
                    energy: e(30.0, 300.0),
                }],
                idle: Some(e(10.0, 100.0)),
            }],
            processes: vec![
                process(
                    4242,
                    "qemu-system-x86",
                    Some("/usr/bin/qemu-system-x86_64"),
                    &[
                        "/usr/bin/qemu-system-x86_64",
                        "-name",
                        "guest=vm1,debug-threads=on",
                    ],
                    e(20.0, 200.0),
                    false,
                ),
                process(
                    17,
                    "weird",
                    Some("/opt/my app/wëird{1}"),
                    &["/opt/my app/wëird{1}", "a,b=c"],
                    e(10.0, 100.0),
                    false,
                ),
                process(99, "gone", None, &[], e(0.0, 5.0), true),
            ],
            retired_joules: 0.0,
            cpu_idle_ratio: vec![0.5, 0.5],
            online_cpus: 2,
            losses: LossCounters::default(),
            implausible_energy_dropped: 0,
            energy_regressions: 0,
            cputime_ok: true,
            energy_ok: true,
            host_stats: None,
            self_stats: None,
            carbon_intensity: None,
            containers: None,
        }
    }

    /// `sample_snapshot` through the metrics, as the exporters see it.
    pub(crate) fn sample_measurement(origin: EnergyOrigin, config: MetricsConfig) -> Measurement {
        let snapshot = Arc::new(sample_snapshot(origin));
        let families = MetricsState::new(config).update(&snapshot);
        Measurement { snapshot, families }
    }

    fn find<'a>(points: &'a [Point], name: &str, pid: Option<&str>) -> &'a Point {
        points
            .iter()
            .find(|p| p.def.name == name && (pid.is_none() || p.label("pid") == pid))
            .unwrap_or_else(|| panic!("{name} {pid:?} missing"))
    }

    #[test]
    fn energy_points_say_where_energy_comes_from() {
        let m = sample_measurement(EnergyOrigin::Estimated, MetricsConfig::default());
        let points = points(&m);
        let host = find(&points, "scaph_host_energy_joules_total", None);
        assert_eq!(host.value, 400.0);
        assert_eq!(
            (host.label("sensor"), host.label("estimated")),
            (Some("estimate"), Some("true"))
        );
        let vm = find(&points, "scaph_process_energy_joules_total", Some("4242"));
        assert_eq!(vm.value, 200.0);
        assert_eq!(vm.label("estimated"), Some("true"));
        let cpu = find(&points, "scaph_process_cpu_seconds_total", Some("4242"));
        assert_eq!(cpu.label("estimated"), None, "CPU time is not energy");
        let m = sample_measurement(EnergyOrigin::Measured, MetricsConfig::default());
        let measured = super::points(&m);
        assert_eq!(
            find(&measured, "scaph_socket_energy_joules_total", None).label("estimated"),
            Some("false")
        );
    }

    #[test]
    fn compat_names_are_there_with_compat() {
        let config = MetricsConfig {
            compat: true,
            ..MetricsConfig::default()
        };
        let m = sample_measurement(EnergyOrigin::Measured, config);
        let points = points(&m);
        let power = find(
            &points,
            "scaph_process_power_consumption_microwatts",
            Some("4242"),
        );
        assert_eq!(power.value, 20e6);
        assert_eq!(power.label("sensor"), Some("powercap_rapl"));
        assert_eq!(
            find(&points, "scaph_host_power_microwatts", None).value,
            40e6
        );
    }

    #[tokio::test]
    async fn feed_publishes_each_snapshot_with_its_families() {
        let (tx, rx) = watch::channel(None);
        let (mut out, task) = feed(rx, MetricsState::new(MetricsConfig::default()));
        tx.send_replace(Some(Arc::new(sample_snapshot(EnergyOrigin::Measured))));
        out.changed().await.unwrap();
        let m = out.borrow_and_update().clone().unwrap();
        assert!(m
            .families
            .iter()
            .any(|f| f.def.name == "scaph_host_energy_joules_total"));
        drop(tx);
        task.await.unwrap();
    }

    #[test]
    fn backoff_doubles_and_resets() {
        let t0 = Instant::now();
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        assert!(b.ready(t0));
        let waits: Vec<(u64, bool)> = (0..5)
            .map(|_| b.failed(t0))
            .map(|(w, log)| (w.as_secs(), log))
            .collect();
        assert_eq!(
            waits,
            [(1, true), (2, true), (4, false), (5, true), (5, false)]
        );
        assert!(!b.ready(t0 + Duration::from_secs(4)));
        assert!(b.ready(t0 + Duration::from_secs(5)));
        assert_eq!(b.succeeded(), 5);
        assert_eq!(b.failed(t0).0, Duration::from_secs(1));
    }

    #[test]
    fn hostname_is_not_empty() {
        assert!(!hostname().is_empty());
    }
}
