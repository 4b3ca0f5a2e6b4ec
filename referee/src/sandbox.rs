//! Where designers' scripts run: a small pool of threads of their own, each
//! with a deep stack, and a per-call memory meter.
//!
//! Why a pool and not the caller's thread: a script's values may nest as
//! deep as Rhai's size limits allow (ten thousand arrays in one another),
//! and walking, converting or dropping them recurses once per level — on a
//! tokio worker's 2 MiB stack that overflows and aborts the whole process.
//! Here the stack is [`STACK_BYTES`], far more than those limits can use,
//! and a value that comes back is refused past [`MAX_DEPTH`] before it is
//! converted. The pool is process-wide, like rayon's global pool: it is a
//! resource (threads), not state, and every caller shares its bound —
//! [`threads`] scripts run at once whoever asks, the rest wait in a queue
//! of [`QUEUE`].
//!
//! Memory: [`MeteredAlloc`], installed as the global allocator by the
//! programs that run scripts (the `arena` binary and its tests), counts the
//! bytes a thread allocates and frees while a call is metered; the
//! interpreter's progress hook stops a call whose net allocation passes
//! [`MAX_CALL_BYTES`]. Rhai's size limits bound what one operation can
//! build, so a call ends within one operation's growth of the budget.
//! Where the allocator is not installed (a library user's program),
//! [`metering`] says so and only Rhai's own limits apply.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::mpsc::{SyncSender, sync_channel};

/// Net bytes one script call may allocate.
pub const MAX_CALL_BYTES: isize = 64 * 1024 * 1024;
/// Stack of a script thread: deep values recurse once per level.
pub const STACK_BYTES: usize = 256 * 1024 * 1024;
/// Levels of arrays and maps a script's value may nest (state, notes,
/// scores): deeper values are refused, not stored.
pub const MAX_DEPTH: usize = 32;
/// Script calls that run at once in the process: half the cores (at least
/// one, at most four), so designers' scripts, each within its limits,
/// never hold every core the pipeline needs.
pub fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get() / 2).clamp(1, 4)
}
/// Calls waiting for a thread before a caller waits to enqueue.
pub const QUEUE: usize = 256;

thread_local! {
    static METERED: Cell<bool> = const { Cell::new(false) };
    static NET: Cell<isize> = const { Cell::new(0) };
}

#[inline]
fn note(delta: isize) {
    // `try_with`: never panic inside the allocator, even while a thread's
    // locals are being torn down.
    let _ = METERED.try_with(|on| {
        if on.get() {
            let _ = NET.try_with(|net| net.set(net.get().saturating_add(delta)));
        }
    });
}

/// The system allocator, counting each thread's net bytes while that thread
/// runs a metered script call (two thread-local reads per allocation
/// otherwise).
pub struct MeteredAlloc;

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged; the bookkeeping touches only const-initialised thread locals
// without destructors, which never allocate.
unsafe impl GlobalAlloc for MeteredAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as isize);
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as isize);
        // SAFETY: forwarded as is.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(-(layout.size() as isize));
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size as isize - layout.size() as isize);
        // SAFETY: forwarded as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Net bytes the current thread allocated since its meter was started.
pub fn allocated() -> isize {
    NET.with(Cell::get)
}

struct Meter;

impl Meter {
    fn start() -> Meter {
        NET.with(|n| n.set(0));
        METERED.with(|m| m.set(true));
        Meter
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        METERED.with(|m| m.set(false));
    }
}

/// Whether this program counts script memory ([`MeteredAlloc`] is its
/// global allocator).
pub fn metering() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        let _meter = Meter::start();
        let probe = std::hint::black_box(vec![0u8; 4096]);
        let seen = allocated() >= 4096;
        drop(probe);
        seen
    })
}

type Job = Box<dyn FnOnce() + Send>;

/// The script threads' queue; an error when not one thread could start.
fn pool() -> Result<&'static SyncSender<Job>, String> {
    static POOL: OnceLock<Result<SyncSender<Job>, String>> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = sync_channel::<Job>(QUEUE);
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let mut started = 0;
        let mut failure = String::new();
        for i in 0..threads() {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("referee-script-{i}"))
                .stack_size(STACK_BYTES)
                .spawn(move || {
                    loop {
                        // A poisoned lock only means another script thread
                        // panicked while holding it: the receiver is fine.
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(poisoned) => poisoned.into_inner().recv(),
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            match spawned {
                Ok(_) => started += 1,
                Err(e) => failure = e.to_string(),
            }
        }
        if started == 0 { Err(format!("cannot start a script thread: {failure}")) } else { Ok(tx) }
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// Runs `f` on a script thread with its memory metered, waiting for the
/// answer (callers are blocking threads: never an async runtime's worker).
/// A panic in `f` comes back as `Err` with its message.
pub fn run<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    let (tx, rx) = sync_channel(1);
    let job: Job = Box::new(move || {
        let out = {
            let _meter = Meter::start();
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        };
        let _ = tx.send(out.map_err(|p| {
            p.downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_owned())
        }));
    });
    pool()?.send(job).map_err(|_| "the script threads are gone".to_owned())?;
    rx.recv().map_err(|_| "a script thread died".to_owned())?
}

/// Whether the net allocation of the running call passed the budget.
#[inline]
pub fn over_budget() -> bool {
    allocated() > MAX_CALL_BYTES
}
