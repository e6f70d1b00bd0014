//! Golden files: every exporter renders one fixed snapshot, and the result
//! must match the file under `src/exporters/golden/` byte for byte.
//! `SCAPH_UPDATE_GOLDEN=1 cargo test -p scaph-agent golden` rewrites them;
//! review the diff before committing.
use std::{
    path::PathBuf,
    time::{Duration, UNIX_EPOCH},
};

use super::{
    json::{self, Consumers},
    stdout::{render, render_raw, Selection},
};
use crate::{
    cputime::{CpuTimeMethod, LossCounters, ProcessKey},
    host::{Activity, Disk, HostStats, LoadAverage, Memory, ProcessMemory, SelfStats},
    metrics::{encode, MetricsConfig, MetricsState},
    sensors::{DomainKind, EnergyOrigin},
    snapshot::{DomainSnapshot, Energy, ProcessSnapshot, SensorInfo, Snapshot, SocketSnapshot},
};

fn energy(joules_total: f64, watts: f64) -> Energy {
    Energy {
        joules_total,
        watts,
    }
}

fn domain(kind: DomainKind, name: &str, joules: f64, watts: f64) -> DomainSnapshot {
    DomainSnapshot {
        kind,
        name: name.into(),
        energy: energy(joules, watts),
    }
}

#[allow(clippy::too_many_arguments)]
fn process(
    pid: u32,
    comm: &str,
    exe: Option<&str>,
    cmdline: &[&str],
    cgroup: &str,
    cpu: (f64, f64),
    e: (f64, f64),
    exited: bool,
) -> ProcessSnapshot {
    ProcessSnapshot {
        key: ProcessKey {
            pid,
            start_ns: u64::from(pid) * 1000,
        },
        comm: comm.into(),
        meta: Some(std::sync::Arc::new(crate::model::ProcessMeta {
            comm: None,
            exe: exe.map(|e| std::sync::Arc::from(std::path::Path::new(e))),
            cmdline: cmdline.join(" ").into(),
            // As if run by a trusted user (the trust itself is tested in `vm_label`).
            vm_name: crate::vm_label::vm_name(cmdline).map(Into::into),
            cgroup_path: (!cgroup.is_empty()).then(|| std::sync::Arc::from(cgroup)),
        })),
        cgroup_id: Some(u64::from(pid)),
        cpu_seconds_total: cpu.0,
        cpu_ratio: cpu.1,
        energy: Some(energy(e.0, e.1)),
        co2_grams_total: 0.0,
        exited,
        memory: (!exited).then_some(ProcessMemory {
            resident_bytes: u64::from(pid) * 4096,
            virtual_bytes: u64::from(pid) * 65536,
        }),
        workload: None,
    }
}

