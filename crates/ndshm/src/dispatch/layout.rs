//! Where every word of a board lies: the areas, the fields of the header,
//! of a worker slot, of a task slot and of a job entry, the task states and
//! the state word that packs them. The sizes are checked when the crate
//! compiles: a field that does not fit its area, or is not aligned, does not
//! build.
//!
//! ```text
//! 0          header (one page)
//! PAGE       worker slots   [workers]  × SLOT
//!            task slots     [capacity] × SLOT, task n in slot n % capacity
//!            job table      [jobs]     × JOB_BYTES
//!            input ring     written by the parent
//!            output rings   [workers], each written by one worker
//! ```

use super::error::GeometryError;
use crate::format::PAGE;
use std::marker::PhantomData;
use std::mem::size_of;
use std::sync::atomic::{AtomicU32, AtomicU64};

/// "NDSHMBRD": the first word of every board.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"NDSHMBRD");
/// Bumped whenever a field moves.
pub(crate) const VERSION: u32 = 2;
/// Bytes of a worker slot and of a task slot.
pub(crate) const SLOT: usize = 64;
/// Bytes of one job-table entry; a job's function larger than
/// `JOB_BYTES - JOB_HEAD` is stored elsewhere by the caller (a segment handle).
pub const JOB_BYTES: usize = 4096;
/// Bytes before a job's function in its entry (its fields: `layout::job`).
pub const JOB_HEAD: usize = 24;
/// At most this many workers per board (the state word has 8 bits for one).
pub const MAX_WORKERS: u32 = 255;

/// The atomics a board is made of.
pub(crate) trait Atomic {}
impl Atomic for AtomicU32 {}
impl Atomic for AtomicU64 {}

/// A field of type `T` at `off` bytes into its area. Made only by
/// [`Word::at`] in a constant, which refuses (at compile time) a field
/// outside its area or not aligned to its size.
pub(crate) struct Word<T> {
    pub(crate) off: usize,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for Word<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Word<T> {}

impl<T: Atomic> Word<T> {
    const fn at(off: usize, area: usize) -> Word<T> {
        assert!(off % size_of::<T>() == 0 && off + size_of::<T>() <= area, "a board field outside its area");
        Word { off, _type: PhantomData }
    }
}

/// The header's fields (one page at offset 0).
pub(crate) mod header {
    use super::*;
    pub(crate) const MAGIC: Word<AtomicU64> = Word::at(0, PAGE);
    pub(crate) const VERSION: Word<AtomicU32> = Word::at(8, PAGE);
    pub(crate) const WORKERS: Word<AtomicU32> = Word::at(12, PAGE);
    pub(crate) const CAPACITY: Word<AtomicU32> = Word::at(16, PAGE);
    pub(crate) const JOBS: Word<AtomicU32> = Word::at(20, PAGE);
    pub(crate) const INPUT_LEN: Word<AtomicU64> = Word::at(24, PAGE);
    pub(crate) const OUTPUT_LEN: Word<AtomicU64> = Word::at(32, PAGE);
    /// The pool's process: pid and start time.
    pub(crate) const OWNER_PID: Word<AtomicU32> = Word::at(40, PAGE);
    pub(crate) const OWNER_START: Word<AtomicU64> = Word::at(48, PAGE);
    /// Nonzero once the pool shuts down.
    pub(crate) const SHUTDOWN: Word<AtomicU32> = Word::at(64, PAGE);
    /// Futex word bumped when tasks are published; workers sleep on it.
    pub(crate) const WORK_SEQ: Word<AtomicU32> = Word::at(68, PAGE);
    pub(crate) const WORK_SLEEPERS: Word<AtomicU32> = Word::at(72, PAGE);
    /// Futex word bumped when a task completes; the parent sleeps on it.
    pub(crate) const DONE_SEQ: Word<AtomicU32> = Word::at(76, PAGE);
    pub(crate) const DONE_SLEEPERS: Word<AtomicU32> = Word::at(80, PAGE);
    /// Tasks published so far (the next task number).
    pub(crate) const PUBLISHED: Word<AtomicU64> = Word::at(88, PAGE);
    /// A hint: no task below it is ready to claim.
    pub(crate) const CLAIMED: Word<AtomicU64> = Word::at(96, PAGE);
    /// Items completed so far (the progress counter).
    pub(crate) const COMPLETED: Word<AtomicU64> = Word::at(104, PAGE);
}

/// A worker slot's fields.
pub(crate) mod worker {
    use super::*;
    /// The worker's pid once it opened the board; 0 after it was buried.
    pub(crate) const PID: Word<AtomicU32> = Word::at(0, SLOT);
    /// Futex word bumped when the parent frees room in the output ring.
    pub(crate) const SPACE_SEQ: Word<AtomicU32> = Word::at(4, SLOT);
    /// Output ring: next write position (the worker's) and the end of the
    /// freed prefix (the parent's).
    pub(crate) const OUT_HEAD: Word<AtomicU64> = Word::at(8, SLOT);
    pub(crate) const OUT_TAIL: Word<AtomicU64> = Word::at(16, SLOT);
    /// Tasks this slot has completed.
    pub(crate) const DONE: Word<AtomicU64> = Word::at(24, SLOT);
    /// Nonzero while the worker waits for room in its output ring.
    pub(crate) const SPACE_WAIT: Word<AtomicU32> = Word::at(32, SLOT);
}

/// A task slot's fields.
pub(crate) mod task {
    use super::*;
    /// The state word (see [`pack`](super::pack)).
    pub(crate) const WORD: Word<AtomicU64> = Word::at(0, SLOT);
    pub(crate) const JOB: Word<AtomicU64> = Word::at(8, SLOT);
    /// The caller's tag (the index of the first item).
    pub(crate) const TAG: Word<AtomicU64> = Word::at(16, SLOT);
    /// The input payload: position in the input ring, length.
    pub(crate) const IN_POS: Word<AtomicU64> = Word::at(24, SLOT);
    pub(crate) const IN_LEN: Word<AtomicU32> = Word::at(32, SLOT);
    /// Items in the task.
    pub(crate) const COUNT: Word<AtomicU32> = Word::at(36, SLOT);
    /// The result payload: position in the worker's output ring, length.
    pub(crate) const OUT_POS: Word<AtomicU64> = Word::at(40, SLOT);
    pub(crate) const OUT_LEN: Word<AtomicU32> = Word::at(48, SLOT);
    pub(crate) const ELAPSED_NS: Word<AtomicU64> = Word::at(56, SLOT);
}

/// A job entry's fields; the job's function follows at `JOB_HEAD`.
pub(crate) mod job {
    use super::*;
    /// The job's id; 0 for a free entry.
    pub(crate) const ID: Word<AtomicU64> = Word::at(0, JOB_HEAD);
    /// Bytes of the function.
    pub(crate) const LEN: Word<AtomicU32> = Word::at(8, JOB_HEAD);
    /// Nonzero once the job is cancelled: its remaining tasks are skipped.
    pub(crate) const CANCELLED: Word<AtomicU32> = Word::at(12, JOB_HEAD);
    /// Items of the job completed so far.
    pub(crate) const DONE: Word<AtomicU64> = Word::at(16, JOB_HEAD);
}

/// A ring record's header, before its payload: `[len u32, kind u32]`.
pub(crate) mod record {
    pub(crate) const HEAD: u64 = 8;
    pub(crate) const LEN: usize = 0;
    pub(crate) const KIND: usize = 4;
    /// Kinds: a payload in use, a payload freed, padding to the ring's end.
    pub(crate) const LIVE: u32 = 1;
    pub(crate) const FREED: u32 = 2;
    pub(crate) const PAD: u32 = 3;

