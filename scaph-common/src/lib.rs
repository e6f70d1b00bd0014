//! Plain data shared by `scaph-ebpf` (kernel side) and `scaph-agent` (user side).
//!
//! Every struct is `repr(C)` and free of implicit padding, so the bytes the
//! kernel writes are exactly the bytes userspace reads.
#![no_std]

/// Map names, as the loader looks them up in the object file (the names of
/// the statics in scaph-ebpf's `maps.rs`).
pub mod maps {
    /// `Array<ProcCpuValue>`, memory-mappable (`BPF_F_MMAPABLE`), indexed by
    /// `cpu × slots + slot`: cumulative on-CPU ns of the process owning each
    /// slot, one region per possible CPU (each CPU writes only its own).
    /// Userspace reads it in place, without a syscall.
    pub const PROC_CPU: &str = "PROC_CPU";
    /// `Array<ProcSlot>`, memory-mappable, indexed by slot: the process that
    /// owns each slot (userspace reads it in place) and the slot's generation.
    pub const SLOTS: &str = "SLOTS";
    /// `HashMap<ProcKey, u32>`: the slot of each process. The kernel looks a
    /// process up here only when one of its threads has no valid cached slot.
    pub const PROC_SLOTS: &str = "PROC_SLOTS";
    /// `Stack<u32>`: free slots. The loader pushes all of them; userspace
    /// pushes a slot back one read after it freed it.
    pub const FREE_SLOTS: &str = "FREE_SLOTS";
    /// `HashMap<ProcKey, ProcExit>`: processes whose leader has exited, with their final `comm`.
    pub const EXITED: &str = "EXITED";
    /// `HashMap<ProcKey, ProcExit>`: processes that called exec since the last
    /// read, with their new `comm`; userspace reads their metadata again.
    pub const EXECED: &str = "EXECED";
    /// `PerCpuArray<CpuState>` with one slot: per-CPU switch state, idle time and loss counters.
    pub const CPU_STATE: &str = "CPU_STATE";
    /// `Array<ThreadRuntime>` (kernel only), indexed by thread id modulo its
    /// size: per thread, its process's slot, and in BTF mode the runtime
    /// already recorded (so that a slice is never lost or counted twice even
    /// when the tracepoint does not show some switches).
    pub const THREADS: &str = "THREADS";
    /// Every map above (a new one belongs here too: a test of the agent
    /// checks that the object holds each).
    pub const ALL: [&str; 8] = [
        PROC_CPU, SLOTS, PROC_SLOTS, FREE_SLOTS, EXITED, EXECED, CPU_STATE, THREADS,
    ];
}

/// Program names in the object file.
pub mod programs {
    /// `tp_btf/sched_switch`: reads `prev->se.sum_exec_runtime` (exact).
    pub const SWITCH_BTF: &str = "sched_switch_btf";
    /// `tracepoint/sched/sched_switch`: sums `bpf_ktime_get_ns` deltas (no BTF needed).
    pub const SWITCH_TP: &str = "sched_switch_tp";
    /// `tp_btf/sched_process_exit`.
    pub const EXIT_BTF: &str = "sched_process_exit_btf";
    /// `tracepoint/sched/sched_process_exit`.
    pub const EXIT_TP: &str = "sched_process_exit_tp";
    /// `tp_btf/sched_process_exec`.
    pub const EXEC_BTF: &str = "sched_process_exec_btf";
    /// `tracepoint/sched/sched_process_exec`.
    pub const EXEC_TP: &str = "sched_process_exec_tp";
    /// Every program above (see [`super::maps::ALL`]).
    pub const ALL: [&str; 6] = [SWITCH_BTF, SWITCH_TP, EXIT_BTF, EXIT_TP, EXEC_BTF, EXEC_TP];
}

/// The benchmark's reference object (`scaph-bench-floor`, never shipped in scaph's).
pub mod bench {
    /// `tp_btf/sched_switch` that does nothing: the benchmark measures it for
    /// the cost of invoking a program on that tracepoint.
    pub const SWITCH_FLOOR: &str = "sched_switch_floor";
}

