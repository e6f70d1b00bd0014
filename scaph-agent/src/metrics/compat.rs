//! Scaphandre's names and labels (`--scaphandre-compat`), with its known
//! bugs fixed: the 15-minute load is the 15-minute load, the process power's
//! help text describes power, every disk is listed, counters never go
//! backwards, and the cmdline label is space-separated and bounded.
use super::{
    containers,
    labels::{self, ContainerContext, Labels},
    ledger::View,
    names, Family, MetricsConfig,
};
use crate::{
    host::SelfStats,
    label,
    snapshot::{DomainKind, ProcessSnapshot, Snapshot},
};

const MICRO: f64 = 1e6;

/// Host, socket and domain power (µW) and energy (µJ).
pub fn energy(snap: &Snapshot) -> Vec<Family> {
    let mut families = Vec::new();
    if let Some(host) = snap.host {
        families.push(Family::single(&names::C_HOST_POWER, host.watts * MICRO));
        families.push(Family::single(
            &names::C_HOST_ENERGY,
            host.joules_total * MICRO,
        ));
    }
    let mut socket_power = Family::new(&names::C_SOCKET_POWER);
    let mut socket_energy = Family::new(&names::C_SOCKET_ENERGY);
    let mut domain_power = Family::new(&names::C_DOMAIN_POWER);
    let mut domain_energy = Family::new(&names::C_DOMAIN_ENERGY);
    for socket in &snap.sockets {
        let id = socket.id.to_string();
        socket_power.push(vec![("socket_id", id.clone())], socket.energy.watts * MICRO);
        socket_energy.push(
            vec![("socket_id", id.clone())],
            socket.energy.joules_total * MICRO,
        );
        // Scaphandre's domains are the package's sub-zones (intel-rapl:N:M), numbered from 0.
        for (n, domain) in socket
            .domains
            .iter()
            .filter(|d| d.kind != DomainKind::Package)
            .enumerate()
        {
            let labels: Labels = vec![
                ("domain_name", domain.name.clone()),
                ("domain_id", n.to_string()),
                ("socket_id", id.clone()),
            ];
            domain_power.push(labels.clone(), domain.energy.watts * MICRO);
            domain_energy.push(labels, domain.energy.joules_total * MICRO);
        }
    }
    families.extend([socket_power, socket_energy, domain_power, domain_energy]);
    families
}

/// Scaphandre's labels for a process: pid, exe, cmdline (and vmname, and
/// its container labels with `--containers`).
fn compat_labels(
    p: &ProcessSnapshot,
    config: &MetricsConfig,
    context: Option<&ContainerContext<'_>>,
) -> Labels {
    let mut labels = vec![("pid", p.key.pid.to_string()), ("exe", labels::exe(p))];
    if config.cmdline_max_len > 0 {
        labels.push(("cmdline", labels::cmdline(p, config.cmdline_max_len)));
    }
    if config.qemu {
        if let Some(vm) = labels::vm_name(p) {
            labels.push(("vmname", vm));
        }
    }
    if let Some(context) = context {
        if let Some(workload) = p.workload.as_deref() {
            containers::add_compat_labels(&mut labels, workload, context.node_name);
        }
    }
    labels
}

/// Power, CPU share and memory of the listed processes that still run
/// (Scaphandre showed running processes only).
pub fn processes(
    snap: &Snapshot,
    view: &View<'_>,
    config: &MetricsConfig,
    context: Option<&ContainerContext<'_>>,
) -> Vec<Family> {
    let cpus = cpu_count(snap);
    let mut power = Family::new(&names::C_PROCESS_POWER);
    let mut cpu = Family::new(&names::C_PROCESS_CPU);
    let mut memory = Family::new(&names::C_PROCESS_MEMORY);
    let mut virt = Family::new(&names::C_PROCESS_VIRTUAL);
    for p in view.listed.iter().map(|l| l.process).filter(|p| !p.exited) {
        let labels = compat_labels(p, config, context);
        if let Some(energy) = p.energy {
            power.push(labels.clone(), energy.watts * MICRO);
        }
        if let Some(m) = p.memory {
            memory.push(labels.clone(), m.resident_bytes as f64);
            virt.push(labels.clone(), m.virtual_bytes as f64);
        }
        cpu.push(labels, p.cpu_ratio / cpus * 100.0);
    }
    vec![power, cpu, memory, virt]
}

