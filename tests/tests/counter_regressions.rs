//! Counters that would go backwards are held and counted in
//! `scaph_monotonicity_violations_total`. Here a real `scaph prometheus`, on
//! a fake powercap tree and the real kernel program, goes through what
//! makes counters move: a RAPL wrap, a sensor restart, a zone that
//! disappears and comes back, hundreds of short processes, top-N changes,
//! retention expiry. Every scrape must show the count at 0, every counter
//! series not lower than in any earlier scrape (also one that disappeared
//! and came back), and Σ processes + idle = host. Since idle is the
//! remainder, that sum cannot see energy lost from a process; two checks
//! can: a pinned burner gets the energy its `wait4` CPU time gives it, and
//! host − idle matches the kernel's busy time.
mod exporter_support;

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::FileExt as _,
    path::Path,
    process::Command,
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use exporter_support::{free_port, http_get, loopback_prometheus, scaph, wait_for, Proc};
use scaph_agent::{
    agent::Agent,
    attribution::IdlePolicy,
    cputime::{bpf::BpfSource, loader::LoadOptions},
    sensors::{EnergySensor, PowercapSensor, Topology},
};
use scaph_integration_tests::{
    burn,
    powercap::{FakeRapl, MAX_RANGE_UJ},
    reap, require_root,
};

const WATTS: f64 = 25.0;
const VIOLATIONS: &str = "scaph_monotonicity_violations_total";

/// scaph prometheus (step 1 s) with `rapl_args` (the powercap tree, and the
/// fake package's one-socket sysfs where the test needs it), plus `extra`.
fn start(rapl_args: Vec<String>, extra: &[&str]) -> (Proc, u16) {
    let port = free_port();
    let port_arg = port.to_string();
    let mut args = vec!["--sensor", "powercap_rapl"];
    args.extend(rapl_args.iter().map(String::as_str));
    args.extend_from_slice(extra);
    args.extend(loopback_prometheus(&port_arg));
    let mut proc = scaph(&args);
    wait_for("a scrape with host energy", Duration::from_secs(30), || {
        assert!(proc.running(), "scaph exited:\n{}", proc.log());
        let body = http_get(port, "/metrics").ok()?.body;
        body.contains("\nscaph_host_energy_joules_total ")
            .then_some(())
    });
    (proc, port)
}

/// Every scrape of one run, checked as it comes.
#[derive(Default)]
struct Scrapes {
    /// Highest value seen of every counter series, by `name{labels}`.
    highest: HashMap<String, f64>,
    count: usize,
    last: String,
}

impl Scrapes {
    fn take(&mut self, proc: &mut Proc, port: u16) {
        assert!(proc.running(), "scaph exited:\n{}", proc.log());
        let body = http_get(port, "/metrics").expect("scrape").body;
        let mut counters = Vec::new();
        let mut counter_families = Vec::new();
        for line in body.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                if let Some(name) = rest.strip_suffix(" counter") {
                    counter_families.push(name.to_owned());
                }
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let name = series.split('{').next().unwrap_or(series);
            if counter_families.iter().any(|f| f == name) {
                counters.push((series.to_owned(), value.parse::<f64>().expect("a number")));
            }
        }
        assert!(!counters.is_empty(), "no counters in:\n{body}");
        for (series, value) in counters {
            let highest = self.highest.entry(series.clone()).or_insert(value);
            assert!(
                value >= *highest,
                "scrape {}: {series} went from {highest} to {value}\n{}",
                self.count,
                proc.log()
            );
            *highest = value;
        }
        assert_eq!(
            total(&body, VIOLATIONS),
            0.0,
            "scrape {}: counters were held\n{}",
            self.count,
            proc.log()
        );
        let host = total(&body, "scaph_host_energy_joules_total");
        let gap = total(&body, "scaph_process_energy_joules_total")
            + total(&body, "scaph_idle_energy_joules_total")
            - host;
        assert!(
            gap.abs() <= 1e-9 * host.max(1.0),
            "scrape {}: Σ processes + idle − host = {gap} J",
            self.count
        );
        self.count += 1;
        self.last = body;
    }

    /// Scrapes every 250 ms for `how_long`.
    fn during(&mut self, proc: &mut Proc, port: u16, how_long: Duration) {
        let end = Instant::now() + how_long;
        while Instant::now() < end {
            self.take(proc, port);
            thread::sleep(Duration::from_millis(250));
        }
    }
}

