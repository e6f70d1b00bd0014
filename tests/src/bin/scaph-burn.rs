//! A workload with a known CPU time: each thread burns `--ms` of its own CPU
//! time (measured with the thread CPU clock, so contention does not change
//! the amount), optionally pinned to one CPU, then the process sleeps
//! `--sleep-ms` and exits.
//!
//! `--warmup-ms` first burns that much on the main thread and `--pause-ms`
//! then sleeps, before the main burn (a process that is seen, then idle, then
//! busy). Arguments after `--` are ignored, so that a command line can carry
//! extra words (e.g. qemu's `-name guest=vm1` for a process that looks like a VM).
use std::{env, thread, time::Duration};

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn burn(ms: u64) {
    let target = thread_cpu_ns() + ms * 1_000_000;
    let mut x = 0u64;
    while thread_cpu_ns() < target {
        for i in 0..1000 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
    }
}

fn pin(cpu: usize) {
    // SAFETY: plain data; cpu is checked by the kernel.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            eprintln!("scaph-burn: cannot pin to CPU {cpu}");
            std::process::exit(2);
        }
    }
}

fn main() {
    // Die with the test that started us: a burner left sleeping must not hold
    // the test's output open (the runner would wait on it) nor skew the next test.
    // SAFETY: prctl with plain integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
    let (mut threads, mut ms, mut sleep_ms, mut cpu) = (1usize, 100u64, 0u64, None);
    let (mut warmup_ms, mut pause_ms) = (0u64, 0u64);
    let args: Vec<String> = env::args().skip(1).take_while(|a| a != "--").collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or_else(|| {
            eprintln!(
                "usage: scaph-burn [--threads N] [--ms MS] [--sleep-ms MS] [--cpu CPU] [--warmup-ms MS] [--pause-ms MS] [-- ignored...]"
            );
            std::process::exit(2)
        });
        match pair[0].as_str() {
            "--threads" => threads = value as usize,
            "--ms" => ms = value,
            "--sleep-ms" => sleep_ms = value,
            "--cpu" => cpu = Some(value as usize),
            "--warmup-ms" => warmup_ms = value,
            "--pause-ms" => pause_ms = value,
            other => {
                eprintln!("scaph-burn: unknown option {other}");
                std::process::exit(2);
            }
        }
    }
    if let Some(cpu) = cpu {
        pin(cpu); // threads inherit the affinity
    }
    if warmup_ms > 0 {
        burn(warmup_ms);
    }
    thread::sleep(Duration::from_millis(pause_ms));
    let workers: Vec<_> = (1..threads)
        .map(|_| thread::spawn(move || burn(ms)))
        .collect();
    burn(ms);
    for w in workers {
        let _ = w.join();
    }
    thread::sleep(Duration::from_millis(sleep_ms));
}
