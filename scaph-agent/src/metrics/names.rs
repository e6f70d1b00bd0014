//! Every metric scaph exposes: name, type, unit and help text, in one place.
//!
//! Two sets. The default set follows Prometheus's naming rules (base units,
//! `_total` on counters, `_info` for metadata) and passes `promtool check
//! metrics` cleanly. The Scaphandre set (`--scaphandre-compat`) repeats
//! Scaphandre's names and labels so existing dashboards keep working; some of
//! them break the rules by construction (microjoule counters without
//! `_total`, microwatts, percentages) and promtool says so.

/// Prometheus metric type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// The unit a metric is expressed in (it is also the name's suffix, before
/// `_total`, in the default set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Joules,
    Seconds,
    Bytes,
    /// Grams of CO2-equivalent (carbon counters).
    Grams,
    /// A count or a state with no unit (`_info`, `_success`, event counters).
    None,
    // Scaphandre's units, kept only for its names.
    Microjoules,
    Microwatts,
    Percent,
}

/// One metric's definition.
#[derive(Debug, PartialEq)]
pub struct Def {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Unit,
    pub help: &'static str,
    /// Part of the Scaphandre compatibility set.
    pub compat: bool,
}

const fn base(name: &'static str, kind: Kind, unit: Unit, help: &'static str) -> Def {
    Def {
        name,
        kind,
        unit,
        help,
        compat: false,
    }
}

const fn compat(name: &'static str, kind: Kind, unit: Unit, help: &'static str) -> Def {
    Def {
        name,
        kind,
        unit,
        help,
        compat: true,
    }
}

use Kind::{Counter, Gauge};

// ---- Metadata and self-health -------------------------------------------------

pub static BUILD_INFO: Def = base(
    "scaph_build_info",
    Gauge,
    Unit::None,
    "Version of the running scaph; the value is always 1.",
);
pub static SENSOR_INFO: Def = base(
    "scaph_sensor_info",
    Gauge,
    Unit::None,
    "Energy sensor in use. estimated=\"true\" means the energy is computed from CPU use with a linear model, not measured.",
);
pub static CPUTIME_SOURCE_INFO: Def = base(
    "scaph_cputime_source_info",
    Gauge,
    Unit::None,
    "Where per-process CPU time comes from: bpf (kernel program on sched_switch, exact) or procfs (/proc/PID/stat, clock ticks).",
);
pub static COLLECTOR_DURATION: Def = base(
    "scaph_scrape_collector_duration_seconds",
    Gauge,
    Unit::Seconds,
    "Time a collector took to turn the latest measurement into metrics.",
);
pub static COLLECTOR_SUCCESS: Def = base(
    "scaph_scrape_collector_success",
    Gauge,
    Unit::None,
    "1 if the collector had all its data in the latest measurement, else 0.",
);
pub static MEASUREMENT_TIMESTAMP: Def = base(
    "scaph_measurement_timestamp_seconds",
    Gauge,
    Unit::Seconds,
    "Unix time at the end of the measurement cycle these values come from (measurement runs on scaph's own timer, not per scrape).",
);
pub static SELF_CPU: Def = base(
    "scaph_self_cpu_seconds_total",
    Counter,
    Unit::Seconds,
    "CPU time used by scaph itself.",
);
pub static SELF_RESIDENT: Def = base(
    "scaph_self_resident_memory_bytes",
    Gauge,
    Unit::Bytes,
    "Resident memory of scaph itself.",
);

// ---- What could not be measured ------------------------------------------------

pub static DROPPED_CPU: Def = base(
    "scaph_cputime_dropped_seconds_total",
    Counter,
    Unit::Seconds,
    "CPU time the kernel program could not record because its map was full.",
);
pub static DROPPED_SLICES: Def = base(
    "scaph_cputime_dropped_slices_total",
    Counter,
    Unit::None,
    "Scheduler slices the kernel program could not record: its map was full, or a thread it had no record of left a CPU without having been seen arriving.",
);
pub static DROPPED_EXITS: Def = base(
    "scaph_cputime_dropped_exits_total",
    Counter,
    Unit::None,
    "Process exits the kernel program could not record because its exit map was full.",
);
pub static IMPLAUSIBLE_ENERGY: Def = base(
    "scaph_sensor_implausible_deltas_dropped_total",
    Counter,
    Unit::None,
    "Energy counter deltas the sensor dropped as implausible (larger than the hardware can produce in the interval).",
);

