//! Helpers shared by the root-only integration tests: workloads with a known
//! CPU time (ground truth from `wait4` rusage) and access to the agent binary.
pub mod powercap;

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
};

use scaph_agent::cputime::{CpuSample, CpuTimeSource, ProcessSample};

/// Panics with the way to run these tests when not root.
pub fn require_root() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        panic!("these tests load a kernel program and need root: run `cargo xtask test`");
    }
}

/// Starts the burner with the given options.
pub fn burn(args: &[&str]) -> Child {
    Command::new(profile_dir().join("scaph-burn"))
        .args(args)
        .stdout(Stdio::null())
        .spawn()
        .expect("starting scaph-burn")
}

/// The burner's path, for tests that start it their own way (`nice`, ...).
pub fn burner_path() -> PathBuf {
    profile_dir().join("scaph-burn")
}

/// Reaps a child and returns its CPU time (user + system, all threads) in ns,
/// as the kernel reports it to the parent.
pub fn reap(child: Child) -> (u32, u64) {
    let pid = child.id();
    let mut status = 0;
    // SAFETY: rusage is plain data filled by the kernel.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own unreaped child; both pointers are to live locals.
    let ret = unsafe { libc::wait4(pid as i32, &mut status, 0, &mut usage) };
    assert_eq!(
        ret,
        pid as i32,
        "wait4 failed: {}",
        std::io::Error::last_os_error()
    );
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "burner failed: status {status}"
    );
    let ns = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1_000;
    std::mem::forget(child); // already reaped
    (pid, ns(usage.ru_utime) + ns(usage.ru_stime))
}

/// Takes `n` samples `gap_ms` apart and returns them.
pub fn samples(source: &mut dyn CpuTimeSource, n: usize, gap_ms: u64) -> Vec<CpuSample> {
    (0..n)
        .map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(gap_ms));
            source.sample().expect("sampling CPU time")
        })
        .collect()
}

/// Every sample of process `pid` across `samples`.
pub fn of_pid(samples: &[CpuSample], pid: u32) -> Vec<&ProcessSample> {
    samples
        .iter()
        .flat_map(|s| s.processes.iter())
        .filter(|p| p.key.pid == pid)
        .collect()
}

/// Total CPU ns reported for `pid` across `samples`.
pub fn total_ns(samples: &[CpuSample], pid: u32) -> u64 {
    of_pid(samples, pid).iter().map(|p| p.total_ns).sum()
}

/// The directory of the running test's profile (`target/debug`): test
/// executables live in its `deps/`, binaries in it.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("test binary in target/<profile>/deps")
        .to_path_buf()
}

/// The `scaph` binary built by `cargo xtask test` (same profile as the tests).
pub fn scaph_binary() -> PathBuf {
    let bin = profile_dir().join("scaph");
    assert!(
        bin.exists(),
        "{} missing: run `cargo xtask test` (it builds scaph first)",
        bin.display()
    );
    bin
}

/// Relative difference of `measured` to `truth`.
pub fn rel_err(measured: u64, truth: u64) -> f64 {
    (measured as f64 - truth as f64).abs() / truth as f64
}
