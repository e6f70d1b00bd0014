//! scaph's kernel program.
//!
//! On every `sched_switch` the time the outgoing task spent on this CPU is
//! added, in place, to this CPU's value of its process's slot in
//! `PROC_CPU`, an array userspace reads in place (memory-mapped). A process
//! takes a free slot (from `FREE_SLOTS`) at its first switch and is found in
//! the hash `PROC_SLOTS`; each thread caches its process's slot in
//! `THREADS`, so the usual switch does no hash lookup. Two variants share
//! that logic:
//!
//! * `sched_switch_btf` (`tp_btf`, needs kernel BTF): the slice is the growth of
//!   `prev->se.sum_exec_runtime` since the task was switched in, i.e. the
//!   kernel's own accounting, exact to the nanosecond.
//! * `sched_switch_tp` (classic tracepoint, no BTF needed): the slice is the
//!   `bpf_ktime_get_ns` delta since the previous switch on this CPU (it also
//!   counts hypervisor steal time, so it reads slightly high on VMs).
//!
//! The BTF variant does not depend on seeing every switch (on some VMs the
//! tracepoint does not show all of them): `THREADS` remembers, per thread,
//! the runtime up to which its time is recorded, so each recorded slice is
//! `sum_exec_runtime` now minus that, whatever was missed in between. Only a
//! thread it has no record of (first seen after attach, or whose entry a
//! thread with a congruent id took) is measured from this CPU's record of its
//! switch-in; if that switch was not seen either, from 0 when it started
//! after attach, else from the fair scheduler's `prev_sum_exec_runtime`, else
//! its slice is counted in `dropped_slices`.
//!
//! Time of the idle task (pid 0) goes to the CPU's `idle_ns`. Exits of whole
//! processes are recorded in `EXITED`, so userspace knows when a slot has
//! its final value and can be freed.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_NOEXIST},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_probe_read_kernel,
    },
    macros::{btf_tracepoint, map, tracepoint},
    maps::{Array, HashMap, PerCpuArray, Stack},
    programs::{BtfTracePointContext, TracePointContext},
};
use scaph_common::{
    CpuState, ProcCpuValue, ProcExit, ProcKey, ProcSlot, TaskOffsets, ThreadRuntime, COMM_LEN,
    EXECED_CAPACITY, EXITED_CAPACITY, MAX_SLICE_NS, PROC_CPU_CAPACITY, THREADS_CAPACITY,
};

// The loader sets the real sizes: `SLOT_COUNT` slots, and `PROC_CPU` a
// region of them per possible CPU.
#[map]
static PROC_CPU: Array<ProcCpuValue> = Array::with_max_entries(PROC_CPU_CAPACITY, BPF_F_MMAPABLE);

#[map]
static SLOTS: Array<ProcSlot> = Array::with_max_entries(PROC_CPU_CAPACITY, BPF_F_MMAPABLE);

#[map]
static PROC_SLOTS: HashMap<ProcKey, u32> = HashMap::with_max_entries(PROC_CPU_CAPACITY, 0);

#[map]
static FREE_SLOTS: Stack<u32> = Stack::with_max_entries(PROC_CPU_CAPACITY, 0);

#[map]
static EXITED: HashMap<ProcKey, ProcExit> = HashMap::with_max_entries(EXITED_CAPACITY, 0);

#[map]
static EXECED: HashMap<ProcKey, ProcExit> = HashMap::with_max_entries(EXECED_CAPACITY, 0);

#[map]
static CPU_STATE: PerCpuArray<CpuState> = PerCpuArray::with_max_entries(1, 0);

#[map]
static THREADS: Array<ThreadRuntime> = Array::with_max_entries(THREADS_CAPACITY, 0);

/// Set by the loader from the kernel's BTF (see `scaph_common::globals`).
#[no_mangle]
static TASK_OFFSETS: TaskOffsets = TaskOffsets {
    sum_exec_runtime: 0,
    pid: 0,
    tgid: 0,
    group_leader: 0,
    start_boottime: 0,
    comm: 0,
    prev_sum_exec_runtime: 0,
    policy: 0,
    start_time: 0,
};

/// Set by the loader: the number of slots.
#[no_mangle]
static SLOT_COUNT: u32 = 0;

/// A process's slot, valid while the slot's generation is `generation`.
#[derive(Clone, Copy)]
struct SlotRef {
    slot: u32,
    generation: u32,
}

const NO_SLOT: SlotRef = SlotRef {
    slot: u32::MAX,
    generation: 0,
};

// Field offsets in the classic tracepoint's record, from
// /sys/kernel/tracing/events/sched/sched_switch/format (unchanged since 4.x;
// the loader checks them against the running kernel before choosing this mode).
const TP_SWITCH_PREV_PID: usize = 24;
const TP_SWITCH_NEXT_PID: usize = 56;

