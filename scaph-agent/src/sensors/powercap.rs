//! RAPL through the kernel's powercap tree (`/sys/class/powercap`).
//!
//! Layout (Intel; AMD Zen too on recent kernels, which reuse the
//! `intel-rapl` folder names with `package-N` and `core` zones, no DRAM):
//!
//! ```text
//! intel-rapl:0/{name=package-0, energy_uj, max_energy_range_uj}
//! intel-rapl:0:0/{name=core, ...}     intel-rapl:0:1/{name=uncore|dram, ...}
//! intel-rapl:1/{name=package-1 | psys, ...}
//! intel-rapl-mmio:0/{name=package-0, ...}   same energy as intel-rapl:0
//! ```
//!
//! The socket of a zone comes from its `package-N` name (or its parent's),
//! never from the folder number: `intel-rapl:1` can be psys on a one-socket
//! machine. Multi-die packages are named `package-N-die-M`; each die is a
//! `Package` zone of socket N, and [`super::host_joules`] adds them up.
//! `intel-rapl-mmio:*` zones report the same package counter through another
//! interface; adding them would count the package twice, so they are ignored.
//!
//! Zones are discovered once; each poll is one `pread` of every `energy_uj`
//! on a kept-open file (cheap enough for a 1 s cadence).
use std::{
    collections::BTreeMap,
    fs::{self, File},
    io,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use log::{debug, info, warn};

use super::{
    counter::{CounterUpdate, EnergyCounter},
    DomainKind, EnergyOrigin, EnergyReading, EnergySensor, SensorError, Utilisation, ZoneEnergy,
};

/// Where the kernel exposes powercap zones.
pub const DEFAULT_POWERCAP_ROOT: &str = "/sys/class/powercap";

/// Range assumed when a zone has no readable `max_energy_range_uj` (trees
/// written by a hypervisor): such a counter is taken never to wrap, so a
/// counter going backwards is an implausible delta, dropped and counted.
pub const UNKNOWN_MAX_RANGE_UJ: u64 = u64::MAX;

/// Energy of every RAPL zone found under a powercap root.
#[derive(Debug)]
pub struct PowercapSensor {
    root: PathBuf,
    zones: Vec<Zone>,
    last_poll: Option<Instant>,
    implausible_dropped: u64,
    /// Open `energy_uj` anew on each poll instead of keeping the handle:
    /// needed for files that a writer may replace (rename) rather than
    /// rewrite in place, as a hypervisor-fed tree may.
    reopen_each_poll: bool,
}

/// One counter and how to read it.
#[derive(Debug)]
struct Zone {
    /// Folder name, e.g. `intel-rapl:0:1`.
    id: String,
    dir: PathBuf,
    energy_path: PathBuf,
    kind: DomainKind,
    socket: Option<u32>,
    name: String,
    counter: EnergyCounter,
    file: Option<File>,
    /// The last read failed; its warning was logged already.
    failing: bool,
}

impl PowercapSensor {
    /// Discovers the zones under `root` (normally [`DEFAULT_POWERCAP_ROOT`]).
    ///
    /// # Errors
    /// [`SensorError::NoZones`] when `root` is missing or holds no usable
    /// zone; [`SensorError::PermissionDenied`] when an `energy_uj` cannot be
    /// read (root-only since CVE-2020-8694); [`SensorError::Read`] when
    /// `root` cannot be listed.
    pub fn new(root: &Path) -> Result<Self, SensorError> {
        Self::open(root, false)
    }

    pub(super) fn open(root: &Path, reopen_each_poll: bool) -> Result<Self, SensorError> {
        let mut zones = Vec::new();
        for spec in discover(root)? {
            if let Some(zone) = Zone::open(spec, reopen_each_poll)? {
                zones.push(zone);
            }
        }
        if zones.is_empty() {
            return Err(SensorError::NoZones {
                path: root.to_path_buf(),
            });
        }
        Ok(Self {
            root: root.to_path_buf(),
            zones,
            last_poll: None,
            implausible_dropped: 0,
            reopen_each_poll,
        })
    }

    /// The root the zones were found under.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// One line listing the zones, for the startup log.
    #[must_use]
    pub fn describe(&self) -> String {
        self.zones
            .iter()
            .map(|z| format!("{} ({})", z.name, z.id))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// [`EnergySensor::poll`] at a given instant, so that a caller (or a
    /// test) can give every source of one cycle the same clock reading.
    ///
    /// # Errors
    /// The first zone's error, only when no zone could be read at all.
    pub fn poll_at(&mut self, now: Instant) -> Result<EnergyReading, SensorError> {
        let interval = self
            .last_poll
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        self.last_poll = Some(now);
        let mut zones = Vec::new();
        let mut first_error = None;
        let mut any_read = false;
        for zone in &mut self.zones {
            let value = match zone.read(self.reopen_each_poll) {
                Ok(value) => value,
                Err(e) => {
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            any_read = true;
            match zone.counter.update(value, interval) {
                CounterUpdate::Baseline => {}
                CounterUpdate::Delta(uj) => zones.push(ZoneEnergy {
                    socket: zone.socket,
                    kind: zone.kind,
                    name: zone.name.clone(),
                    path: Some(zone.dir.clone()),
                    joules: uj as f64 / 1e6,
                }),
                CounterUpdate::Implausible(why) => {
                    self.implausible_dropped += 1;
                    super::counter::log_dropped(
                        &zone.energy_path,
                        &format_args!("{why:?}"),
                        self.implausible_dropped,
                    );
                }
            }
        }
        match first_error {
            Some(e) if !any_read => Err(e),
            _ => Ok(EnergyReading {
                interval,
                zones,
                implausible_dropped: self.implausible_dropped,
            }),
        }
    }
}

impl EnergySensor for PowercapSensor {
    fn name(&self) -> &'static str {
        "powercap_rapl"
    }

    fn origin(&self) -> EnergyOrigin {
        EnergyOrigin::Measured
    }

    fn poll(&mut self, _utilisation: &Utilisation) -> Result<EnergyReading, SensorError> {
        self.poll_at(Instant::now())
    }
}

impl Zone {
    /// Opens a discovered zone. `Ok(None)`: it has no `energy_uj` (e.g. the
    /// empty domain folder a hypervisor writes only so that its parent counts).
    fn open(spec: ZoneSpec, reopen_each_poll: bool) -> Result<Option<Self>, SensorError> {
        let energy_path = spec.dir.join("energy_uj");
        let file = match File::open(&energy_path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                debug!("{}: no energy_uj, skipped", spec.dir.display());
                return Ok(None);
            }
            Err(e) => return Err(io_error(&energy_path, e)),
        };
        let max_range = read_max_range(&spec.dir);
        let mut zone = Self {
            id: spec.id,
            dir: spec.dir,
            energy_path,
            kind: spec.kind,
            socket: spec.socket,
            name: spec.name,
            counter: EnergyCounter::new(max_range),
            file: Some(file),
            failing: false,
        };
        // Read once now so that a permission problem stops the start with its
        // message instead of leaving every poll empty. Other problems may be
        // transient: the zone is kept and polls will log them.
        match zone.read_once() {
            Err(e @ SensorError::PermissionDenied { .. }) => return Err(e),
            Err(e) => warn!("{e}: keeping the zone, it may read later"),
            Ok(_) => {}
        }
        if reopen_each_poll {
            zone.file = None;
        }
        debug!(
            "powercap zone {} ({}): {:?}, socket {:?}, range {max_range} µJ",
            zone.name, zone.id, zone.kind, zone.socket
        );
        Ok(Some(zone))
    }

    /// Reads the counter, logging only changes between working and failing.
    /// Any failure resets the counter, so the next good read is a baseline.
    fn read(&mut self, reopen: bool) -> Result<u64, SensorError> {
        let result = self.read_once();
        if reopen {
            self.file = None;
        }
        match &result {
            Ok(_) if self.failing => {
                self.failing = false;
                info!(
                    "powercap zone {} ({}) reads again; starting from a new baseline",
                    self.name,
                    self.energy_path.display()
                );
            }
            Ok(_) => {}
            Err(e) => {
                self.counter.reset();
                if !self.failing {
                    self.failing = true;
                    warn!(
                        "powercap zone {}: {e}; skipping it until it reads again",
                        self.name
                    );
                }
            }
        }
        result
    }

    fn read_once(&mut self) -> Result<u64, SensorError> {
        let file = match &self.file {
            Some(file) => file,
            None => self
                .file
                .insert(File::open(&self.energy_path).map_err(|e| io_error(&self.energy_path, e))?),
        };
        // Longest valid content: 20 digits of a u64 and a newline.
        let mut buf = [0_u8; 32];
        let n = match file.read_at(&mut buf, 0) {
            Ok(n) => n,
            Err(e) => {
                // A zone that went away (ENODEV on the open handle) may come
                // back as a new file: open it again next time.
                self.file = None;
                return Err(io_error(&self.energy_path, e));
            }
        };
        parse_uj(&self.energy_path, &buf[..n], n < buf.len())
    }
}

/// A zone found during discovery, before its files are opened.
#[derive(Debug)]
struct ZoneSpec {
    id: String,
    dir: PathBuf,
    kind: DomainKind,
    socket: Option<u32>,
    name: String,
}

/// Lists the RAPL zones under `root`, packages before their sub-zones.
///
/// Sub-zones are looked for both beside their package (the flat
/// `/sys/class/powercap` listing) and inside it (the real sysfs nesting);
/// the first one seen wins.
fn discover(root: &Path) -> Result<Vec<ZoneSpec>, SensorError> {
    let mut dirs: BTreeMap<(u32, Option<u32>), (String, PathBuf)> = BTreeMap::new();
    collect_zone_dirs(root, &mut dirs).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => SensorError::NoZones {
            path: root.to_path_buf(),
        },
        _ => SensorError::Read {
            path: root.to_path_buf(),
            source: e,
        },
    })?;
    let packages: Vec<PathBuf> = dirs
        .iter()
        .filter(|((_, sub), _)| sub.is_none())
        .map(|(_, (_, dir))| dir.clone())
        .collect();
    for dir in packages {
        if let Err(e) = collect_zone_dirs(&dir, &mut dirs) {
            debug!("listing {}: {e}", dir.display());
        }
    }

    // Socket of each top-level zone, for its sub-zones.
    let mut parent_socket: BTreeMap<u32, Option<u32>> = BTreeMap::new();
    let mut specs = Vec::new();
    for ((top, sub), (id, dir)) in dirs {
        let name = match (read_name(&dir), sub) {
            (Some(name), _) => name,
            (None, None) => {
                debug!("{}: no name file, taken as package-{top}", dir.display());
                format!("package-{top}")
            }
            (None, Some(_)) => {
                debug!("{}: no name file, skipped", dir.display());
                continue;
            }
        };
        let Some((kind, own_socket)) = classify(&name) else {
            debug!("{}: zone {name:?} not used", dir.display());
            continue;
        };
        let socket = match sub {
            None => {
                parent_socket.insert(top, own_socket);
                own_socket
            }
            Some(_) => own_socket.or(parent_socket.get(&top).copied().flatten()),
        };
        specs.push(ZoneSpec {
            id,
            dir,
            kind,
            socket,
            name,
        });
    }
    Ok(specs)
}

