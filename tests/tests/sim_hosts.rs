//! Simulated hosts unlike this 2-CPU, 1-socket VM: 2 and 4 sockets drawing
//! different constant powers, possible > online CPUs, AMD's layout (package
//! and core zones, no DRAM), a laptop's `psys` with an MMIO duplicate of its
//! package, and a socket whose CPUs are all offline. Each is a table
//! ([`SimHost`]) turned into a powercap tree and a sysfs CPU tree, given to
//! the real `scaph` binary through `--powercap-root` and `--sys-root`.
//!
//! This machine's CPUs 0 and 1 are placed on the simulated sockets; higher
//! CPU ids exist in the fixture only. A burner pinned to one CPU runs while
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
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

mod exporter_support;

use exporter_support::{scaph, wait_for, Proc};
use scaph_integration_tests::{
    burner_path,
    powercap::{FakeRapl, SimHost, SimSocket, MAX_RANGE_UJ},
    reap, require_root,
};
use serde_json::Value;

/// 1000 J: every counter wraps during a run (see `FakeRapl::host`), and at
/// 77 W or less no zone moves a whole range in the 13 s a stalled cycle on
/// this shared VM would need to miss a wrap (a 100 J range once lost one).
const WRAPPING: u64 = 1_000_000_000;

const TWO_SOCKETS: SimHost = SimHost {
    name: "2 sockets, Intel, 1 offline CPU per socket, MMIO duplicate",
    sockets: &[
        SimSocket {
            id: 0,
            cpus: &[(0, true), (2, true), (4, false)],
            package: 30.0,
            dram: Some(5.0),
            core: Some(20.0),
            uncore: Some(2.0),
        },
        SimSocket {
            id: 1,
            cpus: &[(1, true), (3, true), (5, false)],
            package: 50.0,
            dram: Some(7.0),
            core: Some(30.0),
            uncore: None,
        },
    ],
    psys: None,
    mmio: true,
    max_range_uj: WRAPPING,
};

const FOUR_SOCKETS: SimHost = SimHost {
    name: "4 sockets, CPU 0 on socket 2 and CPU 1 on socket 3",
    sockets: &[
        SimSocket {
            id: 0,
            cpus: &[(2, true), (3, true)],
            package: 10.0,
            dram: Some(1.0),
            core: None,
            uncore: None,
        },
        SimSocket {
            id: 1,
            cpus: &[(4, true), (5, true)],
            package: 20.0,
            dram: Some(2.0),
            core: None,
            uncore: None,
        },
        SimSocket {
            id: 2,
            cpus: &[(0, true), (6, true)],
            package: 40.0,
            dram: Some(4.0),
            core: None,
            uncore: None,
        },
        SimSocket {
            id: 3,
            cpus: &[(1, true), (7, true), (8, true), (9, true), (10, false)],
            package: 70.0,
            dram: Some(7.0),
            core: None,
            uncore: None,
        },
    ],
    psys: None,
    mmio: false,
    max_range_uj: WRAPPING,
};

const AMD: SimHost = SimHost {
    name: "AMD: package and core zones, no DRAM, 8 possible CPUs, 3 online",
    sockets: &[SimSocket {
        id: 0,
        cpus: &[
            (0, true),
            (1, true),
            (2, true),
            (3, false),
            (4, false),
            (5, false),
            (6, false),
            (7, false),
        ],
        package: 64.0,
        dram: None,
        core: Some(40.0),
        uncore: None,
    }],
    psys: None,
    mmio: false,
    max_range_uj: MAX_RANGE_UJ,
};

const LAPTOP: SimHost = SimHost {
    name: "laptop: psys, package with core, uncore and DRAM, MMIO duplicate",
    sockets: &[SimSocket {
        id: 0,
        cpus: &[(0, true), (1, true), (2, true), (3, true)],
        package: 15.0,
        dram: Some(2.0),
        core: Some(8.0),
        uncore: Some(3.0),
    }],
    psys: Some(28.0),
    mmio: true,
    max_range_uj: WRAPPING,
};

const OFFLINE_SOCKET: SimHost = SimHost {
    name: "2 sockets, every CPU of socket 1 offline",
    sockets: &[
        SimSocket {
            id: 0,
            cpus: &[(0, true), (1, true), (4, true)],
            package: 30.0,
            dram: Some(4.0),
            core: None,
            uncore: None,
        },
        SimSocket {
            id: 1,
            cpus: &[(2, false), (3, false)],
            package: 20.0,
            dram: Some(3.0),
            core: None,
            uncore: None,
        },
    ],
    psys: None,
    mmio: false,
    max_range_uj: WRAPPING,
};

