//! The process's memory allocator: mimalloc, called so that an ordinary
//! allocation takes mimalloc's plain path.
//!
//! The `mimalloc` crate's allocator passes every Rust allocation to
//! `mi_malloc_aligned`, alignment included. mimalloc 3 serves an aligned
//! request on its fast path only when the block is at most 1 KiB, or of a
//! power-of-two size; any other (a boxed command future of 2 KiB, a frame
//! buffer, a log record) goes through its over-allocation path, which
//! allocates `size + alignment - 1` bytes through the generic page search:
//! ~500 instructions where `mi_malloc` takes ~50 to ~150. Under 50 clients'
//! durable SETs that path was 5.5% of a coordinator's instructions
//! (callgrind, docs/benchmarks.md).
//!
//! [`Heap`] does what Rust's own `System` allocator does with `malloc`: a
//! request whose alignment the allocator guarantees anyway (at most 16
//! bytes, and no more than its size) goes to `mi_malloc` / `mi_zalloc` /
//! `mi_realloc`; only an over-aligned one (tokio's 128-byte task cells)
//! goes to the aligned calls. Every block, however allocated, is freed by
//! `mi_free`.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every `mi_malloc` block of at least this size has
/// (mimalloc's `MI_MAX_ALIGN_SIZE` on 64-bit targets); a smaller block is
/// aligned to its size class, a multiple of 8 no smaller than the size.
const GUARANTEED_ALIGN: usize = 16;

/// mimalloc as the global allocator (see the module's documentation).
pub struct Heap;

/// Whether `mi_malloc` of `size` bytes already gives `align`.
#[inline]
fn plain(size: usize, align: usize) -> bool {
    align <= GUARANTEED_ALIGN && align <= size
}

// SAFETY: every method forwards to mimalloc, which returns blocks of at
// least the size asked, aligned as asked (by `plain`'s rule, or by the
// aligned call), or null when out of memory; `mi_free` and `mi_realloc`
// take any block mimalloc returned, whichever call allocated it.
unsafe impl GlobalAlloc for Heap {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: plain FFI calls with a size and a power-of-two alignment.
        unsafe {
            if plain(layout.size(), layout.align()) {
                mi::mi_malloc(layout.size()) as *mut u8
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            if plain(layout.size(), layout.align()) {
                mi::mi_zalloc(layout.size()) as *mut u8
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (GlobalAlloc's contract).
        unsafe { mi::mi_free(ptr as *mut c_void) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout`; the new
        // block keeps the layout's alignment by the same rule as `alloc`.
        unsafe {
            if plain(new_size, layout.align()) {
                mi::mi_realloc(ptr as *mut c_void, new_size) as *mut u8
            } else {
                mi::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size and alignment a program asks for comes back aligned,
    /// writable over its whole size, and survives growing and shrinking
    /// with its contents.
    #[test]
    fn blocks_are_aligned_and_keep_their_contents_through_realloc() {
        let sizes = [
            1usize,
            2,
            3,
            4,
            7,
            8,
            9,
            12,
            15,
            16,
            17,
            24,
            31,
            48,
            100,
            1000,
            1024,
            1025,
            1064,
            2248,
            4096,
            5000,
            70_000,
            1 << 20,
        ];
        for &size in &sizes {
            for align in [1usize, 2, 4, 8, 16, 32, 64, 128, 4096] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: a non-zero size; every block is freed below.
                unsafe {
                    let mut p = Heap.alloc(layout);
                    assert!(!p.is_null(), "{size}/{align}");
                    assert_eq!(p as usize % align, 0, "alloc {size}/{align}");
                    std::ptr::write_bytes(p, 0xA5, size);

                    let z = Heap.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "zeroed {size}/{align}");
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                    Heap.dealloc(z, layout);

                    for new_size in [size / 2 + 1, size * 3 + 5] {
                        let q = Heap.realloc(p, layout, new_size);
                        assert_eq!(q as usize % align, 0, "realloc {size}->{new_size}/{align}");
                        let kept = size.min(new_size);
                        assert!(
                            std::slice::from_raw_parts(q, kept)
                                .iter()
                                .all(|&b| b == 0xA5)
                        );
                        let back = Layout::from_size_align(new_size, align).unwrap();
                        Heap.dealloc(q, back);
                        // A fresh block of the first size for the next round.
                        p = Heap.alloc(layout);
                        std::ptr::write_bytes(p, 0xA5, size);
                    }
                    Heap.dealloc(p, layout);
                }
            }
        }
    }

    #[test]
    fn only_guaranteed_alignments_take_the_plain_path() {
        assert!(plain(16, 16));
        assert!(plain(2248, 8));
        assert!(plain(8, 8));
        // An alignment above the size goes the aligned way, as with std's `System`.
        assert!(!plain(4, 8));
        assert!(!plain(128, 32));
        assert!(!plain(1 << 20, 128));
    }
}