pub static MONOTONICITY_VIOLATIONS: Def = base(
    "scaph_monotonicity_violations_total",
    Counter,
    Unit::None,
    "Times a counter scaph computes started to be held at its previous value because it would have gone backwards (a series held over several updates counts once), plus energy deltas refused as negative or not a number. The first 3 from each source are logged at warn. Anything but 0 is a bug in scaph or its sensor.",
);

// ---- Energy ----------------------------------------------------------------------

pub static HOST_ENERGY: Def = base(
    "scaph_host_energy_joules_total",
    Counter,
    Unit::Joules,
    "Energy of the host since scaph started: psys if present, else the packages plus their DRAM. rate() gives watts.",
);
pub static SOCKET_ENERGY: Def = base(
    "scaph_socket_energy_joules_total",
    Counter,
    Unit::Joules,
    "Energy of one CPU socket (package plus its DRAM) since scaph started.",
);
pub static SOCKET_IDLE_ENERGY: Def = base(
    "scaph_socket_idle_energy_joules_total",
    Counter,
    Unit::Joules,
    "Energy of one socket that no process's CPU time claimed (idle, or unattributed under the default idle policy).",
);
pub static DOMAIN_ENERGY: Def = base(
    "scaph_domain_energy_joules_total",
    Counter,
    Unit::Joules,
    "Energy of one RAPL domain since scaph started. Domains overlap (core and uncore are parts of the package): do not sum them.",
);
pub static IDLE_ENERGY: Def = base(
    "scaph_idle_energy_joules_total",
    Counter,
    Unit::Joules,
    "Host energy that no process claimed. Sum of scaph_process_energy_joules_total plus this equals scaph_host_energy_joules_total.",
);

// ---- Processes and groups ----------------------------------------------------------

pub static PROCESS_ENERGY: Def = base(
    "scaph_process_energy_joules_total",
    Counter,
    Unit::Joules,
    "Energy attributed to a process by its CPU time. The series with pid=\"\" holds processes not listed individually \
     (beyond --max-processes, or exited longer ago than the retention window).",
);
pub static PROCESS_CPU: Def = base(
    "scaph_process_cpu_seconds_total",
    Counter,
    Unit::Seconds,
    "On-CPU time of a process, as the kernel counts it. The series with pid=\"\" holds processes not listed individually.",
);
pub static PROCESS_INFO: Def = base(
    "scaph_process_info",
    Gauge,
    Unit::None,
    "Command line of a listed process (bounded by --cmdline-max-len); the value is always 1. Join on pid.",
);
pub static EXE_ENERGY: Def = base(
    "scaph_exe_energy_joules_total",
    Counter,
    Unit::Joules,
    "Energy of all processes of one executable (--per-exe). exe=\"\" holds kernel threads, unreadable executables and executables with no process left.",
);
pub static EXE_CPU: Def = base(
    "scaph_exe_cpu_seconds_total",
    Counter,
    Unit::Seconds,
    "On-CPU time of all processes of one executable (--per-exe).",
);
pub static CGROUP_ENERGY: Def = base(
    "scaph_cgroup_energy_joules_total",
    Counter,
    Unit::Joules,
    "Energy of all processes of one cgroup v2 (--per-cgroup). cgroup=\"\" holds processes of unknown cgroup and cgroups with no process left.",
);
pub static CGROUP_CPU: Def = base(
    "scaph_cgroup_cpu_seconds_total",
    Counter,
    Unit::Seconds,
    "On-CPU time of all processes of one cgroup v2 (--per-cgroup).",
);

pub static CONTAINER_ENERGY: Def = base(
    "scaph_container_energy_joules_total",
    Counter,
    Unit::Joules,
    "Energy of all processes of one container or pod (--containers), exited ones included. container_id=\"\" without pod_uid \
     holds processes outside containers; container_id=\"[others]\" holds containers gone longer than the retention window. \
     Sum of all series plus scaph_idle_energy_joules_total equals scaph_host_energy_joules_total.",
);
pub static CONTAINER_CPU: Def = base(
    "scaph_container_cpu_seconds_total",
    Counter,
    Unit::Seconds,
    "On-CPU time of all processes of one container or pod (--containers); same series as scaph_container_energy_joules_total.",
);