/// Adds the `intel-rapl:N` and `intel-rapl:N:M` folders found in `dir`.
fn collect_zone_dirs(
    dir: &Path,
    dirs: &mut BTreeMap<(u32, Option<u32>), (String, PathBuf)>,
) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("intel-rapl-mmio") {
            debug!(
                "{}: MMIO duplicate of a package counter, ignored",
                entry.path().display()
            );
            continue;
        }
        if let Some(key) = parse_zone_id(name) {
            dirs.entry(key)
                .or_insert_with(|| (name.to_owned(), entry.path()));
        }
    }
    Ok(())
}

/// `intel-rapl:N` → `(N, None)`, `intel-rapl:N:M` → `(N, Some(M))`.
fn parse_zone_id(name: &str) -> Option<(u32, Option<u32>)> {
    let rest = name.strip_prefix("intel-rapl:")?;
    match rest.split_once(':') {
        None => Some((rest.parse().ok()?, None)),
        Some((top, sub)) => Some((top.parse().ok()?, Some(sub.parse().ok()?))),
    }
}

/// Kind of a zone from its `name`, with the socket when the name says it.
fn classify(name: &str) -> Option<(DomainKind, Option<u32>)> {
    match name {
        "psys" => Some((DomainKind::Psys, None)),
        "core" => Some((DomainKind::Core, None)),
        "uncore" => Some((DomainKind::Uncore, None)),
        "dram" => Some((DomainKind::Dram, None)),
        _ => {
            // `package-N` or, on multi-die packages, `package-N-die-M`.
            let rest = name.strip_prefix("package-")?;
            let number = rest.split_once("-die-").map_or(rest, |(n, _)| n);
            Some((DomainKind::Package, Some(number.parse().ok()?)))
        }
    }
}

