//! How the VMM starts its threads: named, with a stack just under 2 MiB.
//!
//! Rust's default stack is exactly 2 MiB. On a host whose anonymous
//! transparent huge pages are `always` (Debian's default), a stack mapping
//! that happens to start on a 2 MiB boundary (the first one mapped below
//! guest RAM, which is aligned for its own huge pages) is backed by one
//! huge page as soon as glibc writes the thread's control block at its top:
//! 2 MiB of RSS for a few KiB of use, which was most of the VMM's own
//! memory. A stack one page short of 2 MiB can never hold a huge page.

/// Each VMM thread's stack: one page under 2 MiB (see the module doc).
pub const STACK_BYTES: usize = (2 << 20) - 4096;

/// A thread builder with the VMM's name and stack size.
pub fn builder(name: impl Into<String>) -> std::thread::Builder {
    std::thread::Builder::new()
        .name(name.into())
        .stack_size(STACK_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_stack_cannot_hold_a_huge_page() {
        // The rw part of the stack mapping is what could be huge-page
        // backed; it is at most the requested size, page-rounded.
        const { assert!(STACK_BYTES < 2 << 20 && STACK_BYTES.is_multiple_of(4096)) };
        let name = builder("probe")
            .spawn(|| std::thread::current().name().map(str::to_owned))
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(name.as_deref(), Some("probe"));
    }
}
