//! The kernel program, loaded for real: its CPU times against the kernel's
//! own accounting (`wait4` rusage of reaped children).
use std::time::Duration;

use scaph_agent::cputime::{
    bpf::BpfSource, loader::LoadOptions, CpuSample, CpuTimeMethod, CpuTimeSource, ProcessKey,
    ProcessSample,
};
use scaph_integration_tests::{burn, of_pid, reap, rel_err, require_root, samples, total_ns};

fn source() -> BpfSource {
    source_with(LoadOptions::default())
}

fn source_with(options: LoadOptions) -> BpfSource {
    require_root();
    let mut source = BpfSource::new("/proc".into(), options).expect("loading the kernel program");
    source.sample().expect("baseline");
    source
}

#[test]
fn uses_the_exact_btf_variant_on_this_kernel() {
    assert_eq!(source().method(), CpuTimeMethod::BpfRuntime);
}

/// Two threads burning ~2 s each: within 0.01 % of the kernel's figure
/// (0.0004–0.0006 % in 6 runs on the shared 2-CPU VM, under load).
#[test]
fn burner_cpu_time_matches_the_kernel_within_0_01_percent() {
    let mut source = source();
    let (pid, truth) = reap(burn(&["--threads", "2", "--ms", "2000"]));
    let seen = samples(&mut source, 2, 50);
    let measured = total_ns(&seen, pid);
    let err = rel_err(measured, truth);
    eprintln!(
        "burner: rusage {truth} ns, bpf {measured} ns, error {:.5} %",
        err * 100.0
    );
    // What the kernel program saw, for the log of a failing run.
    for (i, s) in seen.iter().enumerate() {
        eprintln!(
            "sample {i}: interval {:?}, {:?}, idle {:?}",
            s.interval, s.losses, s.idle_ns
        );
        for p in of_pid(&seen[i..=i], pid) {
            eprintln!(
                "  {:?} {} per CPU {:?} total {} exited {}",
                p.key, p.comm, p.per_cpu_ns, p.total_ns, p.exited
            );
        }
    }
    assert!(
        err < 0.0001,
        "bpf {measured} ns vs rusage {truth} ns: error {:.4} %",
        err * 100.0
    );
    let last = of_pid(&seen, pid).into_iter().last().expect("burner seen");
    assert!(last.exited, "the burner's last sample says it exited");
    assert_eq!(last.comm, "scaph-burn");
}

/// 200 processes of ~20 ms (~10 ms of CPU each), all started and reaped
/// between two reads: 99.9–100.05 % of their CPU time is reported, named
/// (100.005–100.006 % in 6 runs: rusage truncates each process's user and
/// system times to whole µs).
#[test]
fn short_lived_processes_between_two_reads_are_not_lost() {
    let mut source = source();
    let mut truth = Vec::new();
    for _ in 0..200 {
        truth.push(reap(burn(&["--ms", "10", "--sleep-ms", "10"])));
    }
    let seen = samples(&mut source, 2, 50);
    let true_total: u64 = truth.iter().map(|(_, ns)| ns).sum();
    let measured: u64 = truth.iter().map(|(pid, _)| burner_ns(&seen, *pid)).sum();
    let captured = measured as f64 / true_total as f64;
    eprintln!(
        "200 short processes: rusage {true_total} ns, bpf {measured} ns, captured {:.3} %",
        captured * 100.0
    );
    assert!(captured >= 0.999, "captured only {:.3} %", captured * 100.0);
    assert!(
        captured <= 1.0005,
        "reported more than the kernel: {:.3} %",
        captured * 100.0
    );
    for (pid, _) in &truth {
        let procs = burner_samples(&seen, *pid);
        let last = procs.last().unwrap_or_else(|| panic!("pid {pid} missing"));
        assert_eq!(last.comm, "scaph-burn", "pid {pid}");
        assert!(last.exited, "pid {pid} reported as exited");
    }
}

