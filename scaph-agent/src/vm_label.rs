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

/// The VM's name when `cmdline` is a qemu/KVM virtual machine with a
/// `-name` (or, failing that, a `-uuid`); `None` for any other process.
#[must_use]
pub fn vm_name(cmdline: &[String]) -> Option<String> {
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
pub fn is_qemu(cmdline: &[String]) -> bool {
    let Some(argv0) = cmdline.first() else {
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
fn option_value(cmdline: &[String], opt: &str) -> Option<String> {
    let mut found = None;
    let mut args = cmdline.iter().skip(1);
    while let Some(arg) = args.next() {
        let Some(rest) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            continue;
        };
        if rest == opt {
            if let Some(value) = args.next() {
                found = Some(value.clone());
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
        assert_eq!(vm_name(&[]), None);
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