// ---- Carbon (--carbon-intensity or --carbon-intensity-file) ---------------------------

pub static CARBON_INTENSITY: Def = base(
    "scaph_carbon_intensity_grams_per_kilowatt_hour",
    Gauge,
    Unit::None,
    "Carbon intensity of the electricity applied to the latest measurement step, in grams of CO2-equivalent per kWh (--carbon-intensity, or the first line of --carbon-intensity-file).",
);
pub static HOST_CO2: Def = base(
    "scaph_host_co2_grams_total",
    Counter,
    Unit::Grams,
    "Emissions of the host's energy: each step adds its joules of scaph_host_energy_joules_total times the intensity in force then, divided by 3.6e6.",
);
pub static SOCKET_CO2: Def = base(
    "scaph_socket_co2_grams_total",
    Counter,
    Unit::Grams,
    "Emissions of one socket's energy (scaph_socket_energy_joules_total), step by step at the intensity in force.",
);
pub static IDLE_CO2: Def = base(
    "scaph_idle_co2_grams_total",
    Counter,
    Unit::Grams,
    "Emissions of the energy no process claimed. Sum of scaph_process_co2_grams_total plus this equals scaph_host_co2_grams_total.",
);
pub static PROCESS_CO2: Def = base(
    "scaph_process_co2_grams_total",
    Counter,
    Unit::Grams,
    "Emissions of a process's energy, step by step at the intensity in force; same series as scaph_process_energy_joules_total (pid=\"\" holds processes not listed individually).",
);
pub static CONTAINER_CO2: Def = base(
    "scaph_container_co2_grams_total",
    Counter,
    Unit::Grams,
    "Emissions of one container's or pod's energy (--containers); same series as scaph_container_energy_joules_total.",
);

// ---- Scaphandre's names (--scaphandre-compat) -----------------------------------------