/// Names of the read-only globals the loader sets before loading.
pub mod globals {
    /// Byte offsets inside `struct task_struct`, found in the kernel's BTF
    /// (only used by the BTF programs). See [`crate::TaskOffsets`].
    pub const TASK_OFFSETS: &str = "TASK_OFFSETS";
    /// `u32`: the number of process slots (the loader sizes the maps to it;
    /// 0 means "not set", and nothing is recorded).
    pub const SLOT_COUNT: &str = "SLOT_COUNT";
    /// Every global above (see [`super::maps::ALL`]).
    pub const ALL: [&str; 2] = [TASK_OFFSETS, SLOT_COUNT];
}

/// Capacities of the maps. Userspace reads and prunes them every `--step`, so
/// these bound the number of processes (live, or exited in the last two
/// reads: a freed slot is reused one read later) and exits that can be seen
/// between two reads. This one is the number of process slots; `PROC_CPU`
/// holds a value per CPU for each, so the loader lowers it on hosts with
/// many CPUs (see `proc_cpu_capacity`) and sets [`globals::SLOT_COUNT`].
pub const PROC_CPU_CAPACITY: u32 = 32_768;
/// See [`PROC_CPU_CAPACITY`].
pub const EXITED_CAPACITY: u32 = 32_768;
/// See [`PROC_CPU_CAPACITY`]. An exec that does not fit is only a stale name.
pub const EXECED_CAPACITY: u32 = 4_096;
/// Entries of `THREADS` (a power of two; 3 MiB of kernel memory). Threads
/// whose ids are equal modulo this share an entry: the one that left the CPU
/// last holds it, and the other's next slice is measured from its switch-in
/// (exact whenever that switch was seen).
pub const THREADS_CAPACITY: u32 = 131_072;
const _: () = assert!(THREADS_CAPACITY.is_power_of_two());

/// Longest on-CPU slice the BTF switch program records, ns (one minute): a
/// longer one can only come from a torn `THREADS` entry, so it is counted in
/// `dropped_slices` and its time is lost. Userspace closes every slice at
/// each read (it forces a switch on every CPU), so the agent's `--step` must
/// stay well below this.
pub const MAX_SLICE_NS: u64 = 60_000_000_000;

/// Length of a task's `comm` in the kernel (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;

/// Offsets of the `task_struct` fields the BTF program reads.
///
/// All zero means "not set": the BTF programs then record nothing.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct TaskOffsets {
    /// `task_struct.se.sum_exec_runtime` (u64, ns).
    pub sum_exec_runtime: u32,
    /// `task_struct.pid` (i32, the thread id).
    pub pid: u32,
    /// `task_struct.tgid` (i32, the process id).
    pub tgid: u32,
    /// `task_struct.group_leader` (pointer).
    pub group_leader: u32,
    /// `task_struct.start_boottime` (u64, ns since boot incl. suspend).
    pub start_boottime: u32,
    /// `task_struct.comm` (`[u8; 16]`).
    pub comm: u32,
    /// `task_struct.se.prev_sum_exec_runtime` (u64): `sum_exec_runtime` when
    /// the fair scheduler last picked the task.
    pub prev_sum_exec_runtime: u32,
    /// `task_struct.policy` (u32, `SCHED_*`).
    pub policy: u32,
    /// `task_struct.start_time` (u64, monotonic ns at fork): tells a thread
    /// from an earlier one with the same id, and threads born after attach.
    pub start_time: u32,
}

/// Value of `THREADS`: the thread's `sum_exec_runtime` up to which its
/// time has been recorded, its `start_time`, which tells it from another
/// thread with the same entry (a reused or a congruent id), and the slot of
/// its process, valid while that slot's generation is `generation`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ThreadRuntime {
    pub recorded_ns: u64,
    pub start_time: u64,
    /// `u32::MAX` when the process has no slot.
    pub slot: u32,
    pub generation: u32,
}

/// Value of `SLOTS`: the process owning a slot (`tgid` 0 when free), and the
/// slot's generation, which userspace increments when it frees the slot so
/// that threads stop using their cached copy of it.
///
/// The kernel writes `start_ns` before `tgid` when it takes a slot; a reader
/// that sees a `tgid` with a zero `start_ns` in BTF mode (where start times
/// are never 0) reads the slot again at its next read.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ProcSlot {
    pub tgid: u32,
    pub generation: u32,
    pub start_ns: u64,
}

