//! Loads the embedded kernel program and attaches it, choosing the most exact
//! variant the running kernel supports.
use std::path::{Path, PathBuf};

use aya::{
    programs::{BtfTracePoint, TracePoint},
    Btf, Ebpf, EbpfLoader,
};
use log::{debug, info, warn};
use scaph_common::{globals, maps, programs};

use super::{btf, CpuTimeMethod};
// The running kernel's tracefs (not under `--sys-root`): the kernel
// program attaches to the real scheduler.
use crate::fsroot::{cpulist, kernel::TRACEFS_ROOTS};

/// The object built from `scaph-ebpf` by build.rs (empty when bpf-linker was missing).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/scaph"));

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("this scaph was built without its kernel program (bpf-linker was missing at build time; `cargo xtask run` installs it)")]
    NotBuilt,
    #[error("BPF load failure simulated by --simulate-bpf-failure")]
    Simulated,
    #[error("loading the kernel program: {0}")]
    Ebpf(#[from] aya::EbpfError),
    #[error("{source}{hint}")]
    Refused {
        hint: &'static str,
        #[source]
        source: Box<LoadError>,
    },
    #[error("program {0} is missing from the object")]
    MissingProgram(&'static str),
    #[error("loading or attaching {program}: {source}")]
    Program {
        program: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("no tracefs with the sched_switch event (looked in {roots:?}); mount it: mount -t tracefs tracefs /sys/kernel/tracing")]
    NoTracefs { roots: &'static [&'static str] },
    #[error("{path}: field {field} is not at offset {expected}; the classic-tracepoint program does not match this kernel")]
    Format {
        path: PathBuf,
        field: &'static str,
        expected: usize,
    },
    #[error("memory-mapping BPF map {map}: {source}")]
    Mmap {
        map: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("filling BPF map {map}: {source}")]
    Fill {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

/// How to load the program.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    /// Fail as if the kernel refused the program (tests the procfs fallback).
    pub simulate_failure: bool,
    /// Use the timestamp variant even where BTF allows the exact one (tests it).
    pub force_timestamp: bool,
    /// Capacity of `EXITED` instead of [`scaph_common::EXITED_CAPACITY`]
    /// (tests what happens when exit records are lost).
    pub exited_capacity: Option<u32>,
    /// Process slots instead of [`proc_cpu_capacity`] (tests slot reuse).
    pub slots: Option<u32>,
}

/// A loaded and attached program. Dropping it detaches everything.
pub struct Loaded {
    pub ebpf: Ebpf,
    pub method: CpuTimeMethod,
    pub layout: Layout,
}

/// How the process maps are sized, decided once per load.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    /// Process slots.
    pub slots: u32,
    /// Regions of `PROC_CPU`: one per CPU id below this ([`cpu_ids`]).
    pub cpu_ids: usize,
}

impl Layout {
    fn for_host(options: &LoadOptions) -> Self {
        let cpu_ids = cpu_ids();
        Self {
            slots: options
                .slots
                .unwrap_or_else(|| proc_cpu_capacity(cpu_ids))
                .max(1),
            cpu_ids,
        }
    }
}

/// Takes map `name` out of `ebpf`.
pub(super) fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, LoadError> {
    ebpf.take_map(name).ok_or_else(|| missing_map(name))
}

/// The error for a map the object lacks (or has with another type).
pub(super) fn missing_map(name: &'static str) -> LoadError {
    LoadError::Ebpf(aya::EbpfError::MapError(aya::maps::MapError::InvalidName {
        name: name.into(),
    }))
}

/// Where build.rs left the benchmark's reference object (the
/// `scaph-bench-floor` binary of scaph-ebpf, holding only
/// [`scaph_common::bench::SWITCH_FLOOR`]): built beside the agent's object
/// but never embedded in it. Only `scaph-bench` reads it, at run time, on
/// the machine that built it; it is missing when the kernel program was not built.
#[doc(hidden)]
pub const BENCH_FLOOR_OBJECT: &str = concat!(env!("OUT_DIR"), "/scaph-bench-floor");

