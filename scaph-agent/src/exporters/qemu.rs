//! `scaph qemu`, on a hypervisor: the energy of each qemu/KVM virtual
//! machine, written as a powercap-shaped tree that its guest reads with
//! `scaph --vm` (or Scaphandre's `--vm`).
//!
//! A VM is a process (see [`crate::vm_label`]); its energy is the energy the
//! agent attributes to that process, from its exact CPU time. For each VM,
//! under `<root>/<vm name>/` (default root `/var/lib/libvirt/scaphandre`):
//!
//! ```text
//! intel-rapl:0/energy_uj              cumulative energy, µJ
//! intel-rapl:0/name                   package-0
//! intel-rapl:0/max_energy_range_uj    262143328850: energy_uj wraps to 0 there
//! intel-rapl:0:0/                     empty: Scaphandre's guests find the package through it
//! ```
//!
//! - The counter is in microjoules: Scaphandre added microwatts to it
//!   (#428), which made VM energy 1/step of the truth (5× too low).
//! - Each file is replaced atomically (written to a temporary file in the same
//!   directory, then renamed), so a guest never reads a torn number.
//! - A restarted `scaph qemu` continues from the value in the file: the counter
//!   never goes backwards (other than its wrap). Energy used while no
//!   `scaph qemu` ran is not counted.
//! - A VM whose process is gone for longer than the grace period (120 s by
//!   default, as in Scaphandre) has its files removed.
use std::{
    collections::{HashMap, HashSet},
    fs,
    io::{self, Write as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use log::{debug, info, warn};

use super::{ExportError, Exporter};
use crate::{agent::SnapshotRx, cputime::ProcessKey, snapshot::Snapshot, vm_label};

pub const DEFAULT_ROOT: &str = "/var/lib/libvirt/scaphandre";
/// The range we advertise (Intel's usual `max_energy_range_uj`): the counter
/// wraps to 0 when it reaches it, as a guest's powercap reader expects.
pub const MAX_ENERGY_RANGE_UJ: u64 = 262_143_328_850;
/// Zone folder of the package, and the name written into it.
const ZONE: &str = "intel-rapl:0";
const ZONE_NAME: &str = "package-0";
/// The domain folder a guest needs to see a socket (left empty).
const DOMAIN: &str = "intel-rapl:0:0";

/// `scaph qemu` options.
#[derive(Clone, Debug, clap::Args)]
pub struct QemuArgs {
    /// Folder holding one tree per VM, `<root>/<vm name>/intel-rapl:0/energy_uj`.
    #[arg(long, default_value = DEFAULT_ROOT)]
    pub root: PathBuf,

    /// Seconds between measurements (and writes).
    #[arg(short, long, default_value_t = 5, value_parser = crate::cli_ranges::step)]
    pub step: u64,

    /// Seconds a VM's files stay after its process is gone.
    #[arg(long, default_value_t = 120, value_name = "SECS", value_parser = crate::cli_ranges::cleanup_secs)]
    pub cleanup_after: u64,
}

/// Writes the tree of every VM on every new snapshot until measurement stops.
///
/// # Errors
/// When the root cannot be created.
pub async fn run(args: &QemuArgs, mut rx: SnapshotRx) -> anyhow::Result<()> {
    let mut exporter = QemuExporter::new(&args.root, Duration::from_secs(args.cleanup_after))
        .with_context(|| format!("creating {}", args.root.display()))?;
    info!(
        "qemu: writing the energy of each VM under {}",
        args.root.display()
    );
    while rx.changed().await.is_ok() {
        let snapshot = rx.borrow_and_update().clone();
        if let Some(snapshot) = snapshot {
            // File I/O off the async workers.
            exporter = tokio::task::spawn_blocking(move || {
                exporter.export_at(&snapshot, Instant::now());
                exporter
            })
            .await?;
        }
    }
    Ok(())
}

/// A cumulative µJ counter that wraps at [`MAX_ENERGY_RANGE_UJ`], fed joules.
#[derive(Clone, Debug, PartialEq)]
pub struct VmCounter {
    uj: u64,
    /// Fraction of a µJ not yet added (so that rounding never loses energy).
    carry_uj: f64,
}

impl VmCounter {
    /// Continues from a value found in an existing file (0 without one).
    #[must_use]
    pub fn resume(existing_uj: Option<u64>) -> Self {
        Self {
            uj: existing_uj.unwrap_or(0) % MAX_ENERGY_RANGE_UJ,
            carry_uj: 0.0,
        }
    }

    /// Adds energy (negative or non-finite amounts are ignored) and returns
    /// the new value.
    pub fn add_joules(&mut self, joules: f64) -> u64 {
        if joules.is_finite() && joules > 0.0 {
            let exact = joules * 1e6 + self.carry_uj;
            let whole = exact.floor();
            self.carry_uj = exact - whole;
            // Whole µJ, well below u64::MAX for any plausible interval.
            let add = (whole as u64) % MAX_ENERGY_RANGE_UJ;
            self.uj = (self.uj + add) % MAX_ENERGY_RANGE_UJ;
        }
        self.uj
    }

    #[must_use]
    pub const fn uj(&self) -> u64 {
        self.uj
    }
}

struct Vm {
    dir: PathBuf,
    /// PIDs of its processes when last seen (checked before cleaning up).
    pids: HashSet<u32>,
    counter: VmCounter,
    /// Value in the file (None until the first write succeeds).
    written: Option<u64>,
    last_seen: Instant,
    failures: u64,
}

/// The qemu exporter's state: one counter per VM, the last energy total of
/// each VM process.
pub struct QemuExporter {
    root: PathBuf,
    proc_root: PathBuf,
    grace: Duration,
    vms: HashMap<String, Vm>,
    /// Per VM process: its VM, and the joules already added from it.
    processes: HashMap<ProcessKey, (String, f64)>,
    /// Names that cannot be folder names, reported once.
    bad_names: HashSet<String>,
    warned_no_energy: bool,
}

impl QemuExporter {
    /// Opens (creates) `root` and adopts the trees already in it, so that
    /// their VMs continue their counters, or are cleaned up after `grace` if
    /// they do not come back.
    ///
    /// # Errors
    /// When `root` cannot be created.
    pub fn new(root: &Path, grace: Duration) -> io::Result<Self> {
        Self::new_at(root, grace, Instant::now())
    }

    /// [`Self::new`] at a given instant (for tests).
    ///
    /// # Errors
    /// When `root` cannot be created.
    pub fn new_at(root: &Path, grace: Duration, now: Instant) -> io::Result<Self> {
        fs::create_dir_all(root)?;
        let mut exporter = Self {
            root: root.to_path_buf(),
            proc_root: PathBuf::from("/proc"),
            grace,
            vms: HashMap::new(),
            processes: HashMap::new(),
            bad_names: HashSet::new(),
            warned_no_energy: false,
        };
        for entry in fs::read_dir(root)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().join(ZONE).join("energy_uj").is_file() {
                debug!("qemu: found the tree of {name}");
                let vm = exporter.open_vm(&name, now);
                exporter.vms.insert(name, vm);
            }
        }
        Ok(exporter)
    }

    fn open_vm(&self, name: &str, now: Instant) -> Vm {
        let dir = self.root.join(name);
        let file = dir.join(ZONE).join("energy_uj");
        let existing = match fs::read_to_string(&file) {
            Ok(text) => match text.trim().parse::<u64>() {
                Ok(uj) => {
                    if uj >= MAX_ENERGY_RANGE_UJ {
                        warn!(
                            "qemu: {}: {uj} µJ is past the range {MAX_ENERGY_RANGE_UJ}, continuing from {}",
                            file.display(),
                            uj % MAX_ENERGY_RANGE_UJ
                        );
                    }
                    Some(uj)
                }
                Err(_) => {
                    warn!(
                        "qemu: {}: cannot parse {:?}, starting from 0",
                        file.display(),
                        text.trim()
                    );
                    None
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                warn!("qemu: reading {}: {e}; starting from 0", file.display());
                None
            }
        };
        if let Some(uj) = existing {
            info!("qemu: VM {name}: continuing its counter from {uj} µJ");
        }
        Vm {
            dir,
            pids: HashSet::new(),
            counter: VmCounter::resume(existing),
            written: None,
            last_seen: now,
            failures: 0,
        }
    }

    /// Adds each VM's energy since the previous snapshot to its counter and
    /// writes the trees; removes the trees of VMs gone for longer than the
    /// grace period. Failures are logged (rate-limited), never returned.
    pub fn export_at(&mut self, snap: &Snapshot, now: Instant) {
        let mut present = HashSet::new();
        let mut updated = HashSet::new();
        for p in &snap.processes {
            let Some(name) = vm_label::vm_name(&p.cmdline) else {
                continue;
            };
            let Some(energy) = p.energy else {
                if !self.warned_no_energy {
                    warn!("qemu: no energy source: the VMs' files are not written");
                    self.warned_no_energy = true;
                }
                continue;
            };
            if vm_label::as_dir_name(&name).is_none() {
                if self.bad_names.insert(name.clone()) {
                    warn!(
                        "qemu: VM name {name:?} (pid {}) cannot be a folder name; skipped",
                        p.key.pid
                    );
                }
                continue;
            }
            present.insert(p.key);
            let (vm_of_process, counted) = self
                .processes
                .entry(p.key)
                .or_insert_with(|| (name.clone(), 0.0));
            *vm_of_process = name.clone();
            let delta = energy.joules_total - *counted;
            *counted = energy.joules_total.max(*counted);
            if !self.vms.contains_key(&name) {
                info!("qemu: VM {name} (pid {})", p.key.pid);
                let vm = self.open_vm(&name, now);
                self.vms.insert(name.clone(), vm);
            }
            let vm = self.vms.get_mut(&name).expect("inserted above");
            vm.counter.add_joules(delta);
            if !p.exited {
                vm.last_seen = now;
                vm.pids.insert(p.key.pid);
            }
            debug!(
                "qemu: VM {name}: pid {} +{delta:.6} J ({:.3} W), counter {} µJ",
                p.key.pid,
                energy.watts,
                vm.counter.uj()
            );
            updated.insert(name);
        }
        self.processes.retain(|key, _| present.contains(key));
        for name in &updated {
            let vm = self.vms.get_mut(name).expect("updated VMs exist");
            write_vm(name, vm);
        }
        let mut gone = Vec::new();
        for (name, vm) in &mut self.vms {
            if now.saturating_duration_since(vm.last_seen) <= self.grace {
                continue;
            }
            // Not in the snapshots (a process that never ran since scaph
            // started is not in them): still running means not gone.
            vm.pids
                .retain(|&pid| still_runs(&self.proc_root, pid, name));
            if vm.pids.is_empty() {
                gone.push(name.clone());
            } else {
                vm.last_seen = now;
            }
        }
        for name in gone {
            if let Some(vm) = self.vms.remove(&name) {
                info!(
                    "qemu: VM {name} gone for more than {:?}: removing {}",
                    self.grace,
                    vm.dir.display()
                );
                remove_tree(&vm.dir);
            }
        }
    }

    /// The VMs currently tracked, with their counters (µJ).
    #[must_use]
    pub fn counters(&self) -> HashMap<String, u64> {
        self.vms
            .iter()
            .map(|(n, vm)| (n.clone(), vm.counter.uj()))
            .collect()
    }
}

impl Exporter for QemuExporter {
    fn export(&mut self, snapshot: &Snapshot) -> Result<(), ExportError> {
        self.export_at(snapshot, Instant::now());
        Ok(())
    }
}

/// Whether process `pid` is still the VM `name`.
fn still_runs(proc_root: &Path, pid: u32, name: &str) -> bool {
    let Ok(raw) = fs::read(proc_root.join(pid.to_string()).join("cmdline")) else {
        return false;
    };
    let args: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    vm_label::vm_name(&args).as_deref() == Some(name)
}

/// Writes one VM's tree (the static files only the first time).
fn write_vm(name: &str, vm: &mut Vm) {
    let value = vm.counter.uj();
    if vm.written == Some(value) {
        return;
    }
    let result = (|| -> io::Result<()> {
        let zone = vm.dir.join(ZONE);
        if vm.written.is_none() {
            fs::create_dir_all(&zone)?;
            fs::create_dir_all(vm.dir.join(DOMAIN))?;
            write_atomic(&zone, "name", &format!("{ZONE_NAME}\n"))?;
            write_atomic(
                &zone,
                "max_energy_range_uj",
                &format!("{MAX_ENERGY_RANGE_UJ}\n"),
            )?;
        }
        write_atomic(&zone, "energy_uj", &format!("{value}\n"))
    })();
    match result {
        Ok(()) => {
            if vm.failures > 0 {
                info!("qemu: VM {name}: writing works again");
            }
            vm.failures = 0;
            vm.written = Some(value);
        }
        Err(e) => {
            vm.failures += 1;
            if vm.failures.is_power_of_two() {
                warn!(
                    "qemu: VM {name}: writing {} failed ({} times in a row): {e}",
                    vm.dir.display(),
                    vm.failures
                );
            }
        }
    }
}

/// Replaces `dir/file` with `contents` in one step: a reader sees the old
/// file or the new one, never a partial write.
///
/// No fsync: a killed or restarted `scaph qemu` finds the renamed file in the
/// page cache whatever the file system, which is what "never backwards"
/// needs. Only a host crash could lose the last writes, and then the VMs (and
/// their guests' baselines) restart too. The trees usually live on tmpfs.
pub fn write_atomic(dir: &Path, file: &str, contents: &str) -> io::Result<()> {
    let tmp = dir.join(format!(".{file}.tmp"));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(contents.as_bytes())?;
    drop(f);
    fs::rename(&tmp, dir.join(file))
}

/// Removes what this exporter writes in a VM's folder, then the folder if
/// that leaves it empty (it may be a mount point, or hold other files).
fn remove_tree(dir: &Path) {
    let zone = dir.join(ZONE);
    for file in [
        "energy_uj",
        "name",
        "max_energy_range_uj",
        ".energy_uj.tmp",
        ".name.tmp",
        ".max_energy_range_uj.tmp",
    ] {
        let _ = fs::remove_file(zone.join(file));
    }
    for d in [zone, dir.join(DOMAIN), dir.to_path_buf()] {
        if let Err(e) = fs::remove_dir(&d) {
            if e.kind() != io::ErrorKind::NotFound {
                debug!("qemu: {} left in place: {e}", d.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        exporters::push::tests::sample_snapshot, sensors::EnergyOrigin, sensors::VmSensor,
        snapshot::Energy,
    };

    const SEC: Duration = Duration::from_secs(1);

    fn read_uj(root: &Path, vm: &str) -> u64 {
        fs::read_to_string(root.join(vm).join("intel-rapl:0/energy_uj"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// The sample snapshot with the VM process (pid 4242, vm1) at `joules` in total.
    fn with_vm_energy(joules: f64) -> Snapshot {
        let mut snap = sample_snapshot(EnergyOrigin::Measured);
        snap.processes[0].energy = Some(Energy {
            joules_total: joules,
            watts: 1.0,
        });
        snap
    }

    #[test]
    fn counter_adds_microjoules_and_wraps() {
        let mut c = VmCounter::resume(None);
        assert_eq!(c.add_joules(2.5), 2_500_000);
        // Fractions of a µJ are carried, not lost.
        for _ in 0..10 {
            c.add_joules(0.000_000_25);
        }
        assert_eq!(c.uj(), 2_500_002);
        assert_eq!(c.add_joules(-5.0), 2_500_002);
        assert_eq!(c.add_joules(f64::NAN), 2_500_002);
        let mut c = VmCounter::resume(Some(MAX_ENERGY_RANGE_UJ - 1_000_000));
        assert_eq!(
            c.add_joules(3.0),
            2_000_000,
            "wraps at the advertised range"
        );
        assert_eq!(VmCounter::resume(Some(MAX_ENERGY_RANGE_UJ + 5)).uj(), 5);
    }

    #[test]
    fn writes_the_tree_and_continues_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let t0 = Instant::now();
        let mut exp = QemuExporter::new_at(root, 120 * SEC, t0).unwrap();
        exp.export_at(&with_vm_energy(2.0), t0);
        let zone = root.join("vm1/intel-rapl:0");
        assert_eq!(
            fs::read_to_string(zone.join("name")).unwrap(),
            "package-0\n"
        );
        assert_eq!(
            fs::read_to_string(zone.join("max_energy_range_uj")).unwrap(),
            "262143328850\n"
        );
        assert!(root.join("vm1/intel-rapl:0:0").is_dir());
        assert_eq!(read_uj(root, "vm1"), 2_000_000);
        exp.export_at(&with_vm_energy(5.5), t0 + SEC);
        assert_eq!(
            read_uj(root, "vm1"),
            5_500_000,
            "deltas of the process's total"
        );
        assert!(
            !zone.join(".energy_uj.tmp").exists(),
            "no temporary file left"
        );
        drop(exp);

        // A new exporter (restart): its agent's totals start again from 0.
        let mut exp = QemuExporter::new_at(root, 120 * SEC, t0 + 2 * SEC).unwrap();
        assert_eq!(exp.counters()["vm1"], 5_500_000);
        exp.export_at(&with_vm_energy(1.0), t0 + 3 * SEC);
        assert_eq!(
            read_uj(root, "vm1"),
            6_500_000,
            "continues, never backwards"
        );
    }

    #[test]
    fn the_guest_sensor_reads_what_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        let mut exp = QemuExporter::new_at(dir.path(), 120 * SEC, t0).unwrap();
        exp.export_at(&with_vm_energy(1.0), t0);
        let mut guest = VmSensor::new(&dir.path().join("vm1")).unwrap();
        guest.poll_at(t0).unwrap();
        exp.export_at(&with_vm_energy(11.0), t0 + SEC);
        let reading = guest.poll_at(t0 + 5 * SEC).unwrap();
        let joules = crate::sensors::host_joules(&reading.zones);
        assert!((joules - 10.0).abs() < 1e-9, "{joules}");
    }

    #[test]
    fn gone_vms_are_removed_after_the_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let t0 = Instant::now();
        let mut exp = QemuExporter::new_at(root, 10 * SEC, t0).unwrap();
        exp.proc_root = root.join("no-proc"); // its process is not running
        exp.export_at(&with_vm_energy(1.0), t0);
        let mut without = sample_snapshot(EnergyOrigin::Measured);
        without.processes.remove(0);
        exp.export_at(&without, t0 + 5 * SEC);
        assert!(
            root.join("vm1/intel-rapl:0/energy_uj").exists(),
            "within the grace period"
        );
        exp.export_at(&without, t0 + 11 * SEC);
        assert!(!root.join("vm1").exists(), "removed");
        assert!(exp.counters().is_empty());
    }

    #[test]
    fn a_vm_still_running_is_kept_even_when_not_in_the_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let proc_root = dir.path().join("proc");
        fs::create_dir_all(proc_root.join("4242")).unwrap();
        fs::write(
            proc_root.join("4242/cmdline"),
            "/usr/bin/qemu-system-x86_64\0-name\0guest=vm1,debug-threads=on\0",
        )
        .unwrap();
        let root = dir.path().join("trees");
        let t0 = Instant::now();
        let mut exp = QemuExporter::new_at(&root, 10 * SEC, t0).unwrap();
        exp.proc_root = proc_root.clone();
        exp.export_at(&with_vm_energy(1.0), t0);
        let mut without = sample_snapshot(EnergyOrigin::Measured);
        without.processes.remove(0);
        exp.export_at(&without, t0 + 11 * SEC);
        assert!(
            root.join("vm1/intel-rapl:0/energy_uj").exists(),
            "its process still runs"
        );
        fs::remove_dir_all(proc_root.join("4242")).unwrap();
        exp.export_at(&without, t0 + 22 * SEC);
        assert!(!root.join("vm1").exists(), "gone for good");
    }

    #[test]
    fn stale_trees_from_a_previous_run_are_adopted_then_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("old/intel-rapl:0")).unwrap();
        fs::write(root.join("old/intel-rapl:0/energy_uj"), "42\n").unwrap();
        fs::create_dir_all(root.join("not-a-vm")).unwrap();
        let t0 = Instant::now();
        let mut exp = QemuExporter::new_at(root, 10 * SEC, t0).unwrap();
        assert_eq!(exp.counters(), HashMap::from([("old".to_owned(), 42)]));
        exp.export_at(&sample_snapshot(EnergyOrigin::Measured), t0 + 11 * SEC);
        assert!(!root.join("old").exists());
        assert!(root.join("not-a-vm").exists(), "only our trees are touched");
    }

    #[test]
    fn unusable_names_and_other_processes_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        let mut exp = QemuExporter::new_at(dir.path(), 10 * SEC, t0).unwrap();
        let mut snap = with_vm_energy(1.0);
        snap.processes[0].cmdline = vec![
            "qemu-system-x86_64".into(),
            "-name".into(),
            "guest=../evil".into(),
        ]
        .into();
        exp.export_at(&snap, t0);
        assert!(exp.counters().is_empty());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn two_processes_of_one_vm_add_up() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        let mut exp = QemuExporter::new_at(dir.path(), 10 * SEC, t0).unwrap();
        let mut snap = with_vm_energy(1.0);
        let mut twin = snap.processes[0].clone();
        twin.key.pid = 4343;
        twin.energy = Some(Energy {
            joules_total: 2.0,
            watts: 1.0,
        });
        snap.processes.push(twin);
        exp.export_at(&snap, t0);
        assert_eq!(read_uj(dir.path(), "vm1"), 3_000_000);
    }
}
