//! Which processes are qemu/KVM virtual machines, and what they are called.
//!
//! Shared by `--qemu` (a `vmname` label on the VM processes of the other
//! exporters) and the `qemu` exporter (one tree per VM, named after it).
//!
//! A VM is a process whose `argv[0]` names qemu's system emulator: its
//! basename is `qemu-system-<arch>`, `qemu-kvm` (RHEL, Fedora) or `kvm`
//! (Proxmox). The name is qemu's `-name` option, as libvirt writes it
//! (`-name guest=vm1,debug-threads=on`) or in its legacy short form
//! (`-name vm1`). Without `-name`, `-uuid` names the VM.
//!
//! Scaphandre looked for `qemu-system` anywhere in the command line (so a
//! `grep qemu-system` was a VM) and took the name from `guest=` only.
//!
//! Anyone can start a process whose `argv[0]` is `qemu-system-x86_64` and
//! whose `-name` is another VM's: the command line only says what a VM is
//! called, never whether it is one. [`VmTrust`] decides that from what an
//! unprivileged user cannot forge (who runs the process, and which cgroup it
//! is in); the decision is made once per process when its metadata is read
//! (`cputime::meta`), and exporters only see the trusted name.
use std::collections::BTreeSet;

/// Who may run VMs: processes that look like qemu count as VMs only when
/// their real uid is one of these, or when they live in a hypervisor's
/// cgroup (see [`in_hypervisor_cgroup`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmTrust {
    uids: BTreeSet<u32>,
}

/// Default of `--vm-trusted-users`: root, and the users libvirt runs qemu as
/// (Debian/Ubuntu, then Fedora/RHEL).
pub const DEFAULT_TRUSTED_USERS: &str = "root,libvirt-qemu,qemu";

impl Default for VmTrust {
    /// Root only.
    fn default() -> Self {
        Self {
            uids: BTreeSet::from([0]),
        }
    }
}

impl VmTrust {
    /// Trusts exactly these uids.
    #[must_use]
    pub fn uids(uids: impl IntoIterator<Item = u32>) -> Self {
        Self {
            uids: uids.into_iter().collect(),
        }
    }

    /// Resolves user names (or numeric uids, taken as given) once, at
    /// start, from the local `/etc/passwd` only: a directory service (LDAP,
    /// SSSD) may hold an account named `qemu` that is anyone's. Unknown
    /// names are left out, with a log line.
    #[must_use]
    pub fn resolve<S: AsRef<str>>(users: &[S]) -> Self {
        let passwd = read_passwd(std::path::Path::new("/etc/passwd"));
        Self::resolve_in(users, &passwd)
    }

    /// [`VmTrust::resolve`] with the text of a passwd file.
    fn resolve_in<S: AsRef<str>>(users: &[S], passwd: &str) -> Self {
        let mut uids = BTreeSet::new();
        for user in users
            .iter()
            .map(|u| u.as_ref().trim())
            .filter(|u| !u.is_empty())
        {
            match user.parse::<u32>().ok().or_else(|| uid_in(passwd, user)) {
                Some(uid) => {
                    uids.insert(uid);
                }
                None => log::info!(
                    "--vm-trusted-users: no user {user:?} in /etc/passwd on this host; ignored"
                ),
            }
        }
        Self { uids }
    }

    /// Whether a qemu-looking process is a VM: it lives in a hypervisor's
    /// cgroup, or its real uid is trusted and its cgroup is no container's
    /// or pod's (root in a container without a user namespace is root, but
    /// not the host's hypervisor). `uid` is read only when the cgroup does
    /// not already decide (it costs a read of `/proc/PID/status`); it
    /// answers `None` when the uid cannot be trusted.
    pub fn trusts(&self, cgroup_path: Option<&str>, uid: impl FnOnce() -> Option<u32>) -> bool {
        if cgroup_path.is_some_and(in_hypervisor_cgroup) {
            return true;
        }
        !cgroup_path.is_some_and(crate::containers::parse::looks_like_workload)
            && uid().is_some_and(|uid| self.uids.contains(&uid))
    }
}

