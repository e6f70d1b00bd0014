//! The BTF variant of the switch program (`tp_btf/sched_switch`): the slice
//! is the growth of `prev->se.sum_exec_runtime`, the kernel's own
//! accounting, exact to the nanosecond.
//!
//! It does not depend on seeing every switch (on some VMs the tracepoint
//! does not show all of them): `THREADS` remembers, per thread, the runtime
//! up to which its time is recorded, so each recorded slice is
//! `sum_exec_runtime` now minus that, whatever was missed in between. Only a
//! thread it has no record of (first seen after attach, or whose entry a
//! thread with a congruent id took) is measured from this CPU's record of
//! its switch-in; if that switch was not seen either, from 0 when it started
//! after attach, else from the fair scheduler's `prev_sum_exec_runtime`,
//! else its slice is counted in `dropped_slices` (never guessed).
use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::btf_tracepoint, programs::BtfTracePointContext};
use scaph_common::{CpuState, ProcKey, TaskOffsets, ThreadRuntime, MAX_SLICE_NS};

use crate::{
    maps::{cpu_state, offsets, thread_entry},
    slots::{record, SlotRef, NO_SLOT},
    task::field,
};

// Scheduling policies of the fair class (include/uapi/linux/sched.h).
const SCHED_NORMAL: u32 = 0;
const SCHED_BATCH: u32 = 3;
const SCHED_IDLE: u32 = 5;

