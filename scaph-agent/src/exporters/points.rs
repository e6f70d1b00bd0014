//! What the exporters that send one value per series (riemann, warp10,
//! otlp) share: the metrics of each measurement (the same names and labels
//! as the prometheus exporters, from [`crate::metrics`]) flattened to
//! points, and the host name they report.
use super::Measurement;
use crate::metrics::names::{Def, Unit};

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
    hostname::get()
        .ok()
        .map(|name| name.to_string_lossy().into_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::{
        sync::Arc,
        time::{Duration, SystemTime},
    };

    use super::*;
    use crate::{
        cputime::{CpuTimeMethod, ProcessKey},
        metrics::{MetricsConfig, MetricsState},
        sensors::{DomainKind, EnergyOrigin},
        snapshot::{DomainSnapshot, Energy, ProcessSnapshot, SensorInfo, Snapshot, SocketSnapshot},
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
            meta: Some(std::sync::Arc::new(crate::model::ProcessMeta {
                exe: exe.map(|e| std::sync::Arc::from(std::path::Path::new(e))),
                cmdline: cmdline.join(" ").into(),
                vm_name: crate::vm_label::vm_name(cmdline).map(Into::into),
                ..crate::model::ProcessMeta::default()
            })),
            cgroup_id: None,
            cpu_seconds_total: 3.5,
            cpu_ratio: if exited { 0.0 } else { 0.5 },
            energy: Some(energy),
            co2_grams_total: 0.0,
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
            cpu_idle_ratio: vec![0.5, 0.5],
            online_cpus: 2,
            ..Snapshot::of_processes(Vec::new(), 0.0, CpuTimeMethod::Procfs)
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

    #[test]
    fn hostname_is_not_empty() {
        assert!(!hostname().is_empty());
    }
}