// Scheduling policies of the fair class (include/uapi/linux/sched.h).
const SCHED_NORMAL: u32 = 0;
const SCHED_BATCH: u32 = 3;
const SCHED_IDLE: u32 = 5;

/// The fair class maintains `prev_sum_exec_runtime`; other classes do not.
#[inline(always)]
fn is_fair(policy: u32) -> bool {
    matches!(policy, SCHED_NORMAL | SCHED_BATCH | SCHED_IDLE)
}

/// One switch in this many (per CPU) refreshes the outgoing process's cgroup id.
const CGROUP_REFRESH_EVERY: u64 = 16;

// A slice of MAX_SLICE_NS or more (one minute) can only come from a torn slot.

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
    let off = offsets();
    if off.sum_exec_runtime == 0 {
        return Err(());
    }
    let state = cpu_state()?;

    // SAFETY (all `field` reads): `prev`, `next` and the group leader are
    // BTF-typed task pointers and the offsets are constants of a frozen
    // read-only map, so the verifier checks each load against task_struct's
    // layout and turns it into a fault-safe direct load.
    let prev_pid: u32 = unsafe { field(prev, off.pid) };
    let next_pid: u32 = unsafe { field(next, off.pid) };
    let matched = state.next_pid == prev_pid && state.last_switch_ns != 0;

    // The clock is only needed around the idle task (whose runtime the kernel
    // does not count) and when the slot cannot be trusted.
    if prev_pid == 0 || next_pid == 0 || !matched {
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
        let switched_in = if matched {
            Some(state.next_runtime_ns)
        } else {
            None
        };
        account(state, prev, &off, prev_pid, switched_in);
    }

    state.switches += 1;
    state.next_pid = next_pid;
    state.next_runtime_ns = unsafe { field(next, off.sum_exec_runtime) };
    Ok(())
}

/// Records the time the current thread `task` (id `tid`) ran since its
/// time was last recorded, and remembers its runtime. `switched_in` is its
/// runtime at the switch-in this CPU's slot saw, if it saw it.
#[inline(always)]
fn account(
    state: &mut CpuState,
    task: *const u8,
    off: &TaskOffsets,
    tid: u32,
    switched_in: Option<u64>,
) {
    // SAFETY: see try_sched_switch_btf.
    let runtime: u64 = unsafe { field(task, off.sum_exec_runtime) };
    let start_time: u64 = unsafe { field(task, off.start_time) };
    let Some(entry) = thread_entry(tid) else {
        return;
    };
    // SAFETY: an array element, valid for the program's run.
    let known = unsafe { (*entry).start_time } == start_time;
    // SAFETY: see try_sched_switch_btf.
    let tgid: u32 = unsafe { field(task, off.tgid) };
    let (from, mut slot) = if known {
        let cached = unsafe {
            SlotRef {
                slot: (*entry).slot,
                generation: (*entry).generation,
            }
        };
        (Some(unsafe { (*entry).recorded_ns }), cached)
    } else {
        (
            switched_in.or_else(|| unrecorded_start(state, task, off, start_time)),
            NO_SLOT,
        )
    };
    match from.map(|from| runtime.wrapping_sub(from)) {
        Some(ran) if ran < MAX_SLICE_NS => slot = record_btf(state, task, off, tgid, ran, slot),
        _ => state.dropped_slices += 1, // never guessed
    }
    // A thread whose id shares the entry takes it over.
    unsafe {
        *entry = ThreadRuntime {
            recorded_ns: runtime,
            start_time,
            slot: slot.slot,
            generation: slot.generation,
        }
    };
}

/// The `THREADS` entry of thread `tid` (shared by ids equal modulo its size).
#[inline(always)]
fn thread_entry(tid: u32) -> Option<*mut ThreadRuntime> {
    THREADS.get_ptr_mut(tid & (THREADS_CAPACITY - 1))
}

/// Where the slice of a thread with no record and no seen switch-in began:
/// at 0 if it started after attach (all its time is ours), else, for the
/// fair class, at its last pick (`prev_sum_exec_runtime`; other classes do
/// not maintain it).
#[inline(always)]
fn unrecorded_start(
    state: &CpuState,
    task: *const u8,
    off: &TaskOffsets,
    start_time: u64,
) -> Option<u64> {
    if state.attached_ns != 0 && start_time > state.attached_ns {
        return Some(0);
    }
    // SAFETY: see try_sched_switch_btf.
    let policy: u32 = unsafe { field(task, off.policy) };
    is_fair(policy).then(|| unsafe { field(task, off.prev_sum_exec_runtime) })
}

