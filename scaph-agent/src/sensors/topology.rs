//! Which CPU belongs to which package (socket).
//!
//! Attribution splits a package's energy among the processes that ran on
//! *that package's* CPUs, so it needs this map. It comes from sysfs
//! (`cpuN/topology/physical_package_id`), the same numbering the kernel uses
//! for the powercap zone names `package-N`.
//!
//! Reading it never fails: where sysfs cannot tell, the CPU is put on socket 0
//! and a warning is logged, because a wrong-but-usable map (everything on one
//! socket) still conserves energy, whereas refusing to start helps nobody.
//! (Scaphandre panics in this situation, its most reported crash.)
use std::{collections::BTreeMap, fs, path::Path};

use log::{debug, warn};

use crate::fsroot::{self, cpulist, read::read_attribute};

/// CPU → socket map of the online CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Topology {
    /// Socket ids, ascending.
    sockets: Vec<u32>,
    /// CPUs of `sockets[i]`, ascending.
    cpus: Vec<Vec<u32>>,
    /// Socket of each CPU, indexed by CPU number (`None`: not online/known).
    socket_of: Vec<Option<u32>>,
}

impl Topology {
    /// Reads the online CPUs and their packages under `root`
    /// (normally `/sys/devices/system/cpu`, see [`fsroot::cpu_dir`]).
    ///
    /// Online CPUs come from `<root>/online`; when that is unreadable, every
    /// `cpuN` folder whose own `online` file is absent or `1` counts. CPUs
    /// whose `physical_package_id` cannot be read (or is negative, as some
    /// virtual machines report) go to socket 0. When no CPU at all can be
    /// found, the running machine's online CPU count (`sysconf`) is used, all
    /// on socket 0.
    #[must_use]
    pub fn from_sysfs(root: &Path) -> Self {
        let cpus = online_cpus(root);
        if cpus.is_empty() {
            let n = online_cpu_count();
            warn!(
                "no CPU found under {}: assuming {n} CPUs, all on socket 0",
                root.display()
            );
            return Self::from_map((0..n).map(|cpu| (cpu, 0)).collect());
        }
        let mut unknown = Vec::new();
        let map = cpus
            .into_iter()
            .map(|cpu| {
                let path = root.join(format!("cpu{cpu}/topology/physical_package_id"));
                let socket = read_package_id(&path).unwrap_or_else(|| {
                    unknown.push(cpu);
                    0
                });
                (cpu, socket)
            })
            .collect();
        if !unknown.is_empty() {
            warn!(
                "package of CPUs {unknown:?} unknown (no readable physical_package_id under {}): counted on socket 0",
                root.display()
            );
        }
        Self::from_map(map)
    }

    /// [`Topology::from_sysfs`] under a sysfs mount point (normally `/sys`).
    #[must_use]
    pub fn from_sys_root(sys_root: &Path) -> Self {
        Self::from_sysfs(&fsroot::cpu_dir(sys_root))
    }

    /// Builds a topology from `(cpu, socket)` pairs. A CPU listed twice keeps
    /// its first socket.
    #[must_use]
    pub fn from_map(pairs: Vec<(u32, u32)>) -> Self {
        let mut by_socket: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        let mut socket_of: Vec<Option<u32>> = Vec::new();
        for (cpu, socket) in pairs {
            let idx = cpu as usize;
            if socket_of.len() <= idx {
                socket_of.resize(idx + 1, None);
            }
            if socket_of[idx].is_some() {
                debug!("CPU {cpu} listed twice in the topology: keeping its first socket");
                continue;
            }
            socket_of[idx] = Some(socket);
            by_socket.entry(socket).or_default().push(cpu);
        }
        let (sockets, mut cpus): (Vec<u32>, Vec<Vec<u32>>) = by_socket.into_iter().unzip();
        for list in &mut cpus {
            list.sort_unstable();
        }
        Self {
            sockets,
            cpus,
            socket_of,
        }
    }

    /// CPUs of `socket`, ascending; empty for an unknown socket.
    #[must_use]
    pub fn cpus_of(&self, socket: u32) -> &[u32] {
        self.sockets
            .binary_search(&socket)
            .map_or(&[], |i| self.cpus[i].as_slice())
    }

    /// Socket of `cpu`, `None` when the CPU is not (or was not) online.
    #[must_use]
    pub fn socket_of(&self, cpu: u32) -> Option<u32> {
        self.socket_of.get(cpu as usize).copied().flatten()
    }

    /// Socket ids, ascending.
    #[must_use]
    pub fn sockets(&self) -> &[u32] {
        &self.sockets
    }