/// Loads the program: the exact BTF variant when the kernel's BTF gives the
/// needed offsets, else the classic tracepoint variant.
pub fn load(options: LoadOptions) -> Result<Loaded, LoadError> {
    if options.simulate_failure {
        return Err(LoadError::Simulated);
    }
    if OBJECT.is_empty() {
        return Err(LoadError::NotBuilt);
    }
    raise_memlock_limit();
    let loaded = load_variant(options);
    // Parsing the kernel's BTF (twice: for the offsets, and by aya) peaks at
    // tens of MB; hand that memory back to the system instead of keeping it
    // as free heap for the agent's whole life.
    // SAFETY: malloc_trim only releases free memory.
    unsafe { libc::malloc_trim(0) };
    loaded
}

fn load_variant(options: LoadOptions) -> Result<Loaded, LoadError> {
    let layout = Layout::for_host(&options);
    if options.force_timestamp {
        info!("timestamp variant of the kernel program requested");
        let ebpf = load_tracepoint(&options, layout)?;
        return Ok(Loaded {
            ebpf,
            method: CpuTimeMethod::BpfTimestamp,
            layout,
        });
    }
    let exact_failed = match btf::task_offsets(Path::new(btf::VMLINUX_BTF)) {
        Ok(offsets) => match load_btf(offsets, &options, layout) {
            Ok(ebpf) => {
                return Ok(Loaded {
                    ebpf,
                    method: CpuTimeMethod::BpfRuntime,
                    layout,
                })
            }
            Err(e) => {
                info!("exact (BTF) kernel program unavailable: {e}; trying the timestamp variant");
                true
            }
        },
        Err(e) => {
            info!("kernel BTF unusable ({e}); using the timestamp variant of the kernel program");
            false
        }
    };
    match load_tracepoint(&options, layout) {
        Ok(ebpf) => {
            if exact_failed {
                warn!(
                    "the exact kernel program did not load (see -v); using the timestamp variant"
                );
            }
            Ok(Loaded {
                ebpf,
                method: CpuTimeMethod::BpfTimestamp,
                layout,
            })
        }
        Err(e) => Err(LoadError::Refused {
            hint: permission_hint(&e),
            source: Box::new(e),
        }),
    }
}

/// What to do when the kernel refused: most often a missing capability.
fn permission_hint(e: &LoadError) -> &'static str {
    let text = format!("{e} {:?}", e);
    if text.contains("Operation not permitted")
        || text.contains("EPERM")
        || text.contains("PermissionDenied")
    {
        " (permission denied: loading needs root, or CAP_BPF and CAP_PERFMON)"
    } else {
        ""
    }
}

/// One more than the highest possible CPU id (CPU ids can have holes, so
/// this can exceed the number of possible CPUs): the kernel program indexes
/// `PROC_CPU` by CPU id.
#[must_use]
pub fn cpu_ids() -> usize {
    std::fs::read_to_string(POSSIBLE_CPUS)
        .ok()
        .and_then(|text| highest_cpu(&text))
        .map_or_else(
            || aya::util::nr_cpus().unwrap_or(1),
            |highest| highest as usize + 1,
        )
}

/// Always the running kernel's list, never under `--sys-root`: the maps are
/// sized for the CPUs the kernel program will really run on (a simulated
/// topology only changes how energy is split, not where code runs).
const POSSIBLE_CPUS: &str = crate::fsroot::kernel::POSSIBLE_CPUS;

/// The highest CPU id in a kernel CPU list such as `0-3,8-11`.
fn highest_cpu(list: &str) -> Option<u32> {
    cpulist::highest(list)
}

/// Loads the object with its maps sized by `layout` (`PROC_CPU` holds a
/// region of slots per CPU id) and every slot free; `offsets` for the BTF
/// programs.
fn load_object(
    options: &LoadOptions,
    layout: Layout,
    offsets: Option<&scaph_common::TaskOffsets>,
) -> Result<Ebpf, LoadError> {
    let Layout { slots, cpu_ids } = layout;
    debug!("{slots} process slots (CPU ids 0 to {})", cpu_ids - 1);
    let mut loader = EbpfLoader::new();
    loader.map_max_entries(maps::PROC_CPU, slots.saturating_mul(cpu_ids as u32));
    for map in [maps::SLOTS, maps::PROC_SLOTS, maps::FREE_SLOTS] {
        loader.map_max_entries(map, slots);
    }
    if let Some(exits) = options.exited_capacity {
        loader.map_max_entries(maps::EXITED, exits.max(1));
    }
    loader.override_global(globals::SLOT_COUNT, &slots, true);
    if let Some(offsets) = offsets {
        loader.override_global(globals::TASK_OFFSETS, offsets, true);
    }
    let mut ebpf = loader.load(OBJECT)?;
    // Popped lowest first, so that the slots in use stay at the start.
    let fill_err = |source| LoadError::Fill {
        map: maps::FREE_SLOTS,
        source,
    };
    let mut free: aya::maps::Stack<_, u32> = ebpf
        .map_mut(maps::FREE_SLOTS)
        .ok_or_else(|| missing_map(maps::FREE_SLOTS))?
        .try_into()
        .map_err(fill_err)?;
    for slot in (0..slots).rev() {
        free.push(slot, 0).map_err(fill_err)?;
    }
    Ok(ebpf)
}

