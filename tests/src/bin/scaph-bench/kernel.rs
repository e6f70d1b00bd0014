//! Measures 1 and 2: what the kernel program costs per event, and how much it
//! slows a context-switch storm.
use std::{
    process::Command,
    time::{Duration, Instant},
};

use scaph_agent::cputime::{bpf::BpfSource, loader::LoadOptions};

use crate::{
    report::{Table, Verdict},
    util::{stats, MeanInterval},
};

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Runs `perf bench sched pipe` pinned to CPU 1; returns its total time.
fn pipe_bench(loops: u32) -> Duration {
    let out = Command::new("taskset")
        .args([
            "-c",
            "1",
            "perf",
            "bench",
            "sched",
            "pipe",
            "-l",
            &loops.to_string(),
        ])
        .output()
        .expect("running perf bench (package linux-perf)");
    let text = String::from_utf8_lossy(&out.stdout);
    let secs: f64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Total time:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no total time in perf output:\n{text}"));
    Duration::from_secs_f64(secs)
}

fn attach() -> BpfSource {
    BpfSource::new("/proc".into(), LoadOptions::default()).expect("loading the kernel program")
}

/// The benchmark's own object, holding only the empty program, as read
/// from where scaph-agent's build left it (scaph does not ship it), in an
/// 8-byte aligned buffer: the ELF parser reads its headers in place.
struct FloorObject {
    words: Vec<u64>,
    len: usize,
}

