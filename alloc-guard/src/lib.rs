//! `alloc-guard` — the process-wide allocator of the `sluice` binary (and of tests and fuzz targets that
//! decode network input).
//!
//! Why it exists: `kafka-protocol` 0.18 decodes an array by reading its element count off the wire and
//! calling `Vec::with_capacity(count)` before decoding a single element (upstream issue: pull requests
//! #152/#161/#200 of kafka-protocol-rs, not released). A few hostile bytes can ask for hundreds of GiB;
//! the system allocator refuses, and Rust aborts the whole process. Sluice must never fall over on
//! network input, so allocations of [`HUGE`] bytes or more are served by an anonymous `mmap` with
//! `MAP_NORESERVE`: address space is reserved, memory is committed only for pages actually written.
//! The hostile decode then fails cleanly on the missing bytes and the mapping is released.
//!
//! Sluice never makes a legitimate allocation this large (requests are capped at 100 MiB and every
//! buffer is bounded), so the normal path is the system allocator, untouched.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations of at least this many bytes are lazily committed mappings.
pub const HUGE: usize = 1 << 30;
const PAGE: usize = 4096;

/// The allocator. Install with `#[global_allocator] static A: alloc_guard::Guard = alloc_guard::Guard;`.
pub struct Guard;

fn is_huge(layout: &Layout) -> bool {
    layout.size() >= HUGE && layout.align() <= PAGE
}

fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping with no address hint touches no existing memory.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        ptr.cast()
    }
}

// SAFETY: every method forwards to `System` or to a page-aligned anonymous mapping of the layout's size,
// and `dealloc`/`realloc` route a pointer back by the same `is_huge(layout)` test that created it.
unsafe impl GlobalAlloc for Guard {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_huge(&layout) {
            map(layout.size())
        } else {
            // SAFETY: same contract as ours.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_huge(&layout) {
            // Fresh anonymous pages are zero-filled.
            map(layout.size())
        } else {
            // SAFETY: same contract as ours.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_huge(&layout) {
            // SAFETY: `ptr` came from `map(layout.size())`.
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
        } else {
            // SAFETY: `ptr` came from `System` with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` with `layout.align()` is a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !is_huge(&layout) && !is_huge(&new_layout) {
            // SAFETY: same contract as ours; both sides are System allocations.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: allocate-copy-free across the two kinds of memory.
        unsafe {
            let new_ptr = self.alloc(new_layout);
            if !new_ptr.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new_ptr, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new_ptr
        }
    }
}

#[cfg(test)]
mod tests {
    #[global_allocator]
    static GUARD: super::Guard = super::Guard;

    #[test]
    fn a_hostile_capacity_is_reserved_not_committed() {
        // 2^31 elements of 72 bytes: ~144 GiB, far beyond this machine's memory.
        let mut v: Vec<[u8; 72]> = Vec::with_capacity(i32::MAX as usize);
        v.push([7u8; 72]);
        assert_eq!(v[0][71], 7);
        drop(v);
    }

    #[test]
    fn growing_across_the_threshold_keeps_the_contents() {
        let mut v: Vec<u8> = Vec::with_capacity(1024);
        v.extend_from_slice(b"prefix");
        v.reserve(super::HUGE);
        v.extend_from_slice(b"-suffix");
        assert_eq!(&v[..13], b"prefix-suffix");
        v.shrink_to(64);
        assert_eq!(&v[..], b"prefix-suffix");
    }
}
