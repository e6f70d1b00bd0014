//! Recording a slice into its process's slot: the logic both switch
//! variants share.
//!
//! A thread caches its process's slot (a [`SlotRef`]) in `THREADS`; the
//! cache is valid while the slot's generation is unchanged. Otherwise the
//! process is looked up in `PROC_SLOTS`, and on its first slice it takes a
//! free slot from `FREE_SLOTS`.
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_cgroup_id, bpf_get_smp_processor_id},
};
use scaph_common::{CpuState, ProcKey};

use crate::maps::{slot_count, FREE_SLOTS, PROC_CPU, PROC_SLOTS, SLOTS};

/// A process's slot, valid while the slot's generation is `generation`.
#[derive(Clone, Copy)]
pub struct SlotRef {
    pub slot: u32,
    pub generation: u32,
}

/// No slot: never current (the slot index is out of range).
pub const NO_SLOT: SlotRef = SlotRef {
    slot: u32::MAX,
    generation: 0,
};

/// One switch in this many (per CPU) refreshes the outgoing process's cgroup id.
const CGROUP_REFRESH_EVERY: u64 = 16;

/// Adds `ns` to this CPU's value of the slot of process `tgid` (whose full
/// key is `key()`): the cached one while it is unchanged, else the one
/// `PROC_SLOTS` holds for the key, else a free one. Returns the slot used
/// (`NO_SLOT` when none, the slice then counted as dropped).
#[inline(always)]
pub fn record(
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
    // SAFETY: a hash value, valid for the program's run; copied out at once.
    if let Some(&slot) = unsafe { PROC_SLOTS.get(key) } {
        return slot_ref(slot);
    }
    let slot = FREE_SLOTS.pop().ok().flatten()?;
    if PROC_SLOTS
        .insert(key, slot, u64::from(BPF_NOEXIST))
        .is_err()
    {
        // Another CPU took a slot for it since the lookup (or the map is full).
        let _ = FREE_SLOTS.push(slot, 0);
        // SAFETY: as above.
        return slot_ref(*unsafe { PROC_SLOTS.get(key) }?);
    }
    let owner = SLOTS.get_ptr_mut(slot)?;
    // `start_ns` first: userspace takes a slot whose `start_ns` is still 0
    // (in BTF mode) as not yet owned.
    // SAFETY: an array element, valid for the program's run; the slot was
    // just popped from the free stack, so no other CPU writes its owner.
    unsafe {
        core::ptr::write_volatile(&raw mut (*owner).start_ns, key.start_ns);
        core::ptr::write_volatile(&raw mut (*owner).tgid, key.tgid);
    }
    Some(SlotRef {
        slot,
        // SAFETY: as above.
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

/// Adds `ns` to this CPU's value of `slot`; false when the slot is out of range.
#[inline(always)]
fn add(state: &CpuState, slot: u32, ns: u64) -> bool {
    let slots = slot_count();
    if slot >= slots {
        return false;
    }
    // SAFETY: a helper with no preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(entry) = PROC_CPU.get_ptr_mut(cpu.wrapping_mul(slots).wrapping_add(slot)) else {
        return false;
    };
    // SAFETY: an array element (a plain u64 pair), valid for the program's
    // run, in this CPU's region. Among programs only those on this CPU add
    // to it, and they do not preempt each other, so no atomics are needed.
    // Userspace writes it too: it zeroes a slot's values when it recycles
    // the slot, one read after freeing it (a quarantine). A program that
    // still adds to a freed slot (one that looked it up just before the
    // free) at most loses that slice to the zeroing; no access is invalid.
    unsafe { (*entry).runtime_ns += ns };
    // Runtimes move a container's first process into its cgroup after it
    // started running, so the cgroup id is refreshed now and then (also
    // filling it on a CPU's first slice of the process): the helper costs
    // ~80 ns here, too much for every switch.
    let refresh = state.switches.is_multiple_of(CGROUP_REFRESH_EVERY)
        // SAFETY: as for `runtime_ns` above.
        || unsafe { (*entry).cgroup_id } == 0;
    if refresh {
        // SAFETY: as for `runtime_ns` above.
        unsafe { (*entry).cgroup_id = bpf_get_current_cgroup_id() };
    }
    true
}