#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch_btf(ctx: BtfTracePointContext) -> i32 {
    match try_sched_switch_btf(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

fn try_sched_switch_btf(ctx: &BtfTracePointContext) -> Result<(), ()> {
    // TP_PROTO(bool preempt, struct task_struct *prev, struct task_struct *next, ...)
    let prev: *const u8 = ctx.arg(1);
    let next: *const u8 = ctx.arg(2);
    let off = offsets()?;
    // SAFETY: the only borrow of the state in this run.
    let state = unsafe { cpu_state() }?;

    // SAFETY: `prev` and `next` are the tracepoint's BTF-typed task
    // arguments and `off.pid` the offset of their (i32) `pid`.
    let (prev_pid, next_pid): (u32, u32) = unsafe { (field(prev, off.pid), field(next, off.pid)) };
    let matched = state.next_pid == prev_pid && state.last_switch_ns != 0;

    // The clock is only needed around the idle task (whose runtime the kernel
    // does not count) and when the slot cannot be trusted.
    if prev_pid == 0 || next_pid == 0 || !matched {
        // SAFETY: a helper with no preconditions.
        let now = unsafe { bpf_ktime_get_ns() };
        let first = state.last_switch_ns == 0;
        if first {
            state.attached_ns = now;
        } else if prev_pid == 0 {
            state.idle_ns += now.saturating_sub(state.last_switch_ns);
        }
        // The first switch after attach (unless the idle task leaves), or one
        // after switches the tracepoint did not show (seen on this VM around
        // some threads of PID 1).
        if !matched && (!first || prev_pid != 0) {
            state.mismatches += 1;
        }
        state.last_switch_ns = now;
    }
    if prev_pid != 0 {
        let switched_in = matched.then_some(state.next_runtime_ns);
        // SAFETY: `prev` is the BTF-typed outgoing task, current until the switch.
        unsafe { account(state, prev, &off, prev_pid, switched_in) };
    }

    state.switches += 1;
    state.next_pid = next_pid;
    // SAFETY: `next` is BTF-typed; `sum_exec_runtime` is a u64.
    state.next_runtime_ns = unsafe { field(next, off.sum_exec_runtime) };
    Ok(())
}

/// Records the time the current thread `task` (id `tid`) ran since its time
/// was last recorded, and remembers its runtime. `switched_in` is its
/// runtime at the switch-in this CPU's state saw, if it saw it.
///
/// # Safety
///
/// `task` must be a BTF-typed pointer to the current task and `off` the
/// loader's offsets (see [`field`]).
#[inline(always)]
pub unsafe fn account(
    state: &mut CpuState,
    task: *const u8,
    off: &TaskOffsets,
    tid: u32,
    switched_in: Option<u64>,
) {
    // SAFETY: the caller's contract; both fields are u64.
    let (runtime, start_time): (u64, u64) = unsafe {
        (
            field(task, off.sum_exec_runtime),
            field(task, off.start_time),
        )
    };
    let Some(entry) = thread_entry(tid) else {
        return;
    };
    // SAFETY: an element of the `THREADS` array, valid for the program's
    // run. Threads whose ids share the entry may race for it on two CPUs; a
    // torn entry is caught by the slot's owner check and the MAX_SLICE_NS
    // bound.
    let cached = unsafe { *entry };
    let known = cached.start_time == start_time;
    // SAFETY: the caller's contract; `tgid` is an i32.
    let tgid: u32 = unsafe { field(task, off.tgid) };
    let (from, mut slot) = if known {
        let slot = SlotRef {
            slot: cached.slot,
            generation: cached.generation,
        };
        (Some(cached.recorded_ns), slot)
    } else {
        let from = switched_in.or_else(|| {
            // SAFETY: the caller's contract.
            unsafe { unrecorded_start(state, task, off, start_time) }
        });
        (from, NO_SLOT)
    };
    match from.map(|from| runtime.wrapping_sub(from)) {
        Some(ran) if ran < MAX_SLICE_NS => {
            // SAFETY: the caller's contract.
            slot = unsafe { record_btf(state, task, off, tgid, ran, slot) }
        }
        _ => state.dropped_slices += 1, // never guessed
    }
    // A thread whose id shares the entry takes it over.
    // SAFETY: as for the read of `*entry` above.
    unsafe {
        *entry = ThreadRuntime {
            recorded_ns: runtime,
            start_time,
            slot: slot.slot,
            generation: slot.generation,
        }
    };
}

/// Where the slice of a thread with no record and no seen switch-in began:
/// at 0 if it started after attach (all its time is ours), else, for the
/// fair class, at its last pick (`prev_sum_exec_runtime`; other classes do
/// not maintain it).
///
/// # Safety
///
/// As for [`account`].
#[inline(always)]
unsafe fn unrecorded_start(
    state: &CpuState,
    task: *const u8,
    off: &TaskOffsets,
    start_time: u64,
) -> Option<u64> {
    if state.attached_ns != 0 && start_time > state.attached_ns {
        return Some(0);
    }
    // SAFETY: the caller's contract; `policy` is a u32.
    let policy: u32 = unsafe { field(task, off.policy) };
    // SAFETY: the caller's contract; `prev_sum_exec_runtime` is a u64.
    is_fair(policy).then(|| unsafe { field(task, off.prev_sum_exec_runtime) })
}

/// The fair class maintains `prev_sum_exec_runtime`; other classes do not.
#[inline(always)]
fn is_fair(policy: u32) -> bool {
    matches!(policy, SCHED_NORMAL | SCHED_BATCH | SCHED_IDLE)
}

/// Records `ns` for the process `tgid` of `task` (the current one), whose
/// slot the thread cached as `cached`; returns the slot used.
///
/// # Safety
///
/// As for [`account`].
#[inline(always)]
unsafe fn record_btf(
    state: &mut CpuState,
    task: *const u8,
    off: &TaskOffsets,
    tgid: u32,
    ns: u64,
    cached: SlotRef,
) -> SlotRef {
    if ns == 0 {
        return cached;
    }
    record(state, cached, tgid, ns, || {
        // SAFETY: the caller's contract: `group_leader` is a BTF-typed
        // task pointer, and `start_boottime` a u64 of it.
        let start_ns: u64 = unsafe {
            let leader: *const u8 = field(task, off.group_leader);
            field(leader, off.start_boottime)
        };
        ProcKey {
            tgid,
            reserved: 0,
            start_ns,
        }
    })
}
