//! scaph without root: a throwaway uid (nobody, 65534) holding only the
//! capabilities the DaemonSet and the systemd unit grant, given with
//! `setpriv` as ambient capabilities so they survive the exec. Each
//! capability is then taken away in turn to show what it is for:
//!
//! | removed | effect |
//! |---|---|
//! | CAP_BPF or CAP_PERFMON | the kernel program does not load: one line, procfs mode |
//! | CAP_SYS_PTRACE | `exe` of other users' processes is unknown (empty label) |
//! | CAP_DAC_READ_SEARCH | a root-only `energy_uj` is unreadable: one line, no energy |
//!
//! The energy counter is a fake powercap tree owned by root with
//! `energy_uj` mode 0400, as Linux ≥ 5.10 ships it (CVE-2020-8694).
mod exporter_support;

use std::{
    collections::BTreeSet, fs, os::unix::fs::PermissionsExt as _, path::Path, process::Child,
    time::Duration,
};

use exporter_support::{free_port, http_get, tool, wait_for, Proc};
use scaph_integration_tests::{burn, powercap::FakeRapl, require_root, scaph_binary};

/// What scaph needs, as setpriv spells it.
const NEEDED: [&str; 4] = ["bpf", "perfmon", "sys_ptrace", "dac_read_search"];

/// Who runs scaph.
#[derive(Clone, Copy, Debug)]
enum As {
    /// uid/gid 65534, no supplementary groups.
    Nobody,
    /// uid 0 with only the given capabilities (what the DaemonSet does).
    Root,
}

/// A fake RAPL package whose `energy_uj` only root may read.
fn root_only_rapl() -> FakeRapl {
    let rapl = FakeRapl::start(20.0, 1_000_000);
    let root = rapl.root();
    let mode = |path: &Path, mode: u32| {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod")
    };
    mode(&root, 0o755);
    mode(&root.join("intel-rapl:0"), 0o755);
    mode(&root.join("intel-rapl:0/energy_uj"), 0o400);
    mode(&root.join("intel-rapl:0/name"), 0o444);
    mode(&root.join("intel-rapl:0/max_energy_range_uj"), 0o444);
    rapl
}

/// `scaph --containers prometheus` as `who` with exactly `caps`.
fn start(who: As, caps: &[&str], rapl: &FakeRapl) -> (Proc, u16) {
    let port = free_port();
    let set = std::iter::once("-all".to_owned())
        .chain(caps.iter().map(|c| format!("+{c}")))
        .collect::<Vec<_>>()
        .join(",");
    let mut args: Vec<String> = Vec::new();
    if let As::Nobody = who {
        args.extend(["--reuid=65534", "--regid=65534", "--clear-groups"].map(String::from));
    }
    args.extend([
        format!("--inh-caps={set}"),
        format!("--ambient-caps={set}"),
        format!("--bounding-set={set}"),
    ]);
    args.extend([
        "--".into(),
        scaph_binary().display().to_string(),
        "--containers".into(),
        "--sensor".into(),
        "powercap_rapl".into(),
        "--powercap-root".into(),
        rapl.root().display().to_string(),
        "prometheus".into(),
        "-a".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port.to_string(),
        "--step".into(),
        "1".into(),
    ]);
    let proc = Proc::start("scaph", &tool("setpriv", "util-linux"), &args);
    (proc, port)
}

/// Waits for scaph to serve its first measurement.
fn wait_ready(proc: &mut Proc, port: u16) {
    wait_for("scaph's first measurement", Duration::from_secs(20), || {
        assert!(proc.running(), "scaph exited:\n{}", proc.log());
        let body = http_get(port, "/metrics").ok()?.body;
        body.contains("scaph_cputime_source_info{").then_some(())
    });
}

/// Waits for a scrape where scaph has seen most of the root-owned burner's
/// CPU time (so its metadata was read while it ran). Returns the scrape.
fn scrape_with(proc: &mut Proc, port: u16, other_user: &Child) -> String {
    let prefix = format!(
        "scaph_process_cpu_seconds_total{{pid=\"{}\"",
        other_user.id()
    );
    wait_for(
        "a scrape with the root-owned burner's CPU time",
        Duration::from_secs(20),
        || {
            assert!(proc.running(), "scaph exited:\n{}", proc.log());
            let body = http_get(port, "/metrics").ok()?.body;
            let line = body.lines().find(|l| l.starts_with(&prefix))?;
            let cpu: f64 = line.rsplit(' ').next()?.parse().ok()?;
            (cpu >= 0.5).then_some(body)
        },
    )
}

/// The `exe` label of `pid`'s CPU series.
fn exe_of(body: &str, pid: u32) -> String {
    let needle = format!("scaph_process_cpu_seconds_total{{pid=\"{pid}\"");
    let line = body
        .lines()
        .find(|l| l.starts_with(&needle))
        .expect("series of the pid");
    let start = line.find("exe=\"").map(|i| i + 5).expect("exe label");
    line[start..]
        .split('"')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// uid and effective capabilities of a running process, from /proc.
fn identity(pid: i32) -> (String, String) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().next().unwrap_or("").to_owned())
    };
    (
        field("Uid:").unwrap_or_default(),
        field("CapEff:").unwrap_or_default(),
    )
}

fn without(cap: &str) -> Vec<&'static str> {
    NEEDED.iter().copied().filter(|c| *c != cap).collect()
}

struct Run {
    body: String,
    log: String,
    burner_pid: u32,
    uid: String,
    cap_eff: String,
}

