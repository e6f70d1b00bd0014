//! Exit and exec, in both variants: an exited process is recorded in
//! `EXITED` (its slot then holds its final value and can be freed), and an
//! exec in `EXECED` (it renames the process and replaces its exe and
//! cmdline, which userspace may have read before, between fork and exec).
use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use scaph_common::{ProcExit, ProcKey, TaskOffsets, COMM_LEN};

use crate::{
    btf::account,
    maps::{cpu_state, offsets, thread_entry, EXECED, EXITED},
    task::{comm, field, read},
};

#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit_btf(ctx: BtfTracePointContext) -> i32 {
    match try_sched_process_exit_btf(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

fn try_sched_process_exit_btf(ctx: &BtfTracePointContext) -> Result<(), ()> {
    // TP_PROTO(struct task_struct *p)
    let task: *const u8 = ctx.arg(0);
    let off = offsets()?;
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
    // SAFETY: `task` is the tracepoint's BTF-typed argument, the exiting
    // (current) task; `start_time` is a u64 of it.
    let start_time: u64 = unsafe { field(task, off.start_time) };
    // SAFETY: an element of the `THREADS` array, valid for the program's run.
    let recorded =
        thread_entry(tid).is_some_and(|entry| unsafe { (*entry).start_time } == start_time);
    if recorded {
        // SAFETY: as above: `task` is BTF-typed and current; the state's
        // borrow ends with `account`, before `mark_exited` takes it again.
        unsafe { account(cpu_state()?, task, off, tid, None) };
    }
    Ok(())
}

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit_tp(_ctx: TracePointContext) -> u32 {
    match try_sched_process_exit_tp() {
        Ok(()) | Err(()) => 0,
    }
}

fn try_sched_process_exit_tp() -> Result<(), ()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, pid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    if pid != tgid {
        return Ok(()); // a thread, not the process
    }
    let comm = bpf_get_current_comm().unwrap_or([0; COMM_LEN]);
    mark_exited(
        ProcKey {
            tgid,
            reserved: 0,
            start_ns: 0,
        },
        comm,
    )
}

/// Records the exit of process `key`, or counts it as dropped when
/// `EXITED` is full.
fn mark_exited(key: ProcKey, comm: [u8; COMM_LEN]) -> Result<(), ()> {
    let exit = ProcExit {
        exit_ns: now(),
        comm,
    };
    if EXITED.insert(key, exit, 0).is_err() {
        // SAFETY: the only live borrow of the state (`catch_up`'s has ended).
        unsafe { cpu_state() }?.dropped_exits += 1;
    }
    Ok(())
}

#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec_btf(ctx: BtfTracePointContext) -> i32 {
    match try_sched_process_exec_btf(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

fn try_sched_process_exec_btf(ctx: &BtfTracePointContext) -> Result<(), ()> {
    // TP_PROTO(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
    let task: *const u8 = ctx.arg(0);
    let off = offsets()?;
    // After exec the task leads its thread group (de_thread kept the start time).
    let tgid: u32 = read(task, off.tgid)?;
    let start_ns: u64 = read(task, off.start_boottime)?;
    let comm = comm(task.wrapping_add(off.comm as usize));
    mark_execed(
        ProcKey {
            tgid,
            reserved: 0,
            start_ns,
        },
        comm,
    )
}

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn sched_process_exec_tp(_ctx: TracePointContext) -> u32 {
    match try_sched_process_exec_tp() {
        Ok(()) | Err(()) => 0,
    }
}

fn try_sched_process_exec_tp() -> Result<(), ()> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let comm = bpf_get_current_comm().unwrap_or([0; COMM_LEN]);
    mark_execed(
        ProcKey {
            tgid,
            reserved: 0,
            start_ns: 0,
        },
        comm,
    )
}

/// Records an exec of process `key` (one that does not fit is only a stale name).
fn mark_execed(key: ProcKey, comm: [u8; COMM_LEN]) -> Result<(), ()> {
    let event = ProcExit {
        exit_ns: now(),
        comm,
    };
    EXECED.insert(key, event, 0).map_err(|_| ())
}

#[inline(always)]
fn now() -> u64 {
    // SAFETY: a helper with no preconditions.
    unsafe { bpf_ktime_get_ns() }
}