fn read_name(dir: &Path) -> Option<String> {
    let name = fs::read_to_string(dir.join("name")).ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// `max_energy_range_uj`, or [`UNKNOWN_MAX_RANGE_UJ`] when absent or unreadable.
fn read_max_range(dir: &Path) -> u64 {
    let path = dir.join("max_energy_range_uj");
    match fs::read_to_string(&path) {
        Ok(text) => match parse_max_range(&text) {
            Some(max) => max,
            None => {
                warn!(
                    "{}: cannot use {text:?}; counter wrap will not be undone",
                    path.display()
                );
                UNKNOWN_MAX_RANGE_UJ
            }
        },
        Err(e) => {
            debug!(
                "reading {}: {e}; assuming the counter never wraps",
                path.display()
            );
            UNKNOWN_MAX_RANGE_UJ
        }
    }
}

/// A usable `max_energy_range_uj` (a positive number of µJ).
pub(crate) fn parse_max_range(text: &str) -> Option<u64> {
    text.trim().parse::<u64>().ok().filter(|&max| max > 0)
}

/// Parses a counter file's bytes. `complete`: the read did not fill the buffer.
pub(crate) fn parse_uj(path: &Path, bytes: &[u8], complete: bool) -> Result<u64, SensorError> {
    let text = String::from_utf8_lossy(bytes);
    let value = text.trim();
    match value.parse::<u64>() {
        Ok(v) if complete => Ok(v),
        _ => Err(SensorError::Parse {
            path: path.to_path_buf(),
            content: value.chars().take(40).collect(),
        }),
    }
}

/// EACCES/EPERM become [`SensorError::PermissionDenied`], which says what to do.
fn io_error(path: &Path, e: io::Error) -> SensorError {
    if e.kind() == io::ErrorKind::PermissionDenied {
        SensorError::PermissionDenied {
            path: path.to_path_buf(),
        }
    } else {
        SensorError::Read {
            path: path.to_path_buf(),
            source: e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensors::{
        host_joules, socket_joules,
        testutil::{add, can_read, put, write_tree, Entry, Entry::*},
        DomainKind::{Core, Dram, Package, Psys, Uncore},
    };

    const SEC: Duration = Duration::from_secs(1);

    /// A tree, what changes one second later, and the zones expected then.
    struct Case {
        name: &'static str,
        tree: &'static [Entry<'static>],
        later: &'static [Entry<'static>],
        /// (name, kind, socket, joules), in discovery order.
        zones: &'static [(&'static str, DomainKind, Option<u32>, f64)],
        host: f64,
    }

    const CASES: &[Case] = &[
        Case {
            name: "one socket",
            tree: &[
                File("intel-rapl:0/name", "package-0\n"),
                File("intel-rapl:0/energy_uj", "1000000\n"),
                File("intel-rapl:0/max_energy_range_uj", "262143328850\n"),
                File("intel-rapl:0:0/name", "core\n"),
                File("intel-rapl:0:0/energy_uj", "500000\n"),
                File("intel-rapl:0:1/name", "uncore\n"),
                File("intel-rapl:0:1/energy_uj", "100000\n"),
                File("intel-rapl/enabled", "1\n"),
            ],
            later: &[
                File("intel-rapl:0/energy_uj", "16000000\n"),
                File("intel-rapl:0:0/energy_uj", "10500000\n"),
                File("intel-rapl:0:1/energy_uj", "1100000\n"),
            ],
            zones: &[
                ("package-0", Package, Some(0), 15.0),
                ("core", Core, Some(0), 10.0),
                ("uncore", Uncore, Some(0), 1.0),
            ],
            host: 15.0,
        },
        Case {
            name: "two sockets with dram",
            tree: &[
                File("intel-rapl:0/name", "package-0\n"),
                File("intel-rapl:0/energy_uj", "0\n"),
                File("intel-rapl:0:0/name", "dram\n"),
                File("intel-rapl:0:0/energy_uj", "0\n"),
                File("intel-rapl:1/name", "package-1\n"),
                File("intel-rapl:1/energy_uj", "0\n"),
                File("intel-rapl:1:0/name", "dram\n"),
                File("intel-rapl:1:0/energy_uj", "0\n"),
            ],
            later: &[
                File("intel-rapl:0/energy_uj", "100000000\n"),
                File("intel-rapl:0:0/energy_uj", "20000000\n"),
                File("intel-rapl:1/energy_uj", "50000000\n"),
                File("intel-rapl:1:0/energy_uj", "10000000\n"),
            ],
            zones: &[
                ("package-0", Package, Some(0), 100.0),
                ("dram", Dram, Some(0), 20.0),
                ("package-1", Package, Some(1), 50.0),
                ("dram", Dram, Some(1), 10.0),
            ],
            host: 180.0,
        },
        Case {
            name: "psys at intel-rapl:1 on a one-socket laptop",
            tree: &[
                File("intel-rapl:0/name", "package-0\n"),
                File("intel-rapl:0/energy_uj", "0\n"),
                File("intel-rapl:1/name", "psys\n"),
                File("intel-rapl:1/energy_uj", "0\n"),
            ],
            later: &[
                File("intel-rapl:0/energy_uj", "5000000\n"),
                File("intel-rapl:1/energy_uj", "9000000\n"),
            ],
            zones: &[
                ("package-0", Package, Some(0), 5.0),
                ("psys", Psys, None, 9.0),
            ],
            host: 9.0,
        },
        Case {
            name: "AMD (package and core under intel-rapl, no dram)",
            tree: &[
                File("intel-rapl:0/name", "package-0\n"),
                File("intel-rapl:0/energy_uj", "7000000\n"),
                File("intel-rapl:0/max_energy_range_uj", "65532610987\n"),
                File("intel-rapl:0:0/name", "core\n"),
                File("intel-rapl:0:0/energy_uj", "3000000\n"),
                File("intel-rapl:0:0/max_energy_range_uj", "65532610987\n"),
            ],
            later: &[
                File("intel-rapl:0/energy_uj", "37000000\n"),
                File("intel-rapl:0:0/energy_uj", "23000000\n"),
            ],
            zones: &[
                ("package-0", Package, Some(0), 30.0),
                ("core", Core, Some(0), 20.0),
            ],
            host: 30.0,
        },
        Case {
            name: "mmio duplicates are ignored",
            tree: &[
                File("intel-rapl:0/name", "package-0\n"),
                File("intel-rapl:0/energy_uj", "0\n"),
                File("intel-rapl-mmio:0/name", "package-0\n"),
                File("intel-rapl-mmio:0/energy_uj", "0\n"),
                File("intel-rapl-mmio:0:0/name", "dram\n"),
                File("intel-rapl-mmio:0:0/energy_uj", "0\n"),
            ],
            later: &[
                File("intel-rapl:0/energy_uj", "2000000\n"),
                File("intel-rapl-mmio:0/energy_uj", "2000000\n"),
                File("intel-rapl-mmio:0:0/energy_uj", "2000000\n"),
            ],
            zones: &[("package-0", Package, Some(0), 2.0)],
            host: 2.0,
        },
        Case {
            name: "wrap undone with max_energy_range_uj",
            tree: &[
                File("intel-rapl:0/name", "package-0\n"),
                File("intel-rapl:0/energy_uj", "262133328850\n"),
                File("intel-rapl:0/max_energy_range_uj", "262143328850\n"),
                File("intel-rapl:0:0/name", "dram\n"),
                File("intel-rapl:0:0/energy_uj", "1000000\n"),
            ],
            later: &[
                File("intel-rapl:0/energy_uj", "4000000\n"),
                File("intel-rapl:0:0/energy_uj", "2000000\n"),
            ],
            // 10 J to the top of the range, then 4 J.
            zones: &[
                ("package-0", Package, Some(0), 14.0),
                ("dram", Dram, Some(0), 1.0),
            ],
            host: 15.0,
        },
        Case {
            name: "multi-die package, sub-zones nested inside",
            tree: &[
                File("intel-rapl:0/name", "package-0-die-0\n"),
                File("intel-rapl:0/energy_uj", "0\n"),
                File("intel-rapl:0/intel-rapl:0:0/name", "dram\n"),
                File("intel-rapl:0/intel-rapl:0:0/energy_uj", "0\n"),
                File("intel-rapl:1/name", "package-0-die-1\n"),
                File("intel-rapl:1/energy_uj", "0\n"),
            ],
            later: &[
                File("intel-rapl:0/energy_uj", "3000000\n"),
                File("intel-rapl:0/intel-rapl:0:0/energy_uj", "1000000\n"),
                File("intel-rapl:1/energy_uj", "4000000\n"),
            ],
            zones: &[
                ("package-0-die-0", Package, Some(0), 3.0),
                ("dram", Dram, Some(0), 1.0),
                ("package-0-die-1", Package, Some(0), 4.0),
            ],
            host: 8.0,
        },
        Case {
            name: "socket from the name, not the folder number",
            tree: &[
                File("intel-rapl:0/name", "package-1\n"),
                File("intel-rapl:0/energy_uj", "0\n"),
                File("intel-rapl:0:0/name", "dram\n"),
                File("intel-rapl:0:0/energy_uj", "0\n"),
                File("intel-rapl:1/name", "package-0\n"),
                File("intel-rapl:1/energy_uj", "0\n"),
            ],
            later: &[
                File("intel-rapl:0/energy_uj", "1000000\n"),
                File("intel-rapl:0:0/energy_uj", "1000000\n"),
                File("intel-rapl:1/energy_uj", "2000000\n"),
            ],
            zones: &[
                ("package-1", Package, Some(1), 1.0),
                ("dram", Dram, Some(1), 1.0),
                ("package-0", Package, Some(0), 2.0),
            ],
            host: 4.0,
        },
    ];

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    #[test]
    fn fixture_trees() {
        for case in CASES {
            let dir = write_tree(case.tree);
            let mut sensor =
                PowercapSensor::new(dir.path()).unwrap_or_else(|e| panic!("{}: {e}", case.name));
            let t0 = Instant::now();
            let first = sensor.poll_at(t0).unwrap();
            assert!(
                first.zones.is_empty(),
                "{}: baseline has no deltas",
                case.name
            );
            assert_eq!(first.interval, Duration::ZERO);
            add(dir.path(), case.later);
            let r = sensor.poll_at(t0 + SEC).unwrap();
            assert_eq!(r.interval, SEC, "{}", case.name);
            let got: Vec<_> = r
                .zones
                .iter()
                .map(|z| (z.name.as_str(), z.kind, z.socket))
                .collect();
            let want: Vec<_> = case.zones.iter().map(|&(n, k, s, _)| (n, k, s)).collect();
            assert_eq!(got, want, "{}", case.name);
            for (z, &(_, _, _, joules)) in r.zones.iter().zip(case.zones) {
                assert!(
                    close(z.joules, joules),
                    "{}: {} {} != {joules}",
                    case.name,
                    z.name,
                    z.joules
                );
            }
            assert!(
                close(host_joules(&r.zones), case.host),
                "{}: host",
                case.name
            );
            assert_eq!(r.implausible_dropped, 0, "{}", case.name);
        }
    }

    #[test]
    fn socket_totals_of_two_sockets() {
        let case = &CASES[1];
        let dir = write_tree(case.tree);
        let mut s = PowercapSensor::new(dir.path()).unwrap();
        let t0 = Instant::now();
        s.poll_at(t0).unwrap();
        add(dir.path(), case.later);
        let r = s.poll_at(t0 + SEC).unwrap();
        assert!(close(socket_joules(&r.zones, 0), 120.0));
        assert!(close(socket_joules(&r.zones, 1), 60.0));
    }

    #[test]
    fn labels() {
        let dir = write_tree(CASES[0].tree);
        let s = PowercapSensor::new(dir.path()).unwrap();
        assert_eq!(s.name(), "powercap_rapl");
        assert_eq!(s.origin(), EnergyOrigin::Measured);
        assert_eq!(
            s.describe(),
            "package-0 (intel-rapl:0), core (intel-rapl:0:0), uncore (intel-rapl:0:1)"
        );
    }

    #[test]
    fn missing_or_empty_root_is_no_zones() {
        let err = PowercapSensor::new(Path::new("/nonexistent/powercap")).unwrap_err();
        assert!(matches!(err, SensorError::NoZones { .. }), "{err}");
        let dir = write_tree(&[
            Dir("intel-rapl"),
            File("intel-rapl-mmio:0/energy_uj", "1\n"),
        ]);
        let err = PowercapSensor::new(dir.path()).unwrap_err();
        assert!(matches!(err, SensorError::NoZones { .. }), "{err}");
    }

    #[test]
    fn unreadable_energy_is_permission_denied() {
        let dir = write_tree(&[
            File("intel-rapl:0/name", "package-0\n"),
            Unreadable("intel-rapl:0/energy_uj", "1\n"),
        ]);
        if can_read(&dir.path().join("intel-rapl:0/energy_uj")) {
            // Running as root (or with CAP_DAC_OVERRIDE): mode 000 does not
            // stop us, so there is nothing to observe here. The mapping itself
            // is checked by `eacces_maps_to_permission_denied`.
            return;
        }
        let err = PowercapSensor::new(dir.path()).unwrap_err();
        assert!(matches!(err, SensorError::PermissionDenied { .. }), "{err}");
        assert!(
            err.to_string().contains("root"),
            "the message says what to do: {err}"
        );
    }

    #[test]
    fn eacces_maps_to_permission_denied() {
        let path = Path::new("/sys/class/powercap/intel-rapl:0/energy_uj");
        let err = io_error(path, io::Error::from_raw_os_error(libc::EACCES));
        assert!(
            matches!(err, SensorError::PermissionDenied { ref path } if path.ends_with("energy_uj"))
        );
        let err = io_error(path, io::Error::from_raw_os_error(libc::EIO));
        assert!(matches!(err, SensorError::Read { .. }));
    }

    fn two_zone_tree() -> tempfile::TempDir {
        write_tree(&[
            File("intel-rapl:0/name", "package-0\n"),
            File("intel-rapl:0/energy_uj", "0\n"),
            File("intel-rapl:1/name", "package-1\n"),
            File("intel-rapl:1/energy_uj", "0\n"),
        ])
    }

    fn names(r: &EnergyReading) -> Vec<(&str, f64)> {
        r.zones
            .iter()
            .map(|z| (z.name.as_str(), z.joules))
            .collect()
    }

    #[test]
    fn zone_disappearing_mid_run_is_skipped() {
        let dir = two_zone_tree();
        let mut s = PowercapSensor::new(dir.path()).unwrap();
        let t0 = Instant::now();
        s.poll_at(t0).unwrap();
        // A regular file removed while open still reads; sysfs would give
        // ENODEV. Replace the zone by a folder-less path so the reopen fails.
        std::fs::remove_dir_all(dir.path().join("intel-rapl:1")).unwrap();
        put(dir.path(), "intel-rapl:0/energy_uj", "1000000\n");
        s.zones[1].file = None; // what a read error on the vanished handle does
        let r = s.poll_at(t0 + SEC).unwrap();
        assert_eq!(names(&r), vec![("package-0", 1.0)]);
        put(dir.path(), "intel-rapl:0/energy_uj", "3000000\n");
        let r = s.poll_at(t0 + 2 * SEC).unwrap();
        assert_eq!(names(&r), vec![("package-0", 2.0)]);
        // It comes back: first a baseline, then deltas again.
        put(dir.path(), "intel-rapl:1/energy_uj", "900000000\n");
        let r = s.poll_at(t0 + 3 * SEC).unwrap();
        assert_eq!(names(&r), vec![("package-0", 0.0)]);
        put(dir.path(), "intel-rapl:1/energy_uj", "905000000\n");
        let r = s.poll_at(t0 + 4 * SEC).unwrap();
        assert_eq!(names(&r), vec![("package-0", 0.0), ("package-1", 5.0)]);
    }

    #[test]
    fn every_zone_failing_is_an_error() {
        let dir = write_tree(&[
            File("intel-rapl:0/name", "package-0\n"),
            File("intel-rapl:0/energy_uj", "0\n"),
        ]);
        let mut s = PowercapSensor::new(dir.path()).unwrap();
        let t0 = Instant::now();
        s.poll_at(t0).unwrap();
        std::fs::remove_dir_all(dir.path().join("intel-rapl:0")).unwrap();
        s.zones[0].file = None;
        let err = s.poll_at(t0 + SEC).unwrap_err();
        assert!(matches!(err, SensorError::Read { .. }), "{err}");
    }

    #[test]
    fn garbage_is_skipped_then_rebaselined() {
        let dir = two_zone_tree();
        let mut s = PowercapSensor::new(dir.path()).unwrap();
        let t0 = Instant::now();
        s.poll_at(t0).unwrap();
        put(dir.path(), "intel-rapl:0/energy_uj", "1000000\n");
        put(dir.path(), "intel-rapl:1/energy_uj", "12ab\n");
        let r = s.poll_at(t0 + SEC).unwrap();
        assert_eq!(names(&r), vec![("package-0", 1.0)]);
        // Good again, much later in the counter: a baseline, not a spike.
        put(dir.path(), "intel-rapl:1/energy_uj", "8000000000\n");
        let r = s.poll_at(t0 + 2 * SEC).unwrap();
        assert_eq!(names(&r), vec![("package-0", 0.0)]);
        put(dir.path(), "intel-rapl:1/energy_uj", "8002000000\n");
        let r = s.poll_at(t0 + 3 * SEC).unwrap();
        assert_eq!(names(&r), vec![("package-0", 0.0), ("package-1", 2.0)]);
        assert_eq!(r.implausible_dropped, 0);
    }

    #[test]
    fn garbage_contents_are_parse_errors() {
        let path = Path::new("energy_uj");
        for bad in [&b""[..], b"\n", b"-5\n", b"1.5\n", b"12ab", b"\xff\xfe"] {
            let err = parse_uj(path, bad, true).unwrap_err();
            assert!(matches!(err, SensorError::Parse { .. }), "{bad:?}");
        }
        assert!(
            parse_uj(path, b"123", false).is_err(),
            "a truncated read is refused"
        );
        assert_eq!(parse_uj(path, b"  42\n", true).unwrap(), 42);
    }

    #[test]
    fn implausible_jump_is_dropped_and_counted() {
        let dir = two_zone_tree();
        let mut s = PowercapSensor::new(dir.path()).unwrap();
        let t0 = Instant::now();
        s.poll_at(t0).unwrap();
        // 53 kJ in a second on package-1 (a never-read counter's first value).
        put(dir.path(), "intel-rapl:0/energy_uj", "1000000\n");
        put(dir.path(), "intel-rapl:1/energy_uj", "53130000000\n");
        let r = s.poll_at(t0 + SEC).unwrap();
        assert_eq!(names(&r), vec![("package-0", 1.0)]);
        assert_eq!(r.implausible_dropped, 1);
        put(dir.path(), "intel-rapl:1/energy_uj", "53150000000\n");
        let r = s.poll_at(t0 + 2 * SEC).unwrap();
        assert_eq!(names(&r), vec![("package-0", 0.0), ("package-1", 20.0)]);
        assert_eq!(r.implausible_dropped, 1, "the count is cumulative");
    }

    #[test]
    fn value_beyond_max_range_is_implausible() {
        let dir = write_tree(&[
            File("intel-rapl:0/name", "package-0\n"),
            File("intel-rapl:0/energy_uj", "10\n"),
            File("intel-rapl:0/max_energy_range_uj", "1000\n"),
        ]);
        let mut s = PowercapSensor::new(dir.path()).unwrap();
        let t0 = Instant::now();
        s.poll_at(t0).unwrap();
        put(dir.path(), "intel-rapl:0/energy_uj", "5000\n");
        let r = s.poll_at(t0 + SEC).unwrap();
        assert!(r.zones.is_empty());
        assert_eq!(r.implausible_dropped, 1);
    }

    #[test]
    fn zone_ids_and_names() {
        assert_eq!(parse_zone_id("intel-rapl:0"), Some((0, None)));
        assert_eq!(parse_zone_id("intel-rapl:1:2"), Some((1, Some(2))));
        assert_eq!(parse_zone_id("intel-rapl"), None);
        assert_eq!(parse_zone_id("intel-rapl-mmio:0"), None);
        assert_eq!(parse_zone_id("intel-rapl:x"), None);
        assert_eq!(classify("package-3"), Some((Package, Some(3))));
        assert_eq!(classify("package-1-die-0"), Some((Package, Some(1))));
        assert_eq!(classify("psys"), Some((Psys, None)));
        assert_eq!(classify("package-x"), None);
        assert_eq!(classify("something"), None);
    }
}
