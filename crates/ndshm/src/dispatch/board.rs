//! A board mapped in this process: opening and laying it out, its words,
//! its futex waits, the shared counters and the job table.

use super::error::{JobError, NoSuchWorker, OpenError};
use super::layout::{header, job, worker, Atomic, Geometry, Word, JOB_BYTES, JOB_HEAD, MAGIC, SLOT, VERSION};
use crate::format::Header;
use crate::{process, DType, Segment};
use rustix::thread::futex;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::*};
use std::time::{Duration, Instant};

/// Rounds of polling before a waiter sleeps on a futex.
pub(crate) const SPIN: u32 = 64;
/// A wait for results that ended sooner than this makes the next one poll
/// before it sleeps; after a longer one the next sleeps at once, so a
/// parent waiting on long tasks does not take CPU from the workers (its
/// polling preempted them three times as often, measured on 2 CPUs).
const QUICK_WAIT: Duration = Duration::from_millis(1);
/// Wake every waiter (the kernel reads the count as an int).
pub(crate) const ALL: u32 = i32::MAX as u32;

/// A worker slot's index, checked against the board's geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WorkerId(u32);

impl WorkerId {
    pub(crate) fn get(self) -> u32 {
        self.0
    }
}

/// A job-table entry's index, checked against the board's geometry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct JobEntry(usize);

/// A board mapped in this process.
///
/// Every word is reached through a `Word` of a fixed area (header, a
/// worker slot, a task slot, a job entry) whose index is checked or masked
/// to the geometry, which itself is checked to match the mapping: so no
/// access can leave the board. Ring payloads, whose positions come from the
/// board, are checked by the ring before they are touched.
pub struct Board {
    seg: Segment,
    base: *mut u8,
    geo: Geometry,
    /// This process's last wait for results was short (see [`QUICK_WAIT`]).
    quick: AtomicBool,
}

// SAFETY: the board's memory is reached only through atomics and raw-pointer
// copies, which are as valid from any thread as from another process; the
// mapping lives as long as `seg`.
unsafe impl Send for Board {}
// SAFETY: as above: no method hands out references to non-atomic memory.
unsafe impl Sync for Board {}

impl Board {
    /// Lays out a new board in `seg`, a fresh (zeroed, writable) segment of
    /// `geo.bytes()` bytes of `|u1`, owned by this process.
    pub fn init(seg: Segment, geo: Geometry) -> Result<Board, OpenError> {
        geo.check()?;
        let board = Board::mapped(seg, geo)?;
        if board.field(header::MAGIC).load(Acquire) != 0 {
            return Err(OpenError::NotFresh);
        }
        let (pid, start) = process::current();
        board.field(header::WORKERS).store(geo.workers, Relaxed);
        board.field(header::CAPACITY).store(geo.capacity, Relaxed);
        board.field(header::JOBS).store(geo.jobs, Relaxed);
        board.field(header::INPUT_LEN).store(geo.input_len, Relaxed);
        board.field(header::OUTPUT_LEN).store(geo.output_len, Relaxed);
        board.field(header::OWNER_PID).store(pid, Relaxed);
        board.field(header::OWNER_START).store(start, Relaxed);
        board.field(header::VERSION).store(VERSION, Relaxed);
        board.field(header::MAGIC).store(MAGIC, Release);
        Ok(board)
    }

    /// Opens a board another process laid out, checking its geometry
    /// against the segment before touching anything beyond the header.
    pub fn open(seg: Segment) -> Result<Board, OpenError> {
        // A one-worker board of the smallest sizes is one header page and
        // a few more: enough to read the real geometry from.
        let smallest = Geometry { workers: 1, capacity: 2, jobs: 1, input_len: 4096, output_len: 4096 };
        if seg.data_len() < smallest.bytes() {
            return Err(OpenError::Segment { len: seg.data_len(), want: smallest.bytes() });
        }
        let probe = Board::mapped_within(seg, smallest)?;
        if probe.field(header::MAGIC).load(Acquire) != MAGIC {
            return Err(OpenError::Magic);
        }
        let version = probe.field(header::VERSION).load(Relaxed);
        if version != VERSION {
            return Err(OpenError::Version(version));
        }
        let geo = Geometry {
            workers: probe.field(header::WORKERS).load(Relaxed),
            capacity: probe.field(header::CAPACITY).load(Relaxed),
            jobs: probe.field(header::JOBS).load(Relaxed),
            input_len: probe.field(header::INPUT_LEN).load(Relaxed),
            output_len: probe.field(header::OUTPUT_LEN).load(Relaxed),
        };
        geo.check()?;
        Board::mapped(probe.seg, geo)
    }