/// Kernel memory for `PROC_CPU`'s per-CPU values is capacity × CPUs × 16
/// bytes: the capacity shrinks on hosts with many CPUs to stay within this.
const PROC_CPU_VALUES_BUDGET: usize = 32 << 20;

/// Processes `PROC_CPU` can hold on a host with `cpus` possible CPUs:
/// [`scaph_common::PROC_CPU_CAPACITY`] up to 64 CPUs, then less, never under 4096.
#[must_use]
pub fn proc_cpu_capacity(cpus: usize) -> u32 {
    let per_process = cpus.max(1) * std::mem::size_of::<scaph_common::ProcCpuValue>();
    let fits = u32::try_from(PROC_CPU_VALUES_BUDGET / per_process).unwrap_or(u32::MAX);
    fits.clamp(4096, scaph_common::PROC_CPU_CAPACITY)
}

fn load_btf(
    offsets: scaph_common::TaskOffsets,
    options: &LoadOptions,
    layout: Layout,
) -> Result<Ebpf, LoadError> {
    debug!("task_struct offsets from BTF: {offsets:?}");
    let btf = Btf::from_sys_fs().map_err(aya::EbpfError::from)?;
    let mut ebpf = load_object(options, layout, Some(&offsets))?;
    for (name, event) in [
        (programs::EXIT_BTF, "sched_process_exit"),
        (programs::EXEC_BTF, "sched_process_exec"),
        (programs::SWITCH_BTF, "sched_switch"),
    ] {
        let program: &mut BtfTracePoint = ebpf
            .program_mut(name)
            .ok_or(LoadError::MissingProgram(name))?
            .try_into()
            .map_err(|source| LoadError::Program {
                program: name,
                source,
            })?;
        program
            .load(event, &btf)
            .map_err(|source| LoadError::Program {
                program: name,
                source,
            })?;
        program.attach().map_err(|source| LoadError::Program {
            program: name,
            source,
        })?;
    }
    Ok(ebpf)
}

fn load_tracepoint(options: &LoadOptions, layout: Layout) -> Result<Ebpf, LoadError> {
    check_switch_format()?;
    let mut ebpf = load_object(options, layout, None)?;
    for (name, event) in [
        (programs::EXIT_TP, "sched_process_exit"),
        (programs::EXEC_TP, "sched_process_exec"),
        (programs::SWITCH_TP, "sched_switch"),
    ] {
        let program: &mut TracePoint = ebpf
            .program_mut(name)
            .ok_or(LoadError::MissingProgram(name))?
            .try_into()
            .map_err(|source| LoadError::Program {
                program: name,
                source,
            })?;
        program.load().map_err(|source| LoadError::Program {
            program: name,
            source,
        })?;
        program
            .attach("sched", event)
            .map_err(|source| LoadError::Program {
                program: name,
                source,
            })?;
    }
    Ok(ebpf)
}

/// The classic program reads `prev_pid` and `next_pid` at fixed offsets:
/// check them against this kernel's event format before trusting them.
fn check_switch_format() -> Result<(), LoadError> {
    let (path, format) = TRACEFS_ROOTS
        .iter()
        .map(|root| Path::new(root).join("events/sched/sched_switch/format"))
        .find_map(|path| std::fs::read_to_string(&path).ok().map(|text| (path, text)))
        .ok_or(LoadError::NoTracefs {
            roots: TRACEFS_ROOTS,
        })?;
    for (field, expected) in [("prev_pid", 24), ("next_pid", 56)] {
        if field_offset(&format, field) != Some(expected) {
            return Err(LoadError::Format {
                path,
                field,
                expected,
            });
        }
    }
    Ok(())
}

