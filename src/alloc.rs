//! The process allocator: the system allocator, except that large requests (4 MiB and more)
//! are served by `mmap(MAP_NORESERVE)`.
//!
//! Why: the protocol decoder pre-sizes arrays from the element count a client sends
//! (`Vec::with_capacity(n)`), so a 100-byte request claiming 2^31 elements asks for hundreds of
//! GB. The system allocator refuses and Rust aborts the whole process. Reserving address space
//! without committing memory lets such a request fail to decode (the bytes run out after a few
//! elements) and be refused like any malformed request; only pages actually written cost RAM.
//! The same holds for a connection's buffer of a large request frame, sized once for the
//! whole frame when its header arrives: resident only as its bytes arrive, and given back to
//! the system at once when freed (glibc keeps large freed blocks of its heaps resident, so
//! hostile connections closed to make room would leave their memory behind). Growing such
//! a block is an `mremap`, no copy.

use std::alloc::{GlobalAlloc, Layout, System};

/// Requests at least this large bypass the system allocator (an mmap and its page faults cost
/// little next to filling 4 MiB).
pub const HUGE_BYTES: usize = 4 << 20;

pub struct Allocator;

unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= HUGE_BYTES && layout.align() <= page_size() {
            return map(layout.size());
        }
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= HUGE_BYTES && layout.align() <= page_size() {
            // Fresh anonymous mappings are zero-filled.
            return map(layout.size());
        }
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() >= HUGE_BYTES && layout.align() <= page_size() {
            libc::munmap(ptr.cast(), layout.size());
            return;
        }
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old_huge = layout.size() >= HUGE_BYTES && layout.align() <= page_size();
        let new_huge = new_size >= HUGE_BYTES && layout.align() <= page_size();
        if !old_huge && !new_huge {
            return System.realloc(ptr, layout, new_size);
        }
        if old_huge && new_huge {
            let p = libc::mremap(ptr.cast(), layout.size(), new_size, libc::MREMAP_MAYMOVE);
            return if p == libc::MAP_FAILED {
                std::ptr::null_mut()
            } else {
                p.cast()
            };
        }
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        let new_ptr = self.alloc(new_layout);
        if !new_ptr.is_null() {
            std::ptr::copy_nonoverlapping(ptr, new_ptr, layout.size().min(new_size));
            self.dealloc(ptr, layout);
        }
        new_ptr
    }
}

fn page_size() -> usize {
    4096
}

unsafe fn map(size: usize) -> *mut u8 {
    let p = libc::mmap(
        std::ptr::null_mut(),
        size,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
        -1,
        0,
    );
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p.cast()
    }
}

/// Gives the allocator's free memory back to the system (glibc's `malloc_trim`: free pages in
/// every arena, not only at the top of the heap). glibc keeps what a burst of large buffers
/// freed, in pieces too scattered to reuse at once; the request memory budget calls this after
/// it closed connections to make room. Blocking (it walks the heaps): call it off the async
/// runtime. Does nothing where the C library has no such call.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only inspects and releases the allocator's own free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}
