//! The thread pool of the model's parallel loops: the caller and `n − 1`
//! workers take the jobs of one loop from a shared counter; between loops
//! the workers spin for a short while and then sleep.
//!
//! Why not rayon here: a decode step runs about 150 short loops (a few
//! tens of microseconds each). rayon's workers go to sleep between them
//! and each loop wakes them again, which on a virtual machine costs an
//! inter-processor interrupt and a scheduler round trip per loop (measured
//! as ~10% of a batched step in scheduler code, and idle time on the second
//! core). Here a worker that finished a loop spins for [`SPIN`] before it
//! sleeps, so within a step it is already running when the next loop is
//! published; between requests it sleeps, so an idle runtime does not burn
//! a core (a pool that always spins collapses decode when another process
//! shares the CPU, see CANDLE-NOTES). The caller never waits for a worker
//! to wake: it takes jobs itself from the same counter, and waits only for
//! jobs a worker has already claimed.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it sleeps.
pub const SPIN: Duration = Duration::from_micros(100);

/// One loop's body; lives on the caller's stack for the loop.
type Body<'a> = dyn Fn(usize) + Sync + 'a;

/// The ticket packs a loop's epoch (32 bits), its job count (16) and the
/// next unclaimed job (16): claiming is one compare-and-swap that fails
/// once the loop is over.
fn pack(epoch: u64, count: u64, next: u64) -> u64 {
    (epoch << 32) | (count << 16) | next
}

fn count_of(t: u64) -> u64 {
    (t >> 16) & 0xffff
}

fn next_of(t: u64) -> u64 {
    t & 0xffff
}

/// The most jobs one loop may have.
pub const MAX_JOBS: usize = 0xffff;

/// A value alone on its cache lines (the spinning workers read the ticket
/// while jobs finish and count `done`: sharing a line would bounce it).
#[repr(align(128))]
struct Padded<T>(T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

struct Shared {
    ticket: Padded<AtomicU64>,
    /// The running loop's body (a `*const &Body` erased to a thin
    /// pointer), valid while its loop has jobs not yet done.
    body: AtomicPtr<()>,
    /// Jobs of the running loop finished (or panicked).
    done: Padded<AtomicUsize>,
    panicked: AtomicBool,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    shutdown: AtomicBool,
}

impl Shared {
    /// Claims the next job of the loop `t` belongs to; `None` once all are
    /// claimed or another loop has begun.
    fn claim(&self, mut t: u64) -> Option<(u64, usize)> {
        loop {
            if next_of(t) >= count_of(t) {
                return None;
            }
            match self.ticket.compare_exchange_weak(t, t + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some((t, next_of(t) as usize)),
                Err(now) if now >> 32 == t >> 32 => t = now,
                Err(_) => return None,
            }
        }
    }

    /// Runs job `index` of the loop whose ticket was claimed.
    fn run(&self, index: usize) {
        // SAFETY: a claimed job's loop is still running (its caller waits
        // until every claimed job is done), so its body is alive; the
        // acquire of the claiming CAS saw the caller's store of it.
        let body: &Body<'_> = unsafe { *(self.body.load(Ordering::Acquire) as *const &Body<'_>) };
        IN_JOB.set(true);
        if catch_unwind(AssertUnwindSafe(|| body(index))).is_err() {
            self.panicked.store(true, Ordering::Relaxed);
        }
        IN_JOB.set(false);
        self.done.fetch_add(1, Ordering::Release);
    }
}

thread_local! {
    /// Whether this thread is running a job: a loop started from inside a
    /// job runs inline (the pool's threads are busy with the outer loop).
    static IN_JOB: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Serialises loops from different callers.
    caller: Mutex<u64>,
}

impl Pool {
    /// A pool of `threads` threads in all: the caller and `threads − 1`
    /// workers.
    pub fn new(threads: usize) -> std::io::Result<Pool> {
        let shared = Arc::new(Shared {
            ticket: Padded(AtomicU64::new(0)),
            body: AtomicPtr::new(std::ptr::null_mut()),
            done: Padded(AtomicUsize::new(0)),
            panicked: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            shutdown: AtomicBool::new(false),
        });
        let workers = (1..threads.max(1))
            .map(|i| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new().name(format!("arena-model-{i}")).spawn(move || worker(&shared))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Pool { shared, workers, caller: Mutex::new(0) })
    }

