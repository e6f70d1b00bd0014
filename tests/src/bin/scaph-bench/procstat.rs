//! Measure 7: the hot per-process read of procfs mode (`/proc/PID/stat`),
//! scaph's four-field parser against the `procfs` crate's full one; and the
//! first cycle's cost at 10,000 processes (metadata of every process).
use std::{
    fs,
    hint::black_box,
    time::{Duration, Instant},
};

use scaph_agent::{
    cputime::{meta::MetaCache, pidstat, ProcessKey},
    fsroot::read::{read_small_file, ReadFailure},
};

use crate::{
    herd::Herd,
    report::Table,
    scale::{agent, sources},
    util::{self_cpu, stats},
};

/// The `stat` lines of every process now running.
fn stat_lines() -> Vec<Vec<u8>> {
    let mut lines = Vec::new();
    let mut buf = Vec::new();
    for entry in fs::read_dir("/proc").expect("/proc").flatten() {
        let path = entry.path().join("stat");
        if entry.file_name().to_string_lossy().parse::<u32>().is_ok()
            && read_small_file(&path, &mut buf, pidstat::PID_STAT).is_ok()
        {
            lines.push(buf.clone());
        }
    }
    lines
}

/// ns per line of `parse` over `lines`, repeated `rounds` times.
fn per_line(lines: &[Vec<u8>], rounds: usize, parse: impl Fn(&[u8]) -> bool) -> f64 {
    let t0 = Instant::now();
    let mut ok = 0usize;
    for _ in 0..rounds {
        for line in lines {
            ok += usize::from(parse(black_box(line)));
        }
    }
    assert_eq!(ok, lines.len() * rounds, "every line parses");
    t0.elapsed().as_nanos() as f64 / (lines.len() * rounds) as f64
}

/// ns per process to open, read and parse every `stat` (the procfs-mode hot
/// path). Both sides read with the same reader, so the two rows differ only
/// by the parser.
fn read_and_parse(pids: &[u32], by_crate: bool) -> f64 {
    let mut buf = Vec::with_capacity(1024);
    let t0 = Instant::now();
    for pid in pids {
        let path = format!("/proc/{pid}/stat");
        match read_small_file(path.as_ref(), &mut buf, pidstat::PID_STAT) {
            Ok(()) if by_crate => {
                black_box(pidstat::parse_stat_with_crate(&buf));
            }
            Ok(()) => {
                black_box(pidstat::parse_stat(&buf));
            }
            Err(ReadFailure::Gone | ReadFailure::Other(_)) => {}
        }
    }
    t0.elapsed().as_nanos() as f64 / pids.len() as f64
}

pub fn stat_and_first_cycle(quick: bool, table: &mut Table) {
    let sleepers = Herd::spawn(if quick { 2_000 } else { 10_000 });
    std::thread::sleep(Duration::from_secs(2));

    let lines = stat_lines();
    let rounds = if quick { 20 } else { 100 };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        ours.push(per_line(&lines, rounds, |l| {
            pidstat::parse_stat(l).is_some()
        }));
        theirs.push(per_line(&lines, rounds, |l| {
            pidstat::parse_stat_with_crate(l).is_some()
        }));
    }
    let row = |table: &mut Table, what: &str, v: &[f64], unit: &str| {
        let (min, med, max) = stats(v);
        table.row(what, min, med, max, unit, "—", true);
    };
    row(
        table,
        &format!(
            "parse one /proc/PID/stat line, scaph's parser ({} lines)",
            lines.len()
        ),
        &ours,
        "ns",
    );
    row(
        table,
        "parse one /proc/PID/stat line, procfs crate (`Stat::from_read`)",
        &theirs,
        "ns",
    );

    let pids: Vec<u32> = fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect();
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        ours.push(read_and_parse(&pids, false));
        theirs.push(read_and_parse(&pids, true));
    }
    row(
        table,
        "open + read + parse one /proc/PID/stat, scaph",
        &ours,
        "ns",
    );
    row(
        table,
        "open + read + parse one /proc/PID/stat, procfs crate",
        &theirs,
        "ns",
    );

    // One full metadata lookup (what the first cycle did for every process
    // before lookups were bounded per cycle).
    let mut lookups = Vec::new();
    for _ in 0..3 {
        let mut cache = MetaCache::new("/proc".into());
        let c0 = self_cpu();
        for &pid in &pids {
            black_box(cache.get(ProcessKey { pid, start_ns: 0 }));
        }
        lookups.push((self_cpu() - c0).as_secs_f64() * 1e6 / pids.len() as f64);
    }
    row(
        table,
        "one full metadata lookup (stat, cmdline, cgroup, exe), CPU per process",
        &lookups,
        "µs",
    );

    // The first cycle after start: every process is new, so every one's
    // metadata is due; then the cycles that fill in what was left.
    let n = pids.len();
    for (mode, source) in sources() {
        let mut agent = agent(source);
        agent.baseline();
        let mut cpu = Vec::new();
        for _ in 0..if quick { 4 } else { 6 } {
            std::thread::sleep(Duration::from_secs(1));
            let c0 = self_cpu();
            let snapshot = agent.cycle();
            let with_meta = snapshot
                .processes
                .iter()
                .filter(|p| p.exe().is_some() || p.cgroup_path().is_some())
                .count();
            cpu.push((self_cpu() - c0).as_secs_f64() * 1e3);
            eprintln!(
                "  {mode}: cycle {} {:.1} ms, {} processes, {with_meta} with metadata",
                cpu.len(),
                cpu[cpu.len() - 1],
                snapshot.processes.len()
            );
        }
        let first = cpu[0];
        table.figure(
            &format!("{mode} mode, first cycle with {n} processes: agent CPU"),
            first,
            "ms",
            "≤ 250 ms",
            first <= 250.0,
        );
        let (min, med, max) = stats(&cpu[1..]);
        table.row(
            &format!("{mode} mode, the next cycles (metadata filling in)"),
            min,
            med,
            max,
            "ms",
            "—",
            true,
        );
    }
    drop(sleepers);
}
