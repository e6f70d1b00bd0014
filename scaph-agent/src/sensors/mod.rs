//! Energy sensors: where the joules come from.
//!
//! Every sensor turns its raw readings into energy *deltas* in joules for the
//! interval since its previous poll (counter wrap and implausible values are
//! handled inside the sensor, before anything is summed). The first poll is a
//! baseline and yields no deltas.
use std::{path::PathBuf, time::Duration};

pub mod counter;
pub mod estimate;
pub mod hwmon;
pub mod powercap;
#[cfg(test)]
mod simulated;
#[cfg(test)]
pub(crate) mod testutil;
pub mod topology;
pub mod vm;

pub use crate::model::{DomainKind, EnergyOrigin};
pub use estimate::{EstimateSensor, LinearModel};
pub use hwmon::HwmonSensor;
pub use powercap::PowercapSensor;
pub use topology::Topology;
pub use vm::VmSensor;

/// Energy of one zone over one interval.
#[derive(Clone, Debug, PartialEq)]
pub struct ZoneEnergy {
    /// Socket (package) index; `None` for host-wide zones (psys).
    pub socket: Option<u32>,
    pub kind: DomainKind,
    /// Zone name as the sensor found it (`package-0`, `core`, `dram`, `psys`, ...).
    pub name: String,
    /// Powercap path of the zone, when there is one (for messages and labels).
    pub path: Option<PathBuf>,
    /// Energy during the interval, joules. Never negative.
    pub joules: f64,
}

/// One poll's result.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EnergyReading {
    /// Time since the previous poll (monotonic). Zero on the baseline poll.
    pub interval: Duration,
    /// Deltas per zone; empty on the baseline poll.
    pub zones: Vec<ZoneEnergy>,
    /// Deltas dropped because they were implausible (cumulative count).
    pub implausible_dropped: u64,
}

/// What an estimating sensor needs to know about the interval.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Utilisation {
    /// Busy fraction (0..=1) per CPU during the interval, indexed by CPU number.
    pub busy: Vec<f64>,
}

/// A source of energy readings.
pub trait EnergySensor: Send {
    /// Short name used in labels and logs (`powercap_rapl`, `estimate`, `vm`).
    fn name(&self) -> &'static str;
    fn origin(&self) -> EnergyOrigin;
    /// Reads the counters. `utilisation` is used only by estimating sensors.
    fn poll(&mut self, utilisation: &Utilisation) -> Result<EnergyReading, SensorError>;
}

#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    #[error("no powercap zones under {path}")]
    NoZones { path: PathBuf },
    #[error("permission denied reading {path}: since Linux 5.10 (CVE-2020-8694) energy_uj is readable by root only; run scaph as root or give it read access to that file")]
    PermissionDenied { path: PathBuf },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no hwmon power or energy channel for the host or a socket under {path}")]
    NoHwmonPower { path: PathBuf },
    #[error("{path}: cannot parse {content:?} as an integer")]
    Parse { path: PathBuf, content: String },
}

/// Energy of the whole host during an interval, from one reading's zones.
///
/// The rule (the same as Scaphandre 1.0's host value, but applied to deltas
/// that were each wrap-corrected first):
/// - if a `Psys` zone is present, host = Σ psys: the platform counter covers
///   the packages, their DRAM and more, so nothing is added to it;
/// - otherwise host = Σ `Package` + Σ `Dram` over all sockets (DRAM is
///   outside the package domain).
///
/// `Core` and `Uncore` are parts of their package and are never added.
#[must_use]
pub fn host_joules(zones: &[ZoneEnergy]) -> f64 {
    if zones.iter().any(|z| z.kind == DomainKind::Psys) {
        zones
            .iter()
            .filter(|z| z.kind == DomainKind::Psys)
            .map(|z| z.joules)
            .sum()
    } else {
        zones
            .iter()
            .filter(|z| counts_in_socket(z))
            .map(|z| z.joules)
            .sum()
    }
}

/// Energy of one socket during an interval: its `Package` zones (several on
/// multi-die packages) plus its `Dram`. Psys is host-wide and never included.
#[must_use]
pub fn socket_joules(zones: &[ZoneEnergy], socket: u32) -> f64 {
    zones
        .iter()
        .filter(|z| z.socket == Some(socket) && counts_in_socket(z))
        .map(|z| z.joules)
        .sum()
}

/// Zones that make up a socket's energy (and, without psys, the host's).
#[must_use]
pub fn counts_in_socket(zone: &ZoneEnergy) -> bool {
    matches!(zone.kind, DomainKind::Package | DomainKind::Dram)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(socket: Option<u32>, kind: DomainKind, joules: f64) -> ZoneEnergy {
        ZoneEnergy {
            socket,
            kind,
            name: format!("{kind:?}"),
            path: None,
            joules,
        }
    }

    #[test]
    fn host_is_packages_and_dram_never_core() {
        let zones = [
            zone(Some(0), DomainKind::Package, 10.0),
            zone(Some(0), DomainKind::Core, 6.0),
            zone(Some(0), DomainKind::Uncore, 1.0),
            zone(Some(0), DomainKind::Dram, 2.0),
            zone(Some(1), DomainKind::Package, 20.0),
            zone(Some(1), DomainKind::Dram, 3.0),
        ];
        assert_eq!(host_joules(&zones), 35.0);
        assert_eq!(socket_joules(&zones, 0), 12.0);
        assert_eq!(socket_joules(&zones, 1), 23.0);
        assert_eq!(socket_joules(&zones, 2), 0.0);
    }

    #[test]
    fn psys_replaces_the_sum() {
        let zones = [
            zone(Some(0), DomainKind::Package, 10.0),
            zone(Some(0), DomainKind::Dram, 2.0),
            zone(None, DomainKind::Psys, 30.0),
        ];
        assert_eq!(host_joules(&zones), 30.0);
        assert_eq!(socket_joules(&zones, 0), 12.0);
    }

    #[test]
    fn empty_is_zero() {
        assert_eq!(host_joules(&[]), 0.0);
    }
}
