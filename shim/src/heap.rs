//! Gives the heap's free pages back to the kernel when the shim goes idle.
//!
//! A shim lives as long as its pod and spends that life asleep, yet the pages its allocator
//! touched while it served (the bundle's `config.json` parsed at create, a request's buffers)
//! stay resident after they are freed: glibc's malloc returns only the top of the heap, and only
//! past 128 KiB. On a node those freed pages are most of what each further shim costs, so the
//! loop hands them back once it has nothing left to do; the next request pays a few page faults.

/// Returns the free pages of the heap to the kernel (`malloc_trim(0)`: the top is trimmed and
/// every whole free page inside is given up with `MADV_DONTNEED`).
pub fn release_free_pages() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim works on the allocator's own free lists; it frees nothing in use.
    unsafe {
        libc::malloc_trim(0);
    }
}
