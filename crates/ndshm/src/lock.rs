//! A reader-writer lock in shared memory that survives the death of its
//! holders, for the control page of every segment.
//!
//! Words (offsets from the lock area):
//!
//! ```text
//! 0    owner   u64  thread id of the exclusive holder (0: none)
//! 8    seq     u32  futex word: bumped on every release
//! 12   sleepers u32 threads asleep on `seq` (low 16 bits; releases skip the
//!                   wake if 0) and an epoch (high 16 bits, see `repair_sleepers`)
//! 16   queued  u64  thread id of one waiting writer: new readers hold back
//! 64   readers [u64; 32]  thread ids of shared holders, one slot each
//! ```
//!
//! A thread id is `tid << 32 | low 32 bits of the thread's start time`, so
//! a recycled tid is not mistaken for a live holder. Waiters sleep on the
//! futex in slices of `CHECK`; a waiter woken by a timeout checks whether
//! the holders it waits for are still alive and takes over from dead ones,
//! reporting it (`Outcome::OwnerDied`). Writers are preferred: a queued
//! writer stops new readers, so a stream of readers cannot starve it.

use crate::process;
use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};
use std::sync::Once;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Reader slots: at most this many shared holders at once; more wait.
pub const READER_SLOTS: usize = 32;
/// Bytes of the lock area.
pub const LOCK_BYTES: usize = 64 + READER_SLOTS * 8;
/// How often a waiter checks that the holders it waits for are alive.
pub const CHECK: Duration = Duration::from_millis(100);
/// Rounds of spinning before sleeping.
const SPIN: u32 = 200;
/// The count in the `sleepers` word; the bits above it are its epoch.
const SLEEPERS: u32 = 0xffff;
const EPOCH_SHIFT: u32 = 16;

/// Misuse of a lock.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LockError {
    #[error("release of a lock this thread does not hold")]
    NotHeld,
    #[error("release of a read lock this thread does not hold (slot {0})")]
    NotHeldShared(usize),
}

/// How an acquisition ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Acquired; for shared locks, the reader slot to release.
    Acquired(usize),
    /// Acquired after taking over from holders that died (their tids).
    OwnerDied(usize, u32),
    /// The timeout passed first.
    TimedOut,
}

impl Outcome {
    pub fn acquired(self) -> bool {
        !matches!(self, Outcome::TimedOut)
    }
}

/// The lock words, laid over shared memory.
#[repr(C)]
pub struct LockWords {
    owner: AtomicU64,
    seq: AtomicU32,
    sleepers: AtomicU32,
    queued: AtomicU64,
    _pad: [u64; 5],
    readers: [AtomicU64; READER_SLOTS],
}

const _: () = assert!(std::mem::size_of::<LockWords>() == LOCK_BYTES);

thread_local! {
    static ME: Cell<u64> = const { Cell::new(0) };
}

static ATFORK: Once = Once::new();

extern "C" fn forget_me_in_child() {
    // The forking thread is the child's only thread, with a new tid.
    let _ = ME.try_with(|c| c.set(0));
}

/// This thread's lock id.
#[inline]
pub fn me() -> u64 {
    match ME.with(Cell::get) {
        0 => first_me(),
        v => v,
    }
}

/// This thread's lock id, the first time it asks (or after a fork).
#[cold]
fn first_me() -> u64 {
    ATFORK.call_once(|| {
        // SAFETY: registers a handler that only writes a thread-local.
        unsafe { libc::pthread_atfork(None, None, Some(forget_me_in_child)) };
    });
    let tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
    let start = process::start_time(tid).unwrap_or(0) as u32;
    let v = (u64::from(tid) << 32) | u64::from(start);
    ME.with(|c| c.set(v));
    v
}

fn tid_of(id: u64) -> u32 {
    (id >> 32) as u32
}

/// Whether the thread `id` still runs.
fn alive(id: u64) -> bool {
    process::start_time(tid_of(id)).is_some_and(|s| s as u32 == id as u32) && process::is_alive(tid_of(id), 0)
}

impl LockWords {
    /// A view of lock words at `ptr`.
    ///
    /// # Safety
    /// `ptr` must point to `LOCK_BYTES` bytes of writable shared memory,
    /// 8-byte aligned, that outlive `'a` and are only ever accessed as
    /// these atomics.
    pub unsafe fn at<'a>(ptr: *mut u8) -> &'a LockWords {
        // SAFETY: as the caller promises; all fields are atomics (or unused
        // padding), so shared references are sound across processes.
        unsafe { &*(ptr as *const LockWords) }
    }

