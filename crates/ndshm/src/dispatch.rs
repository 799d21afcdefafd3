//! The dispatch board: a task queue in shared memory between one parent
//! (the pool) and its worker processes. See `docs/ENGINE.md`.
//!
//! The board lies in the data of an anonymous segment:
//!
//! ```text
//! 0          header (one page): magic, geometry, owner, counters, futex words
//! PAGE       worker slots   [workers]  × 64 B
//!            task slots     [capacity] × 64 B, task n in slot n % capacity
//!            job table      [jobs]     × JOB_BYTES: a job's function, pickled
//!            input ring     written by the parent
//!            output rings   [workers], each written by one worker
//! ```
//!
//! A task slot's state word packs `task number << 16 | worker << 8 | state`:
//! workers claim a task by compare-and-swap on it, so the claim and the
//! record of who holds the task are one atomic step, and a worker that dies
//! at any instant leaves its task findable. The `claimed` counter is only a
//! hint of where to look next.
//!
//! Every word that two processes touch is an atomic; payload bytes are
//! copied in and out through raw pointers, never through slices of shared
//! memory.

use crate::error::SegmentError;
use crate::format::{Header, PAGE};
use crate::{process, DType, Segment};
use rustix::thread::futex;
use std::collections::VecDeque;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::*};
use std::time::{Duration, Instant};
use thiserror::Error;

const MAGIC: u64 = u64::from_le_bytes(*b"NDSHMBRD");
const VERSION: u32 = 1;
const SLOT: usize = 64;
/// Bytes of one job-table entry; a job's function larger than
/// `JOB_BYTES - JOB_HEAD` is stored elsewhere by the caller (a segment handle).
pub const JOB_BYTES: usize = 4096;
/// Bytes before a job's function in its entry: id u64, len u32, flags u32, items done u64.
pub const JOB_HEAD: usize = 24;
/// At most this many workers per board.
pub const MAX_WORKERS: u32 = 255;
/// Rounds of polling before a waiter sleeps on a futex.
const SPIN: u32 = 64;
/// A wait for results that ended sooner than this makes the next one poll
/// before it sleeps; after a longer one the next sleeps at once, so a
/// parent waiting on long tasks does not take CPU from the workers (its
/// polling preempted them three times as often, measured on 2 CPUs).
const QUICK_WAIT: Duration = Duration::from_millis(1);
/// Wake every waiter (the kernel reads the count as an int).
const ALL: u32 = i32::MAX as u32;

/// Task states.
pub mod state {
    pub const EMPTY: u8 = 0;
    pub const READY: u8 = 1;
    pub const CLAIMED: u8 = 2;
    /// Finished; the output holds the result.
    pub const DONE: u8 = 3;
    /// Finished with an error; the output holds it.
    pub const FAILED: u8 = 4;
    /// Not run: its job was cancelled.
    pub const SKIPPED: u8 = 5;
    /// Never set on the board: the parent's verdict on a task whose worker died.
    pub const DIED: u8 = 6;
}

/// Job-table flags.
pub mod job_flags {
    /// The entry holds a handle to where the function is, not the function.
    pub const SPILLED: u32 = 1;
    /// Tasks carry their own function (`submit`).
    pub const DIRECT: u32 = 2;
    /// Remaining tasks of the job are skipped.
    pub const CANCELLED: u32 = 4;
}

// Header offsets.
const H_MAGIC: usize = 0;
const H_VERSION: usize = 8;
const H_WORKERS: usize = 12;
const H_CAPACITY: usize = 16;
const H_JOBS: usize = 20;
const H_INPUT_LEN: usize = 24;
const H_OUTPUT_LEN: usize = 32;
const H_OWNER_PID: usize = 40;
const H_OWNER_START: usize = 48;
const H_SHUTDOWN: usize = 64;
const H_WORK_SEQ: usize = 68;
const H_WORK_SLEEPERS: usize = 72;
const H_DONE_SEQ: usize = 76;
const H_DONE_SLEEPERS: usize = 80;
const H_PUBLISHED: usize = 88;
const H_CLAIMED: usize = 96;
const H_COMPLETED: usize = 104;
const H_IN_HEAD: usize = 112;
const H_IN_TAIL: usize = 120;

// Worker slot offsets.
const W_PID: usize = 0;
const W_SPACE_SEQ: usize = 4;
const W_START: usize = 8;
const W_OUT_HEAD: usize = 16;
const W_OUT_TAIL: usize = 24;
const W_DONE: usize = 32;
const W_SPACE_WAIT: usize = 40;

// Task slot offsets.
const T_WORD: usize = 0;
const T_JOB: usize = 8;
const T_TAG: usize = 16;
const T_IN_POS: usize = 24;
const T_IN_LEN: usize = 32;
const T_COUNT: usize = 36;
const T_OUT_POS: usize = 40;
const T_OUT_LEN: usize = 48;
const T_ELAPSED: usize = 56;

// Ring record header: len u32, kind u32.
const R_LIVE: u32 = 1;
const R_FREED: u32 = 2;
const R_PAD: u32 = 3;

/// Problems with a board.
#[derive(Debug, Error)]
pub enum DispatchError {
    #[error("not a dispatch board: {0}")]
    BadBoard(String),
    #[error("invalid board geometry: {0}")]
    Geometry(String),
    #[error("a payload of {len} bytes does not fit the board (at most {max})")]
    TooBig { len: usize, max: usize },
    #[error("no job {0} on the board")]
    NoJob(u64),
    #[error(transparent)]
    Segment(#[from] SegmentError),
}

type Result<T> = std::result::Result<T, DispatchError>;

/// Sizes of a board.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub workers: u32,
    /// Task slots: the most tasks in flight at once. A power of two.
    pub capacity: u32,
    /// Job-table entries: the most jobs open at once.
    pub jobs: u32,
    /// Bytes of the input ring.
    pub input_len: u64,
    /// Bytes of each worker's output ring.
    pub output_len: u64,
}

impl Geometry {
    /// A board for `workers` workers with default sizes.
    pub fn for_workers(workers: u32) -> Geometry {
        Geometry { workers, capacity: 1024, jobs: 16, input_len: 4 << 20, output_len: 1 << 20 }
    }

