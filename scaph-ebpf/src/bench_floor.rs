//! The benchmark's reference program, built as its own object and never
//! shipped in scaph's: it does nothing, so what the kernel reports for it is
//! the cost of invoking a program on `tp_btf/sched_switch` on this machine,
//! the floor under the real program's cost per event (see `scaph-bench`).
#![no_std]
#![no_main]

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch_floor(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
