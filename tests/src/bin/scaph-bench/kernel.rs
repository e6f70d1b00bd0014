//! Measures 1 and 2: what the kernel program costs per event, and how much it
//! slows a context-switch storm.
use std::{process::Command, time::Duration};

use scaph_agent::cputime::{bpf::BpfSource, loader::LoadOptions};

use crate::{report::Table, util::stats};

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

/// The empty `sched_switch_floor` program alone, attached (detached on drop).
fn attach_floor() -> aya::Ebpf {
    let btf = aya::Btf::from_sys_fs().expect("kernel BTF");
    let mut ebpf = aya::EbpfLoader::new()
        .load(scaph_agent::cputime::loader::object())
        .expect("loading the object");
    let program: &mut aya::programs::BtfTracePoint = ebpf
        .program_mut(scaph_common::programs::SWITCH_FLOOR)
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
    // Interleaved: the program, then the empty one, so that both see the
    // same state of this machine.
    let (mut per_event, mut floor) = (Vec::new(), Vec::new());
    for _ in 0..if quick { 3 } else { 7 } {
        for (out, empty) in [(&mut per_event, false), (&mut floor, true)] {
            let attached: Box<dyn std::any::Any> = if empty {
                Box::new(attach_floor())
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
        "≤ 150",
        med <= 150.0,
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

pub fn pipe_slowdown(quick: bool, table: &mut Table) {
    let loops = if quick { 50_000 } else { 200_000 };
    let mut slowdown = Vec::new();
    // Pairs alternate which run goes first (detached-attached, then
    // attached-detached), so that a drift of the machine or an effect of
    // the attach itself on the next run does not lean one way.
    for pair in 0..if quick { 4 } else { 16 } {
        let (detached, attached) = if pair % 2 == 0 {
            let detached = pipe_bench(loops);
            let source = attach();
            let attached = pipe_bench(loops);
            drop(source);
            (detached, attached)
        } else {
            let source = attach();
            let attached = pipe_bench(loops);
            drop(source);
            (pipe_bench(loops), attached)
        };
        slowdown.push((attached.as_secs_f64() / detached.as_secs_f64() - 1.0) * 100.0);
    }
    let (min, med, max) = stats(&slowdown);
    table.row(
        &format!("`perf bench sched pipe -l {loops}` pinned to CPU 1, attached vs detached (interleaved pairs, alternating order)"),
        min,
        med,
        max,
        "% slower",
        "≤ 5 %",
        med <= 5.0,
    );
}