    fn check(&self) -> Result<()> {
        let bad = |m: &str| Err(DispatchError::Geometry(m.into()));
        if self.workers == 0 || self.workers > MAX_WORKERS {
            return bad("workers must be 1 to 255");
        }
        if !self.capacity.is_power_of_two() || self.capacity < 2 || self.capacity > 1 << 20 {
            return bad("capacity must be a power of two from 2 to 2**20");
        }
        if self.jobs == 0 || self.jobs > 1024 {
            return bad("jobs must be 1 to 1024");
        }
        for len in [self.input_len, self.output_len] {
            if len < 4096 || len % 4096 != 0 || len > 1 << 32 {
                return bad("ring sizes must be multiples of 4096 from 4096 to 4 GiB");
            }
        }
        Ok(())
    }

    fn workers_at(&self) -> usize {
        PAGE
    }
    fn tasks_at(&self) -> usize {
        PAGE + (self.workers as usize * SLOT).next_multiple_of(PAGE)
    }
    fn jobs_at(&self) -> usize {
        self.tasks_at() + (self.capacity as usize * SLOT).next_multiple_of(PAGE)
    }
    fn input_at(&self) -> usize {
        self.jobs_at() + self.jobs as usize * JOB_BYTES
    }
    fn output_at(&self, w: u32) -> usize {
        self.input_at() + self.input_len as usize + w as usize * self.output_len as usize
    }
    /// Bytes of the whole board.
    pub fn len(&self) -> usize {
        self.output_at(self.workers)
    }
    /// Always false: a board has at least a header.
    pub fn is_empty(&self) -> bool {
        false
    }
    /// The largest payload the input ring takes; larger ones go elsewhere.
    pub fn max_input(&self) -> usize {
        self.input_len as usize / 4
    }
    /// The largest payload an output ring takes.
    pub fn max_output(&self) -> usize {
        self.output_len as usize / 4
    }
}

/// A finished (or failed, skipped, orphaned) task, as the parent collects it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub task: u64,
    pub job: u64,
    pub tag: u64,
    pub count: u32,
    pub state: u8,
    /// The worker that ran it.
    pub worker: u32,
    pub payload: Vec<u8>,
    pub elapsed_ns: u64,
}

/// A task as a worker claims it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub task: u64,
    pub job: u64,
    pub tag: u64,
    pub count: u32,
    pub payload: Vec<u8>,
}

/// What a worker's wait for work ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    Task(Claimed),
    /// Nothing to do before the timeout.
    Idle,
    /// The pool is shutting down.
    Shutdown,
}

fn pack(task: u64, worker: u32, st: u8) -> u64 {
    (task << 16) | (u64::from(worker) << 8) | u64::from(st)
}
fn task_of(word: u64) -> u64 {
    word >> 16
}
fn worker_of(word: u64) -> u32 {
    ((word >> 8) & 0xff) as u32
}
fn state_of(word: u64) -> u8 {
    word as u8
}

/// A board mapped in this process.
pub struct Board {
    seg: Segment,
    base: *mut u8,
    /// Bytes mapped at `base`: every access is checked against it.
    len: usize,
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
    /// `geo.len()` bytes of `|u1`, owned by this process.
    pub fn init(seg: Segment, geo: Geometry) -> Result<Board> {
        geo.check()?;
        Self::check_segment(&seg, geo.len())?;
        let board = Board::mapped(seg, geo);
        if board.u64(H_MAGIC).load(Acquire) != 0 {
            return Err(DispatchError::BadBoard("the segment is not fresh".into()));
        }
        let (pid, start) = process::current();
        board.u32(H_WORKERS).store(geo.workers, Relaxed);
        board.u32(H_CAPACITY).store(geo.capacity, Relaxed);
        board.u32(H_JOBS).store(geo.jobs, Relaxed);
        board.u64(H_INPUT_LEN).store(geo.input_len, Relaxed);
        board.u64(H_OUTPUT_LEN).store(geo.output_len, Relaxed);
        board.u32(H_OWNER_PID).store(pid, Relaxed);
        board.u64(H_OWNER_START).store(start, Relaxed);
        board.u32(H_VERSION).store(VERSION, Relaxed);
        board.u64(H_MAGIC).store(MAGIC, Release);
        Ok(board)
    }

    fn mapped(seg: Segment, geo: Geometry) -> Board {
        Board { base: seg.data_ptr(), len: seg.data_len(), seg, geo, quick: AtomicBool::new(true) }
    }

    /// Opens a board another process laid out, checking its geometry
    /// against the segment before touching anything else.
    pub fn open(seg: Segment) -> Result<Board> {
        if seg.is_readonly() {
            return Err(DispatchError::BadBoard("the segment is read-only".into()));
        }
        if seg.data_len() < PAGE {
            return Err(DispatchError::BadBoard("too small".into()));
        }
        let probe = Board::mapped(seg, Geometry::for_workers(1));
        if probe.u64(H_MAGIC).load(Acquire) != MAGIC {
            return Err(DispatchError::BadBoard("bad magic".into()));
        }
        if probe.u32(H_VERSION).load(Relaxed) != VERSION {
            return Err(DispatchError::BadBoard("unknown version".into()));
        }
        let geo = Geometry {
            workers: probe.u32(H_WORKERS).load(Relaxed),
            capacity: probe.u32(H_CAPACITY).load(Relaxed),
            jobs: probe.u32(H_JOBS).load(Relaxed),
            input_len: probe.u64(H_INPUT_LEN).load(Relaxed),
            output_len: probe.u64(H_OUTPUT_LEN).load(Relaxed),
        };
        geo.check()?;
        Self::check_segment(&probe.seg, geo.len())?;
        Ok(Board { geo, ..probe })
    }

    fn check_segment(seg: &Segment, len: usize) -> Result<()> {
        let h = seg.header();
        if h.dtype != DType::from_typestr("|u1").expect("valid") || h.shape.len() != 1 || seg.data_len() != len {
            return Err(DispatchError::BadBoard(format!(
                "a board needs a 1-d |u1 segment of {len} bytes, not {} bytes",
                seg.data_len()
            )));
        }
        Ok(())
    }

    /// The header a board segment of `geo` needs.
    pub fn header(geo: &Geometry) -> Result<Header> {
        geo.check()?;
        Ok(Header { dtype: DType::from_typestr("|u1").expect("valid"), shape: vec![geo.len()], fortran_order: false })
    }

