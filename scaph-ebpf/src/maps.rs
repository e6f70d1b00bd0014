//! The maps shared with userspace, and the read-only globals the loader sets.
//!
//! Each static's name is the map's name in the object: it must equal the
//! constant of the same name in `scaph_common::maps`, by which the loader
//! finds it. The capacities are upper bounds: the loader sets the real sizes
//! (`SLOT_COUNT` slots, and in `PROC_CPU` a region of them per possible CPU).
use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    macros::map,
    maps::{Array, HashMap, PerCpuArray, Stack},
};
use scaph_common::{
    CpuState, ProcCpuValue, ProcExit, ProcKey, ProcSlot, TaskOffsets, ThreadRuntime,
    EXECED_CAPACITY, EXITED_CAPACITY, PROC_CPU_CAPACITY, THREADS_CAPACITY,
};

#[map]
pub static PROC_CPU: Array<ProcCpuValue> =
    Array::with_max_entries(PROC_CPU_CAPACITY, BPF_F_MMAPABLE);

#[map]
pub static SLOTS: Array<ProcSlot> = Array::with_max_entries(PROC_CPU_CAPACITY, BPF_F_MMAPABLE);

#[map]
pub static PROC_SLOTS: HashMap<ProcKey, u32> = HashMap::with_max_entries(PROC_CPU_CAPACITY, 0);

#[map]
pub static FREE_SLOTS: Stack<u32> = Stack::with_max_entries(PROC_CPU_CAPACITY, 0);

#[map]
pub static EXITED: HashMap<ProcKey, ProcExit> = HashMap::with_max_entries(EXITED_CAPACITY, 0);

#[map]
pub static EXECED: HashMap<ProcKey, ProcExit> = HashMap::with_max_entries(EXECED_CAPACITY, 0);

#[map]
pub static CPU_STATE: PerCpuArray<CpuState> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static THREADS: Array<ThreadRuntime> = Array::with_max_entries(THREADS_CAPACITY, 0);

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

/// The task offsets, or `Err` when the loader did not set them (timestamp
/// mode, or a BTF program attached without them): the BTF programs then
/// record nothing.
#[inline(always)]
pub fn offsets() -> Result<TaskOffsets, ()> {
    // SAFETY: a plain read of a global the loader froze before load; the
    // volatile read keeps the compiler from folding the 0 it was built with.
    let off = unsafe { core::ptr::read_volatile(&TASK_OFFSETS) };
    if off.sum_exec_runtime == 0 {
        return Err(());
    }
    Ok(off)
}

/// The number of slots (0 when the loader did not set it: nothing is recorded).
#[inline(always)]
pub fn slot_count() -> u32 {
    // SAFETY: as in `offsets`.
    unsafe { core::ptr::read_volatile(&SLOT_COUNT) }
}

/// This CPU's switch state.
///
/// # Safety
///
/// One live borrow: the caller must not hold another reference returned by
/// this function (in this program run) while it uses the one it gets. The
/// element itself is valid for the program's run and only programs on this
/// CPU touch it, which do not preempt each other; so each program takes
/// the state once, or takes it again only after its last use of the first.
#[inline(always)]
pub unsafe fn cpu_state() -> Result<&'static mut CpuState, ()> {
    let ptr = CPU_STATE.get_ptr_mut(0).ok_or(())?;
    // SAFETY: a per-CPU array element, valid for the program's run and
    // used only by programs on this CPU, which do not preempt each other;
    // the caller keeps this the only live borrow of it.
    Ok(unsafe { &mut *ptr })
}

/// The `THREADS` entry of thread `tid` (shared by ids equal modulo its size).
#[inline(always)]
pub fn thread_entry(tid: u32) -> Option<*mut ThreadRuntime> {
    THREADS.get_ptr_mut(tid & (THREADS_CAPACITY - 1))
}
