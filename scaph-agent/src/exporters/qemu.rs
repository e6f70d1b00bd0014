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
//! - A VM whose processes are gone (exited, or no longer in the snapshots)
//!   for longer than the grace period (120 s by default, as in Scaphandre)
//!   has its files removed. Its last value is remembered (for as many VMs as
//!   `--max-vms`): a VM seen again continues from it, never backwards.
//! - `<vm>` is shared with the guest, so nothing in it is trusted: see
//!   [`super::qemu_fs`] for how writes as root avoid links planted there.
//! - At most `--max-vms` trees; names that cannot be folder names, and VMs
//!   past the limit, are logged once each (a bounded number of names, cut
//!   and escaped), then only counted.
use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use log::{debug, info, warn};

use super::{
    qemu_fs::{TreeError, TreeRoot},
    retry::{Retry, Throttle},
    ExportError, ExporterArgs, Measurement, Sink, SinkContext,
};
use crate::{cputime::ProcessKey, snapshot::Snapshot, vm_label};

pub const DEFAULT_ROOT: &str = "/var/lib/libvirt/scaphandre";
/// The range we advertise (Intel's usual `max_energy_range_uj`): the counter
/// wraps to 0 when it reaches it, as a guest's powercap reader expects.
pub const MAX_ENERGY_RANGE_UJ: u64 = 262_143_328_850;
pub const DEFAULT_MAX_VMS: usize = 256;
/// Names remembered to log each once; past this many, they are only counted.
const MAX_NAMES_LOGGED: usize = 256;
/// Characters of a name shown in a log line.
const NAME_SHOWN: usize = 64;

/// `scaph qemu` options.
#[derive(Clone, Debug, clap::Args)]
pub struct QemuArgs {
    /// Folder holding one tree per VM, `<root>/<vm name>/intel-rapl:0/energy_uj`.
    /// It must not be a symbolic link and must belong to scaph's user.
    #[arg(long, default_value = DEFAULT_ROOT)]
    pub root: PathBuf,

    /// Seconds between measurements (and writes).
    #[arg(short, long, default_value_t = 5, value_parser = crate::cli_ranges::step)]
    pub step: u64,

    /// Seconds a VM's files stay after its processes are gone.
    #[arg(long, default_value_t = 120, value_name = "SECS", value_parser = crate::cli_ranges::cleanup_secs)]
    pub cleanup_after: u64,

    /// Most VM trees kept at once; more VMs are refused (logged, counted).
    #[arg(long, default_value_t = DEFAULT_MAX_VMS, value_name = "N")]
    pub max_vms: usize,
}

impl ExporterArgs for QemuArgs {
    type Sink = QemuSink;

    fn name(&self) -> &'static str {
        "qemu"
    }

    fn step(&self) -> Duration {
        super::step(self.step)
    }

    fn uses_metrics(&self) -> bool {
        false
    }

    fn sink(&self, _: &SinkContext<'_>) -> anyhow::Result<Self::Sink> {
        QemuSink::from_args(self)
    }
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
    counter: VmCounter,
    /// Value in the file (None until the first write succeeds).
    written: Option<u64>,
    /// When a process of it was last seen running.
    last_seen: Instant,
    retry: Retry,
}

/// What [`NameLog::note`] says about a name.
#[derive(Debug, PartialEq, Eq)]
enum Notice {
    /// First time: log it.
    New,
    /// Already logged.
    Known,
    /// Past the names remembered, and a line is due ([`Throttle`]): the
    /// count of those so far.
    Overflow(u64),
}

/// Names to log once each: at most [`MAX_NAMES_LOGGED`] are remembered (cut
/// to [`NAME_SHOWN`] characters), the rest only counted.
#[derive(Debug, Default)]
struct NameLog {
    seen: HashSet<String>,
    overflow: u64,
    throttle: Throttle,
}

impl NameLog {
    fn note(&mut self, name: &str, now: Instant) -> Notice {
        let key: String = name.chars().take(NAME_SHOWN).collect();
        if self.seen.contains(&key) {
            Notice::Known
        } else if self.seen.len() < MAX_NAMES_LOGGED {
            self.seen.insert(key);
            Notice::New
        } else {
            self.overflow += 1;
            match self.throttle.due(now) {
                Some(_) => Notice::Overflow(self.overflow),
                None => Notice::Known,
            }
        }
    }
}