    pub fn segment(&self) -> &Segment {
        &self.seg
    }
    pub fn geometry(&self) -> Geometry {
        self.geo
    }

    fn word_ptr(&self, off: usize, size: usize) -> *mut u8 {
        assert!(off % size == 0 && off + size <= self.len, "board word {off}");
        // SAFETY: in bounds of the mapping, as just checked.
        unsafe { self.base.add(off) }
    }
    fn u32(&self, off: usize) -> &AtomicU32 {
        // SAFETY: aligned and in bounds (word_ptr checks); the atomic lives
        // in shared memory that outlives &self; atomics may alias across
        // processes.
        unsafe { &*(self.word_ptr(off, 4) as *const AtomicU32) }
    }
    fn u64(&self, off: usize) -> &AtomicU64 {
        // SAFETY: as in `u32`.
        unsafe { &*(self.word_ptr(off, 8) as *const AtomicU64) }
    }
    fn worker(&self, w: u32, off: usize) -> usize {
        assert!(w < self.geo.workers, "worker {w}");
        self.geo.workers_at() + w as usize * SLOT + off
    }
    fn slot(&self, task: u64, off: usize) -> usize {
        self.geo.tasks_at() + (task as usize & (self.geo.capacity as usize - 1)) * SLOT + off
    }
    fn job_entry(&self, entry: u32) -> usize {
        assert!(entry < self.geo.jobs, "job entry {entry}");
        self.geo.jobs_at() + entry as usize * JOB_BYTES
    }

    /// Copies `len` bytes at board offset `off` out.
    fn read(&self, off: usize, len: usize) -> Vec<u8> {
        assert!(off.checked_add(len).is_some_and(|end| end <= self.len), "board read {off}+{len}");
        let mut v = Vec::with_capacity(len);
        // SAFETY: the source is inside the mapping (checked); the
        // destination has capacity `len`; they do not overlap (one is
        // private heap memory). Bytes another process may be writing are
        // only read when the protocol says they are settled.
        unsafe {
            ptr::copy_nonoverlapping(self.base.add(off), v.as_mut_ptr(), len);
            v.set_len(len);
        }
        v
    }
    /// Copies `src` to board offset `off`.
    fn write(&self, off: usize, src: &[u8]) {
        assert!(off.checked_add(src.len()).is_some_and(|end| end <= self.len), "board write {off}");
        // SAFETY: inside the mapping (checked), which is writable (open and
        // init refuse read-only segments); the region belongs to the writer
        // by the ring protocol; `src` is private memory.
        unsafe { ptr::copy_nonoverlapping(src.as_ptr(), self.base.add(off), src.len()) }
    }

    /// The pool's process: (pid, start time).
    pub fn owner(&self) -> (u32, u64) {
        (self.u32(H_OWNER_PID).load(Relaxed), self.u64(H_OWNER_START).load(Relaxed))
    }
    pub fn owner_alive(&self) -> bool {
        let (pid, start) = self.owner();
        process::is_alive(pid, start)
    }

    /// Tells the workers to leave, and wakes them.
    pub fn shutdown(&self) {
        self.u32(H_SHUTDOWN).store(1, SeqCst);
        self.u32(H_WORK_SEQ).fetch_add(1, SeqCst);
        wake(self.u32(H_WORK_SEQ), ALL);
        for w in 0..self.geo.workers {
            self.u32(self.worker(w, W_SPACE_SEQ)).fetch_add(1, SeqCst);
            wake(self.u32(self.worker(w, W_SPACE_SEQ)), ALL);
        }
    }
    pub fn is_shutdown(&self) -> bool {
        self.u32(H_SHUTDOWN).load(Acquire) != 0
    }

    /// Items completed so far (the progress counter).
    pub fn completed(&self) -> u64 {
        self.u64(H_COMPLETED).load(Acquire)
    }

    /// The completion sequence: pass it to [`wait_done`](Board::wait_done).
    pub fn done_seq(&self) -> u32 {
        self.u32(H_DONE_SEQ).load(SeqCst)
    }

    /// Sleeps until a task completes after `seen` was read, or `timeout`.
    /// Polls first while results have been coming quickly.
    pub fn wait_done(&self, seen: u32, timeout: Duration) {
        let seq = self.u32(H_DONE_SEQ);
        let start = Instant::now();
        if self.quick.load(Relaxed) {
            for _ in 0..SPIN {
                if seq.load(Acquire) != seen {
                    return;
                }
                std::thread::yield_now();
            }
        }
        let sleepers = self.u32(H_DONE_SLEEPERS);
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
        self.u32(H_DONE_SEQ).fetch_add(1, SeqCst);
        if self.u32(H_DONE_SLEEPERS).load(SeqCst) > 0 {
            wake(self.u32(H_DONE_SEQ), ALL);
        }
    }

    /// Counters for diagnostics: (published, claimed hint, items completed,
    /// workers asleep waiting for work, workers waiting for ring space).
    pub fn counters(&self) -> (u64, u64, u64, u32, u32) {
        let waiting = (0..self.geo.workers).filter(|&w| self.u32(self.worker(w, W_SPACE_WAIT)).load(Relaxed) != 0);
        (
            self.u64(H_PUBLISHED).load(Acquire),
            self.u64(H_CLAIMED).load(Acquire),
            self.completed(),
            self.u32(H_WORK_SLEEPERS).load(Relaxed),
            waiting.count() as u32,
        )
    }

    /// Records that worker `w` is the process `pid` started at `start`.
    pub fn register_worker(&self, w: u32) {
        let (pid, start) = process::current();
        self.u64(self.worker(w, W_START)).store(start, Relaxed);
        self.u32(self.worker(w, W_PID)).store(pid, Release);
    }
    /// The process registered in worker slot `w`, if any.
    pub fn worker_pid(&self, w: u32) -> u32 {
        self.u32(self.worker(w, W_PID)).load(Acquire)
    }
    /// Tasks worker slot `w` has completed.
    pub fn worker_done(&self, w: u32) -> u64 {
        self.u64(self.worker(w, W_DONE)).load(Relaxed)
    }

