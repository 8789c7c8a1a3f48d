//! The process allocator: the system allocator, except that very large requests are served by
//! `mmap(MAP_NORESERVE)`.
//!
//! Why: the protocol decoder pre-sizes arrays from the element count a client sends
//! (`Vec::with_capacity(n)`), so a 100-byte request claiming 2^31 elements asks for hundreds of
//! GB. The system allocator refuses and Rust aborts the whole process. Reserving address space
//! without committing memory lets such a request fail to decode (the bytes run out after a few
//! elements) and be refused like any malformed request; only pages actually written cost RAM.

use std::alloc::{GlobalAlloc, Layout, System};

/// Requests at least this large bypass the system allocator.
const HUGE_BYTES: usize = 1 << 30;

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
