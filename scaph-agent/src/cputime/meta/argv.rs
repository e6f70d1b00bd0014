//! The command line of a process, and what it says about VMs: the
//! arguments as kept (bounded), and a VM's name when the process looks like
//! qemu and is run by someone trusted to run VMs.
use std::{borrow::Cow, path::Path, sync::Arc};

use ::procfs::process::Process;

use super::{CMDLINE_READ_MAX, VM_NAME_MAX_BYTES};
use crate::{
    fsroot::read::{read_to_end_into, Extent},
    label,
    vm_label::{self, VmTrust},
};

/// `/proc/PID/status`: about 1.5 KiB.
const PID_STATUS: Extent = Extent {
    limit: 16 * 1024,
    single_line: false,
};

/// The arguments of a (possibly cut) `cmdline`, converted lossily when not
/// UTF-8 (the crate's `cmdline()` would drop the whole line). Empty pieces
/// are dropped: the trailing NUL, and the padding left by processes that
/// rewrite their title.
pub(super) struct Args<'a> {
    text: Cow<'a, str>,
    cut: bool,
}

impl<'a> Args<'a> {
    pub(super) fn new(raw: &'a [u8], cut: bool) -> Self {
        Self {
            text: String::from_utf8_lossy(raw),
            cut,
        }
    }

    fn iter(&self) -> impl Iterator<Item = &str> {
        self.text.split('\0').filter(|arg| !arg.is_empty())
    }

    /// The arguments that were read whole (a cut one is left out).
    pub(super) fn whole(&self) -> Vec<&str> {
        let mut args: Vec<&str> = self.iter().collect();
        if self.cut && !self.text.ends_with('\0') {
            args.pop();
        }
        args
    }

    /// Joined by spaces and bounded to `max` characters (empty for 0); ends
    /// with the cut mark when anything was left out, read or not.
    pub(super) fn joined(&self, max: usize) -> Arc<str> {
        if max == 0 {
            return Arc::from("");
        }
        let joined = self.iter().collect::<Vec<_>>().join(" ");
        let mut bounded = label::bound(&joined, max).into_owned();
        if self.cut && !bounded.ends_with(label::CUT) {
            bounded.push(label::CUT);
        }
        Arc::from(bounded)
    }
}

/// What scaph makes of a raw `cmdline` (at most [`CMDLINE_READ_MAX`] bytes of
/// it are read): the line as kept with `max` characters, and the arguments
/// read whole, which VM detection looks at. For the fuzz targets.
pub(crate) fn parse_cmdline(raw: &[u8], max: usize) -> (Arc<str>, Vec<String>) {
    let raw = &raw[..raw.len().min(CMDLINE_READ_MAX)];
    let args = Args::new(raw, raw.len() >= CMDLINE_READ_MAX);
    let whole = args.whole().into_iter().map(str::to_owned).collect();
    (args.joined(max), whole)
}

/// The name of a VM that is trusted to be one (see [`VmTrust`]).
pub(super) fn vm_name(
    args: &Args<'_>,
    cgroup_path: Option<&str>,
    trust: &VmTrust,
    uid: impl FnOnce() -> Option<u32>,
) -> Option<Arc<str>> {
    let whole = args.whole();
    if !vm_label::is_qemu(&whole) {
        return None;
    }
    let name = vm_label::vm_name(&whole)?;
    if !trust.trusts(cgroup_path, uid) {
        log::debug!(
            "a process that looks like VM {:?} is not run by a trusted user: not a VM",
            label::value(&name)
        );
        return None;
    }
    if name.len() > VM_NAME_MAX_BYTES || name.chars().any(char::is_control) {
        log::info!(
            "VM name {:?} is too long or has control characters: the VM is left unnamed",
            label::value(&name)
        );
        return None;
    }
    Some(Arc::from(name))
}

/// The real uid from `/proc/PID/status`: an unprivileged user cannot make
/// it root's (a setuid program changes the effective uid only, and the
/// owner of `/proc/PID` becomes root for any process that makes itself
/// non-dumpable).
pub(super) fn read_real_uid(process: &Process) -> Option<u32> {
    let mut file = process.open_relative("status").ok()?;
    let mut buf = Vec::with_capacity(2048);
    read_to_end_into(&mut file, &mut buf, PID_STATUS).ok()?;
    parse_real_uid(&buf)
}

/// Whether `process` shares the PID namespace of `proc_root`'s PID 1:
/// containers (docker, podman, LXC, nspawn) have one of their own; the
/// hypervisor's qemu does not. True when PID 1's cannot be read (scaph
/// without `CAP_SYS_PTRACE` cannot tell; the cgroup rules still hold).
pub(super) fn in_host_pid_namespace(proc_root: &Path, process: &Process) -> bool {
    let pid_ns = |p: &Process| {
        p.namespaces()
            .ok()?
            .0
            .get(std::ffi::OsStr::new("pid"))
            .map(|ns| (ns.device_id, ns.identifier))
    };
    let Some(host) = Process::new_with_root(crate::fsroot::pid_dir(proc_root, 1))
        .ok()
        .and_then(|init| pid_ns(&init))
    else {
        return true;
    };
    pid_ns(process) == Some(host)
}

/// The first number of the `Uid:` line (real, effective, saved, filesystem).
pub(super) fn parse_real_uid(status: &[u8]) -> Option<u32> {
    let line = status
        .split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(b"Uid:"))?;
    let real = line
        .split(u8::is_ascii_whitespace)
        .find(|field| !field.is_empty())?;
    std::str::from_utf8(real).ok()?.parse().ok()
}