impl FloorObject {
    fn read() -> Self {
        let path = scaph_agent::cputime::loader::BENCH_FLOOR_OBJECT;
        let bytes = std::fs::read(path)
            .unwrap_or_else(|e| panic!("reading the benchmark's reference object {path}: {e}"));
        let words = bytes
            .chunks(8)
            .map(|chunk| {
                let mut word = [0u8; 8];
                word[..chunk.len()].copy_from_slice(chunk);
                u64::from_ne_bytes(word)
            })
            .collect();
        Self {
            words,
            len: bytes.len(),
        }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` bytes, all initialised (each
        // word from the file's bytes, the last one zero-padded), and a u8
        // has no alignment or validity requirement.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }
}

/// The empty `sched_switch_floor` program alone, attached (detached on drop).
fn attach_floor(object: &FloorObject) -> aya::Ebpf {
    let btf = aya::Btf::from_sys_fs().expect("kernel BTF");
    let mut ebpf = aya::EbpfLoader::new()
        .load(object.bytes())
        .expect("loading the benchmark's reference object");
    let program: &mut aya::programs::BtfTracePoint = ebpf
        .program_mut(scaph_common::bench::SWITCH_FLOOR)
        .expect("floor program in the object")
        .try_into()
        .expect("a tp_btf program");
    program
        .load("sched_switch", &btf)
        .expect("loading the floor program");
    program.attach().expect("attaching the floor program");
    ebpf
}

/// run_time_ns and run_cnt of the sched_switch program, from this process's fdinfo.
fn program_stats() -> Option<(u64, u64)> {
    // Other scaph instances may run too: the right one is the one this process holds.
    let ids: Vec<u64> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| {
            p.name_as_str()
                .is_some_and(|n| n.starts_with("sched_switch"))
        })
        .map(|p| u64::from(p.id()))
        .collect();
    std::fs::read_dir("/proc/self/fdinfo")
        .ok()?
        .filter_map(Result::ok)
        .find_map(|fd| {
            let info = std::fs::read_to_string(fd.path()).ok()?;
            let field = |name: &str| -> Option<u64> {
                info.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.trim().parse().ok())
            };
            ids.contains(&field("prog_id:")?).then_some(())?;
            Some((field("run_time_ns:")?, field("run_cnt:")?))
        })
}

pub fn program_cost(quick: bool, table: &mut Table) {
    let before = std::fs::read_to_string(STATS_SYSCTL).unwrap_or_else(|_| "0".into());
    std::fs::write(STATS_SYSCTL, "1").expect("enabling kernel.bpf_stats_enabled");
    let loops = if quick { 50_000 } else { 200_000 };
    let floor_object = FloorObject::read();
    // Interleaved: the program, then the empty one, so that both see the
    // same state of this machine.
    let (mut per_event, mut floor) = (Vec::new(), Vec::new());
    for _ in 0..if quick { 3 } else { 7 } {
        for (out, empty) in [(&mut per_event, false), (&mut floor, true)] {
            let attached: Box<dyn std::any::Any> = if empty {
                Box::new(attach_floor(&floor_object))
            } else {
                Box::new(attach())
            };
            pipe_bench(loops);
            let (ns, count) = program_stats().expect("program stats in fdinfo");
            out.push(ns as f64 / count.max(1) as f64);
            drop(attached);
        }
    }
    let _ = std::fs::write(STATS_SYSCTL, before.trim());
    let (min, med, max) = stats(&per_event);
    table.row(
        "kernel program, ns per sched_switch event (run_time_ns / run_cnt)",
        min,
        med,
        max,
        "ns",
        "≤ 100",
        med <= 100.0,
    );
    let (min, med, max) = stats(&floor);
    table.row(
        "reference: an empty `tp_btf/sched_switch` program, measured the same way (the floor of the row above on this machine)",
        min,
        med,
        max,
        "ns",
        "—",
        true,
    );
}

/// Interleaved pairs of the context-switch storm, with the interval looked
/// at only after planned numbers of pairs (even ones, so that the
/// alternation of orders stays balanced): testing after every pair would
/// raise the error rate with each look. Each look uses a Bonferroni-adjusted
/// confidence level (95 % shared among the looks), so the verdict, whichever
/// look it is taken at, is wrong at most 5 % of the time.
struct PairPlan {
    loops: u32,
    looks: &'static [usize],
}

const PIPE_TARGET_PCT: f64 = 5.0;

/// A ratio's natural log as a slowdown, %.
fn pct(log_ratio: f64) -> f64 {
    log_ratio.exp_m1() * 100.0
}

pub fn pipe_slowdown(quick: bool, table: &mut Table) {
    let plan = if quick {
        PairPlan {
            loops: 100_000,
            looks: &[20, 40, 80],
        }
    } else {
        PairPlan {
            loops: 200_000,
            looks: &[40, 80, 160, 320],
        }
    };
    let confidence = 1.0 - 0.05 / plan.looks.len() as f64;
    let target = (1.0 + PIPE_TARGET_PCT / 100.0).ln();
    let started = Instant::now();
    // ln(attached / detached) per pair: their mean is the log of the
    // geometric mean ratio, symmetric in the two runs, and less skewed than
    // the ratios themselves.
    let mut log_ratios = Vec::new();
    let mut interval = MeanInterval::of(&[]);
    for &look in plan.looks {
        while log_ratios.len() < look {
            // Pairs alternate which run goes first (detached-attached, then
            // attached-detached), so that a drift of the machine or an
            // effect of the attach itself on the next run does not lean one way.
            let (detached, attached) = if log_ratios.len() % 2 == 0 {
                let detached = pipe_bench(plan.loops);
                let source = attach();
                let attached = pipe_bench(plan.loops);
                drop(source);
                (detached, attached)
            } else {
                let source = attach();
                let attached = pipe_bench(plan.loops);
                drop(source);
                (pipe_bench(plan.loops), attached)
            };
            log_ratios.push((attached.as_secs_f64() / detached.as_secs_f64()).ln());
        }
        interval = MeanInterval::with_confidence(&log_ratios, confidence);
        if interval.decides(target) {
            break;
        }
    }
    let verdict = if interval.high <= target {
        Verdict::Met
    } else if interval.low > target {
        Verdict::Missed
    } else {
        Verdict::Undecided
    };
    let looks: Vec<String> = plan.looks.iter().map(usize::to_string).collect();
    table.verdict_row(
        &format!(
            "`perf bench sched pipe -l {}` pinned to CPU 1, attached vs detached: geometric-mean slowdown (mean of ln(attached / detached)) with its {:.2} % confidence interval after {} interleaved pairs in alternating order — the interval is looked at only after {} pairs, stopping at the first look that decides the target; {:.2} % per look (Bonferroni over {} looks) keeps the verdict's error ≤ 5 %; {:.0} s — columns are CI low / mean / CI high",
            plan.loops,
            confidence * 100.0,
            log_ratios.len(),
            looks.join(", "),
            confidence * 100.0,
            plan.looks.len(),
            started.elapsed().as_secs_f64()
        ),
        [pct(interval.low), pct(interval.mean), pct(interval.high)],
        "% slower",
        "≤ 5 %",
        verdict,
    );
}
