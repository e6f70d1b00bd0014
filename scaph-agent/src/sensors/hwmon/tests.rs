//! Fixture trees in the layouts real drivers write, as data tables.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use super::*;
use crate::sensors::{
    host_joules, socket_joules,
    testutil::{add, write_tree, Entry, Entry::*},
    DomainKind::{Package, Psys},
};

const SEC: Duration = Duration::from_secs(1);

/// A tree, what changes one second later, and the zones expected then.
struct Case {
    name: &'static str,
    tree: &'static [Entry<'static>],
    later: &'static [Entry<'static>],
    /// (zone name, kind, socket, joules), in the order the sensor reports them.
    zones: &'static [(&'static str, DomainKind, Option<u32>, f64)],
    host: f64,
}

/// `acpi_power_meter` as registered by current kernels, with the ACPI
/// thermal zone beside it (no power channel, ignored).
const ACPI_POWER_METER: &[Entry<'static>] = &[
    File("hwmon0/name", "acpitz\n"),
    File("hwmon0/temp1_input", "27800\n"),
    File("hwmon1/name", "power_meter\n"),
    File("hwmon1/power1_average", "150000000\n"),
    File("hwmon1/power1_average_interval", "1000\n"),
    File("hwmon1/power1_average_interval_min", "1000\n"),
    File("hwmon1/power1_average_interval_max", "2000\n"),
    File("hwmon1/power1_accuracy", "95.0%\n"),
    File("hwmon1/power1_is_battery", "0\n"),
    File("hwmon1/power1_model_number", "Power Meter\n"),
    File("hwmon1/power1_oem_info", "HPE\n"),
];

const CASES: &[Case] = &[
    Case {
        name: "ACPI power meter at a constant 150 W",
        tree: ACPI_POWER_METER,
        later: &[],
        zones: &[("power_meter/power1", Psys, None, 150.0)],
        host: 150.0,
    },
    Case {
        name: "ACPI power meter, old registration (files under device/)",
        tree: &[
            Dir("hwmon3"),
            File("hwmon3/device/name", "power_meter\n"),
            File("hwmon3/device/power1_average", "80000000\n"),
            File("hwmon3/device/power1_average_interval", "300\n"),
        ],
        later: &[File("hwmon3/device/power1_average", "120000000\n")],
        // Trapezoid: (80 + 120) / 2 W for 1 s.
        zones: &[("power_meter/power1", Psys, None, 100.0)],
        host: 100.0,
    },
    Case {
        name: "amd_energy, two sockets: socket counters only, cores not added",
        tree: &[
            File("hwmon2/name", "amd_energy\n"),
            File("hwmon2/energy1_input", "1000000\n"),
            File("hwmon2/energy1_label", "Ecore000\n"),
            File("hwmon2/energy2_input", "2000000\n"),
            File("hwmon2/energy2_label", "Ecore001\n"),
            File("hwmon2/energy3_input", "500000000\n"),
            File("hwmon2/energy3_label", "Esocket0\n"),
            File("hwmon2/energy4_input", "700000000\n"),
            File("hwmon2/energy4_label", "Esocket1\n"),
        ],
        later: &[
            File("hwmon2/energy1_input", "6000000\n"),
            File("hwmon2/energy2_input", "9000000\n"),
            File("hwmon2/energy3_input", "560000000\n"),
            File("hwmon2/energy4_input", "770000000\n"),
        ],
        zones: &[
            ("amd_energy/Esocket0", Package, Some(0), 60.0),
            ("amd_energy/Esocket1", Package, Some(1), 70.0),
        ],
        host: 130.0,
    },
    Case {
        name:
            "SCMI board: system energy counter; its power twin, cluster rail and INA rails ignored",
        tree: &[
            File("hwmon0/name", "scmi_sensors\n"),
            File("hwmon0/energy1_input", "10000000\n"),
            File("hwmon0/energy1_label", "SYS_ENERGY\n"),
            File("hwmon0/energy2_input", "3000000\n"),
            File("hwmon0/energy2_label", "CPU_CLUSTER0_ENERGY\n"),
            File("hwmon0/power1_input", "25000000\n"),
            File("hwmon0/power1_label", "SYS_PWR\n"),
            File("hwmon1/name", "ina226\n"),
            File("hwmon1/power1_input", "4000000\n"),
            File("hwmon1/curr1_input", "330\n"),
            File("hwmon2/name", "ina226\n"),
            File("hwmon2/power1_input", "2000000\n"),
        ],
        later: &[
            File("hwmon0/energy1_input", "35000000\n"),
            File("hwmon0/energy2_input", "13000000\n"),
        ],
        zones: &[("scmi_sensors/SYS_ENERGY", Psys, None, 25.0)],
        host: 25.0,
    },
    Case {
        name: "power meter and a BMC 'Total Power' both claim the host: the power meter wins",
        tree: &[
            File("hwmon0/name", "bmc_power\n"),
            File("hwmon0/power1_input", "300000000\n"),
            File("hwmon0/power1_label", "Total Power\n"),
            File("hwmon1/name", "power_meter\n"),
            File("hwmon1/power1_average", "200000000\n"),
        ],
        later: &[],
        zones: &[("power_meter/power1", Psys, None, 200.0)],
        host: 200.0,
    },
    Case {
        name: "power1_input is used when there is no power1_average",
        tree: &[
            File("hwmon0/name", "xyz_bmc\n"),
            File("hwmon0/power1_input", "100000000\n"),
            File("hwmon0/power1_label", "Node Power\n"),
            File("hwmon0/power2_input", "40000000\n"),
            File("hwmon0/power2_label", "Socket 0 Power\n"),
        ],
        later: &[
            File("hwmon0/power1_input", "200000000\n"),
            File("hwmon0/power2_input", "40000000\n"),
        ],
        zones: &[
            ("xyz_bmc/Node Power", Psys, None, 150.0),
            ("xyz_bmc/Socket 0 Power", Package, Some(0), 40.0),
        ],
        host: 150.0,
    },
];