    /// Bytes of a record with `payload` bytes (header and padding to 8).
    pub(crate) fn len(payload: u64) -> u64 {
        HEAD + payload.next_multiple_of(8)
    }
}

/// Task states: the low byte of a task's state word.
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

/// A task's state word: `task number << 16 | worker << 8 | state`. Workers
/// claim a task by compare-and-swap on it, so the claim and the record of
/// who holds the task are one atomic step.
pub(crate) fn pack(task: u64, worker: u32, st: u8) -> u64 {
    (task << 16) | (u64::from(worker & 0xff) << 8) | u64::from(st)
}
pub(crate) fn task_of(word: u64) -> u64 {
    word >> 16
}
pub(crate) fn worker_of(word: u64) -> u32 {
    ((word >> 8) & 0xff) as u32
}
pub(crate) fn state_of(word: u64) -> u8 {
    word as u8
}

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

    /// Refuses sizes outside the supported ranges: within them no offset
    /// computed below can overflow.
    pub fn check(&self) -> Result<(), GeometryError> {
        if self.workers == 0 || self.workers > MAX_WORKERS {
            return Err(GeometryError::Workers(self.workers));
        }
        if !self.capacity.is_power_of_two() || self.capacity < 2 || self.capacity > 1 << 20 {
            return Err(GeometryError::Capacity(self.capacity));
        }
        if self.jobs == 0 || self.jobs > 1024 {
            return Err(GeometryError::Jobs(self.jobs));
        }
        for len in [self.input_len, self.output_len] {
            if len < 4096 || len % 4096 != 0 || len > 1 << 32 {
                return Err(GeometryError::RingLen(len));
            }
        }
        Ok(())
    }

    pub(crate) fn workers_at(&self) -> usize {
        PAGE
    }
    pub(crate) fn tasks_at(&self) -> usize {
        PAGE + (self.workers as usize * SLOT).next_multiple_of(PAGE)
    }
    pub(crate) fn jobs_at(&self) -> usize {
        self.tasks_at() + (self.capacity as usize * SLOT).next_multiple_of(PAGE)
    }
    pub(crate) fn input_at(&self) -> usize {
        self.jobs_at() + self.jobs as usize * JOB_BYTES
    }
    pub(crate) fn output_at(&self, w: u32) -> usize {
        self.input_at() + self.input_len as usize + w as usize * self.output_len as usize
    }
    /// Bytes of the whole board.
    pub fn bytes(&self) -> usize {
        self.output_at(self.workers)
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