    /// The function of job `id`: (flags, bytes). Only meaningful while a
    /// task of the job is claimed (the entry is not reused before).
    pub fn job(&self, id: u64) -> Result<(u32, Vec<u8>)> {
        let at = self.job_at(id).ok_or(DispatchError::NoJob(id))?;
        let len = (self.u32(at + 8).load(Relaxed) as usize).min(JOB_BYTES - JOB_HEAD);
        Ok((self.u32(at + 12).load(Acquire), self.read(at + JOB_HEAD, len)))
    }

    fn job_at(&self, id: u64) -> Option<usize> {
        (0..self.geo.jobs).map(|e| self.job_entry(e)).find(|&at| self.u64(at).load(Acquire) == id)
    }

    fn job_cancelled(&self, id: u64) -> bool {
        self.job_at(id).is_some_and(|at| self.u32(at + 12).load(Acquire) & job_flags::CANCELLED != 0)
    }

    /// Whether job `id` is open on the board.
    pub fn has_job(&self, id: u64) -> bool {
        id != 0 && self.job_at(id).is_some()
    }

    /// Items of job `id` completed so far (0 for a job not on the board).
    pub fn job_completed(&self, id: u64) -> u64 {
        self.job_at(id).map_or(0, |at| self.u64(at + 16).load(Acquire))
    }
}

fn wake(word: &AtomicU32, n: u32) {
    let _ = futex::wake(word, futex::Flags::empty(), n);
}

fn sleep(word: &AtomicU32, seen: u32, timeout: Duration) {
    let ts = rustix::fs::Timespec { tv_sec: timeout.as_secs() as i64, tv_nsec: timeout.subsec_nanos() as _ };
    let _ = futex::wait(word, futex::Flags::empty(), seen, Some(&ts));
}

/// A byte ring of records `[len u32, kind u32, payload, pad to 8]` at
/// `base` in the board, `len` bytes long; positions grow forever and are
/// taken modulo `len`. One side allocates (moves `head`), the other frees
/// records in any order; `tail` moves over the freed prefix.
struct Ring<'a> {
    board: &'a Board,
    base: usize,
    len: u64,
}

fn record_len(payload: usize) -> u64 {
    8 + (payload as u64).next_multiple_of(8)
}

impl Ring<'_> {
    fn at(&self, pos: u64) -> usize {
        self.base + (pos % self.len) as usize
    }
    /// Space for `payload` bytes given `head`/`tail`: (new head, payload position).
    fn alloc(&self, head: u64, tail: u64, payload: usize) -> Option<(u64, u64)> {
        if !self.fits(head, tail, payload) {
            return None;
        }
        let need = record_len(payload);
        let off = head % self.len;
        let pad = if off + need > self.len { self.len - off } else { 0 };
        if pad > 0 {
            self.board.u32(self.at(head)).store((pad - 8) as u32, Relaxed);
            self.board.u32(self.at(head) + 4).store(R_PAD, Release);
        }
        let rec = head + pad;
        self.board.u32(self.at(rec)).store(payload as u32, Relaxed);
        self.board.u32(self.at(rec) + 4).store(R_LIVE, Release);
        Some((rec + need, rec + 8))
    }
    /// Frees the record whose payload is at `pos`.
    fn free(&self, pos: u64) {
        self.board.u32(self.at(pos - 8) + 4).store(R_FREED, Release);
    }
    /// The tail moved over every freed record from `tail` up to `head`.
    fn advance(&self, mut tail: u64, head: u64) -> u64 {
        while tail < head {
            let at = self.at(tail);
            let kind = self.board.u32(at + 4).load(Acquire);
            if kind != R_FREED && kind != R_PAD {
                break;
            }
            let len = u64::from(self.board.u32(at).load(Relaxed));
            let step = if kind == R_PAD { len + 8 } else { record_len(len as usize) };
            tail += step;
        }
        tail.min(head)
    }
}

/// The parent's side of a board: publishes tasks, collects results.
/// Not shared between threads (wrap it in a lock).
pub struct Parent {
    board: std::sync::Arc<Board>,
    /// Next task number.
    next: u64,
    /// Lowest task number not yet collected.
    low: u64,
    /// Collected flags for tasks `low..next`.
    collected: VecDeque<bool>,
    /// Job-table entries in use: (entry, job id).
    jobs: Vec<Option<u64>>,
}

impl Parent {
    pub fn new(board: std::sync::Arc<Board>) -> Parent {
        let jobs = vec![None; board.geo.jobs as usize];
        Parent { board, next: 0, low: 0, collected: VecDeque::new(), jobs }
    }

    pub fn board(&self) -> &Board {
        &self.board
    }