/// Value of `PROC_CPU` for one slot on one CPU (all zero on CPUs the
/// process has not run on: userspace zeroes a freed slot before it pushes it
/// back to `FREE_SLOTS`).
///
/// The process's name is not kept here (it would cost 16 bytes per CPU per
/// process): userspace reads it from `/proc` with the other metadata, and
/// `EXITED`/`EXECED` carry it for processes gone or renamed before that.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ProcCpuValue {
    /// Cumulative on-CPU time of the process on this CPU, ns.
    pub runtime_ns: u64,
    /// cgroup v2 id (its directory's inode) of the process, refreshed every
    /// few switches on this CPU (it can move into a container's cgroup after
    /// it started running).
    pub cgroup_id: u64,
}

/// A process: key of `PROC_SLOTS`, `EXITED` and `EXECED`.
///
/// `start_ns` is the process's start time (`start_boottime` of the thread
/// group leader), so that a reused PID is a new key. It is 0 in timestamp
/// mode, where the kernel's task layout is unknown.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(C)]
pub struct ProcKey {
    pub tgid: u32,
    /// Always 0; keeps the layout explicit.
    pub reserved: u32,
    pub start_ns: u64,
}

/// Value of `EXITED` and `EXECED`: when the event happened and the
/// process's `comm` right after it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct ProcExit {
    /// `bpf_ktime_get_ns` at the exit.
    pub exit_ns: u64,
    /// The process's `comm` at exit (after any exec, unlike the `comm` of
    /// entries created before the exec).
    pub comm: [u8; COMM_LEN],
}

/// Per-CPU state of the switch program (one slot of a per-CPU array).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct CpuState {
    /// `bpf_ktime_get_ns` at the last context switch on this CPU.
    pub last_switch_ns: u64,
    /// `sum_exec_runtime` of the task switched in at the last switch (BTF mode).
    pub next_runtime_ns: u64,
    /// Cumulative time this CPU ran its idle task, ns.
    pub idle_ns: u64,
    /// Context switches seen on this CPU.
    pub switches: u64,
    /// On-CPU time that could not be recorded because no slot was free, ns.
    pub dropped_ns: u64,
    /// Number of slices that could not be recorded: no slot was free, or
    /// (BTF mode) a thread the kernel program had no record of left the CPU
    /// without having been seen coming in, and its slice could not be told
    /// from the kernel's counters.
    pub dropped_slices: u64,
    /// Switches whose outgoing task was not the one recorded as switched in
    /// (first event after attach, or switches the tracepoint did not show).
    pub mismatches: u64,
    /// Exits that could not be recorded because `EXITED` was full.
    pub dropped_exits: u64,
    /// `bpf_ktime_get_ns` at the first switch seen on this CPU: threads
    /// started later ran only while the program was attached.
    pub attached_ns: u64,
    /// Thread id switched in at the last switch.
    pub next_pid: u32,
    /// Always 0; keeps the layout explicit.
    pub reserved: u32,
}

#[cfg(feature = "user")]
mod pod {
    // Each type below is repr(C), Copy, made only of integers (and byte
    // arrays), with no padding (`tests::layouts_have_no_padding`): every
    // bit pattern is a valid value, which is what `Pod` asks for.
    // SAFETY: see above.
    unsafe impl aya::Pod for super::TaskOffsets {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::ProcCpuValue {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::ProcKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::CpuState {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::ProcExit {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::ThreadRuntime {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::ProcSlot {}
}

#[cfg(test)]
mod tests {
    use core::mem::size_of;

    use super::*;

    // The sum of the field sizes equals the struct size: no implicit padding.
    #[test]
    fn layouts_have_no_padding() {
        assert_eq!(size_of::<TaskOffsets>(), 9 * 4);
        assert_eq!(size_of::<ProcCpuValue>(), 8 + 8);
        assert_eq!(size_of::<ProcKey>(), 4 + 4 + 8);
        assert_eq!(size_of::<CpuState>(), 9 * 8 + 4 + 4);
        assert_eq!(size_of::<ThreadRuntime>(), 8 + 8 + 4 + 4);
        assert_eq!(size_of::<ProcSlot>(), 4 + 4 + 8);
        assert_eq!(size_of::<ProcExit>(), 8 + COMM_LEN);
    }
}