    /// Whether anyone holds the lock exclusively.
    pub fn is_locked(&self) -> bool {
        self.owner.load(Acquire) != 0
    }

    /// Readers holding the lock now.
    pub fn readers(&self) -> usize {
        self.readers.iter().filter(|r| r.load(Acquire) != 0).count()
    }

    /// Whether no reader slot is taken. Reads every slot (SeqCst), with
    /// no early exit: branch-free, this is the bulk of an uncontended
    /// exclusive acquisition.
    #[inline]
    fn no_readers(&self) -> bool {
        self.readers.iter().fold(0, |any, r| any | r.load(SeqCst)) == 0
    }

    /// After a release (a SeqCst store or RMW): wakes sleepers, if any.
    /// Sleepers register before re-checking their condition, so either we
    /// see them here or they see the release (both sides are SeqCst).
    #[inline]
    fn wake(&self) {
        if self.sleepers.load(SeqCst) & SLEEPERS != 0 {
            self.wake_sleepers();
        }
    }

    #[cold]
    fn wake_sleepers(&self) {
        self.seq.fetch_add(1, SeqCst);
        let woke = rustix::thread::futex::wake(&self.seq, rustix::thread::futex::Flags::empty(), i32::MAX as u32);
        if woke == Ok(0) {
            self.repair_sleepers();
        }
    }

    /// After a wake that found nobody asleep although the count said some
    /// were: the count may include waiters killed in their sleep, which
    /// never take themselves off. Anyone counted is either dead or not yet
    /// in its futex wait, and the latter sees `seq` moved and does not
    /// sleep on the old value. So the count can start again from 0 in a new
    /// epoch; those counted in the old one do not take themselves off the
    /// new count. (If a sleeper registers meanwhile, the exchange fails and
    /// a later release tries again.)
    #[cold]
    fn repair_sleepers(&self) {
        let w = self.sleepers.load(SeqCst);
        if w & SLEEPERS != 0 {
            let next_epoch = ((w >> EPOCH_SHIFT).wrapping_add(1)) << EPOCH_SHIFT;
            let _ = self.sleepers.compare_exchange(w, next_epoch, SeqCst, Relaxed);
        }
    }

    /// Threads counted as asleep on the lock.
    pub fn sleepers(&self) -> u32 {
        self.sleepers.load(Acquire) & SLEEPERS
    }

    /// Sleeps until `seq` moves from `seen` or `limit` passes, unless
    /// `ready()` already holds once registered. Returns whether it timed out.
    fn sleep(&self, seen: u32, limit: Duration, ready: &dyn Fn() -> bool) -> bool {
        let epoch = self.sleepers.fetch_add(1, SeqCst) >> EPOCH_SHIFT;
        let mut timed_out = false;
        if !ready() {
            let ts = rustix::fs::Timespec { tv_sec: limit.as_secs() as i64, tv_nsec: limit.subsec_nanos() as _ };
            let r = rustix::thread::futex::wait(&self.seq, rustix::thread::futex::Flags::empty(), seen, Some(&ts));
            timed_out = matches!(r, Err(e) if e == rustix::io::Errno::TIMEDOUT);
        }
        // Off the count, unless it was started again meanwhile (`repair_sleepers`).
        let _ = self
            .sleepers
            .fetch_update(SeqCst, SeqCst, |w| (w >> EPOCH_SHIFT == epoch && w & SLEEPERS != 0).then(|| w - 1));
        timed_out
    }