/// `name` for a log line: at most [`NAME_SHOWN`] characters, quoted, control
/// characters escaped.
fn shown(name: &str) -> String {
    let mut cut: String = name.chars().take(NAME_SHOWN).collect();
    let more = cut.len() < name.len();
    cut = format!("{cut:?}");
    if more {
        cut.push('…');
    }
    cut
}

/// The qemu exporter's state: one counter per VM, the last energy total of
/// each VM process.
pub struct QemuSink {
    root: TreeRoot,
    grace: Duration,
    max_vms: usize,
    vms: HashMap<String, Vm>,
    /// Per VM process: its VM, and the joules already added from it.
    processes: HashMap<ProcessKey, (String, f64)>,
    /// Names that cannot be folder names.
    bad_names: NameLog,
    /// VMs not tracked because --max-vms were.
    over_limit: NameLog,
    /// Last counter of VMs whose tree was removed (at most `max_vms`, the
    /// oldest forgotten first): one that comes back continues from it, so
    /// that its guest never sees the counter go backwards.
    removed: HashMap<String, (u64, Instant)>,
    warned_no_energy: bool,
}

impl QemuSink {
    /// The exporter of `scaph qemu`.
    ///
    /// # Errors
    /// When the root cannot be created, or is refused.
    pub fn from_args(args: &QemuArgs) -> anyhow::Result<Self> {
        let exporter = Self::new(
            &args.root,
            Duration::from_secs(args.cleanup_after),
            args.max_vms,
        )
        .with_context(|| format!("opening the VM trees' root {}", args.root.display()))?;
        info!(
            "qemu: writing the energy of each VM under {} (at most {} VMs)",
            args.root.display(),
            args.max_vms
        );
        Ok(exporter)
    }

    /// Opens (creates) `root` and adopts the trees already in it (at most
    /// `max_vms`), so that their VMs continue their counters, or are cleaned
    /// up after `grace` if they do not come back.
    ///
    /// # Errors
    /// When `root` cannot be created or opened, or is refused.
    pub fn new(root: &Path, grace: Duration, max_vms: usize) -> Result<Self, TreeError> {
        Self::new_at(root, grace, max_vms, Instant::now())
    }

    /// [`Self::new`] at a given instant (for tests).
    ///
    /// # Errors
    /// As [`Self::new`].
    pub fn new_at(
        root: &Path,
        grace: Duration,
        max_vms: usize,
        now: Instant,
    ) -> Result<Self, TreeError> {
        let root = TreeRoot::open(root)?;
        let mut exporter = Self {
            root,
            grace,
            max_vms,
            vms: HashMap::new(),
            processes: HashMap::new(),
            bad_names: NameLog::default(),
            over_limit: NameLog::default(),
            removed: HashMap::new(),
            warned_no_energy: false,
        };
        for name in exporter.root.trees(max_vms) {
            debug!("qemu: found the tree of {}", shown(&name));
            let vm = exporter.open_vm(&name, now);
            exporter.vms.insert(name, vm);
        }
        Ok(exporter)
    }

    fn open_vm(&mut self, name: &str, now: Instant) -> Vm {
        let removed = self.removed.remove(name).map(|(uj, _)| uj);
        let existing = match self.root.read_counter(name) {
            Ok(Some(uj)) => {
                if uj >= MAX_ENERGY_RANGE_UJ {
                    warn!(
                        "qemu: VM {}: {uj} µJ is past the range {MAX_ENERGY_RANGE_UJ}, continuing from {}",
                        shown(name),
                        uj % MAX_ENERGY_RANGE_UJ
                    );
                }
                info!(
                    "qemu: VM {}: continuing its counter from {uj} µJ",
                    shown(name)
                );
                Some(uj)
            }
            Ok(None) => None,
            // A refused folder is logged when writing to it fails.
            Err(e @ TreeError::Refused { .. }) => {
                debug!("qemu: VM {}: {e}", shown(name));
                None
            }
            Err(e) => {
                warn!("qemu: VM {}: {e}; starting from 0", shown(name));
                None
            }
        };
        if existing.is_none() {
            if let Some(uj) = removed {
                info!(
                    "qemu: VM {} is back: continuing its counter from {uj} µJ",
                    shown(name)
                );
            }
        }
        Vm {
            counter: VmCounter::resume(existing.or(removed)),
            written: None,
            last_seen: now,
            retry: Retry::every_step(module_path!()),
        }
    }