    fn input(&self) -> Ring<'_> {
        Ring { board: &self.board, base: self.board.geo.input_at(), len: self.board.geo.input_len }
    }
    fn output(&self, w: u32) -> Ring<'_> {
        Ring { board: &self.board, base: self.board.geo.output_at(w), len: self.board.geo.output_len }
    }

    /// Tasks published and not collected.
    pub fn in_flight(&self) -> u64 {
        self.next - self.low
    }

    /// Opens job `id` with its function bytes; false if the table is full.
    pub fn open_job(&mut self, id: u64, flags: u32, func: &[u8]) -> Result<bool> {
        if id == 0 {
            return Err(DispatchError::NoJob(0));
        }
        if func.len() > JOB_BYTES - JOB_HEAD {
            return Err(DispatchError::TooBig { len: func.len(), max: JOB_BYTES - JOB_HEAD });
        }
        let Some(e) = self.jobs.iter().position(Option::is_none) else { return Ok(false) };
        let at = self.board.job_entry(e as u32);
        self.board.write(at + JOB_HEAD, func);
        self.board.u64(at + 16).store(0, Relaxed);
        self.board.u32(at + 8).store(func.len() as u32, Relaxed);
        self.board.u32(at + 12).store(flags & !job_flags::CANCELLED, Relaxed);
        self.board.u64(at).store(id, Release);
        self.jobs[e] = Some(id);
        Ok(true)
    }

    /// Marks job `id` cancelled: workers skip its remaining tasks.
    pub fn cancel_job(&mut self, id: u64) {
        if let Some(e) = self.jobs.iter().position(|j| *j == Some(id)) {
            self.board.u32(self.board.job_entry(e as u32) + 12).fetch_or(job_flags::CANCELLED, Release);
        }
    }

    /// Frees job `id`'s entry; call once none of its tasks is in flight.
    pub fn close_job(&mut self, id: u64) {
        if let Some(e) = self.jobs.iter().position(|j| *j == Some(id)) {
            self.board.u64(self.board.job_entry(e as u32)).store(0, Release);
            self.jobs[e] = None;
        }
    }

    /// Publishes a task; `None` when the board is full (collect first).
    /// Does not wake workers: call [`wake_workers`](Parent::wake_workers)
    /// after a batch.
    pub fn publish(&mut self, job: u64, tag: u64, count: u32, payload: &[u8]) -> Result<Option<u64>> {
        let max = self.board.geo.max_input();
        if payload.len() > max {
            return Err(DispatchError::TooBig { len: payload.len(), max });
        }
        if self.next - self.low >= u64::from(self.board.geo.capacity) {
            return Ok(None);
        }
        let b = &*self.board;
        let head = b.u64(H_IN_HEAD).load(Relaxed);
        let tail = b.u64(H_IN_TAIL).load(Relaxed);
        let Some((head, pos)) = self.input().alloc(head, tail, payload.len()) else { return Ok(None) };
        b.write(self.input().at(pos), payload);
        b.u64(H_IN_HEAD).store(head, Relaxed);
        let n = self.next;
        b.u64(b.slot(n, T_JOB)).store(job, Relaxed);
        b.u64(b.slot(n, T_TAG)).store(tag, Relaxed);
        b.u64(b.slot(n, T_IN_POS)).store(pos, Relaxed);
        b.u32(b.slot(n, T_IN_LEN)).store(payload.len() as u32, Relaxed);
        b.u32(b.slot(n, T_COUNT)).store(count, Relaxed);
        b.u64(b.slot(n, T_WORD)).store(pack(n, 0, state::READY), Release);
        self.next += 1;
        self.collected.push_back(false);
        b.u64(H_PUBLISHED).store(self.next, SeqCst);
        Ok(Some(n))
    }

    /// Withdraws task `n` if no worker has claimed it yet; true if it was
    /// withdrawn (it will not run and is not collected).
    pub fn cancel_task(&mut self, n: u64) -> bool {
        if n < self.low || n >= self.next || self.collected[(n - self.low) as usize] {
            return false;
        }
        let b = &*self.board;
        let ready = pack(n, 0, state::READY);
        if b.u64(b.slot(n, T_WORD)).compare_exchange(ready, pack(n, 0, state::SKIPPED), AcqRel, Acquire).is_err() {
            return false;
        }
        self.settle(n);
        true
    }

    /// The state of task `n` on the board, or None once it is collected.
    pub fn task_state(&self, n: u64) -> Option<u8> {
        if n < self.low || n >= self.next || self.collected[(n - self.low) as usize] {
            return None;
        }
        let b = &*self.board;
        Some(state_of(b.u64(b.slot(n, T_WORD)).load(Acquire)))
    }

    /// Wakes up to `n` sleeping workers.
    pub fn wake_workers(&self, n: u32) {
        let b = &*self.board;
        b.u32(H_WORK_SEQ).fetch_add(1, SeqCst);
        if b.u32(H_WORK_SLEEPERS).load(SeqCst) > 0 {
            wake(b.u32(H_WORK_SEQ), n);
        }
    }

    /// Takes task `n` off the board: frees its input and marks it collected.
    fn settle(&mut self, n: u64) {
        let b = &*self.board;
        self.input().free(b.u64(b.slot(n, T_IN_POS)).load(Relaxed));
        b.u64(b.slot(n, T_WORD)).store(pack(n, 0, state::EMPTY), Release);
        self.collected[(n - self.low) as usize] = true;
        while self.collected.front() == Some(&true) {
            self.collected.pop_front();
            self.low += 1;
        }
        let head = b.u64(H_IN_HEAD).load(Relaxed);
        let tail = self.input().advance(b.u64(H_IN_TAIL).load(Relaxed), head);
        b.u64(H_IN_TAIL).store(tail, Relaxed);
    }

    /// Collects every finished task into `out`; returns how many.
    pub fn poll(&mut self, out: &mut Vec<Completion>) -> usize {
        let before = out.len();
        let hint = self.board.u64(H_CLAIMED).load(Acquire).min(self.next);
        let mut freed = [false; MAX_WORKERS as usize + 1];
        for n in self.low..hint.max(self.low) {
            if n < self.low || self.collected[(n - self.low) as usize] {
                continue;
            }
            let b = &*self.board;
            let word = b.u64(b.slot(n, T_WORD)).load(Acquire);
            let st = state_of(word);
            if task_of(word) != n || !matches!(st, state::DONE | state::FAILED | state::SKIPPED) {
                continue;
            }
            let w = worker_of(word);
            let mut c = self.completion(n, st, w);
            if st != state::SKIPPED && w < b.geo.workers {
                let pos = b.u64(b.slot(n, T_OUT_POS)).load(Relaxed);
                let len = b.u32(b.slot(n, T_OUT_LEN)).load(Relaxed) as usize;
                let ring = self.output(w);
                if len <= b.geo.max_output() && pos >= 8 {
                    c.payload = b.read(ring.at(pos), len);
                    ring.free(pos);
                    freed[w as usize] = true;
                }
            }
            out.push(c);
            self.settle(n);
        }
        for w in 0..self.board.geo.workers {
            if freed[w as usize] {
                self.advance_output(w);
            }
        }
        out.len() - before
    }

    fn completion(&self, n: u64, st: u8, w: u32) -> Completion {
        let b = &*self.board;
        Completion {
            task: n,
            job: b.u64(b.slot(n, T_JOB)).load(Relaxed),
            tag: b.u64(b.slot(n, T_TAG)).load(Relaxed),
            count: b.u32(b.slot(n, T_COUNT)).load(Relaxed),
            state: st,
            worker: w,
            payload: Vec::new(),
            elapsed_ns: b.u64(b.slot(n, T_ELAPSED)).load(Relaxed),
        }
    }

    fn advance_output(&self, w: u32) {
        let b = &*self.board;
        let head = b.u64(b.worker(w, W_OUT_HEAD)).load(Acquire);
        let tail_at = b.worker(w, W_OUT_TAIL);
        let tail = self.output(w).advance(b.u64(tail_at).load(Relaxed), head);
        b.u64(tail_at).store(tail, Release);
        if b.u32(b.worker(w, W_SPACE_WAIT)).load(SeqCst) != 0 {
            b.u32(b.worker(w, W_SPACE_SEQ)).fetch_add(1, SeqCst);
            wake(b.u32(b.worker(w, W_SPACE_SEQ)), 1);
        }
    }

    /// Worker `w` died: collects what it finished, fails the task it held
    /// (state `DIED`, in `out`), and clears its slot for a successor.
    pub fn bury_worker(&mut self, w: u32, out: &mut Vec<Completion>) {
        self.poll(out);
        for n in self.low..self.next {
            if n < self.low || self.collected[(n - self.low) as usize] {
                continue;
            }
            let b = &*self.board;
            let word = b.u64(b.slot(n, T_WORD)).load(Acquire);
            if task_of(word) == n && state_of(word) == state::CLAIMED && worker_of(word) == w {
                out.push(self.completion(n, state::DIED, w));
                self.settle(n);
            }
        }
        // Whatever is left in its ring was never handed over: start afresh.
        let b = &*self.board;
        let head = b.u64(b.worker(w, W_OUT_HEAD)).load(Acquire);
        b.u64(b.worker(w, W_OUT_TAIL)).store(head, Release);
        b.u32(b.worker(w, W_PID)).store(0, Release);
        b.u32(b.worker(w, W_SPACE_WAIT)).store(0, Release);
        // Its claim may have stopped the hint short of a task it held.
        let _ = b.u64(H_CLAIMED).fetch_max(self.low, SeqCst);
    }
}