/// A burner pinned to CPU 1 shows its time on CPU 1 and almost none on CPU 0.
#[test]
fn pinned_burner_time_is_on_its_cpu() {
    let mut source = source();
    let (pid, truth) = reap(burn(&["--cpu", "1", "--ms", "1000"]));
    let seen = samples(&mut source, 2, 50);
    let mut per_cpu = [0u64; 2];
    for p in of_pid(&seen, pid) {
        for (cpu, ns) in p.per_cpu_ns.iter().filter(|&(cpu, _)| cpu < 2) {
            per_cpu[cpu as usize] += ns;
        }
    }
    eprintln!(
        "pinned burner: rusage {truth} ns, CPU0 {} ns, CPU1 {} ns",
        per_cpu[0], per_cpu[1]
    );
    assert!(
        per_cpu[1] as f64 >= 0.99 * truth as f64,
        "CPU 1 has {} of {truth} ns",
        per_cpu[1]
    );
    assert!(
        (per_cpu[0] as f64) < 0.01 * truth as f64,
        "CPU 0 has {} ns",
        per_cpu[0]
    );
}

/// Per CPU, process time + idle time covers the interval, less the time the
/// hypervisor stole from the CPU while it was busy: that time is in no
/// task's runtime. Never more than 100.2 %, and at least 99.8 % with the
/// steal added (under load: 98.96–100.04 % covered, 0.6–2 % stolen).
#[test]
fn per_cpu_process_plus_idle_time_is_the_interval() {
    let mut source = source();
    let steal_before = steal_ticks();
    let child = burn(&["--cpu", "0", "--ms", "700"]);
    std::thread::sleep(Duration::from_millis(1000));
    let sample = source.sample().expect("sample");
    let steal_after = steal_ticks();
    reap(child);
    let wall = sample.interval.as_nanos() as f64;
    for (cpu, idle) in sample.idle_ns.iter().enumerate() {
        let busy: u64 = sample
            .processes
            .iter()
            .map(|p| p.per_cpu_ns.get(cpu as u32))
            .sum();
        let covered = (busy + idle) as f64 / wall;
        // Ticks are coarse: one more than counted could have been stolen.
        let ticks = steal_after
            .get(&cpu)
            .zip(steal_before.get(&cpu))
            .map_or(0, |(a, b)| a - b)
            + 1;
        let stolen = (ticks * 1_000_000_000 / clock_ticks_per_second()) as f64 / wall;
        eprintln!(
            "CPU {cpu}: busy {busy} ns + idle {idle} ns = {:.3} % of {wall} ns, {:.3} % stolen ({:?})",
            covered * 100.0,
            stolen * 100.0,
            sample.losses
        );
        assert!(
            covered < 1.002 && covered + stolen > 0.998,
            "CPU {cpu}: {:.3} % of the interval",
            covered * 100.0
        );
    }
}

/// Steal time by CPU number, in clock ticks (`/proc/stat`).
fn steal_ticks() -> std::collections::HashMap<usize, u64> {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    stat.lines()
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let cpu: usize = fields.next()?.strip_prefix("cpu")?.parse().ok()?;
            Some((cpu, fields.nth(7)?.parse().ok()?))
        })
        .collect()
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .unwrap_or(100)
        .max(1)
}

/// More exits between two reads than the kernel can record (`EXITED` made
/// tiny): the processes whose exit record was lost are found dead in
/// `/proc` and reported as exited within a few reads, with their time,
/// instead of staying listed as live.
#[test]
fn processes_whose_exit_record_was_lost_are_still_reported_exited() {
    let mut source = source_with(LoadOptions {
        exited_capacity: Some(8),
        ..LoadOptions::default()
    });
    let truth: Vec<(u32, u64)> = (0..60).map(|_| reap(burn(&["--ms", "3"]))).collect();
    let seen = samples(&mut source, 4, 100);
    let lost = seen.last().map_or(0, |s| s.losses.dropped_exits);
    assert!(
        lost > 0,
        "EXITED of 8 held 60 exits: the test did not overflow it"
    );
    let not_exited: Vec<u32> = truth
        .iter()
        .map(|(pid, _)| *pid)
        .filter(|pid| !of_pid(&seen, *pid).iter().any(|p| p.exited))
        .collect();
    eprintln!("60 processes, {lost} exit records lost; not reported exited: {not_exited:?}");
    assert!(
        not_exited.is_empty(),
        "{} of 60 never reported exited: {not_exited:?}",
        not_exited.len()
    );
    let true_total: u64 = truth.iter().map(|(_, ns)| ns).sum();
    let measured: u64 = truth.iter().map(|(pid, _)| total_ns(&seen, *pid)).sum();
    assert!(
        rel_err(measured, true_total) < 0.01,
        "bpf {measured} ns vs rusage {true_total} ns"
    );
}