/// Most bytes of `/etc/passwd` read.
const PASSWD_MAX: u64 = 16 * 1024 * 1024;

/// The local passwd file, or nothing (with a log line).
fn read_passwd(path: &std::path::Path) -> String {
    use std::io::Read as _;
    let mut text = String::new();
    let read = std::fs::File::open(path).and_then(|f| f.take(PASSWD_MAX).read_to_string(&mut text));
    if let Err(error) = read {
        log::info!("--vm-trusted-users: reading {}: {error}", path.display());
        text.clear();
    }
    text
}

/// The uid of user `name` in a passwd file's text (`name:x:uid:…`).
fn uid_in(passwd: &str, name: &str) -> Option<u32> {
    if name == "root" {
        return Some(0);
    }
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name)
            .then(|| fields.nth(1)?.parse().ok())
            .flatten()
    })
}

/// Whether a cgroup path is one libvirt or systemd-machined gives a VM:
/// `/machine.slice/machine-qemu<…>.scope[/…]` (systemd) or
/// `/machine/qemu-<…>.libvirt-qemu[/…]` (libvirt on cgroupfs). Only root
/// creates these; leading `..` (a cgroup namespace's view) are skipped, and
/// nothing inside a user's delegated subtree (`user@UID.service`) counts.
#[must_use]
pub fn in_hypervisor_cgroup(path: &str) -> bool {
    let mut segments = path
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .skip_while(|s| *s == "..");
    let (Some(first), Some(second)) = (segments.next(), segments.next()) else {
        return false;
    };
    let hypervisor = match first {
        "machine.slice" => second.starts_with("machine-qemu") && second.ends_with(".scope"),
        "machine" => second.starts_with("qemu-") && second.ends_with(".libvirt-qemu"),
        _ => false,
    };
    hypervisor
        && !path
            .split('/')
            .any(crate::containers::parse::is_user_manager)
}

/// The VM's name when `cmdline` is a qemu/KVM virtual machine with a
/// `-name` (or, failing that, a `-uuid`); `None` for any other process.
/// This reads the command line only: see [`VmTrust`] for whether the
/// process may be a VM at all.
#[must_use]
pub fn vm_name<S: AsRef<str>>(cmdline: &[S]) -> Option<String> {
    if !is_qemu(cmdline) {
        return None;
    }
    option_value(cmdline, "name")
        .and_then(|value| guest_name(&value))
        .or_else(|| option_value(cmdline, "uuid"))
        .filter(|name| !name.is_empty())
}

/// Whether `argv[0]` names qemu's system emulator.
#[must_use]
pub fn is_qemu<S: AsRef<str>>(cmdline: &[S]) -> bool {
    let Some(argv0) = cmdline.first().map(AsRef::as_ref) else {
        return false;
    };
    let base = argv0.rsplit('/').next().unwrap_or(argv0);
    base.strip_prefix("qemu-system-")
        .is_some_and(|arch| !arch.is_empty())
        || base == "qemu-kvm"
        || base == "kvm"
}

/// `name` as a directory name under the qemu exporter's root, or `None` when
/// it cannot be one (empty, `.`, `..`, a `/` or a NUL in it). Names are never
/// rewritten: two VMs must not end up writing to one tree.
#[must_use]
pub fn as_dir_name(name: &str) -> Option<&str> {
    let bad = name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']);
    (!bad).then_some(name)
}