    /// Waits for a change, at most until `deadline` and `CHECK`; returns
    /// false if the deadline has passed. `stale` is set when the sleep
    /// timed out (time to check holders' liveness).
    fn pause(
        &self,
        seen: u32,
        spins: &mut u32,
        deadline: Option<Instant>,
        stale: &mut bool,
        ready: &dyn Fn() -> bool,
    ) -> bool {
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return false;
        }
        if *spins < SPIN {
            *spins += 1;
            std::hint::spin_loop();
            if *spins % 16 == 0 {
                std::thread::yield_now();
            }
            return true;
        }
        let limit = deadline.map_or(CHECK, |d| (d - now).min(CHECK));
        *stale = self.sleep(seen, limit, ready);
        true
    }

    /// Takes over from a dead exclusive holder `owner`; true if we did.
    fn reap_owner(&self, owner: u64) -> bool {
        owner != 0 && !alive(owner) && self.owner.compare_exchange(owner, 0, AcqRel, Acquire).is_ok()
    }

    /// After a sleep that timed out: takes over from a dead exclusive
    /// holder `owner` or a dead queued writer. Returns whether it did.
    fn reap(&self, owner: u64, died: &mut Option<u32>) -> bool {
        if self.reap_owner(owner) {
            *died = Some(tid_of(owner));
            self.wake();
            return true;
        }
        if let Some(t) = self.reap_queued() {
            *died = died.or(Some(t));
            return true;
        }
        false
    }

    fn reap_queued(&self) -> Option<u32> {
        let q = self.queued.load(Acquire);
        (q != 0 && !alive(q) && self.queued.compare_exchange(q, 0, AcqRel, Acquire).is_ok()).then(|| tid_of(q))
    }

    /// Takes the lock exclusively if that needs no waiting.
    #[inline(always)]
    pub fn try_lock(&self) -> bool {
        let me = me();
        // SeqCst pairs with readers' slot CAS and owner load (Dekker):
        // either we see their slot, or they see us.
        if self.owner.compare_exchange(0, me, SeqCst, Relaxed).is_err() {
            return false;
        }
        if self.no_readers() {
            return true;
        }
        self.step_back()
    }

    /// After taking `owner` in `try_lock` and finding readers: lets go.
    #[cold]
    fn step_back(&self) -> bool {
        self.owner.store(0, SeqCst);
        self.wake();
        false
    }

    /// Like [`try_lock`], but first waits for the lock to be free for up
    /// to `spins` rounds of [`std::hint::spin_loop`] (tens of ns each),
    /// looking without writing. For callers whose own way of waiting
    /// costs more than a short spin (Python gives up and re-takes its
    /// GIL), as locks are often held for less than a microsecond.
    ///
    /// [`try_lock`]: LockWords::try_lock
    pub fn try_lock_spinning(&self, spins: u32) -> bool {
        for _ in 0..spins {
            if self.owner.load(Relaxed) == 0 && self.no_readers() && self.try_lock() {
                return true;
            }
            std::hint::spin_loop();
        }
        false
    }

    /// Acquires the lock exclusively, waiting at most `timeout` (None:
    /// forever).
    pub fn lock(&self, timeout: Option<Duration>) -> Outcome {
        let me = me();
        // Fast path: free and no readers.
        if self.owner.compare_exchange(0, me, SeqCst, Relaxed).is_ok() {
            if self.no_readers() {
                return Outcome::Acquired(0);
            }
            return self.drain_readers(me, timeout.map(|t| Instant::now() + t), None);
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let (mut spins, mut stale, mut died) = (0, false, None);
        loop {
            let seen = self.seq.load(Acquire);
            let owner = self.owner.load(Acquire);
            if owner == 0 {
                if self.owner.compare_exchange(0, me, SeqCst, Relaxed).is_ok() {
                    let _ = self.queued.compare_exchange(me, 0, SeqCst, Relaxed);
                    return self.drain_readers(me, deadline, died);
                }
                continue;
            }
            // Queue so that new readers hold back. Look before the CAS: a
            // waiter spins here, and a failing CAS still takes the holder's
            // cache line away from it.
            if self.queued.load(Relaxed) == 0 {
                let _ = self.queued.compare_exchange(0, me, AcqRel, Relaxed);
            }
            if std::mem::take(&mut stale) && self.reap(owner, &mut died) {
                continue;
            }
            if !self.pause(seen, &mut spins, deadline, &mut stale, &|| self.owner.load(SeqCst) == 0) {
                let _ = self.queued.compare_exchange(me, 0, SeqCst, Relaxed);
                self.wake();
                return Outcome::TimedOut;
            }
        }
    }

    /// With `owner` = me, waits for readers to leave (reaping dead ones).
    fn drain_readers(&self, me: u64, deadline: Option<Instant>, mut died: Option<u32>) -> Outcome {
        let (mut spins, mut stale) = (0, false);
        loop {
            let seen = self.seq.load(Acquire);
            let mut busy = false;
            for r in &self.readers {
                let id = r.load(Acquire);
                if id == 0 {
                    continue;
                }
                if stale && !alive(id) && r.compare_exchange(id, 0, AcqRel, Relaxed).is_ok() {
                    died = died.or(Some(tid_of(id)));
                    continue;
                }
                busy = true;
            }
            if !busy {
                return match died {
                    Some(t) => Outcome::OwnerDied(0, t),
                    None => Outcome::Acquired(0),
                };
            }
            stale = false;
            let drained = || self.readers.iter().all(|r| r.load(SeqCst) == 0);
            if !self.pause(seen, &mut spins, deadline, &mut stale, &drained) {
                // Give up the lock we took; readers and writers may go on.
                let _ = self.owner.compare_exchange(me, 0, SeqCst, Relaxed);
                self.wake();
                return Outcome::TimedOut;
            }
        }
    }

    /// Releases an exclusive hold of this thread.
    #[inline(always)]
    pub fn unlock(&self) -> Result<(), LockError> {
        self.owner.compare_exchange(me(), 0, SeqCst, Relaxed).map_err(|_| LockError::NotHeld)?;
        self.wake();
        Ok(())
    }

    /// Acquires the lock shared, waiting at most `timeout`. The outcome
    /// carries the reader slot to pass to [`unlock_shared`].
    ///
    /// [`unlock_shared`]: LockWords::unlock_shared
    pub fn lock_shared(&self, timeout: Option<Duration>) -> Outcome {
        let me = me();
        let deadline = timeout.map(|t| Instant::now() + t);
        let first = (tid_of(me) as usize) % READER_SLOTS;
        let (mut spins, mut stale, mut died) = (0, false, None);
        loop {
            let seen = self.seq.load(Acquire);
            let owner = self.owner.load(Acquire);
            if owner == 0 && self.queued.load(Acquire) == 0 {
                for k in 0..READER_SLOTS {
                    let i = (first + k) % READER_SLOTS;
                    if self.readers[i].compare_exchange(0, me, SeqCst, Relaxed).is_ok() {
                        if self.owner.load(SeqCst) == 0 {
                            return match died {
                                Some(t) => Outcome::OwnerDied(i, t),
                                None => Outcome::Acquired(i),
                            };
                        }
                        // A writer got in first: step back.
                        self.readers[i].store(0, SeqCst);
                        self.wake();
                        break;
                    }
                }
            }
            if std::mem::take(&mut stale) {
                if self.reap(owner, &mut died) {
                    continue;
                }
                // Full of readers: clear slots of dead ones.
                for r in &self.readers {
                    let id = r.load(Acquire);
                    if id != 0 && !alive(id) && r.compare_exchange(id, 0, AcqRel, Relaxed).is_ok() {
                        died = died.or(Some(tid_of(id)));
                    }
                }
            }
            let may_read = || self.owner.load(SeqCst) == 0 && self.queued.load(SeqCst) == 0;
            if !self.pause(seen, &mut spins, deadline, &mut stale, &may_read) {
                return Outcome::TimedOut;
            }
        }
    }

    /// Releases the shared hold in `slot`.
    pub fn unlock_shared(&self, slot: usize) -> Result<(), LockError> {
        let r = self.readers.get(slot).ok_or(LockError::NotHeldShared(slot))?;
        r.compare_exchange(me(), 0, SeqCst, Relaxed).map_err(|_| LockError::NotHeldShared(slot))?;
        self.wake();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    struct Area(Box<[u64; LOCK_BYTES / 8]>);

    impl Area {
        fn new() -> Arc<Area> {
            Arc::new(Area(Box::new([0; LOCK_BYTES / 8])))
        }
        fn words(&self) -> &LockWords {
            // SAFETY: a private, aligned, zeroed area of the right size.
            unsafe { LockWords::at(self.0.as_ptr() as *mut u8) }
        }
    }

    #[test]
    fn exclusive_excludes_and_release_checks_the_holder() {
        let a = Area::new();
        let w = a.words();
        assert_eq!(w.lock(None), Outcome::Acquired(0));
        assert!(w.is_locked());
        let a2 = a.clone();
        let other = std::thread::spawn(move || {
            let w = a2.words();
            let r = w.lock(Some(Duration::from_millis(50)));
            (r, w.unlock())
        });
        let (r, un) = other.join().unwrap();
        assert_eq!(r, Outcome::TimedOut);
        assert_eq!(un, Err(LockError::NotHeld));
        w.unlock().unwrap();
        assert_eq!(w.unlock(), Err(LockError::NotHeld));
    }

    #[test]
    fn try_lock_spinning_takes_a_lock_freed_meanwhile_and_leaves_readers_alone() {
        let a = Area::new();
        let w = a.words();
        assert!(w.try_lock_spinning(1));
        assert!(!w.try_lock_spinning(100), "not re-entrant");
        // Held by another thread for a moment: the spin outlasts it. Freed
        // before that thread starts, which would otherwise find it taken.
        w.unlock().unwrap();
        let a2 = a.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let holder = std::thread::spawn(move || {
            assert!(a2.words().try_lock());
            tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(2));
            a2.words().unlock().unwrap();
        });
        rx.recv().unwrap();
        assert!(w.try_lock_spinning(u32::MAX));
        holder.join().unwrap();
        w.unlock().unwrap();
        // A reader keeps it from a writer, and the writer leaves no trace.
        let Outcome::Acquired(slot) = w.lock_shared(None) else { panic!() };
        assert!(!w.try_lock_spinning(50));
        assert!(!w.is_locked());
        w.unlock_shared(slot).unwrap();
        assert!(w.try_lock_spinning(1));
        w.unlock().unwrap();
    }

    #[test]
    fn readers_share_and_block_writers() {
        let a = Area::new();
        let w = a.words();
        let Outcome::Acquired(s1) = w.lock_shared(None) else { panic!() };
        let Outcome::Acquired(s2) = w.lock_shared(None) else { panic!() };
        assert_ne!(s1, s2);
        assert_eq!(w.readers(), 2);
        let a2 = a.clone();
        let writer = std::thread::spawn(move || a2.words().lock(Some(Duration::from_millis(50))));
        assert_eq!(writer.join().unwrap(), Outcome::TimedOut);
        assert_eq!(w.unlock(), Err(LockError::NotHeld), "a read lock released as a write lock");
        w.unlock_shared(s1).unwrap();
        w.unlock_shared(s2).unwrap();
        assert!(w.unlock_shared(s2).is_err());
        assert_eq!(w.lock(None), Outcome::Acquired(0));
        w.unlock().unwrap();
    }

    #[test]
    fn counter_under_lock_is_exact() {
        let a = Area::new();
        let counter = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (a, c) = (a.clone(), counter.clone());
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        a.words().lock(None);
                        // A non-atomic read-modify-write, made safe by the lock.
                        let v = c.load(Relaxed);
                        c.store(v + 1, Relaxed);
                        a.words().unlock().unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(counter.load(Relaxed), 80_000);
    }

    #[test]
    fn a_dead_holder_is_taken_over() {
        let a = Area::new();
        // A thread takes the lock and exits without releasing it.
        let a2 = a.clone();
        std::thread::spawn(move || assert!(a2.words().lock(None).acquired())).join().unwrap();
        let t = Instant::now();
        let r = a.words().lock(Some(Duration::from_secs(5)));
        assert!(matches!(r, Outcome::OwnerDied(..)), "{r:?}");
        assert!(t.elapsed() < Duration::from_secs(1));
        a.words().unlock().unwrap();
        // Same for a dead reader blocking a writer.
        let a3 = a.clone();
        std::thread::spawn(move || assert!(a3.words().lock_shared(None).acquired())).join().unwrap();
        assert!(matches!(a.words().lock(Some(Duration::from_secs(5))), Outcome::OwnerDied(..)));
    }

    #[test]
    fn a_queued_writer_holds_new_readers_back() {
        let a = Area::new();
        let w = a.words();
        let Outcome::Acquired(slot) = w.lock_shared(None) else { panic!() };
        let a2 = a.clone();
        let writer = std::thread::spawn(move || {
            let r = a2.words().lock(Some(Duration::from_secs(5)));
            a2.words().unlock().unwrap();
            r
        });
        // The writer takes the owner word at once and waits for readers to
        // drain; from then on new readers hold back.
        while !w.is_locked() {
            std::thread::yield_now();
        }
        let a3 = a.clone();
        let late_reader = std::thread::spawn(move || a3.words().lock_shared(Some(Duration::from_millis(100))));
        assert_eq!(late_reader.join().unwrap(), Outcome::TimedOut);
        w.unlock_shared(slot).unwrap();
        assert_eq!(writer.join().unwrap(), Outcome::Acquired(0));
    }
}
