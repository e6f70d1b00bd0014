//! The labels every collector shares: a process's own (`pid`, `comm`,
//! `exe`, `vmname`), bounded (see [`crate::label`]), and what a collector
//! needs to know to add container labels. A leaf: collectors import it,
//! it imports no collector.
use super::MetricsConfig;
use crate::{
    label,
    snapshot::{ProcessSnapshot, Snapshot},
};

pub type Labels = Vec<(&'static str, String)>;

/// Container labels are on (`--containers`): the snapshot's processes carry
/// them (see [`ProcessSnapshot::workload`]).
#[derive(Clone, Copy, Debug)]
pub struct ContainerContext<'a> {
    /// For Scaphandre's `kubernetes_node_name`.
    pub node_name: Option<&'a str>,
}

/// `pid`, `comm`, `exe` (full path or empty), and `vmname` for qemu guests
/// with `--qemu`; each value bounded (see [`crate::label`]).
#[must_use]
pub fn process_labels(p: &ProcessSnapshot, config: &MetricsConfig) -> Labels {
    let mut labels = vec![
        ("pid", p.key.pid.to_string()),
        ("comm", label::value(&p.comm)),
        ("exe", exe(p)),
    ];
    if config.qemu {
        if let Some(vm) = vm_name(p) {
            labels.push(("vmname", vm));
        }
    }
    labels
}

/// The executable's path (empty when unknown), bounded.
#[must_use]
pub fn exe(p: &ProcessSnapshot) -> String {
    p.exe()
        .map(|e| label::path(&e.to_string_lossy()))
        .unwrap_or_default()
}

/// The command line, cut to `max` characters (the cut mark ends a cut one).
#[must_use]
pub fn cmdline(p: &ProcessSnapshot, max: usize) -> String {
    label::bound(p.cmdline(), max).into_owned()
}

/// The VM name of a process trusted to be a qemu/KVM VM (see [`crate::vm_label`]), bounded.
#[must_use]
pub fn vm_name(p: &ProcessSnapshot) -> Option<String> {
    p.vm_name().map(|name| label::value(name))
}

/// Number of CPUs, for percentages of the whole host.
#[must_use]
pub fn cpu_count(snap: &Snapshot) -> f64 {
    if !snap.cpu_idle_ratio.is_empty() {
        return snap.cpu_idle_ratio.len() as f64;
    }
    // SAFETY: sysconf has no preconditions.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if online > 0 {
        online as f64
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(comm: &str, cmdline: &str, vm_name: Option<&str>) -> ProcessSnapshot {
        ProcessSnapshot {
            key: crate::snapshot::ProcessKey {
                pid: 7,
                start_ns: 1,
            },
            comm: comm.into(),
            meta: Some(std::sync::Arc::new(crate::model::ProcessMeta {
                cmdline: cmdline.into(),
                vm_name: vm_name.map(Into::into),
                ..crate::model::ProcessMeta::default()
            })),
            cgroup_id: None,
            cpu_seconds_total: 0.0,
            cpu_ratio: 0.0,
            energy: None,
            co2_grams_total: 0.0,
            exited: false,
            memory: None,
            workload: None,
        }
    }

    #[test]
    fn cmdline_is_bounded_in_characters() {
        let p = process("x", "/usr/bin/é --flag value", None);
        assert_eq!(cmdline(&p, 100), "/usr/bin/é --flag value");
        assert_eq!(cmdline(&p, 10), "/usr/bin/é…");
        assert_eq!(cmdline(&p, 0), "…");
    }

    /// Labels show the trusted VM name only, never one read from the command line.
    #[test]
    fn vmname_only_for_trusted_vms() {
        let config = MetricsConfig {
            qemu: true,
            ..MetricsConfig::default()
        };
        let vm = process("qemu-system-x86", "", Some("web1"));
        assert!(process_labels(&vm, &config).contains(&("vmname", "web1".into())));
        let forged = process(
            "qemu-system-x86",
            "qemu-system-x86_64 -name guest=web1",
            None,
        );
        assert!(process_labels(&forged, &config)
            .iter()
            .all(|(name, _)| *name != "vmname"));
        let off = MetricsConfig {
            qemu: false,
            ..MetricsConfig::default()
        };
        assert!(process_labels(&vm, &off)
            .iter()
            .all(|(name, _)| *name != "vmname"));
    }

    #[test]
    fn outside_values_are_bounded() {
        let mut p = process("evil\x1b[31m", "", Some(&"v".repeat(300)));
        p.meta_mut().exe = Some(std::sync::Arc::from(std::path::Path::new(&format!(
            "/{}",
            "d".repeat(2000)
        ))));
        let config = MetricsConfig {
            qemu: true,
            ..MetricsConfig::default()
        };
        let labels = process_labels(&p, &config);
        let get = |name: &str| {
            labels
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(get("comm"), "evil\u{fffd}[31m");
        assert_eq!(get("exe").chars().count(), label::PATH_MAX_CHARS + 1);
        assert!(get("exe").ends_with(label::CUT));
        assert_eq!(get("vmname").chars().count(), label::MAX_CHARS + 1);
    }
}