/// Σ of every sample of `name`.
fn total(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Host joules and measurement time of a scrape.
fn host_at(body: &str) -> (f64, f64) {
    (
        total(body, "scaph_host_energy_joules_total"),
        total(body, "scaph_measurement_timestamp_seconds"),
    )
}

/// 300 processes of a few ms each, one after the other.
fn churn() -> thread::JoinHandle<()> {
    thread::spawn(|| {
        let status = Command::new("sh")
            .args([
                "-c",
                "i=0; while [ $i -lt 300 ]; do /bin/true; i=$((i+1)); done",
            ])
            .status()
            .expect("sh");
        assert!(status.success());
    })
}

/// The raw counter of the fake package, µJ.
fn raw_uj(rapl: &FakeRapl) -> u64 {
    let text = fs::read_to_string(rapl.root().join("intel-rapl:0/energy_uj")).expect("counter");
    text.trim().parse().expect("µJ")
}

/// A run over a RAPL wrap with hundreds of short processes and three
/// burners in turn on two CPUs; `extra` sets the top-N and retention.
fn wrap_and_churn(extra: &[&str]) -> Scrapes {
    // 20 s of energy before the wrap point: room for a slow start-up.
    let rapl = FakeRapl::start(WATTS, MAX_RANGE_UJ - (WATTS * 20e6) as u64);
    let (mut proc, port) = start(rapl.scaph_args(), extra);
    let mut scrapes = Scrapes::default();
    scrapes.take(&mut proc, port);
    let first = host_at(&scrapes.last);
    // Scraped while quiet until the wrap is 2 s away, so that it falls
    // amid the burners and the churn below (about 8 s).
    let to_wrap = |rapl: &FakeRapl| {
        let left = MAX_RANGE_UJ.saturating_sub(raw_uj(rapl));
        (left as f64 / (WATTS * 1e6), left < MAX_RANGE_UJ / 2)
    };
    let (left, before) = to_wrap(&rapl);
    assert!(before, "scaph started after the wrap");
    eprintln!("scaph started {left:.1} s before the wrap");
    if left > 2.0 {
        scrapes.during(&mut proc, port, Duration::from_secs_f64(left - 2.0));
    }
    assert!(to_wrap(&rapl).1, "the wrap came too early");
    let churner = churn();
    for (i, cpu) in ["0", "1", "0"].into_iter().enumerate() {
        let burner = burn(&["--cpu", cpu, "--ms", "1200"]);
        scrapes.during(&mut proc, port, Duration::from_millis(1300));
        let (pid, ns) = reap(burner);
        eprintln!("burner {i}: pid {pid}, {:.3} s of CPU", ns as f64 / 1e9);
    }
    churner.join().expect("churn");
    scrapes.during(&mut proc, port, Duration::from_secs(4));
    assert!(
        raw_uj(&rapl) < MAX_RANGE_UJ / 2,
        "the counter wrapped during the run"
    );
    let last = host_at(&scrapes.last);
    let watts = (last.0 - first.0) / (last.1 - first.1);
    eprintln!(
        "{} scrapes, {} counter series seen; host {watts:.3} W across the wrap (fake RAPL {WATTS} W)",
        scrapes.count,
        scrapes.highest.len()
    );
    assert!(
        (watts - WATTS).abs() / WATTS < 0.05,
        "host {watts} W: the wrap lost or added energy"
    );
    scrapes
}

/// Every short process gets its own series, which expires 2 s after it
/// exited (`--retention 2s`, the shortest at a 1 s step) into `pid=""`.
#[test]
fn counters_hold_across_wrap_churn_and_expiry() {
    require_root();
    let scrapes = wrap_and_churn(&["--retention", "2s"]);
    let processes = scrapes
        .highest
        .keys()
        .filter(|s| s.starts_with("scaph_process_energy_joules_total{"))
        .count();
    assert!(
        processes > 50,
        "only {processes} process series: no churn seen"
    );
}

/// `--max-processes 2`: the leaders change with each burner, and listed
/// processes are folded into `pid=""`; with `--containers`,
/// `--scaphandre-compat`, `--per-exe` and `--per-cgroup` as well.
#[test]
fn counters_hold_across_top_n_changes() {
    require_root();
    let scrapes = wrap_and_churn(&[
        "--containers",
        "--max-processes",
        "2",
        "--scaphandre-compat",
        "--per-exe",
        "--per-cgroup",
    ]);
    assert!(
        scrapes
            .last
            .contains("scaph_process_energy_joules_total{pid=\"\""),
        "top-N folded processes into the others series"
    );
    assert!(
        scrapes
            .last
            .contains("scaph_container_energy_joules_total{"),
        "container series"
    );
}

/// A package whose counter restarts from a small value (a driver reload),
/// and a DRAM zone that disappears for 2 s and comes back from 0.
#[test]
fn counters_hold_across_a_sensor_restart_and_a_zone_that_comes_back() {
    require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let package = dir.path().join("intel-rapl:0");
    let dram = package.join("intel-rapl:0:0");
    fs::create_dir_all(&dram).expect("zones");
    for (zone, name) in [(&package, "package-0"), (&dram, "dram")] {
        fs::write(zone.join("name"), format!("{name}\n")).expect("name");
        fs::write(
            zone.join("max_energy_range_uj"),
            format!("{MAX_RANGE_UJ}\n"),
        )
        .expect("range");
    }
    write_uj(&package.join("energy_uj"), 50_000_000_000);
    write_uj(&dram.join("energy_uj"), 1_000_000);
    let phase = Arc::new(AtomicU8::new(RUNNING));
    let writer = {
        let (phase, package, dram) = (phase.clone(), package.clone(), dram.clone());
        thread::spawn(move || restarting_writer(&phase, &package, &dram))
    };
    let (mut proc, port) = start(
        vec!["--powercap-root".into(), dir.path().display().to_string()],
        &[],
    );
    let mut scrapes = Scrapes::default();
    for next in [RESTARTED, DRAM_GONE, DRAM_BACK, STOP] {
        scrapes.during(&mut proc, port, Duration::from_millis(2500));
        phase.store(next, Ordering::Relaxed);
    }
    writer.join().expect("writer");
    eprintln!("{} scrapes; scaph said:\n{}", scrapes.count, proc.log());
    assert!(
        total(
            &scrapes.last,
            "scaph_sensor_implausible_deltas_dropped_total"
        ) >= 1.0,
        "the restart was seen as an implausible delta, not as a wrap"
    );
    assert!(
        scrapes.last.contains("domain_name=\"dram\""),
        "the DRAM zone is still exposed"
    );
}

const RUNNING: u8 = 0;
const RESTARTED: u8 = 1;
const DRAM_GONE: u8 = 2;
const DRAM_BACK: u8 = 3;
const STOP: u8 = 4;

/// The package counter from 50,000 J at `WATTS`, restarting from 1 J in
/// phase [`RESTARTED`]; DRAM at `WATTS / 5`, its file removed in phase
/// [`DRAM_GONE`], then back from 0.
fn restarting_writer(phase: &AtomicU8, package: &Path, dram: &Path) {
    let (mut package_uj, mut dram_uj) = (50_000_000_000.0_f64, 1_000_000.0_f64);
    let mut seen = RUNNING;
    let mut t = Instant::now();
    loop {
        thread::sleep(Duration::from_millis(2));
        let dt = t.elapsed().as_secs_f64();
        t = Instant::now();
        package_uj += WATTS * 1e6 * dt;
        dram_uj += WATTS / 5.0 * 1e6 * dt;
        let now = phase.load(Ordering::Relaxed);
        if now != seen {
            match now {
                RESTARTED => package_uj = 1_000_000.0,
                DRAM_GONE => fs::remove_file(dram.join("energy_uj")).expect("remove"),
                DRAM_BACK => dram_uj = 0.0,
                _ => return,
            }
            seen = now;
        }
        write_uj(&package.join("energy_uj"), package_uj as u64);
        if seen != DRAM_GONE {
            write_uj(&dram.join("energy_uj"), dram_uj as u64);
        }
    }
}

/// Fixed width, in place: a reader never sees a torn number.
fn write_uj(path: &Path, uj: u64) {
    let file = fs::File::options()
        .create(true)
        .write(true)
        .truncate(false)
        .open(path)
        .expect("open counter");
    file.write_all_at(format!("{uj:020}\n").as_bytes(), 0)
        .expect("write counter");
}

/// The burner's energy is WATTS × its `wait4` CPU time / online CPUs (one
/// socket, default policy): energy missing from it would land in idle,
/// where conservation cannot see it.
#[test]
fn a_pinned_burner_gets_the_energy_of_its_cpu_time() {
    require_root();
    let rapl = FakeRapl::start(WATTS, 1_000_000);
    let (mut proc, port) = start(rapl.scaph_args(), &[]);
    let mut scrapes = Scrapes::default();
    scrapes.take(&mut proc, port);
    let cpus = FakeRapl::cpus();
    let burner = burn(&["--cpu", &(cpus - 1).to_string(), "--ms", "1500"]);
    scrapes.during(&mut proc, port, Duration::from_millis(1200));
    let (pid, ns) = reap(burner);
    // Two more cycles, so that the interval it exited in is in.
    scrapes.during(&mut proc, port, Duration::from_millis(2300));
    let needle = format!("scaph_process_energy_joules_total{{pid=\"{pid}\"");
    let got: f64 = scrapes
        .last
        .lines()
        .find(|l| l.starts_with(&needle))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no series for pid {pid}:\n{}", scrapes.last));
    let want = WATTS * ns as f64 / 1e9 / cpus as f64;
    let error = (got - want) / want;
    eprintln!(
        "burner: {:.4} s of CPU on {cpus} CPUs: {got:.4} J, expected {want:.4} J ({:+.3} %)",
        ns as f64 / 1e9,
        error * 100.0
    );
    assert!(error.abs() < 0.01, "{:+.3} %", error * 100.0);
}

/// CPU time of every CPU together from /proc/stat (USER_HZ ticks, 10 ms):
/// busy (user, nice, system, irq, softirq; guest time is within user) and
/// steal (time the hypervisor ran something else: neither the guest's
/// processes nor its idle), in seconds.
fn kernel_busy_and_steal() -> (f64, f64) {
    let stat = fs::read_to_string("/proc/stat").expect("/proc/stat");
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .expect("cpu line")
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().expect("ticks"))
        .collect();
    let busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6];
    (busy / 100.0, ticks[7] / 100.0)
}