#[test]
fn fixtures_of_real_layouts() {
    for case in CASES {
        let dir = write_tree(case.tree);
        let mut sensor =
            HwmonSensor::new(dir.path()).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let t0 = Instant::now();
        let first = sensor.poll_at(t0).expect(case.name);
        assert!(
            first.zones.is_empty(),
            "{}: baseline has no deltas",
            case.name
        );
        add(dir.path(), case.later);
        let reading = sensor.poll_at(t0 + SEC).expect(case.name);
        let got: Vec<_> = reading
            .zones
            .iter()
            .map(|z| (z.name.as_str(), z.kind, z.socket, z.joules))
            .collect();
        assert_eq!(got, case.zones, "{}", case.name);
        assert_eq!(host_joules(&reading.zones), case.host, "{}", case.name);
        assert_eq!(reading.implausible_dropped, 0, "{}", case.name);
        assert_eq!(sensor.name(), "hwmon");
        assert_eq!(sensor.origin(), EnergyOrigin::Measured);
    }
}

#[test]
fn no_usable_channel_is_an_error_naming_the_root() {
    for tree in [
        // Only shunt monitors of single rails, and a fan controller.
        &[
            File("hwmon0/name", "ina226\n"),
            File("hwmon0/power1_input", "4000000\n"),
            File("hwmon1/name", "nct6775\n"),
            File("hwmon1/fan1_input", "1200\n"),
        ][..],
        &[Dir("nothing-here")][..],
    ] {
        let dir = write_tree(tree);
        let err = HwmonSensor::new(dir.path()).unwrap_err();
        assert!(matches!(err, SensorError::NoHwmonPower { .. }), "{err}");
        assert!(err.to_string().contains(&dir.path().display().to_string()));
    }
    let missing = std::path::Path::new("/nonexistent/hwmon");
    assert!(matches!(
        HwmonSensor::new(missing),
        Err(SensorError::NoHwmonPower { .. })
    ));
}

/// An `energy1_input` counter read every second: (value, joules expected or
/// `None` for no delta, cumulative implausible drops).
const COUNTER_STEPS: &[(&str, Option<f64>, u64)] = &[
    ("18446744073699551615", None, 0), // u64::MAX - 10 J: baseline
    ("18446744073709551615", Some(10.0), 0),
    ("5000000", Some(5.0), 0), // wrapped through 2^64: 5 J more (max range u64::MAX, like RAPL)
    ("6000000", Some(1.0), 0),
    ("1000", None, 1),           // reset (driver reloaded): dropped and counted
    ("31001000", Some(31.0), 1), // from the new baseline
];