pub static C_HOST_POWER: Def = compat(
    "scaph_host_power_microwatts",
    Gauge,
    Unit::Microwatts,
    "Power of the host over the last measurement step, microwatts (Scaphandre name).",
);
pub static C_HOST_ENERGY: Def = compat(
    "scaph_host_energy_microjoules",
    Counter,
    Unit::Microjoules,
    "Energy of the host since scaph started, microjoules (Scaphandre name; wrap-corrected, never decreases).",
);
pub static C_SOCKET_POWER: Def = compat(
    "scaph_socket_power_microwatts",
    Gauge,
    Unit::Microwatts,
    "Power of one socket over the last step, microwatts (Scaphandre name).",
);
pub static C_SOCKET_ENERGY: Def = compat(
    "scaph_socket_energy_microjoules",
    Counter,
    Unit::Microjoules,
    "Energy of one socket since scaph started, microjoules (Scaphandre name).",
);
pub static C_DOMAIN_POWER: Def = compat(
    "scaph_domain_power_microwatts",
    Gauge,
    Unit::Microwatts,
    "Power of one RAPL sub-domain (core, uncore, dram) over the last step, microwatts (Scaphandre name).",
);
pub static C_DOMAIN_ENERGY: Def = compat(
    "scaph_domain_energy_microjoules",
    Counter,
    Unit::Microjoules,
    "Energy of one RAPL sub-domain since scaph started, microjoules (Scaphandre name).",
);
pub static C_PROCESS_POWER: Def = compat(
    "scaph_process_power_consumption_microwatts",
    Gauge,
    Unit::Microwatts,
    "Power attributed to a running process over the last step, microwatts (Scaphandre name).",
);
pub static C_PROCESS_CPU: Def = compat(
    "scaph_process_cpu_usage_percentage",
    Gauge,
    Unit::Percent,
    "CPU use of a running process over the last step, percent of all CPUs of the host (Scaphandre name).",
);
pub static C_PROCESS_MEMORY: Def = compat(
    "scaph_process_memory_bytes",
    Gauge,
    Unit::Bytes,
    "Resident memory of a running process (Scaphandre name).",
);
pub static C_PROCESS_VIRTUAL: Def = compat(
    "scaph_process_memory_virtual_bytes",
    Gauge,
    Unit::Bytes,
    "Virtual memory size of a running process (Scaphandre name).",
);
pub static C_LOAD_ONE: Def = compat(
    "scaph_host_load_avg_one",
    Gauge,
    Unit::None,
    "Load average over 1 minute (Scaphandre name).",
);
pub static C_LOAD_FIVE: Def = compat(
    "scaph_host_load_avg_five",
    Gauge,
    Unit::None,
    "Load average over 5 minutes (Scaphandre name).",
);
pub static C_LOAD_FIFTEEN: Def = compat(
    "scaph_host_load_avg_fifteen",
    Gauge,
    Unit::None,
    "Load average over 15 minutes (Scaphandre name; Scaphandre itself reported the 5-minute value here).",
);
pub static C_MEMORY_TOTAL: Def = compat(
    "scaph_host_memory_total_bytes",
    Gauge,
    Unit::Bytes,
    "Total memory of the host (Scaphandre name).",
);
pub static C_MEMORY_AVAILABLE: Def = compat(
    "scaph_host_memory_available_bytes",
    Gauge,
    Unit::Bytes,
    "Memory available for new work without swapping (MemAvailable; Scaphandre name).",
);
pub static C_MEMORY_FREE: Def = compat(
    "scaph_host_memory_free_bytes",
    Gauge,
    Unit::Bytes,
    "Unused memory (MemFree; Scaphandre name).",
);
pub static C_SWAP_TOTAL: Def = compat(
    "scaph_host_swap_total_bytes",
    Gauge,
    Unit::Bytes,
    "Total swap space (Scaphandre name).",
);
pub static C_SWAP_FREE: Def = compat(
    "scaph_host_swap_free_bytes",
    Gauge,
    Unit::Bytes,
    "Unused swap space (Scaphandre name).",
);
pub static C_DISK_TOTAL: Def = compat(
    "scaph_host_disk_total_bytes",
    Gauge,
    Unit::Bytes,
    "Size of a mounted block-device filesystem, one series per mount (Scaphandre name).",
);
pub static C_DISK_AVAILABLE: Def = compat(
    "scaph_host_disk_available_bytes",
    Gauge,
    Unit::Bytes,
    "Space available to unprivileged users on a mounted block-device filesystem, one series per mount (Scaphandre name).",
);
pub static C_FORKS: Def = compat(
    "scaph_forks_since_boot_total",
    Counter,
    Unit::None,
    "Processes and threads created since boot (Scaphandre name).",
);
pub static C_CONTEXT_SWITCHES: Def = compat(
    "scaph_context_switches_total",
    Counter,
    Unit::None,
    "Context switches since boot, all CPUs (Scaphandre name).",
);
pub static C_PROCS_RUNNING: Def = compat(
    "scaph_processes_running_current",
    Gauge,
    Unit::None,
    "Threads runnable or running right now (Scaphandre name).",
);
pub static C_PROCS_BLOCKED: Def = compat(
    "scaph_processes_blocked_current",
    Gauge,
    Unit::None,
    "Threads blocked waiting for I/O right now (Scaphandre name).",
);
pub static C_SELF_VERSION: Def = compat(
    "scaph_self_version",
    Gauge,
    Unit::None,
    "Version of scaph as major.minor (Scaphandre name; see scaph_build_info for the full version).",
);
pub static C_SELF_CPU: Def = compat(
    "scaph_self_cpu_usage_percent",
    Gauge,
    Unit::Percent,
    "CPU use of scaph itself over the last step, percent of all CPUs (Scaphandre name).",
);
pub static C_SELF_MEMORY: Def = compat(
    "scaph_self_memory_bytes",
    Gauge,
    Unit::Bytes,
    "Resident memory of scaph itself (Scaphandre name).",
);
pub static C_SELF_VIRTUAL: Def = compat(
    "scaph_self_memory_virtual_bytes",
    Gauge,
    Unit::Bytes,
    "Virtual memory size of scaph itself (Scaphandre name).",
);

