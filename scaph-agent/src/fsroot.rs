//! The one access layer to the kernel's `/proc` and `/sys`.
//!
//! Everything that observes the host reads below two roots, `--proc-root`
//! and `--sys-root` (normally `/proc` and `/sys`), so that a test or a
//! container with the host's trees mounted elsewhere sees the same host.
//! Paths are built here, files are read with [`read`] (bounded, one buffer
//! reused, no useless `fstat`), and CPU lists parsed by [`cpulist`].
//!
//! Two kinds of paths are deliberately *not* under the roots, and are named
//! here so that nothing else spells them:
//! - [`kernel`]: what loading the kernel program needs (tracefs, the kernel's
//!   BTF, the possible CPUs that size its maps). The program runs on this
//!   kernel whatever tree is observed.
//! - [`own_file`] and [`own_fd`]: scaph's own process (its CPU time and
//!   memory, its descriptors), always the running one in `/proc/self`,
//!   whatever tree `--proc-root` observes.
pub mod cpulist;
pub mod read;

use std::path::{Path, PathBuf};

/// Where procfs is mounted unless `--proc-root` says otherwise.
pub const DEFAULT_PROC_ROOT: &str = "/proc";
/// Where sysfs is mounted unless `--sys-root` says otherwise.
pub const DEFAULT_SYS_ROOT: &str = "/sys";

/// Kernel interfaces used only to load and feed the kernel program: always
/// the running kernel's, never under `--sys-root` (a simulated topology
/// changes how energy is split, not where the program runs).
pub mod kernel {
    /// tracefs, where it is usually mounted (newest first).
    pub const TRACEFS_ROOTS: &[&str] = &["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
    /// The running kernel's BTF.
    pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";
    /// CPU ids the kernel may ever use: sizes the per-CPU maps.
    pub const POSSIBLE_CPUS: &str = "/sys/devices/system/cpu/possible";
}

/// The two roots every host observation is read below.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Roots {
    proc: PathBuf,
    sys: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Self::running()
    }
}

impl Roots {
    #[must_use]
    pub fn new(proc: PathBuf, sys: PathBuf) -> Self {
        Self { proc, sys }
    }

    /// The running kernel's trees (`/proc`, `/sys`).
    #[must_use]
    pub fn running() -> Self {
        Self::new(DEFAULT_PROC_ROOT.into(), DEFAULT_SYS_ROOT.into())
    }

    /// The procfs root.
    #[must_use]
    pub fn proc(&self) -> &Path {
        &self.proc
    }

    /// The sysfs root.
    #[must_use]
    pub fn sys(&self) -> &Path {
        &self.sys
    }

    /// `<proc>/<rel>`, e.g. `loadavg`, `self/statm`.
    #[must_use]
    pub fn proc_file(&self, rel: &str) -> PathBuf {
        self.proc.join(rel)
    }

    /// `<proc>/<pid>`.
    #[must_use]
    pub fn pid_dir(&self, pid: u32) -> PathBuf {
        pid_dir(&self.proc, pid)
    }

    /// `<sys>/devices/system/cpu`: online CPUs and their topology.
    #[must_use]
    pub fn cpu_dir(&self) -> PathBuf {
        cpu_dir(&self.sys)
    }

    /// `<sys>/class/block/<name>`.
    #[must_use]
    pub fn block_dir(&self, name: &str) -> PathBuf {
        self.sys.join("class/block").join(name)
    }
}

/// `<proc_root>/<pid>`.
#[must_use]
pub fn pid_dir(proc_root: &Path, pid: u32) -> PathBuf {
    let mut dir = PathBuf::with_capacity(proc_root.as_os_str().len() + 12);
    dir.push(proc_root);
    dir.push(pid.to_string());
    dir
}

/// `/proc/self/<rel>`: a file of scaph's own process (`stat`, `statm`).
/// Always the running process's.
#[must_use]
pub fn own_file(rel: &str) -> PathBuf {
    Path::new(DEFAULT_PROC_ROOT).join("self").join(rel)
}

/// `/proc/self/fd/<fd>`: re-opens one of scaph's own descriptors (an
/// `O_PATH` handle, say) for reading. Always the running process's.
#[must_use]
pub fn own_fd(fd: std::os::fd::RawFd) -> PathBuf {
    Path::new(DEFAULT_PROC_ROOT).join(format!("self/fd/{fd}"))
}

/// `<sys_root>/devices/system/cpu`.
#[must_use]
pub fn cpu_dir(sys_root: &Path) -> PathBuf {
    sys_root.join("devices/system/cpu")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_built_below_the_roots() {
        let roots = Roots::new("/host/proc".into(), "/host/sys".into());
        assert_eq!(roots.pid_dir(42), Path::new("/host/proc/42"));
        assert_eq!(
            roots.proc_file("self/statm"),
            Path::new("/host/proc/self/statm")
        );
        assert_eq!(roots.cpu_dir(), Path::new("/host/sys/devices/system/cpu"));
        assert_eq!(
            roots.block_dir("sda"),
            Path::new("/host/sys/class/block/sda")
        );
        assert_eq!(Roots::default(), Roots::running());
        assert_eq!(Roots::running().proc(), Path::new("/proc"));
    }
}
