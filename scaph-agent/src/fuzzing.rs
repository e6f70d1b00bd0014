//! Entry points for the fuzz targets (`fuzz/`, run by `cargo xtask fuzz`):
//! one function per parser of outside input, taking raw bytes as the file
//! or command line would hold them. Each calls the real parser and checks
//! what must hold of its result; a panic is a crash for the fuzzer.
//!
//! Not an API: hidden from the documentation, kept in step with the parsers.
use std::time::Duration;

use procfs::{process::StatM, FromBufRead as _, FromRead as _, ProcessCGroups};

use crate::{
    containers::parse as cgroup,
    cputime::{
        meta::{parse_cmdline, pick_cgroup_path, CMDLINE_READ_MAX},
        pidstat::parse_stat,
        procfs::{parse_idle_ticks, MAX_CPUS},
    },
    host,
    sensors::{
        counter::{CounterUpdate, EnergyCounter, MAX_PLAUSIBLE_WATTS},
        powercap::{parse_max_range, parse_uj},
    },
    vm_label,
};

/// A fuzz target's entry point.
pub type Target = fn(&[u8]);

/// Every target, by name (the names of `fuzz/fuzz_targets/*.rs` and `fuzz/seeds/*`).
pub const TARGETS: &[(&str, Target)] = &[
    ("proc_pid_stat", proc_pid_stat),
    ("proc_stat", proc_stat),
    ("cmdline", cmdline),
    ("cgroup", cgroup_file),
    ("qemu_argv", qemu_argv),
    ("powercap", powercap),
    ("host_files", host_files),
    ("mounts", mounts),
    ("mountinfo", mountinfo),
];

/// `/proc/PID/stat`, as the procfs CPU-time source and the host statistics read it.
pub fn proc_pid_stat(data: &[u8]) {
    if let Some(stat) = parse_stat(data) {
        let start = stat.comm.as_ptr() as usize - data.as_ptr() as usize;
        assert!(
            start + stat.comm.len() <= data.len(),
            "comm outside the line"
        );
    }
}

/// `/proc/stat`: idle ticks per CPU and the scheduler counters.
pub fn proc_stat(data: &[u8]) {
    let idle = parse_idle_ticks(data);
    assert!(idle.len() <= MAX_CPUS, "{} CPUs", idle.len());
    if let Ok(stats) = host::kernel_stats(data) {
        let _ = host::activity(&stats);
    }
}

/// `/proc/PID/cmdline`: the bounded line kept for each `--cmdline-max-len`,
/// and the whole arguments VM detection reads.
pub fn cmdline(data: &[u8]) {
    for max in [0, 1, 128, CMDLINE_READ_MAX] {
        let (shown, args) = parse_cmdline(data, max);
        // `max` characters, then at most the cut mark.
        assert!(shown.chars().count() <= max + 1, "{max}: {shown:?}");
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert!(args.len() <= CMDLINE_READ_MAX / 2 + 1);
        for arg in &args {
            assert!(!arg.is_empty() && !arg.contains('\0'), "{arg:?}");
        }
    }
}

/// `/proc/PID/cgroup` (through the procfs crate), the path picked from it,
/// and that path (or the raw bytes as a path) read as container and pod.
pub fn cgroup_file(data: &[u8]) {
    if let Ok(groups) = ProcessCGroups::from_buf_read(data) {
        if let Some(path) = pick_cgroup_path(&groups.0) {
            for trees in trees() {
                check_labels(&cgroup::parse(&path, &trees));
            }
        }
    }
    let raw = String::from_utf8_lossy(data);
    for trees in trees() {
        let labels = cgroup::parse(&raw, &trees);
        check_labels(&labels);
        // Only a user's own subtree has an owner, and only with --containers-rootless.
        if !trees.rootless || !raw.contains("user@") {
            assert_eq!(labels.owner_uid, None, "{raw:?}");
        }
    }
}