    /// Number of CPUs known (all sockets).
    #[must_use]
    pub fn num_cpus(&self) -> usize {
        self.cpus.iter().map(Vec::len).sum()
    }
}

/// Online CPU numbers under `root`, ascending.
fn online_cpus(root: &Path) -> Vec<u32> {
    match cpulist::read(&root.join("online")) {
        Ok(list) => return list,
        Err(e) => debug!("{e}"),
    }
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    let mut cpus: Vec<u32> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name();
            let cpu: u32 = name.to_str()?.strip_prefix("cpu")?.parse().ok()?;
            (cpu < cpulist::MAX_CPUS && cpu_dir_online(&entry.path())).then_some(cpu)
        })
        .collect();
    cpus.sort_unstable();
    cpus
}

/// A `cpuN` folder is online unless its `online` file says `0` (cpu0 often
/// has no such file: it cannot be taken offline).
fn cpu_dir_online(dir: &Path) -> bool {
    read_attribute(&dir.join("online")).is_none_or(|s| s != "0")
}

fn read_package_id(path: &Path) -> Option<u32> {
    let Some(text) = read_attribute(path) else {
        debug!("cannot read {}", path.display());
        return None;
    };
    match text.parse::<i64>() {
        Ok(id) => u32::try_from(id).ok(),
        Err(_) => {
            debug!(
                "{}: cannot parse {:?}",
                path.display(),
                crate::label::bound(&text, 80)
            );
            None
        }
    }
}

/// Online CPUs of the running machine, at least 1.
fn online_cpu_count() -> u32 {
    // SAFETY: sysconf only reads a system value; it has no memory effects.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    u32::try_from(n).ok().filter(|&n| n > 0).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensors::testutil::{write_tree, Entry::File};

    #[test]
    fn from_map_groups_and_sorts() {
        let t = Topology::from_map(vec![(3, 1), (0, 0), (2, 1), (1, 0), (1, 5)]);
        assert_eq!(t.sockets(), &[0, 1]);
        assert_eq!(t.cpus_of(0), &[0, 1]);
        assert_eq!(t.cpus_of(1), &[2, 3]);
        assert_eq!(t.cpus_of(7), &[] as &[u32]);
        assert_eq!(t.socket_of(1), Some(0), "first socket kept");
        assert_eq!(t.socket_of(99), None);
        assert_eq!(t.num_cpus(), 4);
    }

    #[test]
    fn two_sockets_from_sysfs() {
        let dir = write_tree(&[
            File("online", "0-3\n"),
            File("cpu0/topology/physical_package_id", "0\n"),
            File("cpu1/topology/physical_package_id", "1\n"),
            File("cpu2/topology/physical_package_id", "0\n"),
            File("cpu3/topology/physical_package_id", "1\n"),
            // Offline CPU: not in `online`, ignored even though it has a file.
            File("cpu4/topology/physical_package_id", "1\n"),
        ]);
        let t = Topology::from_sysfs(dir.path());
        assert_eq!(t.sockets(), &[0, 1]);
        assert_eq!(t.cpus_of(0), &[0, 2]);
        assert_eq!(t.cpus_of(1), &[1, 3]);
        assert_eq!(t.socket_of(4), None);
    }

    #[test]
    fn without_online_file_cpu_folders_count() {
        let dir = write_tree(&[
            File("cpu0/topology/physical_package_id", "0\n"),
            File("cpu1/topology/physical_package_id", "0\n"),
            File("cpu1/online", "1\n"),
            File("cpu2/topology/physical_package_id", "0\n"),
            File("cpu2/online", "0\n"),
        ]);
        let t = Topology::from_sysfs(dir.path());
        assert_eq!(t.cpus_of(0), &[0, 1]);
    }

    #[test]
    fn unreadable_package_ids_fall_back_to_socket_0() {
        let dir = write_tree(&[
            File("online", "0-2\n"),
            File("cpu0/topology/physical_package_id", "-1\n"),
            File("cpu1/topology/physical_package_id", "garbage\n"),
            // cpu2: no topology folder at all
        ]);
        let t = Topology::from_sysfs(dir.path());
        assert_eq!(t.sockets(), &[0]);
        assert_eq!(t.cpus_of(0), &[0, 1, 2]);
    }

    #[test]
    fn missing_root_uses_machine_cpu_count() {
        let t = Topology::from_sysfs(Path::new("/nonexistent/scaph/cpu"));
        assert_eq!(t.sockets(), &[0]);
        assert!(t.num_cpus() >= 1);
    }
}