    /// The board of geometry `geo` in `seg`, which must be exactly its size.
    fn mapped(seg: Segment, geo: Geometry) -> Result<Board, OpenError> {
        let h = seg.header();
        if h.dtype.typestr() != Some("|u1") || h.shape.len() != 1 || seg.data_len() != geo.bytes() {
            return Err(OpenError::Segment { len: seg.data_len(), want: geo.bytes() });
        }
        Board::mapped_within(seg, geo)
    }

    /// The first `geo.bytes()` bytes of `seg` as a board of geometry `geo`.
    fn mapped_within(seg: Segment, geo: Geometry) -> Result<Board, OpenError> {
        if seg.is_readonly() {
            return Err(OpenError::ReadOnly);
        }
        if seg.data_len() < geo.bytes() {
            return Err(OpenError::Segment { len: seg.data_len(), want: geo.bytes() });
        }
        let base = seg.data_ptr();
        if base as usize % 8 != 0 {
            return Err(OpenError::Misaligned);
        }
        Ok(Board { base, seg, geo, quick: AtomicBool::new(true) })
    }

    /// The header a board segment of `geo` needs.
    pub fn header(geo: &Geometry) -> Result<Header, OpenError> {
        geo.check()?;
        Ok(Header { dtype: DType::from_typestr("|u1")?, shape: vec![geo.bytes()], fortran_order: false })
    }

    pub fn segment(&self) -> &Segment {
        &self.seg
    }
    pub fn geometry(&self) -> Geometry {
        self.geo
    }

    // -- words ---------------------------------------------------------------

    /// The atomic at byte `off` of the board. Callers pass only offsets of
    /// a [`Word`] within an area that the geometry places inside the board.
    fn atomic<T: Atomic>(&self, off: usize) -> &T {
        // SAFETY: `off` is inside the mapping and aligned for T: every
        // caller adds a Word's offset (inside its area and aligned to its
        // size, checked at compile time) to the start of an area that lies
        // inside `geo.bytes()` (the index is checked or masked to the
        // geometry), `geo.bytes()` bytes are mapped at `base` (checked in
        // `mapped_within`), and every area starts at a multiple of 8 from
        // `base`, which is 8-aligned (checked). The atomic lives in shared
        // memory that outlives &self; atomics may alias across processes.
        unsafe { &*(self.base.add(off) as *const T) }
    }
    /// A field of the header.
    pub(crate) fn field<T: Atomic>(&self, w: Word<T>) -> &T {
        self.atomic(w.off)
    }
    pub(crate) fn worker<T: Atomic>(&self, id: WorkerId, w: Word<T>) -> &T {
        self.atomic(self.geo.workers_at() + id.0 as usize * SLOT + w.off)
    }
    /// A field of task `n`'s slot (slot `n % capacity`).
    pub(crate) fn task<T: Atomic>(&self, n: u64, w: Word<T>) -> &T {
        let slot = (n & u64::from(self.geo.capacity - 1)) as usize;
        self.atomic(self.geo.tasks_at() + slot * SLOT + w.off)
    }
    pub(crate) fn job_field<T: Atomic>(&self, e: JobEntry, w: Word<T>) -> &T {
        self.atomic(self.job_offset(e) + w.off)
    }
    fn job_offset(&self, e: JobEntry) -> usize {
        self.geo.jobs_at() + e.0 * JOB_BYTES
    }

    /// Worker slot `w`, if the board has it.
    pub(crate) fn worker_id(&self, w: u32) -> Result<WorkerId, NoSuchWorker> {
        if w < self.geo.workers {
            Ok(WorkerId(w))
        } else {
            Err(NoSuchWorker { worker: w, workers: self.geo.workers })
        }
    }
    pub(crate) fn worker_ids(&self) -> impl Iterator<Item = WorkerId> {
        (0..self.geo.workers).map(WorkerId)
    }
    /// Job entry `e`, if the board has it.
    pub(crate) fn job_entry(&self, e: usize) -> Option<JobEntry> {
        (e < self.geo.jobs as usize).then_some(JobEntry(e))
    }
    fn job_entries(&self) -> impl Iterator<Item = JobEntry> {
        (0..self.geo.jobs as usize).map(JobEntry)
    }