/// Every definition, default set first.
pub static ALL: &[&Def] = &[
    &BUILD_INFO,
    &SENSOR_INFO,
    &CPUTIME_SOURCE_INFO,
    &COLLECTOR_DURATION,
    &COLLECTOR_SUCCESS,
    &MEASUREMENT_TIMESTAMP,
    &SELF_CPU,
    &SELF_RESIDENT,
    &DROPPED_CPU,
    &DROPPED_SLICES,
    &DROPPED_EXITS,
    &IMPLAUSIBLE_ENERGY,
    &MONOTONICITY_VIOLATIONS,
    &HOST_ENERGY,
    &SOCKET_ENERGY,
    &SOCKET_IDLE_ENERGY,
    &DOMAIN_ENERGY,
    &IDLE_ENERGY,
    &PROCESS_ENERGY,
    &PROCESS_CPU,
    &PROCESS_INFO,
    &EXE_ENERGY,
    &EXE_CPU,
    &CGROUP_ENERGY,
    &CGROUP_CPU,
    &CONTAINER_ENERGY,
    &CONTAINER_CPU,
    &CARBON_INTENSITY,
    &HOST_CO2,
    &SOCKET_CO2,
    &IDLE_CO2,
    &PROCESS_CO2,
    &CONTAINER_CO2,
    &C_HOST_POWER,
    &C_HOST_ENERGY,
    &C_SOCKET_POWER,
    &C_SOCKET_ENERGY,
    &C_DOMAIN_POWER,
    &C_DOMAIN_ENERGY,
    &C_PROCESS_POWER,
    &C_PROCESS_CPU,
    &C_PROCESS_MEMORY,
    &C_PROCESS_VIRTUAL,
    &C_LOAD_ONE,
    &C_LOAD_FIVE,
    &C_LOAD_FIFTEEN,
    &C_MEMORY_TOTAL,
    &C_MEMORY_AVAILABLE,
    &C_MEMORY_FREE,
    &C_SWAP_TOTAL,
    &C_SWAP_FREE,
    &C_DISK_TOTAL,
    &C_DISK_AVAILABLE,
    &C_FORKS,
    &C_CONTEXT_SWITCHES,
    &C_PROCS_RUNNING,
    &C_PROCS_BLOCKED,
    &C_SELF_VERSION,
    &C_SELF_CPU,
    &C_SELF_MEMORY,
    &C_SELF_VIRTUAL,
];

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn unit_suffix(unit: Unit) -> Option<&'static str> {
        match unit {
            Unit::Joules => Some("_joules"),
            Unit::Seconds => Some("_seconds"),
            Unit::Bytes => Some("_bytes"),
            Unit::Grams => Some("_grams"),
            Unit::Microjoules => Some("_microjoules"),
            Unit::Microwatts => Some("_microwatts"),
            Unit::Percent | Unit::None => None,
        }
    }

    #[test]
    fn names_are_unique_and_prefixed() {
        let mut seen = HashSet::new();
        for def in ALL {
            assert!(seen.insert(def.name), "{} defined twice", def.name);
            assert!(def.name.starts_with("scaph_"), "{}", def.name);
            assert!(
                def.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{}",
                def.name
            );
            assert!(
                def.help.ends_with('.'),
                "help of {} should be a sentence",
                def.name
            );
        }
    }

    /// The naming rules promtool checks, applied to the default set.
    #[test]
    fn default_set_follows_prometheus_naming() {
        for def in ALL.iter().filter(|d| !d.compat) {
            let stem = match def.kind {
                Kind::Counter => def
                    .name
                    .strip_suffix("_total")
                    .unwrap_or_else(|| panic!("counter {} lacks _total", def.name)),
                Kind::Gauge => {
                    assert!(
                        !def.name.ends_with("_total"),
                        "gauge {} ends in _total",
                        def.name
                    );
                    def.name
                }
            };
            assert!(
                matches!(
                    def.unit,
                    Unit::Joules | Unit::Seconds | Unit::Bytes | Unit::Grams | Unit::None
                ),
                "{}: not a base unit",
                def.name
            );
            if let Some(suffix) = unit_suffix(def.unit) {
                assert!(
                    stem.ends_with(suffix),
                    "{} should end in {suffix}",
                    def.name
                );
            }
        }
    }

    #[test]
    fn compat_names_carry_their_unit() {
        for def in ALL.iter().filter(|d| d.compat) {
            if let Some(suffix) = unit_suffix(def.unit) {
                assert!(
                    def.name.ends_with(suffix),
                    "{} should end in {suffix}",
                    def.name
                );
            }
        }
    }
}