/// The runtime trees a cgroup is read against: the default, with
/// `--containers-rootless`, and with a nesting prefix.
fn trees() -> [cgroup::Trees; 3] {
    [
        cgroup::Trees::rootful(),
        cgroup::Trees {
            rootless: true,
            prefixes: Vec::new(),
        },
        cgroup::Trees {
            rootless: false,
            prefixes: vec!["/lxc.payload.ct1".into()],
        },
    ]
}

fn check_labels(labels: &cgroup::CgroupLabels) {
    if let Some(id) = &labels.container_id {
        assert!(
            id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "container id {id:?}"
        );
    }
    if let Some(uid) = &labels.pod_uid {
        assert!(!uid.is_empty() && !uid.contains('/'), "pod uid {uid:?}");
    }
}

/// A qemu command line (NUL-separated, as in `/proc/PID/cmdline`) to a VM name.
pub fn qemu_argv(data: &[u8]) {
    let (_, args) = parse_cmdline(data, 0);
    let name = vm_label::vm_name(&args);
    assert!(name.is_none() || vm_label::is_qemu(&args));
    if let Some(name) = name {
        assert!(!name.is_empty());
        if let Some(dir) = vm_label::as_dir_name(&name) {
            assert!(
                !dir.contains('/') && dir != "." && dir != "..",
                "directory {dir:?}"
            );
        }
    }
}

/// powercap files: the first line is `max_energy_range_uj`, each following
/// one an `energy_uj` reading one second after the previous. The counter
/// never reports more than the range allows, nor more than the plausible power.
pub fn powercap(data: &[u8]) {
    let mut lines = data.split(|&b| b == b'\n');
    let max_range = parse_max_range(&String::from_utf8_lossy(lines.next().unwrap_or_default()));
    let mut counter = EnergyCounter::new(max_range.unwrap_or(u64::MAX));
    let path = std::path::Path::new("energy_uj");
    for line in lines {
        let Ok(value) = parse_uj(path, line, true) else {
            continue;
        };
        if let CounterUpdate::Delta(delta) = counter.update(value, Duration::from_secs(1)) {
            assert!(
                delta as f64 <= MAX_PLAUSIBLE_WATTS * 1e6,
                "{delta} µJ in 1 s"
            );
            assert!(delta <= max_range.unwrap_or(u64::MAX));
        }
    }
}

/// `/proc/loadavg`, `/proc/meminfo` and `/proc/PID/statm`.
pub fn host_files(data: &[u8]) {
    let _ = host::load_average(data);
    if let Ok(info) = host::meminfo(data) {
        let _ = host::memory(&info);
    }
    if let Ok(statm) = StatM::from_read(data) {
        let _ = host::memory_of(&statm, 4096);
    }
}

/// Mount points as written in `mounts` and `mountinfo`: unescaped.
pub fn mounts(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    assert!(host::unescape_mount(&text).len() <= text.len());
}

/// `/proc/self/mountinfo` through the procfs crate, line by line: block
/// devices and their unescaped mount points.
pub fn mountinfo(data: &[u8]) {
    // Both ways of ending: whole, or cut at the read bound (odd lengths).
    let mounts = host::mount_infos(data, data.len() % 2 == 1);
    for (device, mount_point, _) in host::block_mounts(&mounts) {
        assert!(device.starts_with("/dev/"));
        assert!(mount_point.len() <= data.len());
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, path::Path};

    use super::*;

    /// Every seed of the fuzz corpus goes through its target without a panic
    /// (the fuzzer starts from them; a failing seed would stop it at once).
    #[test]
    fn every_seed_passes_its_target() {
        let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
        let mut count = 0;
        for (name, target) in TARGETS {
            let dir = seeds.join(name);
            let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            for entry in entries {
                let path = entry.expect("seed entry").path();
                target(&fs::read(&path).expect("reading a seed"));
                count += 1;
            }
        }
        assert!(count >= 2 * TARGETS.len(), "only {count} seeds");
    }
}