/// Records `ns` for the process `tgid` of the BTF task `task` (the current
/// one), whose slot the thread cached as `cached`; returns the slot used.
#[inline(always)]
fn record_btf(
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
        // SAFETY: see try_sched_switch_btf.
        let leader: *const u8 = unsafe { field(task, off.group_leader) };
        let start_ns: u64 = unsafe { field(leader, off.start_boottime) };
        ProcKey {
            tgid,
            reserved: 0,
            start_ns,
        }
    })
}

/// Does nothing: the benchmark's reference for what invoking a program on
/// this tracepoint costs (the agent never attaches it).
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch_floor(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[tracepoint(category = "sched", name = "sched_switch")]
pub fn sched_switch_tp(ctx: TracePointContext) -> u32 {
    match try_sched_switch_tp(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

fn try_sched_switch_tp(ctx: &TracePointContext) -> Result<(), ()> {
    let now = unsafe { bpf_ktime_get_ns() };
    let state = cpu_state()?;
    let prev_pid: u32 = unsafe { ctx.read_at(TP_SWITCH_PREV_PID) }.map_err(|_| ())?;
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
            // SAFETY: an array element, valid for the program's run.
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

#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit_btf(ctx: BtfTracePointContext) -> i32 {
    match try_sched_process_exit_btf(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

fn try_sched_process_exit_btf(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let task: *const u8 = ctx.arg(0);
    let off = offsets();
    if off.sum_exec_runtime == 0 {
        return Err(());
    }
    let pid: u32 = read(task, off.pid)?;
    let tgid: u32 = read(task, off.tgid)?;
    catch_up(task, &off, pid)?;
    if pid != tgid {
        return Ok(()); // a thread, not the process
    }
    let start_ns: u64 = read(task, off.start_boottime)?;
    let comm = comm(task.wrapping_add(off.comm as usize));
    mark_exited(
        ProcKey {
            tgid,
            reserved: 0,
            start_ns,
        },
        comm,
    )
}

/// An exiting thread (the current one) that has a record gets the time it
/// ran so far recorded now, in case the tracepoint does not show its last
/// switch: only the few microseconds to its final switch are then left for
/// that switch. One with no record is left to its final switch.
#[inline(always)]
fn catch_up(task: *const u8, off: &TaskOffsets, tid: u32) -> Result<(), ()> {
    // SAFETY: see try_sched_switch_btf (`task` is the BTF-typed tracepoint argument).
    let start_time: u64 = unsafe { field(task, off.start_time) };
    let recorded =
        thread_entry(tid).is_some_and(|entry| unsafe { (*entry).start_time } == start_time);
    if recorded {
        account(cpu_state()?, task, off, tid, None);
    }
    Ok(())
}

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit_tp(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, pid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    if pid == tgid {
        let comm = bpf_get_current_comm().unwrap_or([0; COMM_LEN]);
        let _ = mark_exited(
            ProcKey {
                tgid,
                reserved: 0,
                start_ns: 0,
            },
            comm,
        );
    }
    0
}

#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec_btf(ctx: BtfTracePointContext) -> i32 {
    match try_sched_process_exec_btf(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

/// An exec renames the process and replaces its exe and cmdline: tell
/// userspace, which read them before (possibly between fork and exec).
fn try_sched_process_exec_btf(ctx: &BtfTracePointContext) -> Result<(), ()> {
    // TP_PROTO(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
    let task: *const u8 = ctx.arg(0);
    let off = offsets();
    if off.sum_exec_runtime == 0 {
        return Err(());
    }
    // After exec the task leads its thread group (de_thread kept the start time).
    let tgid: u32 = read(task, off.tgid)?;
    let start_ns: u64 = read(task, off.start_boottime)?;
    let comm = comm(task.wrapping_add(off.comm as usize));
    let event = ProcExit {
        exit_ns: unsafe { bpf_ktime_get_ns() },
        comm,
    };
    EXECED
        .insert(
            &ProcKey {
                tgid,
                reserved: 0,
                start_ns,
            },
            &event,
            0,
        )
        .map_err(|_| ())
}

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn sched_process_exec_tp(_ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let comm = bpf_get_current_comm().unwrap_or([0; COMM_LEN]);
    let event = ProcExit {
        exit_ns: unsafe { bpf_ktime_get_ns() },
        comm,
    };
    let _ = EXECED.insert(
        &ProcKey {
            tgid,
            reserved: 0,
            start_ns: 0,
        },
        &event,
        0,
    );
    0
}

/// Adds `ns` to this CPU's value of the slot of process `tgid` (whose full
/// key is `key()`): the cached one while it is unchanged, else the one
/// `PROC_SLOTS` holds for the key, else a free one. Returns the slot used
/// (`NO_SLOT` when none).
#[inline(always)]
fn record(
    state: &mut CpuState,
    cached: SlotRef,
    tgid: u32,
    ns: u64,
    key: impl FnOnce() -> ProcKey,
) -> SlotRef {
    let slot = if is_current(cached, tgid) {
        Some(cached)
    } else {
        find_or_take(&key())
    };
    match slot {
        Some(slot) if add(state, slot.slot, ns) => slot,
        _ => {
            state.dropped_ns += ns;
            state.dropped_slices += 1;
            NO_SLOT
        }
    }
}

/// Whether the slot still belongs to the process `tgid` that cached it:
/// same generation (userspace has not freed it since), and, against a
/// torn `THREADS` entry or a lookup that raced with a free, same owner.
#[inline(always)]
fn is_current(cached: SlotRef, tgid: u32) -> bool {
    SLOTS
        .get(cached.slot)
        .is_some_and(|owner| owner.generation == cached.generation && owner.tgid == tgid)
}

/// The process's slot, taking a free one on its first switch.
#[inline(always)]
fn find_or_take(key: &ProcKey) -> Option<SlotRef> {
    // SAFETY: a hash value, valid for the program's run.
    if let Some(&slot) = unsafe { PROC_SLOTS.get(key) } {
        return slot_ref(slot);
    }
    let slot = FREE_SLOTS.pop().ok().flatten()?;
    if PROC_SLOTS
        .insert(key, &slot, u64::from(BPF_NOEXIST))
        .is_err()
    {
        // Another CPU took a slot for it since the lookup (or the map is full).
        let _ = FREE_SLOTS.push(slot, 0);
        return slot_ref(*unsafe { PROC_SLOTS.get(key) }?);
    }
    let owner = SLOTS.get_ptr_mut(slot)?;
    // `start_ns` first: userspace takes a slot whose `start_ns` is still 0
    // (in BTF mode) as not yet owned.
    unsafe {
        core::ptr::write_volatile(&raw mut (*owner).start_ns, key.start_ns);
        core::ptr::write_volatile(&raw mut (*owner).tgid, key.tgid);
    }
    Some(SlotRef {
        slot,
        generation: unsafe { (*owner).generation },
    })
}

#[inline(always)]
fn slot_ref(slot: u32) -> Option<SlotRef> {
    SLOTS.get(slot).map(|owner| SlotRef {
        slot,
        generation: owner.generation,
    })
}

/// Adds `ns` to this CPU's value of `slot`.
#[inline(always)]
fn add(state: &CpuState, slot: u32, ns: u64) -> bool {
    let slots = unsafe { core::ptr::read_volatile(&SLOT_COUNT) };
    if slot >= slots {
        return false;
    }
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(entry) = PROC_CPU.get_ptr_mut(cpu.wrapping_mul(slots).wrapping_add(slot)) else {
        return false;
    };
    // Only this CPU writes its value: no atomics needed.
    unsafe { (*entry).runtime_ns += ns };
    // Runtimes move a container's first process into its cgroup after it
    // started running, so the cgroup id is refreshed now and then (also
    // filling it on a CPU's first slice of the process): the helper costs
    // ~80 ns here, too much for every switch.
    if state.switches % CGROUP_REFRESH_EVERY == 0 || unsafe { (*entry).cgroup_id } == 0 {
        unsafe { (*entry).cgroup_id = bpf_get_current_cgroup_id() };
    }
    true
}

fn mark_exited(key: ProcKey, comm: [u8; COMM_LEN]) -> Result<(), ()> {
    let exit = ProcExit {
        exit_ns: unsafe { bpf_ktime_get_ns() },
        comm,
    };
    if EXITED.insert(&key, &exit, 0).is_err() {
        cpu_state()?.dropped_exits += 1;
    }
    Ok(())
}

/// The `comm` at `src`, else the current thread's.
#[inline(always)]
fn comm(src: *const u8) -> [u8; COMM_LEN] {
    if !src.is_null() {
        if let Ok(comm) = unsafe { bpf_probe_read_kernel(src.cast::<[u8; COMM_LEN]>()) } {
            return comm;
        }
    }
    bpf_get_current_comm().unwrap_or([0; COMM_LEN])
}

#[inline(always)]
fn offsets() -> TaskOffsets {
    unsafe { core::ptr::read_volatile(&TASK_OFFSETS) }
}

#[inline(always)]
fn cpu_state() -> Result<&'static mut CpuState, ()> {
    let ptr = CPU_STATE.get_ptr_mut(0).ok_or(())?;
    Ok(unsafe { &mut *ptr })
}

/// A direct load from a BTF-typed kernel pointer (see `try_sched_switch_btf`).
#[inline(always)]
unsafe fn field<T: Copy>(base: *const u8, offset: u32) -> T {
    unsafe { core::ptr::read_volatile(base.wrapping_add(offset as usize).cast::<T>()) }
}

#[inline(always)]
fn read<T>(base: *const u8, offset: u32) -> Result<T, ()> {
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize).cast::<T>()) }.map_err(|_| ())
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
