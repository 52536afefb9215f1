//! Linear memories and fiber stacks that cost the kernel next to no memory
//! mappings, so that a silo can hold 100,000 activations under Linux's
//! default `vm.max_map_count` of 65,530.
//!
//! Wasmtime's own on-demand allocations give every idle activation about
//! seven mappings: its linear memory is split by protection and by the
//! copy-on-write image mapped over it (guest stack region, data image,
//! heap, the inaccessible rest of the reservation, the guard), and the async
//! fiber stack its store keeps cached is a guard page plus the stack. Here
//! instead:
//!
//! - A linear memory is one anonymous private read-write mapping of its
//!   whole reservation (the silo's memory limit), `MAP_NORESERVE`, with no
//!   guard region. The engine is configured without guard pages, so the
//!   compiled code checks every access against the memory's current length:
//!   the pages past it are never reachable from the guest. Pages never
//!   touched are never resident. Data segments are copied in, not mapped.
//! - A fiber stack is one such mapping of the stack plus a guard page at its
//!   low end, installed with `MADV_GUARD_INSTALL` (Linux 6.13 and later):
//!   a guard in the page tables, not a mapping of its own.
//!
//! Every one of these mappings has the same flags, so the kernel merges a
//! new one into the neighbouring mapping it is placed against: a thousand
//! activations end up as a handful of mappings. The allocator is only used
//! when the kernel supports guard installation (checked once, see
//! [`supported`]); elsewhere the silo keeps wasmtime's own allocations.

use std::ops::Range;
use std::ptr::NonNull;
use std::sync::OnceLock;

use wasmtime::{LinearMemory, MemoryCreator, MemoryType, StackCreator, StackMemory};

/// `madvise` advice installing guard entries in the page tables (Linux
/// 6.13, `include/uapi/asm-generic/mman-common.h`); not in every `libc`.
const MADV_GUARD_INSTALL: libc::c_int = 102;

/// The huge-page size of x86-64 and of aarch64 with 4 KiB pages.
const HUGE_PAGE: usize = 2 * 1024 * 1024;

/// One anonymous, private, read-write, unreserved mapping that is unmapped
/// when dropped.
struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: a `Mapping` is plain memory owned by whoever holds it; nothing in
// it is tied to the thread that mapped it.
unsafe impl Send for Mapping {}
// SAFETY: `Mapping` itself hands out only its address; whoever writes
// through it (wasmtime, for the guest it runs) synchronizes those writes.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps at least `len` bytes.
    fn new(len: usize) -> std::io::Result<Mapping> {
        // The kernel aligns an anonymous mapping whose length is a multiple
        // of the huge-page size to a huge-page boundary, leaving a gap that
        // keeps it from merging with its neighbour: one page more avoids it.
        let mut len = len.next_multiple_of(page_size());
        if len.is_multiple_of(HUGE_PAGE) {
            len += page_size();
        }
        // SAFETY: an anonymous mapping at an address of the kernel's choice
        // touches no existing memory; the result is checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let base = NonNull::new(base.cast::<u8>()).ok_or_else(std::io::Error::last_os_error)?;
        let mapping = Mapping { base, len };
        // A huge page would make the first touch of a memory or a stack
        // resident in 2 MiB (with transparent huge pages `always`); every
        // mapping here gets the same advice, so their flags still match.
        // SAFETY: the range is this new mapping.
        unsafe {
            libc::madvise(base.as_ptr().cast(), len, libc::MADV_NOHUGEPAGE);
        }
        Ok(mapping)
    }

    /// Makes the first `len` bytes fault on any access, without a mapping
    /// of their own.
    fn install_guard(&self, len: usize) -> std::io::Result<()> {
        assert!(len <= self.len);
        // SAFETY: the range lies within this mapping, which nothing uses yet.
        let result = unsafe { libc::madvise(self.base.as_ptr().cast(), len, MADV_GUARD_INSTALL) };
        if result != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping is this value's alone, and it is going away
        // (wasmtime drops a memory or a stack only once nothing runs on it).
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

fn page_size() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    // SAFETY: `sysconf` reads a constant of the system.
    *PAGE.get_or_init(|| {
        usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
    })
}

/// Whether this kernel can install guard pages without mappings; probed once.
pub(crate) fn supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        Mapping::new(2 * page_size())
            .and_then(|probe| probe.install_guard(page_size()))
            .is_ok()
    })
}

/// Creates the linear memories of activations (see the module's comment).
pub(crate) struct Memories;

