//! glibc malloc settings of `lake serve`.
//!
//! Under ingest the lake's memory is mostly short-lived Arrow buffers: batches decoded on
//! the blocking threads, held until a flush writes them, then freed by the flusher. glibc
//! gives a thread that finds its arena locked an arena of its own, up to 8 per core, and
//! every arena keeps the memory freed inside it for later use rather than giving it back:
//! RSS becomes the sum of each arena's own peak, not the peak of what is live.
//!
//! [`tune`] caps the arenas at start ([`ARENAS`]; an operator's `MALLOC_ARENA_MAX` in the
//! environment wins), and [`trim`] hands the free pages of every arena back to the kernel
//! after a flush has freed its rows.

/// Arenas glibc may make. Two, one per core of the machines the lake is sized for: the
/// threads that allocate much (decoding on the blocking threads, the flusher; DuckDB's
/// workers use their own allocator) seldom contend on 2 cores. Measured under the
/// 8-collector ingest bench (the lake before the flush and buffer changes of issue 23
/// §5, 20 s, 2 cores at load 6): peak RSS 1,271 MB with glibc's default of 16 arenas,
/// 965 MB with 2, at no lower throughput (360 k and 404 k rows/s); with every change of
/// §5 in, 772 MB with 16 arenas against 605–621 MB with 2.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) const ARENAS: i32 = 2;

/// Caps glibc's arenas at [`ARENAS`], unless `MALLOC_ARENA_MAX` is set. Call it before
/// the runtime starts its threads.
pub(crate) fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a parameter of the allocator, which takes its lock.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, ARENAS);
        }
    }
}

/// Gives the free pages of every arena back to the kernel. Blocking (it walks every
/// arena under its lock): call it off the async runtime, after a flush. Under a steady
/// load the freed pages are soon taken again (one 20 s bench run without it: peak 530 MB,
/// within the noise of the runs with it); what it buys is a lake that gives a burst's
/// memory back once the burst is flushed, rather than keeping it until the next one.
pub(crate) fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory, under each arena's lock.
    unsafe {
        libc::malloc_trim(0);
    }
}
