//! Many idle processes that each wake every second, spawned cheaply and
//! never left behind.
//!
//! The bench starts itself again as a small single-threaded "herd" process
//! (`scaph-bench --herd N`) in a new process group; the herd forks the N
//! sleepers. Dropping the [`Herd`] kills the whole group. Should the bench
//! die without dropping it (a signal), the herd dies with it
//! (`PR_SET_PDEATHSIG`), and each sleeper with the herd.
//!
//! `kernel.pid_max` may be raised for a large herd; a guard made before the
//! herd starts puts it back, on drop or as a panic unwinds. A bench killed by
//! a signal runs no destructor, so the raised value then stays (it is only
//! an upper bound on process ids: harmless, and the next run finds it high
//! enough and leaves it).
use std::{
    io::{BufRead as _, BufReader},
    os::unix::process::CommandExt as _,
    process::{Child, Command, Stdio},
};

const PID_MAX: &str = "/proc/sys/kernel/pid_max";

/// The argument that makes `scaph-bench` a herd (see [`run`]).
pub const HERD_ARG: &str = "--herd";

/// A running herd of sleepers, killed (all of it) on drop.
pub struct Herd {
    child: Child,
    /// Dropped after the sleepers are gone (fields drop after `drop`).
    _pid_max: PidMax,
}

impl Herd {
    /// Starts `n` sleepers and returns once every one of them runs.
    pub fn spawn(n: usize) -> Self {
        // First: should the spawn fail, the unwind restores pid_max.
        let pid_max = PidMax::raise_for(n);
        let child = Command::new(std::env::current_exe().expect("current_exe"))
            .args([HERD_ARG, &n.to_string()])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the herd of sleepers");
        let mut herd = Self {
            child,
            _pid_max: pid_max,
        };
        let mut line = String::new();
        let stdout = herd.child.stdout.take().expect("herd stdout");
        let _ = BufReader::new(stdout).read_line(&mut line);
        // On a failure the herd is killed by the drop as the panic unwinds.
        assert!(
            line.trim() == "ready",
            "the herd of {n} sleepers did not start (see its error above)"
        );
        herd
    }
}

impl Drop for Herd {
    fn drop(&mut self) {
        // The herd leads its process group, which holds every sleeper.
        let group = self.child.id() as i32;
        // SAFETY: a plain syscall on our own process group.
        unsafe { libc::kill(-group, libc::SIGKILL) };
        let _ = self.child.wait();
        // The sleepers, orphaned, are reaped by init: wait until they are
        // gone, so that the next measure does not see them (at most 10 s).
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        // SAFETY: signal 0 only checks whether the group still has a process.
        while unsafe { libc::kill(-group, 0) } == 0 && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// `kernel.pid_max` raised for a herd; the old value is written back on drop.
struct PidMax {
    /// The value to write back (none when it was high enough already).
    restore: Option<String>,
}

impl PidMax {
    /// Raises `kernel.pid_max` when `n` more processes might not fit.
    fn raise_for(n: usize) -> Self {
        let needed = (n + 32_768).next_power_of_two();
        let Some(old) = std::fs::read_to_string(PID_MAX)
            .ok()
            .filter(|old| old.trim().parse::<usize>().is_ok_and(|v| v < needed))
        else {
            return Self { restore: None };
        };
        // The guard exists before the write: a failure after it still restores.
        let guard = Self { restore: Some(old) };
        std::fs::write(PID_MAX, needed.to_string())
            .unwrap_or_else(|e| panic!("raising {PID_MAX} to {needed}: {e}"));
        guard
    }
}

impl Drop for PidMax {
    fn drop(&mut self) {
        if let Some(old) = self.restore.take() {
            let _ = std::fs::write(PID_MAX, old);
        }
    }
}

/// The herd itself: forks `n` sleepers, says "ready" on stdout, then waits
/// to be killed. It is single-threaded, so forking is safe.
pub fn run(n: usize) -> ! {
    let herd = std::process::id() as i32;
    die_with_parent();
    // SAFETY: plain syscalls. Ignoring SIGCHLD makes the kernel reap the
    // sleepers; RLIMIT_NPROC is raised to its hard limit (root is not bound by it).
    unsafe {
        libc::signal(libc::SIGCHLD, libc::SIG_IGN);
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NPROC, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NPROC, &limit);
        }
    }
    for i in 0..n {
        // SAFETY: the herd is single-threaded; the child only makes syscalls.
        match unsafe { libc::fork() } {
            0 => sleeper(herd),
            pid if pid < 0 => {
                eprintln!(
                    "scaph-bench herd: fork failed after {i} of {n} sleepers: {}",
                    std::io::Error::last_os_error()
                );
                std::process::exit(1);
            }
            _ => {}
        }
    }
    println!("ready");
    loop {
        // SAFETY: a plain syscall; the herd ends when it is killed.
        unsafe { libc::pause() };
    }
}

/// Asks for SIGKILL when the parent dies, and leaves at once if it already has.
fn die_with_parent() {
    // SAFETY: plain syscalls.
    let parent = unsafe { libc::getppid() };
    // SAFETY: as above.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // SAFETY: as above.
    if unsafe { libc::getppid() } != parent {
        // SAFETY: as above; nothing to unwind.
        unsafe { libc::_exit(1) };
    }
}

/// One sleeper: wakes every second until the herd dies or kills it.
fn sleeper(herd: i32) -> ! {
    // SAFETY: plain syscalls.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // SAFETY: as above.
    if unsafe { libc::getppid() } != herd {
        // SAFETY: as above; nothing to unwind in a forked child.
        unsafe { libc::_exit(1) };
    }
    let second = libc::timespec {
        tv_sec: 1,
        tv_nsec: 0,
    };
    loop {
        // SAFETY: a plain syscall with a live timespec.
        unsafe { libc::nanosleep(&second, std::ptr::null_mut()) };
    }
}
