//! Simulated hosts unlike this 2-CPU, 1-socket VM: 2 and 4 sockets drawing
//! different constant powers, possible > online CPUs, AMD's layout (package
//! and core zones, no DRAM), a laptop's `psys` with an MMIO duplicate of its
//! package, three sockets of which one has every CPU offline, and a pool of
//! this machine's two CPUs alone, both saturated. Each is a table
//! ([`SimHost`]) turned into a powercap tree and a sysfs CPU tree, given to
//! the real `scaph` binary through `--powercap-root` and `--sys-root`.
//!
//! The tables are shared with scaph-agent's unit test `sensors::simulated`
//! (`scaph-agent/src/sensors/simulated/hosts.rs`). This machine's CPUs 0
//! and 1 are placed on the simulated sockets; higher CPU ids exist in the
//! fixture only. On a machine whose online CPUs are not exactly 0 and 1,
//! every test says so and does nothing. A burner pinned to one CPU runs while
//! two niced saturators keep both real CPUs busy, and the test computes what
//! the burner must get from the table, the burner's own CPU time (`wait4`)
//! and, for the proportional policy, the CPUs' busy time in `/proc/stat`;
//! nothing of the expectation comes from scaph.
//!
//! The pools, as the README states them: without psys, each socket's package
//! and DRAM are split over that socket's online CPUs; the package and DRAM of
//! a socket with no online CPU are split over every online CPU; with psys,
//! psys is the host's energy, split over every online CPU. Under the default
//! policy a process gets `W × t / n` of each pool it ran in (`n`: the pool's
//! online CPUs); under the proportional one `W × t / busy`, `busy` being the
//! CPU time of everything that ran on the pool's CPUs per second of wall
//! time (here ≈ the number of real CPUs in the pool, as they are saturated).
use std::{
    fs,
    ops::RangeInclusive,
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

mod exporter_support;

use exporter_support::{scaph, wait_for, Proc};
use scaph_integration_tests::{
    burner_path,
    powercap::{
        hosts::{AMD, AMD_SATURATED, FOUR_SOCKETS, LAPTOP, OFFLINE_SOCKET, TWO_SOCKETS},
        machine_online_cpus, FakeRapl, Pool, SimHost,
    },
    reap, require_root,
};
use serde_json::Value;

/// CPUs of this machine that the fixtures place: a machine whose online
/// CPUs are not exactly these skips every test (see [`machine_fits`]).
/// Every pool but [`AMD_SATURATED`]'s also holds a fixture-only online CPU:
/// were all of a pool's CPUs real, they would all be saturated, and the
/// default policy's clamp (divisor Σt when the measured times exceed the
/// capacity) engages on per-interval timing noise. [`AMD_SATURATED`] measures
/// what that costs; the clamp itself is unit-tested in attribution.rs.
const REAL_CPUS: [u32; 2] = [0, 1];

/// CPU time of the burner, ms: three steps or more, so that the two
/// intervals it starts and ends in weigh little.
const BURN_MS: u64 = 1500;

/// Largest relative error accepted between a burner's energy and the
/// expectation, default policy. Observed on this shared 2-CPU VM, 5 runs of
/// the 5 hosts: -0.28..+0.32 % (with an 0.8 s burner and a load average
/// near 10: -1.1..+1.5 %; the two intervals a burner starts and ends in
/// carry most of the error). With the tables of hosts.rs, 3 runs of the 5
/// hosts: -0.098..+0.130 %.
const BOUND_DEFAULT: RangeInclusive<f64> = -0.01..=0.01;
/// The default policy on [`AMD_SATURATED`], where Σt may exceed the
/// capacity and the clamp would move part of the burner's energy to idle.
/// Observed, 9 runs on this VM (load average 2.4 to 4.3): -0.113..+0.022 %,
/// and the clamp never engaged (every interval of every run kept some idle
/// power, 0.01 to 0.41 W of 64 W: Σt stayed just under the capacity); the
/// error is the same noise as on the other hosts. A loss beyond 0.5 % means
/// the clamp now engages.
const BOUND_SATURATED: RangeInclusive<f64> = -0.005..=0.01;
/// The same for the proportional policy, whose expectation also carries the
/// 10 ms resolution of `/proc/stat`. Observed: -0.08..+0.82 %; with the
/// tables of hosts.rs, 3 runs of the 6 hosts: +0.004..+0.658 %.
const BOUND_PROPORTIONAL: f64 = 0.015;
/// Host and socket energy against watts × Σ intervals (the counters are
/// written every ms by a real-time thread). Observed: -0.06..+0.20 %.
const BOUND_HOST: f64 = 0.005;

/// Per-CPU jiffies from `/proc/stat`: (busy, total), busy being what
/// processes and interrupts used (not idle, iowait or steal).
fn cpu_jiffies() -> Vec<(u64, u64)> {
    let stat = fs::read_to_string("/proc/stat").expect("/proc/stat");
    let mut out = Vec::new();
    for line in stat.lines() {
        let mut words = line.split_whitespace();
        let Some(cpu) = words
            .next()
            .and_then(|w| w.strip_prefix("cpu"))
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        let v: Vec<u64> = words.take(8).filter_map(|w| w.parse().ok()).collect();
        let total: u64 = v.iter().sum();
        let unused = v[3] + v[4] + v.get(7).copied().unwrap_or(0);
        if out.len() <= cpu {
            out.resize(cpu + 1, (0, 0));
        }
        out[cpu] = (total - unused, total);
    }
    out
}

/// Children killed and reaped when dropped (the saturators).
struct Saturators(Vec<Child>);

impl Saturators {
    /// One burner per real CPU at nice 19, so that both stay busy while
    /// other work on the machine keeps its priority. Each is killed when
    /// the thread that started it ends, even if the test binary is killed
    /// before it can drop them.
    fn start() -> Self {
        Self(
            REAL_CPUS
                .iter()
                .map(|cpu| {
                    let mut command = Command::new(burner_path());
                    command
                        .args(["--cpu", &cpu.to_string(), "--ms", "120000"])
                        .stdout(Stdio::null());
                    let parent = std::process::id() as libc::pid_t;
                    // SAFETY: prctl, setpriority and getppid are
                    // async-signal-safe and touch no memory of the parent.
                    unsafe {
                        command.pre_exec(move || {
                            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0
                                || libc::setpriority(libc::PRIO_PROCESS, 0, 19) != 0
                            {
                                return Err(std::io::Error::last_os_error());
                            }
                            // The parent may have died before prctl.
                            if libc::getppid() != parent {
                                return Err(std::io::Error::other("parent gone"));
                            }
                            Ok(())
                        })
                    };
                    command.spawn().expect("starting a saturator")
                })
                .collect(),
        )
    }
}

impl Drop for Saturators {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The complete JSON lines written so far.
fn lines(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| l.ends_with('}'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// What one scaph reported.
struct Report {
    lines: Vec<Value>,
    log: String,
}

impl Report {
    /// Σ interval_seconds of every line: the time the host total covers.
    fn seconds(&self) -> f64 {
        self.lines
            .iter()
            .map(|l| l["interval_seconds"].as_f64().expect("interval_seconds"))
            .sum()
    }

    fn last(&self) -> &Value {
        self.lines.last().expect("a line")
    }

    /// The burner's cumulative energy, from the last line that lists it.
    fn joules_of(&self, pid: u32) -> f64 {
        self.lines
            .iter()
            .flat_map(|l| l["consumers"].as_array().cloned().unwrap_or_default())
            .filter(|c| c["pid"] == pid)
            .filter_map(|c| c["energy_joules"].as_f64())
            .fold(None, |max: Option<f64>, j| {
                Some(max.map_or(j, |m| m.max(j)))
            })
            .unwrap_or_else(|| panic!("burner {pid} never listed:\n{}", self.log))
    }
}

/// One run on `host`: scaph with each policy at once, a burner of BURN_MS of
/// CPU pinned to `cpu`; returns the reports (default, proportional), the
/// burner's pid, its CPU seconds from `wait4` and each CPU's busy CPUs-worth
/// over the burner's life (from /proc/stat).
fn run(rapl: &FakeRapl, cpu: u32) -> ([Report; 2], u32, f64, Vec<f64>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let _saturators = Saturators::start();
    let (powercap, sys) = (rapl.root(), rapl.sys_root());
    let mut scaphs: Vec<(Proc, std::path::PathBuf)> = ["unattributed", "proportional"]
        .iter()
        .map(|policy| {
            let file = dir.path().join(format!("{policy}.jsonl"));
            let proc = scaph(&[
                "--no-header",
                "--powercap-root",
                powercap.to_str().expect("utf-8"),
                "--sys-root",
                sys.to_str().expect("utf-8"),
                "--sensor",
                "powercap_rapl",
                "--idle-policy",
                policy,
                "json",
                "-s",
                "0",
                "--step-nano",
                "500000000",
                "--max-top-consumers",
                "10",
                "--process-regex",
                "scaph-burn",
                "-f",
                file.to_str().expect("utf-8"),
            ]);
            (proc, file)
        })
        .collect();
    for (proc, file) in &mut scaphs {
        wait_for("two JSON lines", Duration::from_secs(30), || {
            assert!(proc.running(), "scaph exited early:\n{}", proc.log());
            (lines(file).len() >= 2).then_some(())
        });
    }
    let before = cpu_jiffies();
    let burner = Command::new(burner_path())
        .args(["--cpu", &cpu.to_string(), "--ms", &BURN_MS.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .expect("starting the burner");
    let (pid, ns) = reap(burner);
    let after = cpu_jiffies();
    let seen: Vec<usize> = scaphs.iter().map(|(_, f)| lines(f).len()).collect();
    let start = Instant::now();
    for ((proc, file), seen) in scaphs.iter_mut().zip(seen) {
        wait_for("two more JSON lines", Duration::from_secs(30), || {
            assert!(proc.running(), "scaph exited early:\n{}", proc.log());
            (lines(file).len() >= seen + 2).then_some(())
        });
    }
    eprintln!("waited {:?} for the exit to be reported", start.elapsed());
    let busy = before
        .iter()
        .zip(&after)
        .map(|(b, a)| (a.0 - b.0) as f64 / (a.1 - b.1).max(1) as f64)
        .collect();
    let reports = scaphs
        .into_iter()
        .map(|(mut proc, file)| {
            proc.signal(libc::SIGINT);
            let status = proc.wait(Duration::from_secs(10));
            assert!(status.success(), "{}", proc.log());
            Report {
                lines: lines(&file),
                log: proc.log(),
            }
        })
        .collect::<Vec<_>>()
        .try_into()
        .unwrap_or_else(|_| unreachable!());
    (reports, pid, ns as f64 / 1e9, busy)
}

/// Whether this machine's online CPUs are exactly [`REAL_CPUS`], which
/// every table places; if not, says why the test does nothing.
fn machine_fits(host: &SimHost) -> bool {
    let online = machine_online_cpus();
    if online == REAL_CPUS {
        return true;
    }
    eprintln!(
        "SKIPPED {}: the tables place this machine's CPUs {REAL_CPUS:?}, but its \
         online CPUs are {online:?}; the expectation would be wrong",
        host.name
    );
    false
}

/// Runs `host` with the burner on `cpu` and checks host, sockets and burner;
/// `default` bounds the burner's relative error under the default policy.
fn check(host: &SimHost, cpu: u32, default: RangeInclusive<f64>) {
    require_root();
    if !machine_fits(host) {
        return;
    }
    let rapl = FakeRapl::host(host);
    let ([default_report, proportional], pid, cpu_secs, busy) = run(&rapl, cpu);
    eprintln!(
        "{}: burner on CPU {cpu}, {cpu_secs:.4} CPU s (wait4), CPUs busy {busy:.3?}",
        host.name
    );

    for (policy, report) in [
        ("default", &default_report),
        ("proportional", &proportional),
    ] {
        let secs = report.seconds();
        let host_j = report.last()["host"]["energy_joules"]
            .as_f64()
            .expect("host energy");
        let want = host.watts() * secs;
        let err = (host_j - want) / want;
        eprintln!(
            "  {policy}: host {host_j:.3} J, want {want:.3} J ({:+.3} %)",
            err * 100.0
        );
        assert!(err.abs() <= BOUND_HOST, "{policy}: host\n{}", report.log);
        for socket in host.sockets {
            let got = report.last()["sockets"]
                .as_array()
                .expect("sockets")
                .iter()
                .find(|s| s["id"] == socket.id)
                .and_then(|s| s["energy_joules"].as_f64())
                .unwrap_or_else(|| panic!("socket {} missing: {}", socket.id, report.last()));
            let want = socket.watts() * secs;
            let err = (got - want) / want;
            eprintln!(
                "  {policy}: socket {} {got:.3} J, want {want:.3} J ({:+.3} %)",
                socket.id,
                err * 100.0
            );
            assert!(err.abs() <= BOUND_HOST, "{policy}: socket {}", socket.id);
        }
    }

    // Intervals in which the default policy's clamp engaged: Σt reached
    // the capacity, nothing was left idle.
    let idle: Vec<f64> = default_report
        .lines
        .iter()
        .filter_map(|l| l["idle"]["power_watts"].as_f64())
        .collect();
    eprintln!(
        "  default: {} of {} intervals with no idle energy, idle watts {idle:.3?}",
        idle.iter().filter(|&&w| w <= 0.0).count(),
        idle.len()
    );

    // The expectations: each pool the burner's CPU belongs to.
    let mine: Vec<Pool> = host
        .pools()
        .into_iter()
        .filter(|p| p.cpus.contains(&cpu))
        .collect();
    let want_default: f64 = mine
        .iter()
        .map(|p| p.watts * cpu_secs / p.cpus.len() as f64)
        .sum();
    let want_proportional: f64 = mine
        .iter()
        .map(|p| {
            let busy: f64 = p
                .cpus
                .iter()
                .filter_map(|&c| busy.get(c as usize).filter(|_| REAL_CPUS.contains(&c)))
                .sum();
            p.watts * cpu_secs / busy
        })
        .sum();
    for (policy, report, want, bound) in [
        ("default", &default_report, want_default, default),
        (
            "proportional",
            &proportional,
            want_proportional,
            -BOUND_PROPORTIONAL..=BOUND_PROPORTIONAL,
        ),
    ] {
        let got = report.joules_of(pid);
        let err = (got - want) / want;
        eprintln!(
            "  {policy}: burner {got:.4} J, want {want:.4} J ({:+.3} %)",
            err * 100.0
        );
        assert!(
            bound.contains(&err),
            "{}: {policy} policy gave the burner {got:.4} J, expected {want:.4} J ({:+.2} %)",
            host.name,
            err * 100.0
        );
    }
    assert_eq!(
        host.socket_of(cpu).cpus.iter().find(|c| c.0 == cpu),
        Some(&(cpu, true))
    );
}

#[test]
fn two_sockets_each_split_over_its_own_cpus() {
    check(&TWO_SOCKETS, 1, BOUND_DEFAULT);
}

#[test]
fn four_sockets_with_real_cpus_on_sockets_2_and_3() {
    check(&FOUR_SOCKETS, 0, BOUND_DEFAULT);
}

#[test]
fn amd_without_dram_and_offline_cpus() {
    check(&AMD, 1, BOUND_DEFAULT);
}

#[test]
fn laptop_psys_is_the_host_and_mmio_is_not_added() {
    check(&LAPTOP, 0, BOUND_DEFAULT);
}

#[test]
fn socket_without_online_cpu_is_split_over_all_cpus() {
    check(&OFFLINE_SOCKET, 0, BOUND_DEFAULT);
}

/// Both CPUs of the pool real and saturated: the measured CPU time of an
/// interval can exceed its capacity (interval × 2), the default policy then
/// divides by Σt, and the burner loses that part to idle.
#[test]
fn amd_with_only_saturated_real_cpus_loses_to_the_clamp() {
    check(&AMD_SATURATED, 1, BOUND_SATURATED);
}
