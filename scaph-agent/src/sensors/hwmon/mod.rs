//! Power and energy from the kernel's hwmon class (`/sys/class/hwmon`), for
//! hosts without readable RAPL that do have a power sensor: servers with an
//! ACPI power meter, ARM SoCs whose firmware reports power, BMC-backed meters.
//!
//! Files (kernel `Documentation/hwmon/sysfs-interface.rst`):
//!
//! ```text
//! hwmonN/name                 driver name (power_meter, amd_energy, scmi_sensors, ...)
//! hwmonN/energyM_input        cumulative energy, µJ
//! hwmonN/powerM_average       average power over powerM_average_interval (ms), µW
//! hwmonN/powerM_input         instantaneous power, µW
//! hwmonN/{energy,power}M_label  what the channel measures (optional)
//! ```
//!
//! Drivers registered the old way keep these files (and `name`) in
//! `hwmonN/device/`; both places are read.
//!
//! # What each channel becomes
//! - `power_meter` (ACPI power meter; ACPI §10.4 defines it as the power the
//!   system draws): the **host** energy, like RAPL's `psys` zone. Where a
//!   host has several meters, their `powerM_oem_info` tells them apart
//!   (NVIDIA Grace): "Module Power Socket N" is **socket N**; a meter of one
//!   rail ("CPU", "Grace", "SysIO" Power Socket N) is a part, ignored.
//! - `amd_energy`: `EsocketN` is **socket N**; the `EcoreNNN` counters are
//!   parts of their socket's and are not added.
//! - any other driver (`scmi_sensors`, `ibmpowernv`, BMC-backed ones...):
//!   by its label. A label with one of the words `system`, `sys`, `psys`,
//!   `platform`, `total`, `node`, `chassis` is the **host**, unless it also
//!   names a part (`cpu`, `gpu`, `soc`, `ddr`, `mem`, `io`, `core`: say
//!   "VDD_SYS_GPU" or "Total CPU Power"); `socketN`,
//!   `packageN`, `pkgN` (or `socket N`) is **socket N**.
//! - everything else (a channel without a label, `ina2xx` shunt monitors on
//!   one rail, `apm_xgene`'s "CPU power" and "IO power", SCMI cluster rails)
//!   is a sub-rail of something else: it is ignored, never added, so nothing
//!   is counted twice. It is listed at debug level.
//! - one channel per role: if two claim the host (or the same socket), the
//!   ACPI power meter wins, then an energy counter over a power reading,
//!   then the lower hwmon number; the others are logged and ignored.
//! - on a device with `energyM_input` channels, its power channels are the
//!   same rails and are not read.
//!
//! # Turning readings into joules
//! - `energyM_input` is a counter: it goes through the same
//!   [`EnergyCounter`] as RAPL with no known range, so a wrap of the 64-bit
//!   value is undone and a reset (the value going back) is an implausible
//!   delta, dropped, counted, and the next read is a new baseline.
//! - `powerM_average` (preferred) or `powerM_input` is integrated over the
//!   poll interval with the trapezoid rule between two reads,
//!   `(P_prev + P_now) / 2 × Δt`: exact for constant or linearly changing
//!   power. A reading above [`MAX_PLAUSIBLE_WATTS`] is dropped, counted, and
//!   the next read is a new baseline.
//! - every file read is at most 64 bytes; anything that is not a plain
//!   unsigned integer is an error for that channel in that poll (logged when
//!   it starts and stops failing), and the channel starts again from a
//!   baseline when it reads again.
use std::{
    fs::File,
    io::Read,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use log::{info, warn};

use super::{
    counter::{CounterUpdate, EnergyCounter, MAX_PLAUSIBLE_WATTS},
    DomainKind, EnergyOrigin, EnergyReading, EnergySensor, SensorError, Utilisation, ZoneEnergy,
};

mod discover;
#[cfg(test)]
mod tests;

use discover::{ChannelSpec, Role, MAX_FILE_BYTES};

/// Where the kernel exposes hwmon devices.
pub const DEFAULT_HWMON_ROOT: &str = "/sys/class/hwmon";

/// Energy of the host and sockets from hwmon power and energy channels.
#[derive(Debug)]
pub struct HwmonSensor {
    channels: Vec<Channel>,
    last_poll: Option<Instant>,
    implausible_dropped: u64,
}

#[derive(Debug)]
enum Quantity {
    /// A µJ counter.
    Energy(EnergyCounter),
    /// A µW reading and the previous one, if any.
    Power(Option<u64>),
}

#[derive(Debug)]
struct Channel {
    spec: ChannelSpec,
    quantity: Quantity,
    /// The last read failed; its warning was logged already.
    failing: bool,
}

impl HwmonSensor {
    /// Finds the usable channels under `root` (normally [`DEFAULT_HWMON_ROOT`]).
    ///
    /// # Errors
    /// [`SensorError::NoHwmonPower`] when `root` is missing or has no channel
    /// that measures the host or a socket; [`SensorError::Read`] when `root`
    /// cannot be listed.
    pub fn new(root: &Path) -> Result<Self, SensorError> {
        let specs = discover::discover(root).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => SensorError::NoHwmonPower {
                path: root.to_path_buf(),
            },
            _ => SensorError::Read {
                path: root.to_path_buf(),
                source: e,
            },
        })?;
        if specs.is_empty() {
            return Err(SensorError::NoHwmonPower {
                path: root.to_path_buf(),
            });
        }
        let channels = specs
            .into_iter()
            .map(|spec| Channel {
                quantity: if spec.energy {
                    Quantity::Energy(EnergyCounter::new(u64::MAX))
                } else {
                    Quantity::Power(None)
                },
                spec,
                failing: false,
            })
            .collect();
        Ok(Self {
            channels,
            last_poll: None,
            implausible_dropped: 0,
        })
    }

    /// One line listing the channels and what they stand for, for the startup log.
    #[must_use]
    pub fn describe(&self) -> String {
        self.channels
            .iter()
            .map(|c| format!("{} ({:?})", c.spec.zone_name, c.spec.role))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// [`EnergySensor::poll`] at a given instant (tests give their own clock).
    ///
    /// # Errors
    /// The first channel's error, only when no channel could be read at all.
    pub fn poll_at(&mut self, now: Instant) -> Result<EnergyReading, SensorError> {
        let interval = self
            .last_poll
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        self.last_poll = Some(now);
        let mut zones = Vec::new();
        let mut first_error = None;
        let mut any_read = false;
        for channel in &mut self.channels {
            let value = match channel.read() {
                Ok(value) => value,
                Err(e) => {
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            any_read = true;
            match channel.update(value, interval) {
                Ok(Some(joules)) => zones.push(channel.zone(joules)),
                Ok(None) => {}
                Err(why) => {
                    self.implausible_dropped += 1;
                    super::counter::log_dropped(
                        &channel.spec.input,
                        &why,
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

impl EnergySensor for HwmonSensor {
    fn name(&self) -> &'static str {
        "hwmon"
    }

    fn origin(&self) -> EnergyOrigin {
        EnergyOrigin::Measured
    }

    fn poll(&mut self, _utilisation: &Utilisation) -> Result<EnergyReading, SensorError> {
        self.poll_at(Instant::now())
    }
}

impl Channel {
    /// Joules since the previous read (`None` on a baseline), or why the
    /// reading was dropped.
    fn update(&mut self, value: u64, interval: Duration) -> Result<Option<f64>, String> {
        match &mut self.quantity {
            Quantity::Energy(counter) => match counter.update(value, interval) {
                CounterUpdate::Baseline => Ok(None),
                CounterUpdate::Delta(uj) => Ok(Some(uj as f64 / 1e6)),
                CounterUpdate::Implausible(why) => Err(format!("{why:?}")),
            },
            Quantity::Power(previous) => {
                let watts = value as f64 / 1e6;
                if watts > MAX_PLAUSIBLE_WATTS {
                    *previous = None;
                    return Err(format!("{watts} W is above {MAX_PLAUSIBLE_WATTS} W"));
                }
                Ok(previous
                    .replace(value)
                    .map(|before| (before as f64 + value as f64) / 2e6 * interval.as_secs_f64()))
            }
        }
    }

    fn zone(&self, joules: f64) -> ZoneEnergy {
        let (kind, socket) = match self.spec.role {
            Role::Host => (DomainKind::Psys, None),
            Role::Socket(n) => (DomainKind::Package, Some(n)),
        };
        ZoneEnergy {
            socket,
            kind,
            name: self.spec.zone_name.clone(),
            path: self.spec.input.parent().map(Path::to_path_buf),
            joules,
        }
    }

    /// Reads the channel, logging only changes between working and failing.
    /// A failure forgets the previous reading, so a gap never becomes a spike.
    fn read(&mut self) -> Result<u64, SensorError> {
        let result = read_value(&self.spec.input);
        match &result {
            Ok(_) if self.failing => {
                self.failing = false;
                info!(
                    "hwmon {} reads again; starting from a new baseline",
                    self.spec.zone_name
                );
            }
            Ok(_) => {}
            Err(e) => {
                match &mut self.quantity {
                    Quantity::Energy(counter) => counter.reset(),
                    Quantity::Power(previous) => *previous = None,
                }
                if !self.failing {
                    self.failing = true;
                    warn!(
                        "hwmon {}: {e}; skipping it until it reads again",
                        self.spec.zone_name
                    );
                }
            }
        }
        result
    }
}

/// One unsigned integer from a sysfs file, reading at most [`MAX_FILE_BYTES`].
fn read_value(path: &Path) -> Result<u64, SensorError> {
    let error = |source| SensorError::Read {
        path: PathBuf::from(path),
        source,
    };
    let mut bytes = Vec::new();
    File::open(path)
        .map_err(error)?
        .take(MAX_FILE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(error)?;
    let complete = (bytes.len() as u64) < MAX_FILE_BYTES;
    super::powercap::parse_uj(path, &bytes, complete)
}
