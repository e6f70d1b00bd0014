//! The kernel program's process slots, read in place.
//!
//! `SLOTS` (who owns each slot) and `PROC_CPU` (each slot's time, one region
//! per possible CPU) are memory-mapped arrays: a read is a scan of memory,
//! not a syscall per process. Freeing a slot removes its process from
//! `PROC_SLOTS`, clears its owner and bumps its generation (threads that
//! cached it look their process up again); one read later the slot is
//! zeroed, its generation bumped once more (in case a program was between
//! lookup and use), and it goes back to `FREE_SLOTS`. A slot is therefore
//! held by a process while it lives and for up to two reads after its exit.
use std::{
    io,
    marker::PhantomData,
    mem::size_of,
    os::fd::{AsFd as _, AsRawFd as _},
    ptr::NonNull,
};

use aya::{
    maps::{HashMap as BpfHashMap, Map, MapData, Stack},
    Ebpf, Pod,
};
use log::warn;
use scaph_common::{maps, ProcCpuValue, ProcKey, ProcSlot};

use super::loader::{missing_map, take_map, Layout, LoadError};

/// A whole memory-mapped BPF array of `len` elements.
struct Mapped<T> {
    ptr: NonNull<T>,
    len: usize,
    bytes: usize,
    _t: PhantomData<T>,
}

// SAFETY: the mapping is plain shared memory, only accessed with volatile
// element reads and writes; the BPF map behind it lives as long as the mapping.
unsafe impl<T> Send for Mapped<T> {}

impl<T: Pod> Mapped<T> {
    fn new(map: &MapData, len: usize) -> io::Result<Self> {
        // The kernel stores array elements 8-byte aligned.
        if !size_of::<T>().is_multiple_of(8) {
            return Err(io::Error::other(
                "array element size is not a multiple of 8",
            ));
        }
        if len == 0 {
            return Err(io::Error::other("empty array"));
        }
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let bytes = (len * size_of::<T>()).div_ceil(page) * page;
        // SAFETY: a fresh shared mapping of the map's fd, no larger than the
        // map's (page-rounded) data; checked for failure below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(ptr.cast::<T>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self {
            ptr,
            len,
            bytes,
            _t: PhantomData,
        })
    }

    fn get(&self, i: usize) -> T {
        assert!(i < self.len, "element {i} of {}", self.len);
        // SAFETY: in bounds (checked), aligned (page-aligned base, 8-byte
        // multiple elements); the kernel may write concurrently, hence volatile.
        unsafe { self.ptr.as_ptr().add(i).read_volatile() }
    }

    /// A pointer to element `i`, for writing single fields.
    fn at(&self, i: usize) -> *mut T {
        assert!(i < self.len, "element {i} of {}", self.len);
        // SAFETY: in bounds (checked).
        unsafe { self.ptr.as_ptr().add(i) }
    }
}

impl<T> Drop for Mapped<T> {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.bytes) };
    }
}

/// What one read found: the processes that own a slot, their slots, and
/// `cpu_ids` values per process, indexed by CPU id.
#[derive(Default)]
pub struct SlotRead {
    pub keys: Vec<ProcKey>,
    pub slots: Vec<u32>,
    pub values: Vec<ProcCpuValue>,
}

pub struct Slots {
    owners: Mapped<ProcSlot>,
    values: Mapped<ProcCpuValue>,
    index: BpfHashMap<MapData, ProcKey, u32>,
    free: Stack<MapData, u32>,
    count: usize,
    /// Regions of `PROC_CPU`: one per CPU id below this.
    cpu_ids: usize,
    /// Start times are known (BTF mode): a slot with an owner but no start
    /// time is still being taken by the kernel.
    exact: bool,
    /// Slots freed at the previous read: recycled at this one.
    quarantine: Vec<u32>,
    /// Processes found by the previous read: room reserved for as many
    /// (plus some), so that a read does not grow its buffers step by step.
    last_found: usize,
}