/// Load, memory, swap, disks and scheduler activity.
pub fn host(snap: &Snapshot) -> (Vec<Family>, bool) {
    let Some(stats) = &snap.host_stats else {
        return (Vec::new(), false);
    };
    let mut families = Vec::new();
    if let Some(load) = stats.load {
        families.extend([
            Family::single(&names::C_LOAD_ONE, load.one),
            Family::single(&names::C_LOAD_FIVE, load.five),
            Family::single(&names::C_LOAD_FIFTEEN, load.fifteen),
        ]);
    }
    if let Some(m) = stats.memory {
        families.extend([
            Family::single(&names::C_MEMORY_TOTAL, m.total as f64),
            Family::single(&names::C_MEMORY_AVAILABLE, m.available as f64),
            Family::single(&names::C_MEMORY_FREE, m.free as f64),
            Family::single(&names::C_SWAP_TOTAL, m.swap_total as f64),
            Family::single(&names::C_SWAP_FREE, m.swap_free as f64),
        ]);
    }
    let mut total = Family::new(&names::C_DISK_TOTAL);
    let mut available = Family::new(&names::C_DISK_AVAILABLE);
    for disk in &stats.disks {
        let labels: Labels = vec![
            ("disk_file_system", label::value(&disk.file_system)),
            ("disk_mount_point", label::path(&disk.mount_point)),
            ("disk_type", disk.kind.to_owned()),
            ("disk_is_removable", disk.removable.to_string()),
            ("disk_name", label::value(&disk.name)),
        ];
        total.push(labels.clone(), disk.total_bytes as f64);
        available.push(labels, disk.available_bytes as f64);
    }
    families.extend([total, available]);
    if let Some(a) = stats.activity {
        families.extend([
            Family::single(&names::C_FORKS, a.forks_total as f64),
            Family::single(&names::C_CONTEXT_SWITCHES, a.context_switches_total as f64),
            Family::single(&names::C_PROCS_RUNNING, a.running as f64),
            Family::single(&names::C_PROCS_BLOCKED, a.blocked as f64),
        ]);
    }
    (families, stats.complete)
}

/// scaph's version, CPU share and memory under Scaphandre's names.
pub fn self_stats(snap: &Snapshot, own: &SelfStats) -> Vec<Family> {
    vec![
        Family::single(&names::C_SELF_VERSION, version_number()),
        Family::single(&names::C_SELF_CPU, own.cpu_ratio / cpu_count(snap) * 100.0),
        Family::single(&names::C_SELF_MEMORY, own.resident_bytes as f64),
        Family::single(&names::C_SELF_VIRTUAL, own.virtual_bytes as f64),
    ]
}

/// What Scaphandre's CPU percentages divide by: the online CPUs (as its
/// sysinfo counted them), not the per-CPU idle entries, which can cover
/// every possible CPU (8 possible and 2 online made a busy CPU read 12.5 %).
fn cpu_count(snap: &Snapshot) -> f64 {
    if snap.online_cpus > 0 {
        snap.online_cpus as f64
    } else {
        labels::cpu_count(snap)
    }
}

/// The version as one number the way Scaphandre wrote it (1.0.2 → 1.02).
fn version_number() -> f64 {
    let text = format!(
        "{}.{}{}",
        env!("CARGO_PKG_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MINOR"),
        env!("CARGO_PKG_VERSION_PATCH")
    );
    text.parse().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::CpuTimeMethod;

    /// `(possible CPUs in the idle entries, online CPUs, process CPU ratio, percentage)`.
    #[test]
    fn cpu_percentage_divides_by_online_cpus() {
        for (possible, online, ratio, want) in [
            (2, 2, 1.0, 50.0),
            (8, 2, 1.0, 50.0), // offline CPUs are not capacity
            (256, 64, 2.0, 3.125),
            (4, 0, 1.0, 25.0), // not made by an agent: the idle entries
        ] {
            let mut snap = Snapshot::of_processes(Vec::new(), 0.0, CpuTimeMethod::BpfRuntime);
            snap.cpu_idle_ratio = vec![1.0; possible];
            snap.online_cpus = online;
            let own = SelfStats {
                cpu_ratio: ratio,
                ..SelfStats::default()
            };
            let families = self_stats(&snap, &own);
            let cpu = families
                .iter()
                .find(|f| std::ptr::eq(f.def, &names::C_SELF_CPU))
                .expect("self CPU family");
            assert_eq!(
                cpu.samples[0].value, want,
                "{possible} possible, {online} online"
            );
        }
    }
}