// SAFETY: every memory is a fresh zero-filled mapping of at least its
// reservation, never moved, with no guard expected: the engine is
// configured with `memory_guard_size(0)`, so compiled code bounds-checks
// every access against `byte_size`.
unsafe impl MemoryCreator for Memories {
    fn new_memory(
        &self,
        _ty: MemoryType,
        minimum: usize,
        _maximum: Option<usize>,
        reserved_size_in_bytes: Option<usize>,
        guard_size_in_bytes: usize,
    ) -> Result<Box<dyn LinearMemory>, String> {
        if guard_size_in_bytes != 0 {
            return Err("the silo's memories have no guard region".into());
        }
        let capacity = reserved_size_in_bytes
            .unwrap_or(minimum)
            .max(minimum)
            .next_multiple_of(page_size())
            .max(page_size());
        let mapping = Mapping::new(capacity)
            .map_err(|error| format!("cannot map {capacity} bytes for a linear memory: {error}"))?;
        Ok(Box::new(Memory {
            mapping,
            capacity,
            size: minimum,
        }))
    }
}

struct Memory {
    mapping: Mapping,
    /// The reservation: at most the mapping's length.
    capacity: usize,
    /// The guest's accessible bytes: a prefix of the mapping.
    size: usize,
}

// SAFETY: the base never moves, the first `size` bytes are mapped read-write
// and zero until written, and growth stays within the mapping.
unsafe impl LinearMemory for Memory {
    fn byte_size(&self) -> usize {
        self.size
    }

    fn byte_capacity(&self) -> usize {
        self.capacity
    }

    fn grow_to(&mut self, new_size: usize) -> wasmtime::Result<()> {
        if new_size > self.capacity {
            wasmtime::bail!(
                "a linear memory cannot grow to {new_size} bytes, past its reservation of {}",
                self.capacity
            );
        }
        // The pages are mapped already and were never reachable: still zero.
        self.size = new_size;
        Ok(())
    }

    fn as_ptr(&self) -> *mut u8 {
        self.mapping.base.as_ptr()
    }
}

/// Creates the async fiber stacks stores run guest code on (see the
/// module's comment).
pub(crate) struct Stacks;

// SAFETY: every stack is a fresh zero-filled, page-aligned mapping with a
// guard page below it that faults on access.
unsafe impl StackCreator for Stacks {
    fn new_stack(&self, size: usize, _zeroed: bool) -> wasmtime::Result<Box<dyn StackMemory>> {
        let size = size.next_multiple_of(page_size());
        let mapping = Mapping::new(page_size() + size)?;
        // Whatever the mapping has beyond the stack goes to the guard.
        let guard = mapping.len - size;
        mapping.install_guard(guard)?;
        Ok(Box::new(Stack { mapping, guard }))
    }
}

struct Stack {
    mapping: Mapping,
    guard: usize,
}

// SAFETY: `top` is the page-aligned end of the mapping; `range` is the
// stack proper and `guard_range` the guard page under it.
unsafe impl StackMemory for Stack {
    fn top(&self) -> *mut u8 {
        // SAFETY: one past the end of the mapping, within the same object.
        unsafe { self.mapping.base.as_ptr().add(self.mapping.len) }
    }

    fn range(&self) -> Range<usize> {
        let base = self.mapping.base.as_ptr() as usize;
        base + self.guard..base + self.mapping.len
    }

    fn guard_range(&self) -> Range<*mut u8> {
        let base = self.mapping.base.as_ptr();
        // SAFETY: the guard is the first page of the mapping.
        base..unsafe { base.add(self.guard) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memory_grows_in_place_up_to_its_reservation_and_is_zero() {
        let memory_type = MemoryType::new(1, None);
        let mut memory = Memories
            .new_memory(memory_type.clone(), 65536, None, Some(4 * 65536), 0)
            .unwrap();
        let base = memory.as_ptr();
        memory.grow_to(3 * 65536).unwrap();
        assert_eq!(memory.as_ptr(), base);
        assert_eq!(memory.byte_size(), 3 * 65536);
        // SAFETY: the first three pages are accessible.
        let last = unsafe { *base.add(3 * 65536 - 1) };
        assert_eq!(last, 0);
        assert!(memory.grow_to(5 * 65536).is_err());
        assert!(
            Memories
                .new_memory(memory_type, 65536, None, None, 65536)
                .is_err()
        );
    }

    #[test]
    fn a_stack_lies_above_its_guard() {
        if !supported() {
            return;
        }
        let stack = Stacks.new_stack(64 * 1024, false).unwrap();
        let range = stack.range();
        assert_eq!(range.end, stack.top() as usize);
        assert_eq!(range.end - range.start, 64 * 1024);
        assert_eq!(stack.guard_range().end as usize, range.start);
    }
}