/// What the processes got, host − idle joules, against the kernel's own
/// busy time: over the run, host − idle = WATTS × (kernel busy CPU-seconds)
/// / CPUs. Idle is what processes did not get, so energy lost from any
/// process shows here, relative to the busy time (not to the capacity, of
/// which a quiet machine uses little). Steal is busy for neither. A burner
/// on every CPU for 3 s of the 4 s makes most of the busy time even on a
/// quiet machine, so that the kernel's tick-sampled accounting of short
/// bursts weighs little. The agent runs in
/// the test, so /proc/stat is read right at the start and the end of its
/// window.
#[test]
fn host_minus_idle_matches_the_kernels_busy_time() {
    require_root();
    let rapl = FakeRapl::start(WATTS, 1_000_000);
    let sensor: Box<dyn EnergySensor> =
        Box::new(PowercapSensor::new(&rapl.root()).expect("fake tree"));
    let cpu = BpfSource::new("/proc".into(), LoadOptions::default()).expect("kernel program");
    let mut agent = Agent::new(
        Box::new(cpu),
        Some(sensor),
        Topology::from_sys_root(&rapl.sys_root()),
        IdlePolicy::Unattributed,
    );
    let cpus = FakeRapl::cpus();
    agent.baseline();
    let before = kernel_busy_and_steal();
    let burners: Vec<_> = (0..cpus)
        .map(|cpu| burn(&["--cpu", &cpu.to_string(), "--ms", "3000"]))
        .collect();
    let mut last = None;
    for _ in 0..8 {
        thread::sleep(Duration::from_millis(500));
        last = Some(agent.cycle());
    }
    let after = kernel_busy_and_steal();
    for burner in burners {
        reap(burner);
    }
    let last = last.expect("cycles");
    let host = last.host.expect("host energy").joules_total;
    let idle = last.idle.expect("idle energy").joules_total;
    let window = host / WATTS; // seconds, as the fake package measured them
    let kernel = after.0 - before.0;
    let steal = after.1 - before.1;
    let scaph = (host - idle) * cpus as f64 / WATTS;
    let error = (scaph - kernel) / kernel;
    eprintln!(
        "over {window:.3} s on {cpus} CPUs: kernel busy {kernel:.3} CPU-s (steal {steal:.3}), \
         scaph host − idle {:.3} J = {scaph:.3} CPU-s ({:+.2} % of busy)",
        host - idle,
        error * 100.0
    );
    // Ticks: 10 ms per CPU at each end, and short bursts sampled at ticks.
    assert!(
        error.abs() < 0.015,
        "scaph busy {scaph:.3} CPU-s, kernel {kernel:.3} CPU-s ({:+.2} %)",
        error * 100.0
    );
}