    fn remember_removed(&mut self, name: &str, uj: u64, now: Instant) {
        if self.removed.len() >= self.max_vms {
            let oldest = self
                .removed
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(n, _)| n.clone());
            if let Some(oldest) = oldest {
                self.removed.remove(&oldest);
            }
        }
        if self.max_vms > 0 {
            self.removed.insert(name.to_owned(), (uj, now));
        }
    }

    /// Whether VM `name` is tracked, starting to track it if there is room.
    fn track(&mut self, name: &str, pid: u32, now: Instant) -> bool {
        if self.vms.contains_key(name) {
            return true;
        }
        if self.vms.len() >= self.max_vms {
            match self.over_limit.note(name, now) {
                Notice::New => warn!(
                    "qemu: VM {} (pid {pid}) not written: --max-vms {} reached",
                    shown(name),
                    self.max_vms
                ),
                Notice::Overflow(n) => {
                    warn!(
                        "qemu: {n} more VMs not written: --max-vms {} reached",
                        self.max_vms
                    );
                }
                Notice::Known => {}
            }
            return false;
        }
        info!("qemu: VM {} (pid {pid})", shown(name));
        let vm = self.open_vm(name, now);
        self.vms.insert(name.to_owned(), vm);
        true
    }

    /// Adds each VM's energy since the previous snapshot to its counter and
    /// writes the trees; removes the trees of VMs gone for longer than the
    /// grace period. Failures are logged (rate-limited), never returned.
    pub fn export_at(&mut self, snap: &Snapshot, now: Instant) {
        let mut present = HashSet::new();
        let mut updated = HashSet::new();
        for p in &snap.processes {
            let Some(name) = p.vm_name().map(|name| name.to_string()) else {
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
                match self.bad_names.note(&name, now) {
                    Notice::New => warn!(
                        "qemu: VM name {} (pid {}) cannot be a folder name; skipped",
                        shown(&name),
                        p.key.pid
                    ),
                    Notice::Overflow(n) => {
                        warn!("qemu: {n} more VM names that cannot be folder names; skipped");
                    }
                    Notice::Known => {}
                }
                continue;
            }
            if !self.track(&name, p.key.pid, now) {
                continue;
            }
            present.insert(p.key);
            let (vm_of_process, counted) = self
                .processes
                .entry(p.key)
                .or_insert_with(|| (name.clone(), 0.0));
            if *vm_of_process != name {
                vm_of_process.clone_from(&name);
            }
            let delta = energy.joules_total - *counted;
            *counted = energy.joules_total.max(*counted);
            let vm = self.vms.get_mut(&name).expect("tracked above");
            vm.counter.add_joules(delta);
            if !p.exited {
                vm.last_seen = now;
            }
            debug!(
                "qemu: VM {}: pid {} +{delta:.6} J ({:.3} W), counter {} µJ",
                shown(&name),
                p.key.pid,
                energy.watts,
                vm.counter.uj()
            );
            updated.insert(name);
        }
        self.processes.retain(|key, _| present.contains(key));
        for name in &updated {
            let vm = self.vms.get_mut(name).expect("updated VMs exist");
            write_vm(&self.root, name, vm, now);
        }
        // Running processes stay in the snapshots (exited ones stay a while,
        // marked exited): a VM none of whose processes ran is gone.
        let grace = self.grace;
        let gone: Vec<String> = self
            .vms
            .iter()
            .filter(|(_, vm)| now.saturating_duration_since(vm.last_seen) > grace)
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            if let Some(vm) = self.vms.remove(&name) {
                self.remember_removed(&name, vm.counter.uj(), now);
            }
            info!(
                "qemu: VM {} gone for more than {grace:?}: removing its tree",
                shown(&name)
            );
            for left in self.root.remove(&name) {
                debug!("qemu: left in place: {left}");
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

impl Sink for QemuSink {
    /// File I/O: off the async workers.
    const BLOCKING: bool = true;

    async fn send(&mut self, measurement: &Measurement) -> Result<(), ExportError> {
        self.export_at(&measurement.snapshot, Instant::now());
        Ok(())
    }
}

/// Writes one VM's tree (the folders and static files only the first time).
fn write_vm(root: &TreeRoot, name: &str, vm: &mut Vm, now: Instant) {
    let value = vm.counter.uj();
    if vm.written == Some(value) {
        return;
    }
    match root.write(name, vm.written.is_none(), value) {
        Ok(()) => {
            vm.retry
                .succeeded(|_| format!("qemu: VM {}: writing works again", shown(name)));
            vm.written = Some(value);
        }
        Err(e) => {
            // Next time the whole tree again (its folders may be gone).
            vm.written = None;
            vm.retry.failed(now, |streak| {
                format!(
                    "qemu: VM {}: not written ({} times in a row): {e}",
                    shown(name),
                    streak.failures
                )
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::{
        exporters::points::tests::sample_snapshot,
        sensors::{EnergyOrigin, VmSensor},
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
        let mut exp = QemuSink::new_at(root, 120 * SEC, 256, t0).unwrap();
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
        let mut exp = QemuSink::new_at(root, 120 * SEC, 256, t0 + 2 * SEC).unwrap();
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
        let mut exp = QemuSink::new_at(dir.path(), 120 * SEC, 256, t0).unwrap();
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
        let mut exp = QemuSink::new_at(root, 10 * SEC, 256, t0).unwrap();
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
    fn a_vm_is_kept_while_its_process_runs_and_removed_after_it_exits() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let t0 = Instant::now();
        let mut exp = QemuSink::new_at(root, 10 * SEC, 256, t0).unwrap();
        exp.export_at(&with_vm_energy(1.0), t0);
        // Idle for longer than the grace period, but still running.
        exp.export_at(&with_vm_energy(1.0), t0 + 30 * SEC);
        assert!(
            root.join("vm1/intel-rapl:0/energy_uj").exists(),
            "still runs"
        );
        let mut exited = with_vm_energy(1.5);
        exited.processes[0].exited = true;
        exp.export_at(&exited, t0 + 35 * SEC);
        assert_eq!(
            read_uj(root, "vm1"),
            1_500_000,
            "its last energy is counted"
        );
        exp.export_at(&exited, t0 + 41 * SEC);
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
        let mut exp = QemuSink::new_at(root, 10 * SEC, 256, t0).unwrap();
        assert_eq!(exp.counters(), HashMap::from([("old".to_owned(), 42)]));
        exp.export_at(&sample_snapshot(EnergyOrigin::Measured), t0 + 11 * SEC);
        assert!(!root.join("old").exists());
        assert!(root.join("not-a-vm").exists(), "only our trees are touched");
    }

    #[test]
    fn unusable_names_and_other_processes_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        let mut exp = QemuSink::new_at(dir.path(), 10 * SEC, 256, t0).unwrap();
        let mut snap = with_vm_energy(1.0);
        snap.processes[0].meta_mut().vm_name = Some("../evil".into());
        exp.export_at(&snap, t0);
        assert!(exp.counters().is_empty());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn two_processes_of_one_vm_add_up() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        let mut exp = QemuSink::new_at(dir.path(), 10 * SEC, 256, t0).unwrap();
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

    /// The sample snapshot with `n` VM processes, `vm0`..: pid 1000 + i.
    fn with_vms(n: u32) -> Snapshot {
        let mut snap = with_vm_energy(1.0);
        let vm = snap.processes[0].clone();
        snap.processes = (0..n)
            .map(|i| {
                let mut p = vm.clone();
                p.key.pid = 1000 + i;
                p.meta_mut().vm_name = Some(format!("vm{i}").into());
                p
            })
            .collect();
        snap
    }

    #[test]
    fn no_more_than_max_vms_trees() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        let mut exp = QemuSink::new_at(dir.path(), 10 * SEC, 3, t0).unwrap();
        exp.export_at(&with_vms(5), t0);
        assert_eq!(exp.counters().len(), 3);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 3);
        assert_eq!(exp.over_limit.seen.len(), 2, "the others, noted once");
        exp.export_at(&with_vms(5), t0 + SEC);
        assert_eq!(exp.over_limit.seen.len(), 2);
        // Adopting trees after a restart respects the limit too.
        let exp = QemuSink::new_at(dir.path(), 10 * SEC, 2, t0).unwrap();
        assert_eq!(exp.counters().len(), 2);
    }

    #[test]
    fn refused_names_are_remembered_up_to_a_bound() {
        let t0 = Instant::now();
        let mut log = NameLog::default();
        assert_eq!(log.note("a", t0), Notice::New);
        assert_eq!(log.note("a", t0), Notice::Known);
        let long = "x".repeat(10_000);
        assert_eq!(log.note(&long, t0), Notice::New);
        assert_eq!(
            log.seen.iter().map(String::len).max(),
            Some(NAME_SHOWN),
            "kept cut"
        );
        for i in 2..MAX_NAMES_LOGGED {
            assert_eq!(log.note(&i.to_string(), t0), Notice::New);
        }
        // The ones past the bound: counted, told at most once a minute.
        assert_eq!(log.note("one too many", t0), Notice::Overflow(1));
        assert_eq!(log.note("and another", t0), Notice::Known);
        assert_eq!(
            log.note("a minute later", t0 + Duration::from_secs(60)),
            Notice::Overflow(3)
        );
        assert_eq!(log.seen.len(), MAX_NAMES_LOGGED);
    }

    #[test]
    fn names_in_logs_are_cut_and_escaped() {
        assert_eq!(shown("vm1"), "\"vm1\"");
        assert_eq!(shown("a\nb\x1b[31m"), "\"a\\nb\\u{1b}[31m\"");
        let long = "é".repeat(100);
        assert_eq!(shown(&long), format!("\"{}\"…", "é".repeat(NAME_SHOWN)));
    }

    #[test]
    fn a_planted_link_does_not_stop_the_other_vms() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("vm0")).unwrap();
        let t0 = Instant::now();
        let mut exp = QemuSink::new_at(dir.path(), 10 * SEC, 256, t0).unwrap();
        exp.export_at(&with_vms(2), t0);
        assert_eq!(read_uj(dir.path(), "vm1"), 1_000_000);
        assert_eq!(
            fs::read_dir(outside.path()).unwrap().count(),
            0,
            "nothing written through the link"
        );
        assert_eq!(exp.vms["vm0"].retry.failures(), 1, "vm0 refused");
        exp.export_at(&with_vms(0), t0 + 11 * SEC);
        assert!(
            dir.path().join("vm0").is_symlink(),
            "left alone when cleaning up"
        );
        assert!(outside.path().exists());
    }

    #[test]
    fn a_vm_back_after_its_tree_was_removed_continues_its_counter() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let t0 = Instant::now();
        let mut exp = QemuSink::new_at(root, 10 * SEC, 1, t0).unwrap();
        exp.export_at(&with_vm_energy(2.0), t0);
        let mut without = sample_snapshot(EnergyOrigin::Measured);
        without.processes.remove(0);
        exp.export_at(&without, t0 + 11 * SEC);
        assert!(!root.join("vm1").exists(), "removed");
        // Seen again (a process that had not run for a while): its new
        // agent-side total starts from 0 for a new process key.
        let mut back = with_vm_energy(0.5);
        back.processes[0].key.pid = 5000;
        exp.export_at(&back, t0 + 20 * SEC);
        assert_eq!(read_uj(root, "vm1"), 2_500_000, "never backwards");
        // Bounded: with --max-vms 1, remembering vm0 forgets vm1.
        exp.export_at(&without, t0 + 31 * SEC);
        exp.export_at(&with_vms(1), t0 + 32 * SEC);
        exp.export_at(&without, t0 + 43 * SEC);
        assert_eq!(exp.removed.keys().collect::<Vec<_>>(), ["vm0"]);
    }

    #[test]
    fn a_tree_removed_under_scaph_is_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        let mut exp = QemuSink::new_at(dir.path(), 10 * SEC, 256, t0).unwrap();
        exp.export_at(&with_vm_energy(1.0), t0);
        fs::remove_dir_all(dir.path().join("vm1/intel-rapl:0")).unwrap();
        exp.export_at(&with_vm_energy(2.0), t0 + SEC);
        exp.export_at(&with_vm_energy(3.0), t0 + 2 * SEC);
        assert_eq!(read_uj(dir.path(), "vm1"), 3_000_000);
        assert!(dir.path().join("vm1/intel-rapl:0/name").is_file());
    }
}