/// The value of `-opt VALUE`, `--opt VALUE`, `-opt=VALUE` or `--opt=VALUE`
/// (the last one wins, as in qemu).
fn option_value<S: AsRef<str>>(cmdline: &[S], opt: &str) -> Option<String> {
    let mut found = None;
    let mut args = cmdline.iter().map(AsRef::as_ref).skip(1);
    while let Some(arg) = args.next() {
        let Some(rest) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            continue;
        };
        if rest == opt {
            if let Some(value) = args.next() {
                found = Some(value.to_owned());
            }
        } else if let Some(value) = rest.strip_prefix(opt).and_then(|r| r.strip_prefix('=')) {
            found = Some(value.to_owned());
        }
    }
    found
}

/// The guest name in the value of `-name`: the `guest=` key, or a first
/// element without a key (qemu's implied key). `,,` is an escaped comma.
fn guest_name(value: &str) -> Option<String> {
    split_qemu_opts(value)
        .into_iter()
        .enumerate()
        .find_map(|(i, item)| match item.split_once('=') {
            Some(("guest", name)) => Some(name.to_owned()),
            None if i == 0 => Some(item),
            _ => None,
        })
}

/// Splits qemu's `key=value,key=value` syntax on single commas; a doubled
/// comma stands for one comma inside a value.
fn split_qemu_opts(value: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut current = String::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                current.push(',');
            } else {
                items.push(std::mem::take(&mut current));
            }
        } else {
            current.push(c);
        }
    }
    items.push(current);
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn names_from_command_lines() {
        let table: &[(&str, Option<&str>)] = &[
            // libvirt
            (
                "/usr/bin/qemu-system-x86_64 -name guest=vm1,debug-threads=on -S -object secret,id=masterKey0",
                Some("vm1"),
            ),
            // key order does not matter
            (
                "qemu-system-aarch64 -name debug-threads=on,guest=arm-vm",
                Some("arm-vm"),
            ),
            // legacy short form, with and without options after the name
            ("qemu-system-x86_64 -name vm1", Some("vm1")),
            ("qemu-system-x86_64 -name vm1,debug-threads=on", Some("vm1")),
            ("qemu-system-x86_64 --name=vm2 -m 1024", Some("vm2")),
            ("qemu-system-x86_64 -name=vm3", Some("vm3")),
            // escaped comma
            ("qemu-system-x86_64 -name guest=a,,b,debug-threads=on", Some("a,b")),
            // RHEL's binary, Proxmox's wrapper
            (
                "/usr/libexec/qemu-kvm -name guest=rhel9,debug-threads=on",
                Some("rhel9"),
            ),
            (
                "/usr/bin/kvm -id 100 -name web01,debug-threads=on -no-shutdown",
                Some("web01"),
            ),
            // no -name: the uuid names it
            (
                "qemu-system-x86_64 -uuid 0b4c43e8-6f3c-4a59-9c1b-2d5b7c6d0a11 -m 512",
                Some("0b4c43e8-6f3c-4a59-9c1b-2d5b7c6d0a11"),
            ),
            // the last -name wins
            ("qemu-system-x86_64 -name old -name guest=new", Some("new")),
            // no name at all
            ("qemu-system-x86_64 -m 512", None),
            ("qemu-system-x86_64 -name", None),
            ("qemu-system-x86_64 -name guest=", None),
            // not a VM
            ("grep qemu-system-x86_64 -name guest=vm1", None),
            ("/usr/bin/qemu-img convert -name guest=vm1", None),
            ("qemu-system- -name vm1", None),
            ("bash -c exec qemu-system-x86_64 -name vm1", None),
            ("", None),
        ];
        for (line, want) in table {
            assert_eq!(vm_name(&args(line)).as_deref(), *want, "{line:?}");
        }
        assert_eq!(vm_name::<&str>(&[]), None);
    }

    /// Who runs a qemu-looking process, and where: a VM or not.
    #[test]
    fn trust_table() {
        let libvirt = VmTrust::uids([0, 64055]);
        let table: &[(Option<u32>, Option<&str>, bool)] = &[
            // root, and the hypervisor's user, anywhere
            (Some(0), Some("/system.slice/pve-guests.service"), true),
            (Some(64055), None, true),
            // libvirt's and systemd-machined's cgroups, whoever runs it
            (Some(1000), Some("/machine.slice/machine-qemu\\x2d1\\x2dvm1.scope/libvirt/emulator"), true),
            (None, Some("/machine.slice/machine-qemu\\x2d2\\x2dweb.scope"), true),
            (Some(1000), Some("/machine/qemu-3-db.libvirt-qemu/emulator"), true),
            (Some(1000), Some("/../../machine.slice/machine-qemu\\x2d1\\x2dvm1.scope"), true),
            // an ordinary user, however it names things
            (Some(1000), None, false),
            (Some(65534), Some("/user.slice/user-1000.slice/session-2.scope"), false),
            (Some(1000), Some("/user.slice/user-1000.slice/user@1000.service/machine.slice/machine-qemu-x.scope"), false),
            (Some(1000), Some("/system.slice/machine.slice/machine-qemu-x.scope"), false),
            (Some(1000), Some("/machine.slice/libpod-abc.scope"), false),
            (Some(1000), Some("/machine.slice"), false),
            // root in a container or pod (no user namespace): not the host's hypervisor
            (Some(0), Some("/system.slice/docker-4f1d5e2a3b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6.scope"), false),
            (Some(0), Some("/kubepods/burstable/pod8b0c9a2e-4d3f-4e6a-9b1c-2d3e4f5a6b7c/4f1d5e2a3b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6"), false),
            (Some(64055), Some("/machine.slice/libpod-4f1d5e2a3b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6.scope"), false),
            (Some(0), Some("/lxc.payload.ct1/system.slice/docker-4f1d5e2a3b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6.scope"), false),
            (None, None, false),
        ];
        for &(uid, cgroup, want) in table {
            assert_eq!(
                libvirt.trusts(cgroup, || uid),
                want,
                "uid {uid:?} in {cgroup:?}"
            );
        }
        assert!(
            !VmTrust::default().trusts(None, || Some(64055)),
            "the default without names trusts root only"
        );
    }

    #[test]
    fn trusted_users_resolve() {
        let trust = VmTrust::resolve(&["root", "107", "no-such-user-here", ""]);
        assert_eq!(trust, VmTrust::uids([0, 107]));
    }

    /// Names come from the local passwd file only; numbers are taken as given.
    #[test]
    fn trusted_names_come_from_the_local_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      libvirt-qemu:x:64055:108:Libvirt Qemu,,,:/var/lib/libvirt:/usr/sbin/nologin\n\
                      bad:x:notanumber:0::/:/bin/false\n\
                      qemuuser:x:1234:1234::/home/q:/bin/sh\n";
        let trust = VmTrust::resolve_in(&["root", "libvirt-qemu", "qemu", "bad", "5000"], passwd);
        assert_eq!(trust, VmTrust::uids([0, 64055, 5000]));
        assert_eq!(
            VmTrust::resolve_in(&["libvirt-qemu"], ""),
            VmTrust::uids([]),
            "no passwd file: only root and numbers"
        );
    }

    #[test]
    fn detection() {
        assert!(is_qemu(&args("qemu-system-x86_64")));
        assert!(is_qemu(&args(
            "/opt/qemu/bin/qemu-system-riscv64 -nographic"
        )));
        assert!(!is_qemu(&args("kvm-ok")));
        assert!(
            !is_qemu(&args("/usr/bin/qemu-x86_64 ./a.out")),
            "user-mode emulation is not a VM"
        );
    }

    #[test]
    fn dir_names() {
        assert_eq!(as_dir_name("vm1"), Some("vm1"));
        assert_eq!(as_dir_name("my vm é"), Some("my vm é"));
        for bad in ["", ".", "..", "a/b", "../x", "a\0b"] {
            assert_eq!(as_dir_name(bad), None, "{bad:?}");
        }
    }
}