    /// Threads that run a loop's jobs, the caller included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `body(i)` for every `i < jobs` across the pool and returns when
    /// all are done. A panic in a job is raised here once all are done.
    /// Loops from several callers take turns; a loop started inside a job
    /// runs inline.
    pub fn run(&self, jobs: usize, body: &(dyn Fn(usize) + Sync)) {
        if jobs == 0 {
            return;
        }
        if jobs == 1 || self.workers.is_empty() || IN_JOB.get() {
            (0..jobs).for_each(body);
            return;
        }
        if jobs > MAX_JOBS {
            // More jobs than a ticket counts: loops of MAX_JOBS.
            for start in (0..jobs).step_by(MAX_JOBS) {
                self.run(MAX_JOBS.min(jobs - start), &|i| body(start + i));
            }
            return;
        }
        let mut epoch = self.caller.lock().unwrap_or_else(|e| e.into_inner());
        *epoch = (*epoch + 1) & 0xffff_ffff;
        let s = &*self.shared;
        // The body outlives the loop: this function returns only after
        // every job is done.
        let body_ref: &Body<'_> = body;
        s.body.store(&body_ref as *const &Body<'_> as *mut (), Ordering::Relaxed);
        s.done.store(0, Ordering::Relaxed);
        s.panicked.store(false, Ordering::Relaxed);
        let t = pack(*epoch, jobs as u64, 0);
        // SeqCst with the sleepers check below: a worker either sees this
        // ticket before it sleeps or is counted and woken.
        s.ticket.store(t, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        let mut t = t;
        while let Some((claimed, index)) = s.claim(t) {
            s.run(index);
            t = claimed + 1;
        }
        // Wait for jobs the workers claimed.
        let mut spins = 0u32;
        while s.done.load(Ordering::Acquire) < jobs {
            spins += 1;
            if spins < 1 << 14 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        if s.panicked.load(Ordering::Relaxed) {
            drop(epoch);
            resume_unwind(Box::new("a job of a parallel loop panicked"));
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        {
            let _g = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker(s: &Shared) {
    let mut seen = s.ticket.load(Ordering::Acquire);
    loop {
        // Take jobs while the current loop has any.
        while let Some((claimed, index)) = s.claim(seen) {
            s.run(index);
            seen = claimed + 1;
        }
        // Wait for a new loop: spin, then sleep.
        let spin_until = Instant::now() + SPIN;
        let mut spins = 0u32;
        loop {
            let now = s.ticket.load(Ordering::Acquire);
            if now >> 32 != seen >> 32 {
                seen = now;
                break;
            }
            if s.shutdown.load(Ordering::Relaxed) {
                return;
            }
            spins += 1;
            if !spins.is_multiple_of(16) || Instant::now() < spin_until {
                // A few pauses between reads of the ticket, so the line
                // mostly stays with the thread that is claiming jobs.
                for _ in 0..8 {
                    std::hint::spin_loop();
                }
                continue;
            }
            let mut g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.sleepers.fetch_add(1, Ordering::SeqCst);
            while s.ticket.load(Ordering::SeqCst) >> 32 == seen >> 32 && !s.shutdown.load(Ordering::SeqCst) {
                g = s.wake.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            s.sleepers.fetch_sub(1, Ordering::SeqCst);
            drop(g);
            spins = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn every_job_runs_exactly_once_across_many_loops() {
        let pool = Pool::new(3).unwrap();
        for round in 0..2000usize {
            let jobs = 1 + round % 37;
            let hits: Vec<AtomicU32> = (0..jobs).map(|_| AtomicU32::new(0)).collect();
            pool.run(jobs, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "round {round}");
            if round % 500 == 0 {
                // Long enough for the workers to fall asleep.
                std::thread::sleep(SPIN * 3);
            }
        }
    }

    #[test]
    fn a_loop_inside_a_job_runs_inline() {
        let pool = Pool::new(2).unwrap();
        let total = AtomicUsize::new(0);
        pool.run(4, &|_| {
            pool.run(3, &|j| {
                total.fetch_add(j + 1, Ordering::Relaxed);
            })
        });
        assert_eq!(total.load(Ordering::Relaxed), 4 * 6);
    }

    #[test]
    fn a_panicking_job_panics_the_caller_and_the_pool_goes_on() {
        let pool = Pool::new(2).unwrap();
        let result = catch_unwind(AssertUnwindSafe(|| {
            pool.run(8, &|i| {
                if i == 5 {
                    panic!("job 5");
                }
            })
        }));
        assert!(result.is_err());
        let total = AtomicUsize::new(0);
        pool.run(10, &|i| {
            total.fetch_add(i, Ordering::Relaxed);
        });
        assert_eq!(total.load(Ordering::Relaxed), 45);
    }
}