/// CPUs of this machine that the fixtures place (the VM has exactly these).
/// Every pool also holds a fixture-only online CPU: were all of a pool's
/// CPUs real, they would all be saturated, and the default policy's clamp
/// (divisor Σt when the measured times exceed the capacity) engages on
/// per-interval timing noise: it once cost the burner 1.24 % (AMD host with
/// CPUs 0 and 1 only). The clamp is attribution.rs's, unit-tested there.
const REAL_CPUS: [u32; 2] = [0, 1];

/// CPU time of the burner, ms: three steps or more, so that the two
/// intervals it starts and ends in weigh little.
const BURN_MS: u64 = 1500;

/// Largest relative error accepted between a burner's energy and the
/// expectation, default policy. Observed on this shared 2-CPU VM, 5 runs of
/// the 5 hosts: -0.28..+0.32 % (with an 0.8 s burner and a load average
/// near 10: -1.1..+1.5 %; the two intervals a burner starts and ends in
/// carry most of the error).
const BOUND_DEFAULT: f64 = 0.01;
/// The same for the proportional policy, whose expectation also carries the
/// 10 ms resolution of `/proc/stat`. Observed: -0.08..+0.82 %.
const BOUND_PROPORTIONAL: f64 = 0.015;
/// Host and socket energy against watts × Σ intervals (the counters are
/// written every ms by a real-time thread). Observed: -0.06..+0.20 %.
const BOUND_HOST: f64 = 0.005;

/// A pool of the expectation: watts, and the fixture's online CPUs it is split over.
struct Pool {
    watts: f64,
    cpus: Vec<u32>,
}

/// The pools of `host`, from the table alone (see the module doc).
fn pools(host: &SimHost) -> Vec<Pool> {
    if let Some(watts) = host.psys {
        return vec![Pool {
            watts,
            cpus: host.online(),
        }];
    }
    let mut pools: Vec<Pool> = host
        .sockets
        .iter()
        .filter(|s| !s.online().is_empty())
        .map(|s| Pool {
            watts: s.watts(),
            cpus: s.online(),
        })
        .collect();
    let orphans: f64 = host
        .sockets
        .iter()
        .filter(|s| s.online().is_empty())
        .map(SimSocket::watts)
        .sum();
    if orphans > 0.0 {
        pools.push(Pool {
            watts: orphans,
            cpus: host.online(),
        });
    }
    pools
}

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
    /// other work on the machine keeps its priority.
    fn start() -> Self {
        Self(
            REAL_CPUS
                .iter()
                .map(|cpu| {
                    Command::new("nice")
                        .args(["-n", "19"])
                        .arg(burner_path())
                        .args(["--cpu", &cpu.to_string(), "--ms", "120000"])
                        .stdout(Stdio::null())
                        .spawn()
                        .expect("starting a saturator")
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

/// Runs `host` with the burner on `cpu` and checks host, sockets and burner.
fn check(host: &SimHost, cpu: u32) {
    require_root();
    let rapl = FakeRapl::host(host);
    let ([default, proportional], pid, cpu_secs, busy) = run(&rapl, cpu);
    eprintln!(
        "{}: burner on CPU {cpu}, {cpu_secs:.4} CPU s (wait4), CPUs busy {busy:.3?}",
        host.name
    );

    for (policy, report) in [("default", &default), ("proportional", &proportional)] {
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

    // The expectations: each pool the burner's CPU belongs to.
    let mine: Vec<Pool> = pools(host)
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
        ("default", &default, want_default, BOUND_DEFAULT),
        (
            "proportional",
            &proportional,
            want_proportional,
            BOUND_PROPORTIONAL,
        ),
    ] {
        let got = report.joules_of(pid);
        let err = (got - want) / want;
        eprintln!(
            "  {policy}: burner {got:.4} J, want {want:.4} J ({:+.3} %)",
            err * 100.0
        );
        assert!(
            err.abs() <= bound,
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
    check(&TWO_SOCKETS, 1);
}

#[test]
fn four_sockets_with_real_cpus_on_sockets_2_and_3() {
    check(&FOUR_SOCKETS, 0);
}

#[test]
fn amd_without_dram_and_offline_cpus() {
    check(&AMD, 1);
}

#[test]
fn laptop_psys_is_the_host_and_mmio_is_not_added() {
    check(&LAPTOP, 0);
}

#[test]
fn socket_without_online_cpu_is_split_over_all_cpus() {
    check(&OFFLINE_SOCKET, 0);
}