/// A process's slot goes to a new process once the old one has exited and
/// its final time was read: with 100 slots beyond the processes alive at
/// start, 8 rounds of 25 short-lived processes (200 in all) are each
/// reported with their time, and no slice waits in vain for a free slot.
#[test]
fn slots_of_exited_processes_are_given_to_new_ones() {
    let live = live_processes();
    let mut source = source_with(LoadOptions {
        slots: Some(live + 100),
        ..LoadOptions::default()
    });
    let (mut truth, mut seen) = (Vec::new(), Vec::new());
    for _ in 0..8 {
        truth.extend((0..25).map(|_| reap(burn(&["--ms", "3"]))));
        seen.extend(samples(&mut source, 2, 50));
    }
    seen.extend(samples(&mut source, 2, 50));
    let dropped_ns = seen.last().map_or(0, |s| s.losses.dropped_ns);
    let missing: Vec<u32> = truth
        .iter()
        .map(|(pid, _)| *pid)
        .filter(|pid| total_ns(&seen, *pid) == 0)
        .collect();
    eprintln!("{live} processes at start, {} slots; 200 short-lived processes, {} not seen, {dropped_ns} ns dropped", live + 100, missing.len());
    assert!(
        missing.is_empty(),
        "{} of 200 processes never reported: {missing:?}",
        missing.len()
    );
    assert_eq!(dropped_ns, 0, "slices dropped for want of a slot");
    // Each on its own, so that time handed from one owner of a slot to the
    // next cannot cancel out in a sum.
    let off: Vec<(u32, u64, u64)> = truth
        .iter()
        .map(|&(pid, ns)| (pid, ns, total_ns(&seen, pid)))
        .filter(|&(_, truth, measured)| measured.abs_diff(truth) > truth / 100 + 100_000)
        .collect();
    assert!(
        off.is_empty(),
        "(pid, rusage ns, bpf ns) off by over 1 % + 0.1 ms: {off:?}"
    );
}

/// With every slot taken, the time of processes that find none is counted
/// as dropped, not lost without a word; once exited processes give their
/// slots back, new processes are measured in full again.
#[test]
fn when_no_slot_is_free_the_time_is_counted_as_dropped() {
    // Fewer slots than the 100 that run at once below: the host's own
    // processes take a few dozen (those that run during the test).
    let slots = 64;
    let mut source = source_with(LoadOptions {
        slots: Some(slots),
        ..LoadOptions::default()
    });
    let crowd: Vec<_> = (0..100).map(|_| burn(&["--ms", "20"])).collect();
    let crowd: Vec<(u32, u64)> = crowd.into_iter().map(reap).collect();
    let mut seen = samples(&mut source, 3, 50);
    let dropped_ns = seen.last().map_or(0, |s| s.losses.dropped_ns);
    let true_total: u64 = crowd.iter().map(|(_, ns)| ns).sum();
    let measured: u64 = crowd.iter().map(|(pid, _)| total_ns(&seen, *pid)).sum();
    eprintln!("100 processes for {slots} slots: rusage {true_total} ns, measured {measured} ns, dropped {dropped_ns} ns");
    assert!(
        dropped_ns > 0,
        "100 processes and the host's fitted in {slots} slots"
    );
    assert!(
        measured < true_total,
        "every process was measured although slots ran out"
    );
    // Dropped time may include other processes' slices, never less than what the crowd lacks.
    assert!(
        measured + dropped_ns >= true_total - true_total / 100,
        "{} ns neither measured nor counted",
        true_total - measured - dropped_ns.min(true_total - measured)
    );
    // Their slots come back: later processes are measured whole.
    let later: Vec<(u32, u64)> = (0..5)
        .map(|_| {
            let done = reap(burn(&["--ms", "5"]));
            seen.extend(samples(&mut source, 2, 50));
            done
        })
        .collect();
    seen.extend(samples(&mut source, 2, 50));
    for (pid, truth) in later {
        let measured = total_ns(&seen, pid);
        assert!(
            measured.abs_diff(truth) <= truth / 100 + 100_000,
            "pid {pid}: rusage {truth} ns, bpf {measured} ns"
        );
    }
}

fn live_processes() -> u32 {
    std::fs::read_dir("/proc")
        .expect("reading /proc")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .count() as u32
}

