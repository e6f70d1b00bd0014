//! scaph's kernel program.
//!
//! On every `sched_switch` the time the outgoing task spent on this CPU is
//! added, in place, to this CPU's value of its process's slot in
//! `PROC_CPU`, an array userspace reads in place (memory-mapped). A process
//! takes a free slot (from `FREE_SLOTS`) at its first switch and is found in
//! the hash `PROC_SLOTS`; each thread caches its process's slot in
//! `THREADS`, so the usual switch does no hash lookup. Two variants share
//! that logic ([`slots`]):
//!
//! * [`btf`]. `sched_switch_btf` (`tp_btf`, needs kernel BTF) records the
//!   growth of `prev->se.sum_exec_runtime`, the kernel's own accounting,
//!   exact to the nanosecond.
//! * [`tracepoint`]. `sched_switch_tp` (classic tracepoint, no BTF needed)
//!   records the `bpf_ktime_get_ns` delta since the previous switch on this
//!   CPU (it also counts hypervisor steal time, so it reads slightly high on VMs).
//!
//! Time of the idle task (pid 0) goes to the CPU's `idle_ns`. Exits of whole
//! processes are recorded in `EXITED`, so userspace knows when a slot has its
//! final value and can be freed, and execs in `EXECED` ([`lifecycle`]).
//!
//! Layout: [`maps`] (the maps and the globals the loader sets), [`task`]
//! (reads of `task_struct`), [`slots`] (recording a slice into a process's
//! slot), then one module per variant and one for exit and exec. Every
//! program is a thin entry point over a `try_` function that returns a
//! `Result`, so the bodies use `?` and nothing can panic.
#![no_std]
#![no_main]

mod btf;
mod lifecycle;
mod maps;
mod slots;
mod task;
mod tracepoint;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