fn run(who: As, caps: &[&str]) -> Run {
    let rapl = root_only_rapl();
    let (mut proc, port) = start(who, caps, &rapl);
    wait_ready(&mut proc, port);
    let mut burner = burn(&["--ms", "1200", "--sleep-ms", "6000"]);
    let body = scrape_with(&mut proc, port, &burner);
    let (uid, cap_eff) = identity(proc.pid());
    let burner_pid = burner.id();
    let _ = burner.kill();
    let _ = burner.wait();
    let log = proc.log();
    eprintln!(
        "--- {who:?} with {caps:?}: uid {uid}, CapEff {cap_eff}; log:\n{}",
        log.trim_end()
    );
    assert!(!log.contains("panicked"), "scaph panicked:\n{log}");
    Run {
        body,
        log,
        burner_pid,
        uid,
        cap_eff,
    }
}

fn source(body: &str) -> &'static str {
    if body.contains("scaph_cputime_source_info{source=\"bpf\"} 1") {
        "bpf"
    } else if body.contains("scaph_cputime_source_info{source=\"procfs\"} 1") {
        "procfs"
    } else {
        "?"
    }
}

/// The DaemonSet's and the unit's capability lists are the set tested here.
#[test]
fn deployed_capabilities_are_the_tested_set() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let daemonset =
        fs::read_to_string(root.join("deploy/kubernetes/daemonset.yaml")).expect("daemonset.yaml");
    let added: BTreeSet<String> = daemonset
        .lines()
        .skip_while(|l| l.trim() != "add:")
        .skip(1)
        .map_while(|l| l.trim().strip_prefix("- ").map(|c| c.to_ascii_lowercase()))
        .collect();
    let unit =
        fs::read_to_string(root.join("deploy/systemd/scaph.service")).expect("scaph.service");
    let ambient: BTreeSet<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("AmbientCapabilities")
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_ascii_lowercase())
        .collect();
    let needed: BTreeSet<String> = NEEDED.iter().map(|c| (*c).to_owned()).collect();
    assert_eq!(added, needed, "DaemonSet capabilities");
    assert_eq!(ambient, needed, "systemd unit capabilities");
    assert!(
        daemonset.contains("- ALL"),
        "the DaemonSet drops everything else"
    );
}

/// nobody + the four capabilities: the kernel program loads, the root-only
/// energy counter is read, root's processes have their exe, containers work.
#[test]
fn nobody_with_the_four_capabilities_measures_everything() {
    require_root();
    let r = run(As::Nobody, &NEEDED);
    assert_eq!(r.uid, "65534", "scaph runs as nobody");
    assert_eq!(
        r.cap_eff, "000000c000080004",
        "exactly DAC_READ_SEARCH, SYS_PTRACE, PERFMON, BPF"
    );
    assert_eq!(source(&r.body), "bpf", "{}", r.log);
    assert!(
        r.body.contains("\nscaph_host_energy_joules_total "),
        "energy from the root-only counter"
    );
    assert_eq!(
        exe_of(&r.body, r.burner_pid),
        scaph_binary()
            .with_file_name("scaph-burn")
            .display()
            .to_string()
    );
    assert!(r
        .body
        .contains("scaph_scrape_collector_success{collector=\"containers\"} 1"));
    assert!(r
        .body
        .contains("scaph_container_cpu_seconds_total{container_id=\"\"}"));
    assert!(
        r.log.trim().lines().all(|l| l.starts_with("scaph ")),
        "no warning: {}",
        r.log
    );
}

/// The DaemonSet runs uid 0 with only these capabilities: the same result.
#[test]
fn uid0_with_only_the_four_capabilities_like_the_daemonset() {
    require_root();
    let r = run(As::Root, &NEEDED);
    assert_eq!(
        (r.uid.as_str(), r.cap_eff.as_str()),
        ("0", "000000c000080004")
    );
    assert_eq!(source(&r.body), "bpf", "{}", r.log);
    assert!(r.body.contains("\nscaph_host_energy_joules_total "));
    assert!(!exe_of(&r.body, r.burner_pid).is_empty());
}

/// Without CAP_BPF (or CAP_PERFMON) the kernel program cannot load: one
/// line says so and scaph measures from /proc.
#[test]
fn without_bpf_or_perfmon_it_falls_back_to_procfs_with_one_line() {
    require_root();
    for cap in ["bpf", "perfmon"] {
        let r = run(As::Nobody, &without(cap));
        assert_eq!(source(&r.body), "procfs", "without {cap}: {}", r.log);
        let lines: Vec<&str> = r
            .log
            .lines()
            .filter(|l| l.contains("falling back to procfs"))
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "without {cap}, one line about the fallback: {}",
            r.log
        );
        assert!(
            r.body.contains("\nscaph_host_energy_joules_total "),
            "energy still measured"
        );
    }
}

/// Without CAP_SYS_PTRACE other users' executables are unknown; without
/// CAP_DAC_READ_SEARCH the root-only counter is: one line, no energy.
#[test]
fn sys_ptrace_gives_exe_and_dac_read_search_gives_energy() {
    require_root();
    let r = run(As::Nobody, &without("sys_ptrace"));
    assert_eq!(source(&r.body), "bpf");
    assert_eq!(
        exe_of(&r.body, r.burner_pid),
        "",
        "exe of a root process without CAP_SYS_PTRACE"
    );
    assert!(r.body.contains("\nscaph_host_energy_joules_total "));

    let r = run(As::Nobody, &without("dac_read_search"));
    assert_eq!(source(&r.body), "bpf");
    assert!(
        !r.body.contains("\nscaph_host_energy_joules_total "),
        "no energy without read access"
    );
    let lines: Vec<&str> = r.log.lines().filter(|l| l.contains("energy_uj")).collect();
    assert_eq!(lines.len(), 1, "one line naming energy_uj: {}", r.log);
    assert!(
        r.body.contains("scaph_process_cpu_seconds_total{"),
        "CPU time still measured"
    );
}