/// The same PID used by two processes between two reads stays two processes.
#[test]
fn pid_reuse_does_not_merge_processes() {
    let mut source = source();
    let first = reap(burn(&["--ms", "30"]));
    let mut second = None;
    for _ in 0..20 {
        // The next fork gets ns_last_pid + 1.
        std::fs::write("/proc/sys/kernel/ns_last_pid", (first.0 - 1).to_string())
            .expect("writing ns_last_pid");
        let child = burn(&["--ms", "60"]);
        let got = reap(child);
        if got.0 == first.0 {
            second = Some(got);
            break;
        }
    }
    let second = second.expect("could not get the same PID again in 20 tries");
    let seen = samples(&mut source, 2, 50);
    let procs = of_pid(&seen, first.0);
    let mut keys: Vec<_> = procs.iter().map(|p| p.key).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(
        keys.len(),
        2,
        "two processes with pid {}: {keys:?}",
        first.0
    );
    for (key, truth) in keys.iter().zip([first.1, second.1]) {
        let ns: u64 = procs
            .iter()
            .filter(|p| p.key == *key)
            .map(|p| p.total_ns)
            .sum();
        assert!(
            rel_err(ns, truth) < 0.001,
            "{key:?}: bpf {ns} ns vs rusage {truth} ns"
        );
    }
}

/// The variant for kernels without BTF: timestamp deltas also count
/// hypervisor steal and interrupt time, so on a VM the figure reads high:
/// +0.1 % on an idle machine here, +7.6 % while a build ran beside it. It
/// reads low only when the tracepoint did not show some switches (then part
/// of a slice goes to the next task to leave, and the program counts the
/// mismatch; about 1 run in 20 here), and stays within 20 %.
#[test]
fn timestamp_variant_never_undercounts() {
    let mut source = source_with(LoadOptions {
        force_timestamp: true,
        ..LoadOptions::default()
    });
    assert_eq!(source.method(), CpuTimeMethod::BpfTimestamp);
    let (pid, truth) = reap(burn(&["--threads", "2", "--ms", "1000"]));
    let seen = samples(&mut source, 2, 50);
    let measured = total_ns(&seen, pid);
    let err = rel_err(measured, truth);
    let unseen = seen.last().map_or(0, |s| s.losses.mismatches);
    eprintln!(
        "timestamp variant: rusage {truth} ns, bpf {measured} ns, error {:.4} %, {unseen} mismatched switches",
        err * 100.0
    );
    assert!(
        measured as f64 >= truth as f64 * 0.999 || unseen > 0,
        "reads low with every switch seen: {measured} ns of {truth} ns"
    );
    assert!(err < 0.2, "error {:.3} %", err * 100.0);
    assert_eq!(
        of_pid(&seen, pid).last().map(|p| p.comm.as_str()),
        Some("scaph-burn")
    );
}

/// A process first seen before its exec (as a VM started by libvirtd is) is
/// named and described by what it executes afterwards.
#[test]
fn exec_refreshes_name_and_metadata() {
    let mut source = source();
    let burner = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("scaph-burn");
    let child = std::process::Command::new("sh")
        .arg("-c")
        // `sleep` makes the shell leave the CPU (a slice is recorded when it
        // does); the loop keeps it a shell for a while after that.
        .arg(format!(
            "sleep 0.05; i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; exec {} --ms 300 --sleep-ms 3000",
            burner.display()
        ))
        .spawn()
        .expect("sh");
    let pid = child.id();
    let mut before = Vec::new();
    for _ in 0..100 {
        before.extend(samples(&mut source, 1, 20));
        if !of_pid(&before, pid).is_empty() {
            break;
        }
    }
    let first = of_pid(&before, pid)
        .into_iter()
        .next()
        .expect("seen before exec")
        .clone();
    assert_eq!(first.comm, "sh", "before the exec");
    // The burner lives ~3.3 s after the exec (the shell's loop before it can
    // take long on a loaded machine): read until its new name shows, while
    // it is alive, so its metadata can be read again.
    let mut after = Vec::new();
    for _ in 0..300 {
        after.extend(samples(&mut source, 1, 50));
        let named = of_pid(&after, pid)
            .last()
            .is_some_and(|p| p.comm == "scaph-burn" && p.meta.is_some());
        if named {
            break;
        }
    }
    let (_, _) = reap(child);
    after.extend(samples(&mut source, 2, 50));
    let procs = of_pid(&after, pid);
    assert_eq!(procs.last().map(|p| p.comm.as_str()), Some("scaph-burn"));
    let exe = procs
        .iter()
        .filter_map(|p| p.meta.as_ref())
        .filter_map(|m| m.exe.clone())
        .next_back();
    assert!(
        exe.as_ref().is_some_and(|e| e.ends_with("scaph-burn")),
        "metadata read again after exec: {exe:?}"
    );
}