    /// The 32-bit word at board offset `off`, if it is inside the board and
    /// aligned (for ring record headers, whose positions come from the board).
    pub(crate) fn u32_at(&self, off: usize) -> Option<&AtomicU32> {
        if off % 4 != 0 || off.checked_add(4)? > self.geo.bytes() {
            return None;
        }
        // SAFETY: inside the mapping and aligned (checked here; `base` is
        // 8-aligned); the atomic lives in shared memory that outlives &self.
        Some(unsafe { &*(self.base.add(off) as *const AtomicU32) })
    }

    /// Copies `len` bytes at board offset `off` out; None if that is not
    /// inside the board.
    pub(crate) fn read(&self, off: usize, len: usize) -> Option<Vec<u8>> {
        if off.checked_add(len)? > self.geo.bytes() {
            return None;
        }
        let mut v = Vec::with_capacity(len);
        // SAFETY: the source is inside the mapping (checked); the
        // destination has capacity `len`; they do not overlap (one is
        // private heap memory). Bytes another process may be writing are
        // only read when the protocol says they are settled.
        unsafe {
            ptr::copy_nonoverlapping(self.base.add(off), v.as_mut_ptr(), len);
            v.set_len(len);
        }
        Some(v)
    }
    /// Copies `src` to board offset `off`; false (nothing written) if that
    /// is not inside the board.
    pub(crate) fn write(&self, off: usize, src: &[u8]) -> bool {
        if off.checked_add(src.len()).is_none_or(|end| end > self.geo.bytes()) {
            return false;
        }
        // SAFETY: inside the mapping (checked), which is writable (init and
        // open refuse read-only segments); the region belongs to the writer
        // by the ring protocol; `src` is private memory.
        unsafe { ptr::copy_nonoverlapping(src.as_ptr(), self.base.add(off), src.len()) }
        true
    }

    // -- owner and shutdown ----------------------------------------------------

    /// The pool's process: (pid, start time).
    pub fn owner(&self) -> (u32, u64) {
        (self.field(header::OWNER_PID).load(Relaxed), self.field(header::OWNER_START).load(Relaxed))
    }
    pub fn owner_alive(&self) -> bool {
        let (pid, start) = self.owner();
        process::is_alive(pid, start)
    }

    /// Tells the workers to leave, and wakes them.
    pub fn shutdown(&self) {
        self.field(header::SHUTDOWN).store(1, SeqCst);
        self.field(header::WORK_SEQ).fetch_add(1, SeqCst);
        wake(self.field(header::WORK_SEQ), ALL);
        for w in self.worker_ids() {
            self.worker(w, worker::SPACE_SEQ).fetch_add(1, SeqCst);
            wake(self.worker(w, worker::SPACE_SEQ), ALL);
        }
    }
    pub fn is_shutdown(&self) -> bool {
        self.field(header::SHUTDOWN).load(Acquire) != 0
    }

    // -- completions -----------------------------------------------------------

    /// Items completed so far (the progress counter).
    pub fn completed(&self) -> u64 {
        self.field(header::COMPLETED).load(Acquire)
    }

    /// The completion sequence: pass it to [`wait_done`](Board::wait_done).
    pub fn done_seq(&self) -> u32 {
        self.field(header::DONE_SEQ).load(SeqCst)
    }

    /// Sleeps until a task completes after `seen` was read, or `timeout`.
    /// Polls first while results have been coming quickly.
    pub fn wait_done(&self, seen: u32, timeout: Duration) {
        let seq = self.field(header::DONE_SEQ);
        let start = Instant::now();
        if self.quick.load(Relaxed) {
            for _ in 0..SPIN {
                if seq.load(Acquire) != seen {
                    return;
                }
                std::thread::yield_now();
            }
        }
        let sleepers = self.field(header::DONE_SLEEPERS);
        sleepers.fetch_add(1, SeqCst);
        if seq.load(SeqCst) == seen {
            sleep(seq, seen, timeout);
        }
        sleepers.fetch_sub(1, SeqCst);
        self.quick.store(start.elapsed() < QUICK_WAIT, Relaxed);
    }

    /// Wakes every thread in [`wait_done`](Board::wait_done) (for a parent
    /// thread that collected results meant for another).
    pub fn notify_done(&self) {
        self.field(header::DONE_SEQ).fetch_add(1, SeqCst);
        if self.field(header::DONE_SLEEPERS).load(SeqCst) > 0 {
            wake(self.field(header::DONE_SEQ), ALL);
        }
    }

