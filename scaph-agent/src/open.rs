//! Chooses and opens the sources named on the command line, degrading with a
//! clear message instead of failing: no BPF → procfs, no RAPL → estimate (in
//! auto mode) or no energy source at all.
use log::{info, warn};

use crate::{
    cli::{Cli, SensorChoice},
    cputime::{bpf::BpfSource, loader::LoadOptions, procfs::ProcfsSource, CpuTimeSource},
    sensors::{
        EnergySensor, EstimateSensor, HwmonSensor, LinearModel, PowercapSensor, Topology,
        Utilisation, VmSensor,
    },
};

/// The kernel program unless told otherwise or unable to load, in which
/// case it says why, once, and uses procfs.
pub fn cputime(cli: &Cli) -> anyhow::Result<Box<dyn CpuTimeSource>> {
    let mut source = open_cputime(cli)?;
    source.set_meta_options(cli.meta_options());
    Ok(source)
}

fn open_cputime(cli: &Cli) -> anyhow::Result<Box<dyn CpuTimeSource>> {
    if !cli.fallback_procfs {
        let options = LoadOptions {
            simulate_failure: cli.simulate_bpf_failure,
            force_timestamp: cli.bpf_timestamp,
            ..LoadOptions::default()
        };
        match BpfSource::new(cli.proc_root.clone(), options) {
            Ok(source) => {
                info!("CPU time source: {}", source.method());
                return Ok(Box::new(source));
            }
            Err(e) => warn!(
                "kernel program not loaded: {e}; falling back to procfs mode \
                 (CPU time from /proc/PID/stat, 10 ms resolution, processes shorter than --step are missed)"
            ),
        }
    }
    let source = ProcfsSource::new(cli.proc_root.clone())?;
    info!("CPU time source: {}", source.method());
    Ok(Box::new(source))
}

/// The energy sensor, or `None` (logged) when none can be used.
pub fn sensor(cli: &Cli, topology: &Topology) -> anyhow::Result<Option<Box<dyn EnergySensor>>> {
    if cli.vm {
        let vm = VmSensor::new(&cli.vm_path).map(|s| Box::new(s) as Box<dyn EnergySensor>);
        return Ok(usable(vm)
            .map_err(|e| warn!("--vm: {e}; scaph keeps running without an energy source"))
            .ok());
    }
    let estimate = || -> anyhow::Result<Box<dyn EnergySensor>> {
        let model = LinearModel::new(cli.estimate_idle_watts, cli.estimate_max_watts).ok_or_else(|| {
            anyhow::anyhow!(
                "--estimate-idle-watts {} / --estimate-max-watts {}: need 0 <= idle <= max, both finite",
                cli.estimate_idle_watts,
                cli.estimate_max_watts
            )
        })?;
        Ok(Box::new(EstimateSensor::new(topology.clone(), model)))
    };
    let powercap =
        || PowercapSensor::new(&cli.powercap_root).map(|s| Box::new(s) as Box<dyn EnergySensor>);
    let hwmon = || {
        HwmonSensor::new(&cli.hwmon_root).map(|s| {
            info!("hwmon channels: {}", s.describe());
            Box::new(s) as Box<dyn EnergySensor>
        })
    };
    let sensor = match cli.sensor {
        SensorChoice::PowercapRapl => usable(powercap())
            .map_err(|e| warn!("powercap_rapl: {e}; scaph keeps running without an energy source"))
            .ok(),
        SensorChoice::Estimate => {
            warn!("energy is ESTIMATED from CPU utilisation (--sensor estimate), not measured");
            Some(estimate()?)
        }
        SensorChoice::Hwmon => usable(hwmon())
            .map_err(|e| warn!("hwmon: {e}; scaph keeps running without an energy source"))
            .ok(),
        SensorChoice::Auto => match usable(powercap())
            .or_else(|e| usable(hwmon()).map_err(|h| anyhow::anyhow!("{e}; and {h}")))
        {
            Ok(sensor) => Some(sensor),
            Err(e) => {
                warn!(
                    "no readable RAPL counters nor hwmon power sensor ({e}): energy is ESTIMATED from CPU utilisation \
                     ({} W idle, {} W busy per socket), not measured",
                    cli.estimate_idle_watts, cli.estimate_max_watts
                );
                Some(estimate()?)
            }
        },
    };
    if let Some(sensor) = &sensor {
        info!("energy sensor: {}", sensor.name());
    }
    Ok(sensor)
}

/// A sensor that opened and gave its first (baseline) reading.
fn usable(
    opened: Result<Box<dyn EnergySensor>, crate::sensors::SensorError>,
) -> Result<Box<dyn EnergySensor>, crate::sensors::SensorError> {
    opened.and_then(|mut sensor| sensor.poll(&Utilisation::default()).map(|_| sensor))
}
