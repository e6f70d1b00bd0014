//! The classic-tracepoint variant of the switch program
//! (`tracepoint/sched/sched_switch`, no BTF needed): the slice is the
//! `bpf_ktime_get_ns` delta since the previous switch on this CPU, and a
//! process is its tgid (`ProcKey::start_ns` 0).
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use scaph_common::ProcKey;

use crate::{
    maps::{cpu_state, thread_entry},
    slots::{record, SlotRef},
};

// Field offsets in the classic tracepoint's record, from
// /sys/kernel/tracing/events/sched/sched_switch/format (unchanged since 4.x;
// the loader checks them against the running kernel before choosing this mode).
const TP_SWITCH_PREV_PID: usize = 24;
const TP_SWITCH_NEXT_PID: usize = 56;

#[tracepoint(category = "sched", name = "sched_switch")]
pub fn sched_switch_tp(ctx: TracePointContext) -> u32 {
    match try_sched_switch_tp(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

fn try_sched_switch_tp(ctx: &TracePointContext) -> Result<(), ()> {
    // SAFETY: a helper with no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: the only borrow of the state in this run.
    let state = unsafe { cpu_state() }?;
    // SAFETY: the offset of an i32 field inside the record, checked by the
    // loader against this kernel's format; `read_at` goes through
    // bpf_probe_read, which fails cleanly on a bad address.
    let prev_pid: u32 = unsafe { ctx.read_at(TP_SWITCH_PREV_PID) }.map_err(|_| ())?;
    // SAFETY: see above.
    let next_pid: u32 = unsafe { ctx.read_at(TP_SWITCH_NEXT_PID) }.map_err(|_| ())?;

    if state.last_switch_ns != 0 {
        if state.next_pid != prev_pid {
            state.mismatches += 1;
        }
        let slice = now.saturating_sub(state.last_switch_ns);
        if prev_pid == 0 {
            state.idle_ns += slice;
        } else {
            // `current` is still the outgoing task here. Its `THREADS`
            // entry only caches its process's slot in this variant (a
            // process is its tgid: a cached slot is valid if its owner is).
            let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
            let entry = thread_entry(prev_pid).ok_or(())?;
            // SAFETY: an element of the `THREADS` array, valid for the
            // program's run (a torn entry is caught by the slot's owner check).
            let cached = unsafe {
                SlotRef {
                    slot: (*entry).slot,
                    generation: (*entry).generation,
                }
            };
            let slot = record(state, cached, tgid, slice, || ProcKey {
                tgid,
                reserved: 0,
                start_ns: 0,
            });
            // SAFETY: as for the read of `*entry` above.
            unsafe {
                (*entry).slot = slot.slot;
                (*entry).generation = slot.generation;
            }
        }
    }

    state.switches += 1;
    state.last_switch_ns = now;
    state.next_pid = next_pid;
    Ok(())
}