/// A CPU-bound process alone on its CPU is never switched out by itself: the
/// read must close its slice (the agent wakes a pinned thread on every CPU),
/// or its time would arrive as 0 per interval, then one burst when it stops
/// (or be dropped once the slice reaches `MAX_SLICE_NS`). Against the
/// kernel's own runtime (`/proc/PID/task/*/schedstat`) read just before and
/// just after each read. schedstat shows the runtime as of its last update
/// (a tick or a switch), not the running slice, so it never runs ahead: the
/// runtime at the read's close lies between the two, and the time reported
/// for each interval between the brackets they make, within 0.1 ms. Ten
/// reads: a read that did not close the slice reports about 0, and ten
/// intervals all closed by chance (another task waking on CPU 1 just then)
/// do not happen.
#[test]
fn a_pinned_burner_has_its_time_closed_at_every_read() {
    // The reads run on CPU 0, or reading would itself switch the burner out.
    std::thread::spawn(|| {
        pin_this_thread(0);
        pinned_burner_reads()
    })
    .join()
    .expect("the reads");
}

fn pinned_burner_reads() {
    const READS: usize = 10;
    const GAP_MS: u64 = 500;
    let mut source = source();
    // Killed and reaped however the test ends (it would burn CPU 1 for 8 s).
    let burner = KillOnDrop(Some(burn(&["--cpu", "1", "--ms", "8000"])));
    std::thread::sleep(Duration::from_millis(300));
    let pid = burner.pid();
    let (mut before, mut after) = (Vec::new(), Vec::new());
    let mut seen = Vec::new();
    for i in 0..=READS {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(GAP_MS));
        }
        before.push(runtime_ns(pid));
        seen.push(source.sample().expect("sample"));
        after.push(runtime_ns(pid));
    }
    drop(burner);
    const SLACK_NS: u64 = 100_000;
    for i in 1..=READS {
        let reported = total_ns(&seen[i..=i], pid);
        let (low, high) = (before[i] - after[i - 1], after[i] - before[i - 1]);
        let wall = seen[i].interval.as_nanos() as u64;
        eprintln!(
            "interval {i}: {wall} ns, burner reported {reported} ns, kernel runtime between {low} and {high} ns"
        );
        assert!(
            reported + SLACK_NS >= low && reported <= high + SLACK_NS,
            "interval {i}: reported {reported} ns outside [{low}, {high}] ns"
        );
        assert!(reported > 0, "interval {i}: nothing reported");
    }
}

/// The samples of the scaph-burn process with this PID: PIDs wrap within
/// seconds here (pid_max 32768, parallel builds), and a process that got the
/// PID after the burner was reaped is another key with another name.
fn burner_samples(seen: &[CpuSample], pid: u32) -> Vec<&ProcessSample> {
    let procs = of_pid(seen, pid);
    let burners: Vec<ProcessKey> = procs
        .iter()
        .filter(|p| p.comm == "scaph-burn")
        .map(|p| p.key)
        .collect();
    procs
        .into_iter()
        .filter(|p| burners.contains(&p.key))
        .collect()
}

fn burner_ns(seen: &[CpuSample], pid: u32) -> u64 {
    burner_samples(seen, pid).iter().map(|p| p.total_ns).sum()
}

fn pin_this_thread(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; 0 is the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set),
            0,
            "pinning to CPU {cpu}"
        );
    }
}

/// The runtime of every thread of `pid` so far, in ns, running slices included.
fn runtime_ns(pid: u32) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("task dir");
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// A child that is killed and reaped when dropped, panics included.
struct KillOnDrop(Option<std::process::Child>);

impl KillOnDrop {
    fn pid(&self) -> u32 {
        self.0.as_ref().map_or(0, |c| c.id())
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.0.take() {
            // SAFETY: ends our own child, which has not been reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            let _ = reap_any(child);
        }
    }
}

/// Reaps a child whatever its exit status.
fn reap_any(child: std::process::Child) -> i32 {
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(child.id() as i32, &mut status, 0) };
    std::mem::forget(child);
    status
}