/// Two sockets, a kernel thread, an exited process, a qemu guest, a command
/// line that needs escaping, and one retired process (5 J); highest power
/// first, as the snapshot orders them.
/// Σ processes (65 J) + retired (5 J) + idle (30 J) = host (100 J).
pub(crate) fn fixture() -> Snapshot {
    Snapshot {
        timestamp: UNIX_EPOCH + Duration::from_millis(1_700_000_000_250),
        interval: Duration::from_secs(2),
        cpu_method: CpuTimeMethod::BpfRuntime,
        sensor: Some(SensorInfo {
            name: "powercap_rapl",
            origin: EnergyOrigin::Measured,
        }),
        host: Some(energy(100.0, 50.0)),
        idle: Some(energy(30.0, 12.5)),
        sockets: vec![
            SocketSnapshot {
                id: 0,
                energy: energy(60.0, 30.0),
                domains: vec![
                    domain(DomainKind::Package, "package-0", 55.0, 27.5),
                    domain(DomainKind::Core, "core", 30.0, 15.0),
                    domain(DomainKind::Uncore, "uncore", 2.0, 1.0),
                    domain(DomainKind::Dram, "dram", 5.0, 2.5),
                ],
                idle: Some(energy(18.0, 7.5)),
            },
            SocketSnapshot {
                id: 1,
                energy: energy(40.0, 20.0),
                domains: vec![
                    domain(DomainKind::Package, "package-1", 38.0, 19.0),
                    domain(DomainKind::Dram, "dram", 2.0, 1.0),
                ],
                idle: Some(energy(12.0, 5.0)),
            },
        ],
        processes: vec![
            process(
                4242,
                "postgres",
                Some("/usr/lib/postgresql/15/bin/postgres"),
                &[
                    "postgres: writer",
                    "-c",
                    "config_file=\"/etc/pg.conf\"\nnext",
                ],
                "/system.slice/postgresql.service",
                (120.5, 1.5),
                (40.0, 25.0),
                false,
            ),
            process(
                5000,
                "qemu-system-x86",
                Some("/usr/bin/qemu-system-x86_64"),
                &[
                    "/usr/bin/qemu-system-x86_64",
                    "-name",
                    "guest=web1,debug-threads=on",
                    "-m",
                    "2048",
                ],
                "/machine.slice/machine-qemu.scope",
                (30.0, 0.5),
                (10.0, 8.0),
                false,
            ),
            process(
                31337,
                "cc1",
                Some("/usr/lib/gcc/x86_64-linux-gnu/12/cc1"),
                &["cc1", "-O2", "x.c"],
                "/user.slice",
                (0.02, 0.01),
                (10.0, 4.0),
                true,
            ),
            process(
                17,
                "ksoftirqd/1",
                None,
                &[],
                "",
                (2.25, 0.01),
                (5.0, 0.5),
                false,
            ),
        ],
        retired_joules: 5.0,
        cpu_idle_ratio: vec![0.5, 0.25, 0.75, 1.0],
        online_cpus: 4,
        losses: LossCounters {
            dropped_ns: 1_500_000,
            dropped_slices: 3,
            dropped_exits: 1,
            mismatches: 0,
        },
        implausible_energy_dropped: 2,
        energy_regressions: 0,
        cputime_ok: true,
        energy_ok: true,
        host_stats: Some(HostStats {
            load: Some(LoadAverage {
                one: 1.5,
                five: 1.25,
                fifteen: 0.75,
            }),
            memory: Some(Memory {
                total: 16 << 30,
                available: 8 << 30,
                free: 4 << 30,
                swap_total: 2 << 30,
                swap_free: 1 << 30,
            }),
            activity: Some(Activity {
                forks_total: 123_456,
                context_switches_total: 987_654_321,
                running: 3,
                blocked: 1,
            }),
            disks: vec![
                Disk {
                    name: "/dev/nvme0n1p2".into(),
                    mount_point: "/".into(),
                    file_system: "ext4".into(),
                    kind: "SSD",
                    removable: false,
                    total_bytes: 500 << 30,
                    available_bytes: 200 << 30,
                },
                Disk {
                    name: "/dev/sda1".into(),
                    mount_point: "/mnt/backup disk".into(),
                    file_system: "xfs".into(),
                    kind: "HDD",
                    removable: true,
                    total_bytes: 2000 << 30,
                    available_bytes: 1500 << 30,
                },
            ],
            complete: true,
        }),
        self_stats: Some(SelfStats {
            cpu_seconds_total: 3.5,
            cpu_ratio: 0.02,
            resident_bytes: 12 << 20,
            virtual_bytes: 300 << 20,
        }),
        carbon_intensity: None,
        co2: None,
        containers: None,
    }
}

/// Compares `actual` with the golden file, or rewrites it when asked to.
fn check(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/exporters/golden")
        .join(name);
    if std::env::var_os("SCAPH_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("writing golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (SCAPH_UPDATE_GOLDEN=1 creates it)", path.display()));
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        panic!(
            "{name} differs from the golden file at line {}:\n  golden: {:?}\n  actual: {:?}\n(SCAPH_UPDATE_GOLDEN=1 rewrites it)",
            first + 1,
            expected.lines().nth(first),
            actual.lines().nth(first)
        );
    }
}

fn prometheus(config: MetricsConfig) -> String {
    let mut state = MetricsState::new(config).untimed();
    encode(&state.update(&fixture()))
}

fn compat_config() -> MetricsConfig {
    MetricsConfig {
        compat: true,
        max_processes: 2,
        cmdline_max_len: 40,
        per_exe: true,
        per_cgroup: true,
        qemu: true,
        containers: None,
    }
}

#[test]
fn golden_prometheus_default() {
    check(
        "prometheus_default.prom",
        &prometheus(MetricsConfig::default()),
    );
}

#[test]
fn golden_prometheus_compat_top2_groups() {
    check("prometheus_compat.prom", &prometheus(compat_config()));
}

#[test]
fn golden_json() {
    let consumers = Consumers {
        max: 10,
        regex: None,
        cmdline_max_len: 0,
    };
    let text = json::line(&fixture(), &consumers).expect("export");
    let value: serde_json::Value = serde_json::from_str(text.trim_end()).expect("valid JSON");
    assert_eq!(value["estimated"], false);
    assert_eq!(text.lines().count(), 1, "one object per line");
    check("json.jsonl", &text);
}

#[test]
fn golden_stdout_summary_and_raw_metrics() {
    check(
        "stdout.txt",
        &render(&fixture(), &Selection::Top(5), |t| t.to_owned()),
    );
    let mut state = MetricsState::new(MetricsConfig::default()).untimed();
    check("stdout_raw.txt", &render_raw(&state.update(&fixture())));
}