/// A worker's side of a board.
pub struct Worker {
    board: std::sync::Arc<Board>,
    w: u32,
}

impl Worker {
    pub fn new(board: std::sync::Arc<Board>, w: u32) -> Result<Worker> {
        if w >= board.geo.workers {
            return Err(DispatchError::Geometry(format!("worker {w} of {}", board.geo.workers)));
        }
        board.register_worker(w);
        Ok(Worker { board, w })
    }

    pub fn board(&self) -> &Board {
        &self.board
    }

    /// Claims the next task if one is ready, without waiting.
    pub fn try_claim(&self) -> Option<Claimed> {
        let b = &*self.board;
        loop {
            let c = b.u64(H_CLAIMED).load(Acquire);
            if c >= b.u64(H_PUBLISHED).load(Acquire) {
                return None;
            }
            let at = b.slot(c, T_WORD);
            let word = b.u64(at).load(Acquire);
            if task_of(word) != c {
                // A slot not yet rewritten for task c: the hint ran ahead of
                // a parent still publishing; there is nothing to claim yet.
                if task_of(word) < c {
                    return None;
                }
                let _ = b.u64(H_CLAIMED).compare_exchange(c, c + 1, AcqRel, Relaxed);
                continue;
            }
            if state_of(word) != state::READY {
                let _ = b.u64(H_CLAIMED).compare_exchange(c, c + 1, AcqRel, Relaxed);
                continue;
            }
            if b.u64(at).compare_exchange(word, pack(c, self.w, state::CLAIMED), AcqRel, Relaxed).is_err() {
                continue;
            }
            let _ = b.u64(H_CLAIMED).compare_exchange(c, c + 1, AcqRel, Relaxed);
            let job = b.u64(b.slot(c, T_JOB)).load(Relaxed);
            let count = b.u32(b.slot(c, T_COUNT)).load(Relaxed);
            if b.job_cancelled(job) {
                self.finish(c, state::SKIPPED, None, 0);
                continue;
            }
            let pos = b.u64(b.slot(c, T_IN_POS)).load(Relaxed);
            let len = (b.u32(b.slot(c, T_IN_LEN)).load(Relaxed) as usize).min(b.geo.max_input());
            let ring = Ring { board: b, base: b.geo.input_at(), len: b.geo.input_len };
            let payload = b.read(ring.at(pos), len);
            return Some(Claimed { task: c, job, tag: b.u64(b.slot(c, T_TAG)).load(Relaxed), count, payload });
        }
    }

    /// Claims the next task, waiting up to `timeout` for one.
    pub fn claim(&self, timeout: Duration) -> Claim {
        let b = &*self.board;
        let seq = b.u32(H_WORK_SEQ);
        let deadline = Instant::now() + timeout;
        loop {
            if b.is_shutdown() {
                return Claim::Shutdown;
            }
            let seen = seq.load(SeqCst);
            if let Some(t) = self.try_claim() {
                return Claim::Task(t);
            }
            for _ in 0..SPIN {
                std::thread::yield_now();
                if seq.load(Acquire) != seen {
                    break;
                }
            }
            if seq.load(Acquire) != seen {
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Claim::Idle;
            }
            let sleepers = b.u32(H_WORK_SLEEPERS);
            sleepers.fetch_add(1, SeqCst);
            if b.u64(H_CLAIMED).load(SeqCst) >= b.u64(H_PUBLISHED).load(SeqCst) && !b.is_shutdown() {
                sleep(seq, seen, left);
            }
            sleepers.fetch_sub(1, SeqCst);
        }
    }

    /// Hands back task `task`'s outcome (`DONE` or `FAILED`) with its
    /// payload, waiting for room in this worker's ring. Returns false if
    /// the pool shut down first.
    pub fn complete(&self, task: u64, st: u8, payload: &[u8], elapsed_ns: u64) -> Result<bool> {
        self.check_held(task, st, payload)?;
        let b = &*self.board;
        let space = b.u32(b.worker(self.w, W_SPACE_SEQ));
        let wait_flag = b.u32(b.worker(self.w, W_SPACE_WAIT));
        loop {
            let seen = space.load(SeqCst);
            if let Some(pos) = self.write_output(payload) {
                self.finish(task, st, Some((pos, payload.len())), elapsed_ns);
                return Ok(true);
            }
            if b.is_shutdown() {
                return Ok(false);
            }
            // Announce the wait, then look again: the parent either sees
            // the flag or freed space before we looked.
            wait_flag.store(1, SeqCst);
            if !self.output_fits(payload.len()) {
                sleep(space, seen, Duration::from_millis(100));
            }
            wait_flag.store(0, SeqCst);
        }
    }

