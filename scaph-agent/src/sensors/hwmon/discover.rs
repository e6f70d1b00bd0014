//! Finding the hwmon channels worth reading and deciding what each measures.
//!
//! Pure rules ([`role`], [`pick`]) are kept apart from the listing of the
//! tree so that they are tested on names alone.
use std::{
    fs,
    io::Read,
    path::{Path, PathBuf},
};

use log::{debug, info};

/// Most hwmon devices looked at (a real host has a few dozen at most).
pub(super) const MAX_DEVICES: usize = 512;
/// Most directory entries looked at in one device folder (amd_energy on a
/// 128-core socket has about 400 files).
pub(super) const MAX_ENTRIES: usize = 4096;
/// Longest `name` or label kept, in characters.
const MAX_NAME_CHARS: usize = 48;
/// Longest content read from any one small file, bytes.
pub(super) const MAX_FILE_BYTES: u64 = 64;

/// What a channel's reading stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Role {
    /// The whole system (wall or platform power): host energy, like psys.
    Host,
    /// One CPU socket (package) and what it carries.
    Socket(u32),
}

/// A channel that measures something scaph can use, before its file is opened.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct ChannelSpec {
    /// The `energyN_input`, `powerN_average` or `powerN_input` file.
    pub input: PathBuf,
    /// `true` for a µJ counter, `false` for a µW power reading.
    pub energy: bool,
    /// `driver/label` (or `driver/powerN` without a label), bounded.
    pub zone_name: String,
    pub role: Role,
    /// The driver's `name`, bounded.
    pub driver: String,
}

/// The role of a channel of `driver` labelled `label`, or why it is ignored.
///
/// See the module documentation of [`super`] for the rules and their sources.
pub(super) fn role(driver: &str, label: Option<&str>) -> Result<Role, &'static str> {
    let lower = label.map(|l| l.trim().to_ascii_lowercase());
    let words: Vec<&str> = lower
        .as_deref()
        .unwrap_or("")
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    if driver == "power_meter" {
        // ACPI 6.x §10.4: the power meter device measures the power the
        // system draws (its input), not a rail. Hosts with several meters
        // (NVIDIA Grace: one per module and rail) tell them apart in
        // `power1_oem_info`, read as the label: "Module Power Socket N" is
        // the socket, the other rails are parts of it.
        let Some(label) = lower.as_deref() else {
            return Ok(Role::Host);
        };
        return match (words.contains(&"module"), socket_number(&words)) {
            (true, Some(n)) => Ok(Role::Socket(n)),
            (false, None) if !label.is_empty() && !names_a_part(&words) => Ok(Role::Host),
            _ => Err("a meter of one rail of a socket; its module's meter counts"),
        };
    }
    let Some(lower) = lower.as_deref() else {
        return Err("no label says what it measures");
    };
    if driver == "amd_energy" {
        return match lower.strip_prefix("esocket").and_then(number) {
            Some(n) => Ok(Role::Socket(n)),
            None => Err("per-core counter, part of its socket's"),
        };
    }
    const WHOLE: &[&str] = &[
        "system", "sys", "psys", "platform", "total", "node", "chassis",
    ];
    // "VDD_SYS_GPU" or "Total CPU Power" name a part, not the whole system.
    if words.iter().any(|w| WHOLE.contains(w)) && !names_a_part(&words) {
        return Ok(Role::Host);
    }
    if let Some(n) = socket_number(&words) {
        return Ok(Role::Socket(n));
    }
    Err("a sub-rail or something scaph does not know; not added, so as not to count twice")
}

/// Whether a label's words name one part of a machine (a rail inside a
/// socket or beside it) rather than a whole.
fn names_a_part(words: &[&str]) -> bool {
    const PARTS: &[&str] = &[
        "cpu", "gpu", "soc", "ddr", "mem", "memory", "dram", "io", "sysio", "core", "cores",
        "grace", "cluster", "fan",
    ];
    words.iter().any(|w| PARTS.contains(w))
}

