//! Collectors: each turns the snapshot into its families and says whether it
//! had all its data. A collector without data still answers (with what it
//! has) and marks itself unsuccessful; the scrape never fails for it.
use std::time::UNIX_EPOCH;

pub use super::labels::{cmdline, cpu_count, exe, process_labels, vm_name, Labels};
use super::{
    compat, containers,
    labels::ContainerContext,
    ledger::{Amounts, View},
    names::{self, Def},
    Family, MetricsConfig,
};
use crate::snapshot::Snapshot;

/// How one collector went.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Outcome {
    pub name: &'static str,
    pub success: bool,
    pub seconds: f64,
}

/// Label values of the series that sums processes without their own series.
pub const OTHERS_PID: &str = "";
pub const OTHERS_COMM: &str = "[others]";

#[must_use]
pub fn build_info() -> Family {
    let mut f = Family::new(&names::BUILD_INFO);
    f.push(vec![("version", env!("CARGO_PKG_VERSION").to_owned())], 1.0);
    f
}

/// Build, sensor and CPU-time source information, and the measurement time.
#[must_use]
pub fn meta(snap: &Snapshot) -> Vec<Family> {
    let mut families = vec![build_info()];
    if let Some(sensor) = &snap.sensor {
        let mut f = Family::new(&names::SENSOR_INFO);
        f.push(
            vec![
                ("sensor", sensor.name.to_owned()),
                ("estimated", sensor.estimated().to_string()),
            ],
            1.0,
        );
        families.push(f);
    }
    let mut f = Family::new(&names::CPUTIME_SOURCE_INFO);
    f.push(vec![("source", snap.cpu_method.source().to_owned())], 1.0);
    families.push(f);
    let unix = snap
        .timestamp
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    families.push(Family::single(&names::MEASUREMENT_TIMESTAMP, unix));
    families
}

/// Host, socket, domain and idle energy.
#[must_use]
pub fn energy(snap: &Snapshot, config: &MetricsConfig) -> (Vec<Family>, bool) {
    let mut families = Vec::new();
    if snap.sensor.is_some() {
        families.push(Family::single(
            &names::IMPLAUSIBLE_ENERGY,
            snap.implausible_energy_dropped as f64,
        ));
    }
    let (Some(host), Some(idle)) = (snap.host, snap.idle) else {
        return (families, false);
    };
    families.push(Family::single(&names::HOST_ENERGY, host.joules_total));
    let mut sockets = Family::new(&names::SOCKET_ENERGY);
    let mut socket_idle = Family::new(&names::SOCKET_IDLE_ENERGY);
    let mut domains = Family::new(&names::DOMAIN_ENERGY);
    for socket in &snap.sockets {
        let id = socket.id.to_string();
        sockets.push(vec![("socket_id", id.clone())], socket.energy.joules_total);
        if let Some(idle) = socket.idle {
            socket_idle.push(vec![("socket_id", id.clone())], idle.joules_total);
        }
        for domain in &socket.domains {
            domains.push(
                vec![
                    ("socket_id", id.clone()),
                    ("domain_name", domain.name.clone()),
                ],
                domain.energy.joules_total,
            );
        }
    }
    families.extend([
        sockets,
        socket_idle,
        domains,
        Family::single(&names::IDLE_ENERGY, idle.joules_total),
    ]);
    if config.compat {
        families.extend(compat::energy(snap));
    }
    (families, snap.energy_ok)
}