    /// Like [`complete`](Worker::complete) without waiting: false when the
    /// ring has no room now (nothing is written then).
    pub fn try_complete(&self, task: u64, st: u8, payload: &[u8], elapsed_ns: u64) -> Result<bool> {
        self.check_held(task, st, payload)?;
        let Some(pos) = self.write_output(payload) else { return Ok(false) };
        self.finish(task, st, Some((pos, payload.len())), elapsed_ns);
        Ok(true)
    }

    fn check_held(&self, task: u64, st: u8, payload: &[u8]) -> Result<()> {
        let b = &*self.board;
        let max = b.geo.max_output();
        if payload.len() > max {
            return Err(DispatchError::TooBig { len: payload.len(), max });
        }
        let word = b.u64(b.slot(task, T_WORD)).load(Acquire);
        if word != pack(task, self.w, state::CLAIMED) || !matches!(st, state::DONE | state::FAILED) {
            return Err(DispatchError::BadBoard(format!("task {task} is not held by worker {}", self.w)));
        }
        Ok(())
    }

    fn output(&self) -> Ring<'_> {
        let b = &*self.board;
        Ring { board: b, base: b.geo.output_at(self.w), len: b.geo.output_len }
    }

    fn output_fits(&self, len: usize) -> bool {
        let b = &*self.board;
        let head = b.u64(b.worker(self.w, W_OUT_HEAD)).load(Relaxed);
        self.output().fits(head, b.u64(b.worker(self.w, W_OUT_TAIL)).load(SeqCst), len)
    }

    /// Copies `payload` into this worker's ring; its position, or None if
    /// there is no room.
    fn write_output(&self, payload: &[u8]) -> Option<u64> {
        let b = &*self.board;
        let head_at = b.worker(self.w, W_OUT_HEAD);
        let ring = self.output();
        let tail = b.u64(b.worker(self.w, W_OUT_TAIL)).load(Acquire);
        let (head, pos) = ring.alloc(b.u64(head_at).load(Relaxed), tail, payload.len())?;
        b.write(ring.at(pos), payload);
        b.u64(head_at).store(head, Release);
        Some(pos)
    }

    fn finish(&self, task: u64, st: u8, out: Option<(u64, usize)>, elapsed_ns: u64) {
        let b = &*self.board;
        let count = b.u32(b.slot(task, T_COUNT)).load(Relaxed);
        let (pos, len) = out.unwrap_or((0, 0));
        b.u64(b.slot(task, T_OUT_POS)).store(pos, Relaxed);
        b.u32(b.slot(task, T_OUT_LEN)).store(len as u32, Relaxed);
        b.u64(b.slot(task, T_ELAPSED)).store(elapsed_ns, Relaxed);
        b.u64(b.slot(task, T_WORD)).store(pack(task, self.w, st), Release);
        b.u64(H_COMPLETED).fetch_add(u64::from(count), AcqRel);
        if let Some(at) = b.job_at(b.u64(b.slot(task, T_JOB)).load(Relaxed)) {
            b.u64(at + 16).fetch_add(u64::from(count), AcqRel);
        }
        b.u64(b.worker(self.w, W_DONE)).fetch_add(1, Relaxed);
        b.notify_done();
    }
}

impl Ring<'_> {
    fn fits(&self, head: u64, tail: u64, payload: usize) -> bool {
        let need = record_len(payload);
        let off = head % self.len;
        let pad = if off + need > self.len { self.len - off } else { 0 };
        head + pad + need - tail <= self.len
    }
}

/// Ends this process when the board's owner is gone, from a thread of its
/// own, so a worker busy in a long task leaves too. The thread sleeps on a
/// pidfd of the owner (readable when it exits: no wake-ups while it lives),
/// or checks every `interval` where pidfds are not available.
pub fn exit_with_owner(board: std::sync::Arc<Board>, interval: Duration) {
    std::thread::Builder::new()
        .name("ndshm-owner-watch".into())
        .spawn(move || {
            if let Some(pidfd) = owner_pidfd(&board) {
                let mut fds = [rustix::event::PollFd::new(&pidfd, rustix::event::PollFlags::IN)];
                while let Err(rustix::io::Errno::INTR) = rustix::event::poll(&mut fds, None) {}
            }
            while board.owner_alive() {
                std::thread::sleep(interval);
            }
            // SAFETY: _exit ends the process at once, running nothing of
            // this process's state; that is the point.
            unsafe { libc::_exit(0) };
        })
        .expect("spawn the owner watch thread");
}

