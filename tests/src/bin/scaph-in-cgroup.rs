//! Runs a command inside a cgroup, like a container runtime's init: moves
//! itself into `CGROUP_DIR` first, so every child it starts is born there
//! and never runs anywhere else. Runs the command `COUNT` times, one after
//! the other, prints each child's pid (`pid=N`), then the CPU time of all of
//! them as the kernel reports it to a parent (`children_cpu_ns=N`).
//!
//! usage: scaph-in-cgroup CGROUP_DIR COUNT PROGRAM [ARGS...]
use std::{env, fs, process::Command};

fn fail(message: &str) -> ! {
    eprintln!("scaph-in-cgroup: {message}");
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = env::args().skip(1).collect();
    let (Some(dir), Some(count), Some(program)) = (args.first(), args.get(1), args.get(2)) else {
        fail("usage: scaph-in-cgroup CGROUP_DIR COUNT PROGRAM [ARGS...]")
    };
    let count: u32 = count
        .parse()
        .unwrap_or_else(|_| fail("COUNT must be a number"));
    let procs = format!("{dir}/cgroup.procs");
    if let Err(e) = fs::write(&procs, std::process::id().to_string()) {
        fail(&format!("joining {procs}: {e}"));
    }
    for _ in 0..count {
        let mut child = Command::new(program)
            .args(&args[3..])
            .spawn()
            .unwrap_or_else(|e| fail(&format!("{program}: {e}")));
        println!("pid={}", child.id());
        match child.wait() {
            Ok(status) if status.success() => {}
            Ok(status) => fail(&format!("{program} failed: {status}")),
            Err(e) => fail(&format!("waiting for {program}: {e}")),
        }
    }
    // SAFETY: rusage is plain data filled by the kernel.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a live local the kernel fills.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let ns = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1_000;
    println!(
        "children_cpu_ns={}",
        ns(usage.ru_utime) + ns(usage.ru_stime)
    );
}
