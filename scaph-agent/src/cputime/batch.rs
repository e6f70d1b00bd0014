//! Reads a whole BPF hash map in a few syscalls (`BPF_MAP_LOOKUP_BATCH`,
//! Linux 5.6+) instead of two per entry; at 10,000 processes that is the
//! difference between ~1 ms and ~40 ms per cycle.
use std::{
    io,
    mem::size_of,
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::{
    maps::{HashMap, IterableMap as _, MapData},
    Pod,
};

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// The kernel's internal ENOTSUPP, which reaches userspace as is.
const ENOTSUPP: i32 = 524;
/// Entries fetched per syscall.
const CHUNK: usize = 4096;

/// `union bpf_attr`, batch variant (include/uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Every (key, value) of `map`. Falls back to per-entry reads where the
/// kernel has no batch operations.
pub fn read_all<K: Pod, V: Pod>(map: &HashMap<MapData, K, V>) -> io::Result<Vec<(K, V)>> {
    match read_batched(map) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | ENOTSUPP | libc::EOPNOTSUPP)) => map
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| io::Error::other(e.to_string())),
        other => other,
    }
}

fn read_batched<K: Pod, V: Pod>(map: &HashMap<MapData, K, V>) -> io::Result<Vec<(K, V)>> {
    let fd = map.map().fd().as_fd().as_raw_fd();
    let mut out = Vec::new();
    // SAFETY: Pod types are plain integers and arrays: all-zero is valid.
    let mut keys: Vec<K> = vec![unsafe { std::mem::zeroed() }; CHUNK];
    let mut values: Vec<V> = vec![unsafe { std::mem::zeroed() }; CHUNK];
    // Opaque position tokens (a bucket index for hash maps).
    let (mut token_in, mut token_out) = (0_u64, 0_u64);
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { std::ptr::addr_of!(token_in) as u64 },
            out_batch: std::ptr::addr_of_mut!(token_out) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK as u32,
            map_fd: fd as u32,
            ..BatchAttr::default()
        };
        // SAFETY: the buffers hold CHUNK keys and values of the map's sizes
        // and outlive the call; the attr is the documented layout.
        let ret = unsafe {
            libc::syscall(libc::SYS_bpf, BPF_MAP_LOOKUP_BATCH, std::ptr::addr_of_mut!(attr), size_of::<BatchAttr>())
        };
        let err = (ret < 0).then(io::Error::last_os_error);
        let n = attr.count as usize;
        out.extend(keys[..n.min(CHUNK)].iter().copied().zip(values[..n.min(CHUNK)].iter().copied()));
        match err {
            None => {}
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out), // no more entries
            Some(e) => return Err(e),
        }
        token_in = token_out;
        first = false;
    }
}