/// A pidfd of the board's owner, checked to be that process (pid and start
/// time) after it was opened, so a reused pid cannot stand in for it.
fn owner_pidfd(board: &Board) -> Option<std::os::fd::OwnedFd> {
    let pid = rustix::process::Pid::from_raw(board.owner().0 as i32)?;
    let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()?;
    board.owner_alive().then_some(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn board(geo: Geometry) -> Arc<Board> {
        let seg = Segment::create(&Board::header(&geo).unwrap(), None).unwrap().publish();
        Arc::new(Board::init(seg, geo).unwrap())
    }

    fn small() -> Geometry {
        Geometry { workers: 2, capacity: 8, jobs: 2, input_len: 4096, output_len: 4096 }
    }

    #[test]
    fn waits_poll_only_while_results_come_quickly() {
        let b = board(small());
        assert!(b.quick.load(Relaxed), "a new board polls first");
        b.wait_done(b.done_seq(), Duration::from_millis(5));
        assert!(!b.quick.load(Relaxed), "a wait that timed out is long");
        let seen = b.done_seq();
        b.notify_done();
        b.wait_done(seen, Duration::from_secs(5));
        assert!(b.quick.load(Relaxed), "a result already there ends the wait at once");
    }

    #[test]
    fn publish_claim_complete_collect() {
        let b = board(small());
        let mut p = Parent::new(b.clone());
        assert!(p.open_job(7, 0, b"fn").unwrap());
        assert_eq!(b.job(7).unwrap(), (0, b"fn".to_vec()));
        let w = Worker::new(b.clone(), 1).unwrap();
        assert_eq!(w.claim(Duration::ZERO), Claim::Idle);
        for i in 0..3u64 {
            assert_eq!(p.publish(7, i * 10, 2, format!("in{i}").as_bytes()).unwrap(), Some(i));
        }
        let mut out = Vec::new();
        for i in 0..3u64 {
            let Claim::Task(t) = w.claim(Duration::ZERO) else { panic!() };
            assert_eq!((t.task, t.job, t.tag, t.count), (i, 7, i * 10, 2));
            assert_eq!(t.payload, format!("in{i}").into_bytes());
            // Only the task completed in the round before is collected.
            assert_eq!(p.poll(&mut out), usize::from(i > 0), "claimed is not done");
            w.complete(t.task, state::DONE, format!("out{i}").as_bytes(), 5).unwrap();
        }
        assert_eq!(p.poll(&mut out), 1);
        assert_eq!(out.iter().map(|c| c.task).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(out[2].payload, b"out2");
        assert_eq!(out[2].worker, 1);
        assert_eq!(b.completed(), 6);
        assert_eq!(b.job_completed(7), 6);
        assert_eq!(p.in_flight(), 0);
        assert_eq!(w.claim(Duration::from_millis(1)), Claim::Idle);
    }

    #[test]
    fn rings_wrap_and_fill() {
        let b = board(small());
        let mut p = Parent::new(b.clone());
        p.open_job(1, 0, b"").unwrap();
        let w = Worker::new(b.clone(), 0).unwrap();
        let big = vec![0xabu8; 1000];
        assert!(matches!(p.publish(1, 0, 1, &[0; 1025]), Err(DispatchError::TooBig { .. })));
        let mut out = Vec::new();
        for round in 0..50u64 {
            // Four records of 1008 bytes fill the 4096-byte ring.
            let mut got = 0;
            while p.publish(1, round, 1, &big).unwrap().is_some() {
                got += 1;
            }
            assert!((3..=4).contains(&got), "{got}");
            while let Claim::Task(t) = w.claim(Duration::ZERO) {
                assert_eq!(t.payload, big);
                w.complete(t.task, state::DONE, &big[..900], 0).unwrap();
            }
            out.clear();
            assert_eq!(p.poll(&mut out), got);
            assert!(out.iter().all(|c| c.payload == big[..900]));
        }
    }

    #[test]
    fn cancelled_jobs_are_skipped_and_dead_workers_buried() {
        let b = board(small());
        let mut p = Parent::new(b.clone());
        p.open_job(1, 0, b"").unwrap();
        p.open_job(2, 0, b"").unwrap();
        assert!(!p.open_job(3, 0, b"").unwrap(), "table full");
        for j in [1, 2, 1] {
            p.publish(j, 0, 1, b"x").unwrap();
        }
        let w0 = Worker::new(b.clone(), 0).unwrap();
        let Claim::Task(t0) = w0.claim(Duration::ZERO) else { panic!() };
        p.cancel_job(2);
        let w1 = Worker::new(b.clone(), 1).unwrap();
        let Claim::Task(t1) = w1.claim(Duration::ZERO) else { panic!() };
        assert_eq!(t1.task, 2, "task 1 (job 2) skipped");
        let mut out = Vec::new();
        p.poll(&mut out);
        assert_eq!(out.iter().map(|c| (c.task, c.state)).collect::<Vec<_>>(), [(1, state::SKIPPED)]);
        // Worker 0 "dies" holding task 0.
        out.clear();
        p.bury_worker(0, &mut out);
        assert_eq!(out.iter().map(|c| (c.task, c.state)).collect::<Vec<_>>(), [(0, state::DIED)]);
        assert!(w0.complete(t0.task, state::DONE, b"late", 0).is_err(), "a buried task is gone");
        // A task not yet claimed can be withdrawn; a claimed one cannot.
        let n = p.publish(1, 9, 1, b"y").unwrap().unwrap();
        assert_eq!(p.task_state(n), Some(state::READY));
        assert!(p.cancel_task(n));
        assert_eq!(p.task_state(n), None);
        assert!(!p.cancel_task(t1.task));
        w1.complete(t1.task, state::DONE, b"ok", 0).unwrap();
        out.clear();
        p.poll(&mut out);
        assert_eq!(out[0].payload, b"ok");
        assert_eq!(p.in_flight(), 0);
        p.close_job(2);
        assert!(p.open_job(3, 0, b"").unwrap());
    }

    #[test]
    fn threads_share_the_work() {
        let b = board(Geometry::for_workers(3));
        let mut p = Parent::new(b.clone());
        p.open_job(1, 0, b"").unwrap();
        let workers: Vec<_> = (0..3)
            .map(|i| {
                let w = Worker::new(b.clone(), i).unwrap();
                std::thread::spawn(move || loop {
                    match w.claim(Duration::from_secs(5)) {
                        Claim::Task(t) => {
                            let v = u64::from_le_bytes(t.payload.try_into().unwrap());
                            w.complete(t.task, state::DONE, &(v * 2).to_le_bytes(), 0).unwrap();
                        }
                        Claim::Idle => panic!("idle"),
                        Claim::Shutdown => return,
                    }
                })
            })
            .collect();
        let total = 100_000u64;
        let (mut sent, mut sum, mut got) = (0u64, 0u64, 0u64);
        let mut out = Vec::new();
        while got < total {
            while sent < total && p.publish(1, sent, 1, &sent.to_le_bytes()).unwrap().is_some() {
                sent += 1;
            }
            p.wake_workers(3);
            let seen = b.done_seq();
            out.clear();
            if p.poll(&mut out) == 0 {
                b.wait_done(seen, Duration::from_millis(100));
            }
            for c in &out {
                sum += u64::from_le_bytes(c.payload.clone().try_into().unwrap());
                got += 1;
            }
        }
        b.shutdown();
        for t in workers {
            t.join().unwrap();
        }
        assert_eq!(sum, total * (total - 1));
        assert_eq!(b.completed(), total);
    }

    #[test]
    fn open_checks_the_segment() {
        let b = board(small());
        assert!(b.segment().held_by_creator(), "this process made it and holds it");
        let again = Board::open(b.segment().clone()).unwrap();
        assert_eq!(again.geometry(), small());
        let plain = Segment::create(&Board::header(&small()).unwrap(), None).unwrap().publish();
        assert!(matches!(Board::open(plain), Err(DispatchError::BadBoard(_))));
        assert!(Geometry { capacity: 6, ..small() }.check().is_err());
    }
}