/// Per-process (and per-group) counters, from the ledger's decisions; with
/// `containers`, process series carry their container's labels.
#[must_use]
pub fn processes(
    snap: &Snapshot,
    view: &View<'_>,
    config: &MetricsConfig,
    containers: Option<&ContainerContext<'_>>,
) -> (Vec<Family>, bool) {
    let has_energy = snap.host.is_some();
    let mut energy = Family::new(&names::PROCESS_ENERGY);
    let mut cpu = Family::new(&names::PROCESS_CPU);
    let mut info = Family::new(&names::PROCESS_INFO);
    // Grams next to joules, on the same series (with a carbon intensity).
    let mut co2 =
        (has_energy && snap.carbon_intensity.is_some()).then(|| Family::new(&names::PROCESS_CO2));
    for listed in &view.listed {
        let mut labels = process_labels(listed.process, config);
        if let Some(workload) = containers.and(listed.process.workload.as_deref()) {
            containers::add_process_labels(&mut labels, workload);
        }
        // A reused pid with the same comm and exe has the same labels: the
        // start time tells the guard it is a new series.
        let owner = listed.process.key.start_ns;
        if has_energy {
            energy.push_owned(labels.clone(), listed.amounts.joules, owner);
        }
        if let Some(co2) = co2.as_mut() {
            co2.push_owned(labels.clone(), listed.amounts.grams, owner);
        }
        if config.cmdline_max_len > 0 {
            let mut with_cmdline = labels.clone();
            with_cmdline.push(("cmdline", cmdline(listed.process, config.cmdline_max_len)));
            info.push(with_cmdline, 1.0);
        }
        cpu.push_owned(labels, listed.amounts.cpu_seconds, owner);
    }
    let others: Labels = vec![
        ("pid", OTHERS_PID.into()),
        ("comm", OTHERS_COMM.into()),
        ("exe", String::new()),
    ];
    if has_energy {
        energy.push(others.clone(), view.others.joules);
    }
    if let Some(co2) = co2.as_mut() {
        co2.push(others.clone(), view.others.grams);
    }
    cpu.push(others, view.others.cpu_seconds);
    let mut families = vec![energy, cpu, info];
    families.extend(co2);
    for (groups, energy_def, cpu_def, label) in [
        (&view.by_exe, &names::EXE_ENERGY, &names::EXE_CPU, "exe"),
        (
            &view.by_cgroup,
            &names::CGROUP_ENERGY,
            &names::CGROUP_CPU,
            "cgroup",
        ),
    ] {
        families.extend(group_families(
            groups, energy_def, cpu_def, label, has_energy,
        ));
    }
    let losses = snap.losses;
    families.extend([
        Family::single(&names::DROPPED_CPU, losses.dropped_ns as f64 / 1e9),
        Family::single(&names::DROPPED_SLICES, losses.dropped_slices as f64),
        Family::single(&names::DROPPED_EXITS, losses.dropped_exits as f64),
    ]);
    if config.compat {
        families.extend(compat::processes(snap, view, config, containers));
    }
    (families, snap.cputime_ok)
}

fn group_families(
    groups: &[(String, Amounts)],
    energy_def: &'static Def,
    cpu_def: &'static Def,
    label: &'static str,
    has_energy: bool,
) -> [Family; 2] {
    let mut energy = Family::new(energy_def);
    let mut cpu = Family::new(cpu_def);
    for (name, amounts) in groups {
        if has_energy {
            energy.push(vec![(label, name.clone())], amounts.joules);
        }
        cpu.push(vec![(label, name.clone())], amounts.cpu_seconds);
    }
    [energy, cpu]
}

/// scaph's own footprint.
#[must_use]
pub fn self_stats(snap: &Snapshot, config: &MetricsConfig) -> (Vec<Family>, bool) {
    let Some(own) = snap.self_stats else {
        return (Vec::new(), false);
    };
    let mut families = vec![
        Family::single(&names::SELF_CPU, own.cpu_seconds_total),
        Family::single(&names::SELF_RESIDENT, own.resident_bytes as f64),
    ];
    if config.compat {
        families.extend(compat::self_stats(snap, &own));
    }
    (families, true)
}

/// Duration and success of each collector.
#[must_use]
pub fn collector_families(outcomes: &[Outcome]) -> [Family; 2] {
    let mut duration = Family::new(&names::COLLECTOR_DURATION);
    let mut success = Family::new(&names::COLLECTOR_SUCCESS);
    for o in outcomes {
        duration.push(vec![("collector", o.name.to_owned())], o.seconds);
        success.push(
            vec![("collector", o.name.to_owned())],
            if o.success { 1.0 } else { 0.0 },
        );
    }
    [duration, success]
}