impl Slots {
    /// Maps the arrays of `ebpf`, loaded with `layout`.
    pub fn new(ebpf: &mut Ebpf, layout: Layout, exact: bool) -> Result<Self, LoadError> {
        let (count, cpu_ids) = (layout.slots as usize, layout.cpu_ids);
        let map_err = |e| LoadError::Ebpf(aya::EbpfError::MapError(e));
        let (Map::Array(owners), Map::Array(values)) = (
            take_map(ebpf, maps::SLOTS)?,
            take_map(ebpf, maps::PROC_CPU)?,
        ) else {
            return Err(missing_map(maps::PROC_CPU));
        };
        let index = BpfHashMap::try_from(take_map(ebpf, maps::PROC_SLOTS)?).map_err(map_err)?;
        let free = Stack::try_from(take_map(ebpf, maps::FREE_SLOTS)?).map_err(map_err)?;
        let mmap_err = |map: &'static str| move |source| LoadError::Mmap { map, source };
        Ok(Self {
            owners: Mapped::new(&owners, count).map_err(mmap_err(maps::SLOTS))?,
            values: Mapped::new(&values, count * cpu_ids).map_err(mmap_err(maps::PROC_CPU))?,
            index,
            free,
            count,
            cpu_ids,
            exact,
            quarantine: Vec::new(),
            last_found: 0,
        })
    }

    /// Recycles the slots freed at the previous read, then reads every owned slot.
    pub fn read(&mut self) -> SlotRead {
        self.recycle();
        let room = (self.last_found + self.last_found / 8).min(self.count);
        let mut read = SlotRead {
            keys: Vec::with_capacity(room),
            slots: Vec::with_capacity(room),
            values: Vec::with_capacity(room * self.cpu_ids),
        };
        for slot in 0..self.count {
            let owner = self.owners.get(slot);
            if owner.tgid == 0 || (self.exact && owner.start_ns == 0) {
                continue; // free, or being taken (seen complete at the next read)
            }
            read.keys.push(ProcKey {
                tgid: owner.tgid,
                reserved: 0,
                start_ns: owner.start_ns,
            });
            read.slots.push(slot as u32);
            read.values
                .extend((0..self.cpu_ids).map(|cpu| self.values.get(cpu * self.count + slot)));
        }
        self.last_found = read.keys.len();
        read
    }

    /// Frees the slot of a process whose final values were read.
    pub fn free(&mut self, key: &ProcKey, slot: u32) {
        let _ = self.index.remove(key);
        let owner = self.owners.at(slot as usize);
        // SAFETY: an in-bounds element; nothing else writes the owner of a
        // slot that is not free. Cleared first: a thread that looked the
        // process up just before the removal still fails the owner check.
        unsafe {
            (&raw mut (*owner).tgid).write_volatile(0);
            (&raw mut (*owner).start_ns).write_volatile(0);
        }
        self.bump(slot as usize);
        self.quarantine.push(slot);
    }

    fn recycle(&mut self) {
        for slot in std::mem::take(&mut self.quarantine) {
            self.bump(slot as usize);
            for cpu in 0..self.cpu_ids {
                // SAFETY: an in-bounds element of a slot no process owns.
                unsafe {
                    self.values
                        .at(cpu * self.count + slot as usize)
                        .write_volatile(ProcCpuValue::default())
                };
            }
            if let Err(e) = self.free.push(slot, 0) {
                warn!("cannot give slot {slot} back to {}: {e}", maps::FREE_SLOTS);
            }
        }
    }

    fn bump(&self, slot: usize) {
        let owner = self.owners.at(slot);
        // SAFETY: an in-bounds element; the kernel only reads the generation.
        unsafe {
            let generation = &raw mut (*owner).generation;
            generation.write_volatile(generation.read_volatile().wrapping_add(1));
        }
    }
}