/// Offset of `field` in a tracepoint format file (`field:pid_t prev_pid;\toffset:24;...`).
fn field_offset(format: &str, field: &str) -> Option<usize> {
    format.lines().find_map(|line| {
        let decl = line.trim().strip_prefix("field:")?.split(';').next()?;
        if decl.split_whitespace().last()? != field {
            return None;
        }
        line.split("offset:")
            .nth(1)?
            .split(';')
            .next()?
            .trim()
            .parse()
            .ok()
    })
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; later ones ignore it.
fn raise_memlock_limit() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit only reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) } != 0 {
        debug!(
            "could not raise RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SWITCH_FORMAT: &str = "name: sched_switch\nID: 316\nformat:\n\
        \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
        \tfield:char prev_comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
        \tfield:pid_t prev_pid;\toffset:24;\tsize:4;\tsigned:1;\n\
        \tfield:char next_comm[16];\toffset:40;\tsize:16;\tsigned:0;\n\
        \tfield:pid_t next_pid;\toffset:56;\tsize:4;\tsigned:1;\n";

    /// The names of the symbols of the embedded object (maps, programs, globals).
    #[cfg(not(scaph_no_ebpf))]
    fn object_symbols() -> Vec<String> {
        use object::{Object as _, ObjectSymbol as _};
        assert!(!OBJECT.is_empty(), "the kernel program was built");
        let file = object::File::parse(OBJECT).expect("the embedded object is an ELF file");
        file.symbols()
            .filter_map(|symbol| symbol.name().ok().map(str::to_owned))
            .collect()
    }

    // The benchmark's empty program lives in an object of its own.
    #[cfg(not(scaph_no_ebpf))]
    #[test]
    fn shipped_object_holds_no_benchmark_program() {
        let symbols = object_symbols();
        assert!(!symbols
            .iter()
            .any(|s| s == scaph_common::bench::SWITCH_FLOOR));
        let name = scaph_common::bench::SWITCH_FLOOR.as_bytes();
        assert!(!OBJECT.windows(name.len()).any(|w| w == name));
    }

    // What the loader looks up by name is in the object under that name.
    #[cfg(not(scaph_no_ebpf))]
    #[test]
    fn shipped_object_holds_every_named_map_program_and_global() {
        let symbols = object_symbols();
        for name in maps::ALL
            .into_iter()
            .chain(programs::ALL)
            .chain(globals::ALL)
        {
            assert!(
                symbols.iter().any(|s| s == name),
                "{name} is not a symbol of the object"
            );
        }
    }

    #[test]
    fn reads_field_offsets_from_a_format_file() {
        assert_eq!(field_offset(SWITCH_FORMAT, "prev_pid"), Some(24));
        assert_eq!(field_offset(SWITCH_FORMAT, "next_pid"), Some(56));
        assert_eq!(
            field_offset(SWITCH_FORMAT, "prev_comm"),
            None,
            "arrays are declared as name[16]"
        );
        assert_eq!(field_offset(SWITCH_FORMAT, "missing"), None);
    }

    #[test]
    fn proc_cpu_capacity_keeps_per_cpu_values_within_budget() {
        // (possible CPUs, processes PROC_CPU holds)
        for (cpus, capacity) in [
            (1, 32_768),
            (2, 32_768),
            (64, 32_768),
            (128, 16_384),
            (256, 8_192),
            (4096, 4_096),
        ] {
            assert_eq!(proc_cpu_capacity(cpus), capacity, "{cpus} CPUs");
        }
    }

    #[test]
    fn highest_cpu_id_of_a_kernel_cpu_list() {
        // (contents of /sys/devices/system/cpu/possible, highest id)
        for (list, highest) in [
            ("0\n", Some(0)),
            ("0-1\n", Some(1)),
            ("0-3,8-11", Some(11)),
            ("0,2,5", Some(5)),
            ("", None),
            ("x-y", None),
        ] {
            assert_eq!(highest_cpu(list), highest, "{list:?}");
        }
    }

    #[test]
    fn simulated_failure_is_reported_as_such() {
        let options = LoadOptions {
            simulate_failure: true,
            ..LoadOptions::default()
        };
        assert!(matches!(load(options), Err(LoadError::Simulated)));
    }
}
