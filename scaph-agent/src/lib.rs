//! scaph: energy per process, container and VM, from exact kernel CPU time
//! and RAPL. The modules follow the pipeline:
//! `sensors` (energy) → `cputime` (CPU time, process metadata) →
//! `attribution` (pure; conservation) → `agent` (one cycle: joins them,
//! labels containers with `containers`) → `snapshot` (plain data; its
//! shared types, host statistics included, in `model` and `amounts`) →
//! `metrics` (formatting) → `exporters`. Imports point the same way: the
//! snapshot imports none of its producers, and the measurement side uses
//! nothing of `metrics` but its bounded logger of counter regressions.
pub mod agent;
pub mod amounts;
pub mod attribution;
pub mod carbon;
pub mod cli;
pub mod cli_ranges;
pub mod containers;
pub mod cputime;
pub mod exporters;
pub mod fsroot;
#[doc(hidden)]
pub mod fuzzing;
pub mod host;
pub mod keyed;
pub mod label;
pub mod metrics;
pub mod model;
pub mod open;
pub mod processes;
pub mod sensors;
pub mod snapshot;
pub mod util;
pub mod vm_label;
