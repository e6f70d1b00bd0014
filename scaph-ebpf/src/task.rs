//! Reads of `struct task_struct` at the offsets the loader found in the
//! kernel's BTF (`scaph_common::TaskOffsets`).
use aya_ebpf::helpers::{bpf_get_current_comm, bpf_probe_read_kernel};
use scaph_common::COMM_LEN;

/// A direct load of the field at `offset` in `task`.
///
/// # Safety
///
/// `task` must be a BTF-typed `task_struct` pointer the program received
/// from a `tp_btf` tracepoint (or a pointer field read from one), and
/// `offset` one of the frozen `TASK_OFFSETS`, with `T` the field's type:
/// the verifier then checks the load against the kernel's layout and turns
/// it into a fault-safe direct load.
#[inline(always)]
pub unsafe fn field<T: Copy>(task: *const u8, offset: u32) -> T {
    // SAFETY: the caller's contract above.
    unsafe { core::ptr::read_volatile(task.wrapping_add(offset as usize).cast::<T>()) }
}

/// Types for which every bit pattern is a valid value (plain integers), so
/// that bytes copied from any kernel address make one. Sealed: no other
/// type can claim it.
pub trait Plain: Copy + sealed::Sealed {}

mod sealed {
    pub trait Sealed {}
    impl Sealed for u32 {}
    impl Sealed for u64 {}
}

impl Plain for u32 {}
impl Plain for u64 {}

/// The field at `offset` in `task`, copied through `bpf_probe_read_kernel`,
/// which checks the address itself: the checked path for the programs off
/// the hot path (exit and exec). `task` is BTF-typed there too, so [`field`]
/// would also do (and `catch_up` uses it for what `account` shares with the
/// switch program); `read` needs no such contract, so it is safe.
#[inline(always)]
pub fn read<T: Plain>(task: *const u8, offset: u32) -> Result<T, ()> {
    // SAFETY: bpf_probe_read_kernel checks the address itself and fails
    // (returns an error) on a bad one; the bytes are copied out into a `T`,
    // for which any bit pattern is valid (`Plain`).
    unsafe { bpf_probe_read_kernel(task.wrapping_add(offset as usize).cast::<T>()) }.map_err(|_| ())
}

/// The `comm` at `src` (a task's `comm` field), else the current thread's.
#[inline(always)]
pub fn comm(src: *const u8) -> [u8; COMM_LEN] {
    if !src.is_null() {
        // SAFETY: as in `read`: the helper validates the address.
        if let Ok(comm) = unsafe { bpf_probe_read_kernel(src.cast::<[u8; COMM_LEN]>()) } {
            return comm;
        }
    }
    bpf_get_current_comm().unwrap_or([0; COMM_LEN])
}