#[test]
fn energy_counter_wrap_and_reset_like_rapl() {
    let dir = write_tree(&[
        File("hwmon0/name", "amd_energy\n"),
        File("hwmon0/energy1_label", "Esocket0\n"),
        File("hwmon0/energy1_input", "0\n"),
    ]);
    let mut sensor = HwmonSensor::new(dir.path()).unwrap();
    let t0 = Instant::now();
    for (n, &(value, joules, dropped)) in COUNTER_STEPS.iter().enumerate() {
        add(dir.path(), &[File("hwmon0/energy1_input", value)]);
        let reading = sensor.poll_at(t0 + SEC * n as u32).unwrap();
        let got = reading.zones.first().map(|z| z.joules);
        assert_eq!(got, joules, "step {n}: {value}");
        assert_eq!(reading.implausible_dropped, dropped, "step {n}");
    }
}

/// A power meter whose file becomes garbage: (content, joules expected after
/// 1 s or `None`, drops so far). Nothing panics, no gap becomes a spike.
const HOSTILE_STEPS: &[(&str, Option<f64>, u64)] = &[
    ("100000000\n", None, 0),
    ("100000000\n", Some(100.0), 0),
    ("12abc\n", None, 0),
    ("100000000\n", None, 0), // new baseline after the bad read
    ("-5\n", None, 0),
    ("100000000\n", None, 0),
    ("100000000\n", Some(100.0), 0),
    // 64 digits: longer than any real value, not parsed even in part.
    (
        "1000000000000000000000000000000000000000000000000000000000000000",
        None,
        0,
    ),
    ("100000000\n", None, 0),
    ("20000000000\n", None, 1), // 20 kW: implausible
    ("100000000\n", None, 1),   // baseline again, not (20 kW + 100 W) / 2
    ("100000000\n", Some(100.0), 1),
    ("", None, 1),
    ("100000000\n", None, 1),
];

#[test]
fn hostile_power_values_are_bounded_and_dropped() {
    let dir = write_tree(&[
        File("hwmon0/name", "power_meter\n"),
        File("hwmon0/power1_average", "0\n"),
    ]);
    let mut sensor = HwmonSensor::new(dir.path()).unwrap();
    let t0 = Instant::now();
    for (n, &(content, joules, dropped)) in HOSTILE_STEPS.iter().enumerate() {
        add(dir.path(), &[File("hwmon0/power1_average", content)]);
        let got = sensor
            .poll_at(t0 + SEC * n as u32)
            .map(|r| (r.zones.first().map(|z| z.joules), r.implausible_dropped));
        match got {
            Ok((j, d)) => {
                assert_eq!(j, joules, "step {n}: {content:?}");
                assert_eq!(d, dropped, "step {n}: {content:?}");
            }
            Err(e) => {
                // The only channel failed: an error for this poll, no energy.
                assert_eq!(joules, None, "step {n}: {content:?}: {e}");
            }
        }
    }
}

#[test]
fn garbage_names_and_labels_are_bounded() {
    let long = "x".repeat(500);
    let label = format!("System\u{1b}[2J/{long}");
    let dir = write_tree(&[
        File("hwmon0/name", "weird\u{7}drv\n"),
        File("hwmon0/power1_input", "1000000\n"),
        File("hwmon0/power1_label", &label),
    ]);
    let mut sensor = HwmonSensor::new(dir.path()).unwrap();
    let t0 = Instant::now();
    sensor.poll_at(t0).unwrap();
    let reading = sensor.poll_at(t0 + SEC).unwrap();
    let zone = &reading.zones[0];
    assert_eq!(zone.kind, Psys);
    assert!(zone.name.chars().count() <= 2 * 49 + 1, "{}", zone.name);
    assert!(!zone.name.chars().any(char::is_control), "{:?}", zone.name);
    assert_eq!(socket_joules(&reading.zones, 0), 0.0);
}