/// `socket0`, `package1`, `pkg2`, or `socket 0` as two words.
fn socket_number(words: &[&str]) -> Option<u32> {
    for (at, word) in words.iter().enumerate() {
        for prefix in ["socket", "package", "pkg"] {
            if let Some(rest) = word.strip_prefix(prefix) {
                let n = if rest.is_empty() {
                    words.get(at + 1).and_then(|w| number(w))
                } else {
                    number(rest)
                };
                if n.is_some() {
                    return n;
                }
            }
        }
    }
    None
}

fn number(text: &str) -> Option<u32> {
    (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

/// Keeps one channel per role: the host once, each socket once.
///
/// Preference: the ACPI power meter, then energy counters (exact) over power
/// readings (integrated), then discovery order (hwmon number, channel number).
pub(super) fn pick(mut specs: Vec<ChannelSpec>) -> Vec<ChannelSpec> {
    specs.sort_by_key(|s| (s.role, s.driver != "power_meter", !s.energy));
    let mut kept: Vec<ChannelSpec> = Vec::new();
    for spec in specs {
        if let Some(first) = kept.iter().find(|k| k.role == spec.role) {
            info!(
                "hwmon {}: {:?} measured by {} already, ignored",
                spec.zone_name, spec.role, first.zone_name
            );
        } else {
            kept.push(spec);
        }
    }
    kept
}

/// Lists the usable channels under `root` (normally `/sys/class/hwmon`).
pub(super) fn discover(root: &Path) -> std::io::Result<Vec<ChannelSpec>> {
    let mut devices: Vec<(u32, String, PathBuf)> = Vec::new();
    for entry in fs::read_dir(root)?.take(MAX_DEVICES) {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(n) = name.strip_prefix("hwmon").and_then(number) else {
            continue;
        };
        devices.push((n, name, entry.path()));
    }
    devices.sort();
    let mut specs = Vec::new();
    for (_, id, dir) in devices {
        // Drivers registered the old way keep their attributes (and `name`)
        // in the parent device folder, as lm-sensors also knows.
        let dir = if dir.join("name").exists() {
            dir
        } else {
            dir.join("device")
        };
        let Some(driver) = read_small(&dir.join("name")).map(|n| bounded(&n)) else {
            debug!("hwmon {id}: no readable name, skipped");
            continue;
        };
        if let Err(e) = channels(&dir, &driver, &mut specs) {
            debug!("hwmon {id} ({driver}): listing {}: {e}", dir.display());
        }
    }
    Ok(pick(specs))
}

/// Adds the channels of one device folder.
fn channels(dir: &Path, driver: &str, specs: &mut Vec<ChannelSpec>) -> std::io::Result<()> {
    // (energy?, channel) -> file name of its reading.
    let mut inputs: std::collections::BTreeMap<(bool, u32), String> = Default::default();
    for entry in fs::read_dir(dir)?.take(MAX_ENTRIES) {
        let file = entry?.file_name().to_string_lossy().into_owned();
        let Some((energy, n, suffix)) = parse_attribute(&file) else {
            continue;
        };
        match (energy, suffix) {
            (true, "input") | (false, "average") => {
                inputs.insert((energy, n), file);
            }
            (false, "input") => {
                inputs.entry((false, n)).or_insert(file);
            }
            _ => {}
        }
    }
    // A device with energy counters reports its rails that way; its power
    // channels would be the same rails again.
    let has_energy = inputs.keys().any(|(energy, _)| *energy);
    for ((energy, n), file) in inputs {
        if has_energy && !energy {
            continue;
        }
        let kind = if energy { "energy" } else { "power" };
        // ACPI power meters have no label; several on one host are told
        // apart by their OEM information.
        let label = read_small(&dir.join(format!("{kind}{n}_label"))).map(|l| bounded(&l));
        let oem_info = (driver == "power_meter" && label.is_none())
            .then(|| read_small(&dir.join(format!("{kind}{n}_oem_info"))))
            .flatten()
            .map(|l| bounded(&l));
        let zone_name = format!(
            "{driver}/{}",
            label.as_deref().unwrap_or(&format!("{kind}{n}"))
        );
        match role(driver, label.as_deref().or(oem_info.as_deref())) {
            Ok(role) => specs.push(ChannelSpec {
                input: dir.join(file),
                energy,
                zone_name,
                role,
                driver: driver.to_owned(),
            }),
            Err(why) => debug!("hwmon {zone_name}: ignored ({why})"),
        }
    }
    Ok(())
}

/// `energy3_input` → `(true, 3, "input")`, `power1_average` → `(false, 1, "average")`.
fn parse_attribute(file: &str) -> Option<(bool, u32, &str)> {
    let (energy, rest) = if let Some(rest) = file.strip_prefix("energy") {
        (true, rest)
    } else {
        (false, file.strip_prefix("power")?)
    };
    let (n, suffix) = rest.split_once('_')?;
    Some((energy, number(n)?, suffix))
}

/// Trimmed content of a small text file; `None` when missing, unreadable or empty.
pub(super) fn read_small(path: &Path) -> Option<String> {
    let mut bytes = Vec::new();
    fs::File::open(path)
        .ok()?
        .take(MAX_FILE_BYTES)
        .read_to_end(&mut bytes)
        .ok()?;
    let text = String::from_utf8_lossy(&bytes).trim().to_owned();
    (!text.is_empty()).then_some(text)
}

fn bounded(text: &str) -> String {
    crate::label::bound(text, MAX_NAME_CHARS).replace('/', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (driver, label, role) — labels as the drivers or firmware write them.
    const ROLES: &[(&str, Option<&str>, Result<Role, ()>)] = &[
        ("power_meter", None, Ok(Role::Host)),
        // NVIDIA Grace: one meter per module and rail, named in oem_info.
        (
            "power_meter",
            Some("Module Power Socket 0"),
            Ok(Role::Socket(0)),
        ),
        (
            "power_meter",
            Some("Module Power Socket 1"),
            Ok(Role::Socket(1)),
        ),
        ("power_meter", Some("Grace Power Socket 0"), Err(())),
        ("power_meter", Some("CPU Power Socket 0"), Err(())),
        ("power_meter", Some("SysIO Power Socket 0"), Err(())),
        ("power_meter", Some("Power Meter"), Ok(Role::Host)),
        ("ina3221", Some("VDD_SYS_GPU"), Err(())),
        ("scmi_sensors", Some("Total CPU Power"), Err(())),
        ("ina3221", Some("VDD_CPU_SOC"), Err(())),
        ("amd_energy", Some("Esocket0"), Ok(Role::Socket(0))),
        ("amd_energy", Some("Esocket1"), Ok(Role::Socket(1))),
        ("amd_energy", Some("Ecore017"), Err(())),
        ("scmi_sensors", Some("SYS_PWR"), Ok(Role::Host)),
        ("scmi_sensors", Some("Total Power"), Ok(Role::Host)),
        ("scmi_sensors", Some("CPU_CLUSTER0_PWR"), Err(())),
        ("scmi_sensors", Some("socket 1 power"), Ok(Role::Socket(1))),
        ("ibmpowernv", Some("Package0"), Ok(Role::Socket(0))),
        ("apm_xgene", Some("CPU power"), Err(())),
        ("apm_xgene", Some("IO power"), Err(())),
        ("ina226", None, Err(())),
        ("ina226", Some("VDD_GPU"), Err(())),
        ("ina3221", Some("systemd"), Err(())),
        ("nct6775", Some("socket"), Err(())),
    ];

    #[test]
    fn roles_by_driver_and_label() {
        for &(driver, label, want) in ROLES {
            let got = role(driver, label).map_err(|_| ());
            assert_eq!(got, want, "{driver} {label:?}");
        }
    }

    #[test]
    fn attribute_names() {
        assert_eq!(parse_attribute("energy3_input"), Some((true, 3, "input")));
        assert_eq!(
            parse_attribute("power1_average"),
            Some((false, 1, "average"))
        );
        assert_eq!(
            parse_attribute("power1_average_interval"),
            Some((false, 1, "average_interval"))
        );
        assert_eq!(parse_attribute("power_input"), None);
        assert_eq!(parse_attribute("temp1_input"), None);
        assert_eq!(parse_attribute("energy1x_input"), None);
    }
}
