//! Energy of a virtual machine, as its hypervisor writes it (`--vm`).
//!
//! Guests have no RAPL. A hypervisor-side exporter (Scaphandre's `qemu`
//! exporter, or ours) writes the VM's share of the host energy as a
//! powercap-like tree, shared into the guest (virtiofs/9p):
//!
//! ```text
//! <root>/intel-rapl:0/energy_uj            cumulative µJ
//! <root>/intel-rapl:0/name                 package-0           (may be absent)
//! <root>/intel-rapl:0/max_energy_range_uj                      (may be absent)
//! <root>/intel-rapl:0:0/                   empty domain folder (may be absent)
//! ```
//!
//! It is read with [`PowercapSensor`]'s code; the differences are the root,
//! the labels, and two tolerances that code already has:
//! - a top-level `intel-rapl:N` without `name` is `package-N` (Scaphandre's
//!   exporter writes only `energy_uj`);
//! - without `max_energy_range_uj` the counter is taken never to wrap
//!   ([`super::powercap::UNKNOWN_MAX_RANGE_UJ`]): a counter that goes back
//!   (the hypervisor restarted it) is an implausible delta, dropped and
//!   counted, and the next poll continues from the new value.
//!
//! The file is opened anew on each poll: a writer that replaces it by rename
//! would otherwise leave us reading the old file forever.
use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    time::Instant,
};

use super::{
    powercap::PowercapSensor, EnergyOrigin, EnergyReading, EnergySensor, SensorError, Utilisation,
};

/// Where the guest mounts the hypervisor's tree by default.
pub const DEFAULT_VM_ROOT: &str = "/var/scaphandre";
/// Environment variable that overrides [`DEFAULT_VM_ROOT`] (Scaphandre's name).
pub const VM_ROOT_ENV: &str = "SCAPHANDRE_POWERCAP_PATH";

/// The VM's energy, read from the tree its hypervisor writes.
#[derive(Debug)]
pub struct VmSensor {
    inner: PowercapSensor,
}

impl VmSensor {
    /// Opens the tree at `root` (see [`vm_root`] for the usual choice).
    ///
    /// # Errors
    /// As [`PowercapSensor::new`]: [`SensorError::NoZones`] when the tree is
    /// not there (not mounted yet), [`SensorError::PermissionDenied`] when its
    /// counter cannot be read.
    pub fn new(root: &Path) -> Result<Self, SensorError> {
        Ok(Self {
            inner: PowercapSensor::open(root, true)?,
        })
    }

    /// The root in use.
    #[must_use]
    pub fn root(&self) -> &Path {
        self.inner.root()
    }

    /// One line listing the zones, for the startup log.
    #[must_use]
    pub fn describe(&self) -> String {
        self.inner.describe()
    }

    /// [`EnergySensor::poll`] at a given instant (see [`PowercapSensor::poll_at`]).
    ///
    /// # Errors
    /// As [`PowercapSensor::poll_at`].
    pub fn poll_at(&mut self, now: Instant) -> Result<EnergyReading, SensorError> {
        self.inner.poll_at(now)
    }
}

impl EnergySensor for VmSensor {
    fn name(&self) -> &'static str {
        "vm"
    }

    fn origin(&self) -> EnergyOrigin {
        EnergyOrigin::Vm
    }

    fn poll(&mut self, _utilisation: &Utilisation) -> Result<EnergyReading, SensorError> {
        self.poll_at(Instant::now())
    }
}

/// The VM tree's root: the flag if given, else `$SCAPHANDRE_POWERCAP_PATH`
/// if set and not empty, else [`DEFAULT_VM_ROOT`].
#[must_use]
pub fn vm_root(flag: Option<&Path>) -> PathBuf {
    resolve_vm_root(flag, std::env::var_os(VM_ROOT_ENV))
}