    /// Counters for diagnostics: (published, claimed hint, items completed,
    /// workers asleep waiting for work, workers waiting for ring space).
    pub fn counters(&self) -> (u64, u64, u64, u32, u32) {
        let waiting = self.worker_ids().filter(|&w| self.worker(w, worker::SPACE_WAIT).load(Relaxed) != 0);
        (
            self.field(header::PUBLISHED).load(Acquire),
            self.field(header::CLAIMED).load(Acquire),
            self.completed(),
            self.field(header::WORK_SLEEPERS).load(Relaxed),
            waiting.count() as u32,
        )
    }

    // -- workers ---------------------------------------------------------------

    /// The process registered in worker slot `w` (0 for none).
    pub fn worker_pid(&self, w: u32) -> Result<u32, NoSuchWorker> {
        Ok(self.worker(self.worker_id(w)?, worker::PID).load(Acquire))
    }
    /// Tasks worker slot `w` has completed.
    pub fn worker_done(&self, w: u32) -> Result<u64, NoSuchWorker> {
        Ok(self.worker(self.worker_id(w)?, worker::DONE).load(Relaxed))
    }

    // -- jobs ------------------------------------------------------------------

    /// The function of job `id`. Only meaningful while a task of the job is
    /// claimed (the entry is not reused before).
    pub fn job(&self, id: u64) -> Result<Vec<u8>, JobError> {
        let e = self.job_at(id).ok_or(JobError::NoJob(id))?;
        // A length beyond the entry is cut to it: the bytes then fail to
        // unpickle, which the caller reports.
        let len = (self.job_field(e, job::LEN).load(Acquire) as usize).min(JOB_BYTES - JOB_HEAD);
        self.read(self.job_offset(e) + JOB_HEAD, len).ok_or(JobError::NoJob(id))
    }

    /// Copies `func` into entry `e`'s function bytes; false if it is too long.
    pub(crate) fn write_job(&self, e: JobEntry, func: &[u8]) -> bool {
        func.len() <= JOB_BYTES - JOB_HEAD && self.write(self.job_offset(e) + JOB_HEAD, func)
    }

    pub(crate) fn job_at(&self, id: u64) -> Option<JobEntry> {
        self.job_entries().find(|&e| self.job_field(e, job::ID).load(Acquire) == id)
    }

    pub(crate) fn job_cancelled(&self, id: u64) -> bool {
        self.job_at(id).is_some_and(|e| self.job_field(e, job::CANCELLED).load(Acquire) != 0)
    }

    /// Whether job `id` is open on the board.
    pub fn has_job(&self, id: u64) -> bool {
        id != 0 && self.job_at(id).is_some()
    }

    /// Items of job `id` completed so far (0 for a job not on the board).
    pub fn job_completed(&self, id: u64) -> u64 {
        self.job_at(id).map_or(0, |e| self.job_field(e, job::DONE).load(Acquire))
    }
}

pub(crate) fn wake(word: &AtomicU32, n: u32) {
    let _ = futex::wake(word, futex::Flags::empty(), n);
}

/// Sleeps on `word` while it holds `seen`, at most `timeout`.
pub(crate) fn sleep(word: &AtomicU32, seen: u32, timeout: Duration) {
    let secs = i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX);
    let ts = rustix::fs::Timespec { tv_sec: secs, tv_nsec: timeout.subsec_nanos().into() };
    let _ = futex::wait(word, futex::Flags::empty(), seen, Some(&ts));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_poll_only_while_results_come_quickly() {
        let geo = Geometry { workers: 1, capacity: 2, jobs: 1, input_len: 4096, output_len: 4096 };
        let seg = Segment::create(&Board::header(&geo).unwrap(), None).unwrap();
        let seg = seg.publish();
        let b = Board::init(seg, geo).unwrap();
        assert!(b.quick.load(Relaxed), "a new board polls first");
        b.wait_done(b.done_seq(), Duration::from_millis(5));
        assert!(!b.quick.load(Relaxed), "a wait that timed out is long");
        let seen = b.done_seq();
        b.notify_done();
        b.wait_done(seen, Duration::from_secs(5));
        assert!(b.quick.load(Relaxed), "a result already there ends the wait at once");
    }
}