/// Σ of the process counters (the others series included) + idle = host.
#[test]
fn exposition_keeps_the_energy_identity() {
    for config in [
        MetricsConfig::default(),
        compat_config(),
        MetricsConfig {
            max_processes: 0,
            ..MetricsConfig::default()
        },
    ] {
        let text = prometheus(config);
        let value = |line: &str| {
            line.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .expect("value")
        };
        let sum = |prefix: &str| {
            text.lines()
                .filter(|l| l.starts_with(prefix))
                .map(value)
                .sum::<f64>()
        };
        let processes = sum("scaph_process_energy_joules_total{");
        let idle = sum("scaph_idle_energy_joules_total ");
        let host = sum("scaph_host_energy_joules_total ");
        assert!(
            (processes + idle - host).abs() < 1e-9,
            "{processes} + {idle} != {host}"
        );
    }
}

/// When promtool is installed (the integration-test setup installs it), the
/// default golden exposition must pass its lint with no finding at all.
#[test]
fn golden_default_passes_promtool_when_available() {
    use std::{io::Write as _, process::Stdio};
    let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!("promtool not installed: skipped");
        return;
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(prometheus(MetricsConfig::default()).as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool");
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && findings.trim().is_empty(),
        "promtool: {findings}"
    );
}

/// A process named by someone hostile: a terminal escape in its name, an
/// exe path, a command line and a VM name far longer than any real one.
fn hostile() -> Snapshot {
    let mut snap = fixture();
    let mut p = snap.processes[0].clone();
    p.key.pid = 666;
    p.comm = "\x1b]0;pwned\x07\r".into();
    let meta = p.meta_mut();
    meta.exe = Some(std::sync::Arc::from(std::path::Path::new(&format!(
        "/tmp/{}",
        "d".repeat(3000)
    ))));
    meta.cmdline = format!("run \x1b[2J{}", "x".repeat(5000)).into();
    meta.vm_name = Some("v".repeat(300).into());
    meta.cgroup_path = Some(format!("/user.slice/{}", "c".repeat(3000)).into());
    snap.processes.insert(0, p);
    snap
}

/// The longest run of one character (the hostile values are runs).
fn longest_run(text: &str) -> usize {
    let (mut best, mut run, mut last) = (0, 0, None);
    for c in text.chars() {
        run = if Some(c) == last { run + 1 } else { 1 };
        last = Some(c);
        best = best.max(run);
    }
    best
}

/// Every exporter shows outside values bounded, with the cut mark, and
/// without control characters (a terminal never sees an escape).
#[test]
fn hostile_values_are_bounded_in_every_exporter() {
    use crate::{
        exporters::{riemann, warp10, Measurement},
        label,
    };
    let snap = hostile();
    let all = MetricsConfig {
        cmdline_max_len: 100,
        ..compat_config()
    };
    let families = MetricsState::new(all.clone()).untimed().update(&snap);
    let measurement = Measurement {
        snapshot: std::sync::Arc::new(snap.clone()),
        families: families.clone(),
    };
    let json = json::line(
        &snap,
        &Consumers {
            max: 10,
            regex: None,
            cmdline_max_len: 100,
        },
    )
    .expect("json");
    let riemann_text: String = riemann::events(&measurement, "h", 60.0)
        .iter()
        .flat_map(|e| e.attributes.iter().filter_map(|a| a.value.clone()))
        .collect::<Vec<_>>()
        .join("\n");
    let outputs = [
        ("prometheus", encode(&families)),
        (
            "prometheus default",
            encode(
                &MetricsState::new(MetricsConfig::default())
                    .untimed()
                    .update(&snap),
            ),
        ),
        (
            "stdout",
            render(&snap, &Selection::Top(5), |t| t.to_owned()),
        ),
        ("stdout raw", render_raw(&families)),
        ("json", json),
        ("riemann", riemann_text),
        ("warp10", warp10::gts_lines(&measurement, "h")),
    ];
    for (name, text) in &outputs {
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{name}: a control character"
        );
        assert!(
            longest_run(text) <= label::PATH_MAX_CHARS,
            "{name}: a value of {} characters",
            longest_run(text)
        );
        assert!(
            !text.contains(&"x".repeat(101)),
            "{name}: cmdline beyond 100"
        );
        assert!(
            !text.contains(&"v".repeat(label::MAX_CHARS + 1)),
            "{name}: vmname"
        );
    }
    let prometheus = &outputs[0].1;
    assert!(prometheus.contains(&format!("vmname=\"{}…\"", "v".repeat(label::MAX_CHARS))));
    assert!(prometheus.contains(&format!("cmdline=\"run \u{fffd}[2J{}…\"", "x".repeat(92))));
    assert!(prometheus.contains("comm=\"\u{fffd}]0;pwned\u{fffd}\u{fffd}\""));
    assert!(outputs[2]
        .1
        .contains(&format!("/tmp/{}…", "d".repeat(label::PATH_MAX_CHARS - 5))));
}