fn resolve_vm_root(flag: Option<&Path>, env: Option<OsString>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| env.filter(|v| !v.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_VM_ROOT))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::sensors::{
        host_joules,
        testutil::{put, write_tree, Entry::*},
        DomainKind,
    };

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn root_precedence() {
        let env = Some(OsString::from("/env/tree"));
        assert_eq!(
            resolve_vm_root(Some(Path::new("/flag")), env.clone()),
            PathBuf::from("/flag")
        );
        assert_eq!(resolve_vm_root(None, env), PathBuf::from("/env/tree"));
        assert_eq!(
            resolve_vm_root(None, Some(OsString::new())),
            PathBuf::from(DEFAULT_VM_ROOT)
        );
        assert_eq!(resolve_vm_root(None, None), PathBuf::from(DEFAULT_VM_ROOT));
    }

    #[test]
    fn scaphandre_tree_without_name_or_range() {
        // What Scaphandre's qemu exporter writes: energy_uj and an empty domain folder.
        let dir = write_tree(&[
            File("intel-rapl:0/energy_uj", "1000000\n"),
            Dir("intel-rapl:0:0"),
        ]);
        let mut s = VmSensor::new(dir.path()).unwrap();
        assert_eq!(s.name(), "vm");
        assert_eq!(s.origin(), EnergyOrigin::Vm);
        let t0 = Instant::now();
        assert!(s.poll_at(t0).unwrap().zones.is_empty(), "baseline");
        put(dir.path(), "intel-rapl:0/energy_uj", "6000000");
        let r = s.poll_at(t0 + 5 * SEC).unwrap();
        assert_eq!(r.zones.len(), 1);
        let z = &r.zones[0];
        assert_eq!(
            (z.kind, z.socket, z.name.as_str()),
            (DomainKind::Package, Some(0), "package-0")
        );
        assert!((host_joules(&r.zones) - 5.0).abs() < 1e-12);
    }

    #[test]
    fn full_tree_with_name_and_range_wraps() {
        let dir = write_tree(&[
            File("intel-rapl:0/name", "package-0\n"),
            File("intel-rapl:0/energy_uj", "999000000\n"),
            File("intel-rapl:0/max_energy_range_uj", "1000000000\n"),
            Dir("intel-rapl:0:0"),
        ]);
        let mut s = VmSensor::new(dir.path()).unwrap();
        let t0 = Instant::now();
        s.poll_at(t0).unwrap();
        put(dir.path(), "intel-rapl:0/energy_uj", "2000000\n");
        let r = s.poll_at(t0 + SEC).unwrap();
        assert!((host_joules(&r.zones) - 3.0).abs() < 1e-12);
    }

    #[test]
    fn counter_restart_without_range_is_dropped() {
        let dir = write_tree(&[File("intel-rapl:0/energy_uj", "50000000\n")]);
        let mut s = VmSensor::new(dir.path()).unwrap();
        let t0 = Instant::now();
        s.poll_at(t0).unwrap();
        put(dir.path(), "intel-rapl:0/energy_uj", "1000000\n");
        let r = s.poll_at(t0 + SEC).unwrap();
        assert!(r.zones.is_empty());
        assert_eq!(r.implausible_dropped, 1);
        put(dir.path(), "intel-rapl:0/energy_uj", "3000000\n");
        let r = s.poll_at(t0 + 2 * SEC).unwrap();
        assert!((host_joules(&r.zones) - 2.0).abs() < 1e-12);
    }

    #[test]
    fn replaced_file_is_followed() {
        let dir = write_tree(&[File("intel-rapl:0/energy_uj", "0\n")]);
        let mut s = VmSensor::new(dir.path()).unwrap();
        let t0 = Instant::now();
        s.poll_at(t0).unwrap();
        // Atomic replace by rename: a new inode.
        put(dir.path(), "intel-rapl:0/energy_uj.tmp", "4000000\n");
        std::fs::rename(
            dir.path().join("intel-rapl:0/energy_uj.tmp"),
            dir.path().join("intel-rapl:0/energy_uj"),
        )
        .unwrap();
        let r = s.poll_at(t0 + SEC).unwrap();
        assert!((host_joules(&r.zones) - 4.0).abs() < 1e-12);
    }

    #[test]
    fn missing_tree_is_no_zones() {
        let err = VmSensor::new(Path::new("/nonexistent/scaphandre")).unwrap_err();
        assert!(matches!(err, SensorError::NoZones { .. }), "{err}");
    }
}
