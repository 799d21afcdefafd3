//! A worker's side of a board: claims tasks, hands back their outcomes
//! through its own output ring.

use super::board::{sleep, Board, WorkerId, SPIN};
use super::error::{BoardError, ClaimError, CompleteError, NoSuchWorker, TooBig};
use super::layout::{header, job, pack, state, state_of, task, task_of, worker};
use super::ring::Ring;
use crate::process;
use std::sync::atomic::Ordering::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// A worker's side of a board.
pub struct Worker {
    board: Arc<Board>,
    id: WorkerId,
}

impl Worker {
    /// Takes worker slot `w` and records this process in it.
    pub fn new(board: Arc<Board>, w: u32) -> Result<Worker, NoSuchWorker> {
        let id = board.worker_id(w)?;
        board.worker(id, worker::PID).store(process::current().0, Release);
        Ok(Worker { board, id })
    }

    pub fn board(&self) -> &Board {
        &self.board
    }

    fn me(&self) -> u32 {
        self.id.get()
    }

    /// Claims the next task if one is ready, without waiting.
    pub fn try_claim(&self) -> Result<Option<Claimed>, ClaimError> {
        let b = &*self.board;
        let hint = b.field(header::CLAIMED);
        loop {
            let c = hint.load(Acquire);
            let published = b.field(header::PUBLISHED).load(Acquire);
            if c >= published {
                return Ok(None);
            }
            // Every task a full board of slots below the newest is collected:
            // a hint further back (only a corrupt one is) skips ahead.
            let floor = published - u64::from(b.geometry().capacity).min(published);
            if c < floor {
                hint.fetch_max(floor, AcqRel);
                continue;
            }
            let word_at = b.task(c, task::WORD);
            let word = word_at.load(Acquire);
            if task_of(word) != c {
                // A slot not yet rewritten for task c: the hint ran ahead of
                // a parent still publishing; there is nothing to claim yet.
                if task_of(word) < c {
                    return Ok(None);
                }
                let _ = hint.compare_exchange(c, c + 1, AcqRel, Relaxed);
                continue;
            }
            if state_of(word) != state::READY {
                let _ = hint.compare_exchange(c, c + 1, AcqRel, Relaxed);
                continue;
            }
            if word_at.compare_exchange(word, pack(c, self.me(), state::CLAIMED), AcqRel, Relaxed).is_err() {
                continue;
            }
            let _ = hint.compare_exchange(c, c + 1, AcqRel, Relaxed);
            let job = b.task(c, task::JOB).load(Relaxed);
            if b.job_cancelled(job) {
                self.finish(c, state::SKIPPED, None, 0);
                continue;
            }
            let pos = b.task(c, task::IN_POS).load(Relaxed);
            let len = b.task(c, task::IN_LEN).load(Relaxed);
            let payload = Ring::input(b).read(pos, len.into())?;
            let tag = b.task(c, task::TAG).load(Relaxed);
            let count = b.task(c, task::COUNT).load(Relaxed);
            return Ok(Some(Claimed { task: c, job, tag, count, payload }));
        }
    }

    /// Claims the next task, waiting up to `timeout` for one.
    pub fn claim(&self, timeout: Duration) -> Result<Claim, ClaimError> {
        let b = &*self.board;
        let seq = b.field(header::WORK_SEQ);
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if b.is_shutdown() {
                return Ok(Claim::Shutdown);
            }
            let seen = seq.load(SeqCst);
            if let Some(t) = self.try_claim()? {
                return Ok(Claim::Task(t));
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
            let left = deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                return Ok(Claim::Idle);
            }
            let sleepers = b.field(header::WORK_SLEEPERS);
            sleepers.fetch_add(1, SeqCst);
            if b.field(header::CLAIMED).load(SeqCst) >= b.field(header::PUBLISHED).load(SeqCst) && !b.is_shutdown() {
                sleep(seq, seen, left);
            }
            sleepers.fetch_sub(1, SeqCst);
        }
    }

    /// Hands back task `task`'s outcome (`DONE` or `FAILED`) with its
    /// payload, waiting for room in this worker's ring. Returns false if
    /// the pool shut down first.
    pub fn complete(&self, task: u64, st: u8, payload: &[u8], elapsed_ns: u64) -> Result<bool, CompleteError> {
        self.check_held(task, st, payload)?;
        let b = &*self.board;
        let space = b.worker(self.id, worker::SPACE_SEQ);
        let wait_flag = b.worker(self.id, worker::SPACE_WAIT);
        loop {
            let seen = space.load(SeqCst);
            if let Some(pos) = self.write_output(payload)? {
                self.finish(task, st, Some((pos, payload.len())), elapsed_ns);
                return Ok(true);
            }
            if b.is_shutdown() {
                return Ok(false);
            }
            // Announce the wait, then look again: the parent either sees
            // the flag or freed space before we looked.
            wait_flag.store(1, SeqCst);
            if !self.output_fits(payload.len())? {
                sleep(space, seen, Duration::from_millis(100));
            }
            wait_flag.store(0, SeqCst);
        }
    }

    /// Like [`complete`](Worker::complete) without waiting: false when the
    /// ring has no room now (nothing is written then).
    pub fn try_complete(&self, task: u64, st: u8, payload: &[u8], elapsed_ns: u64) -> Result<bool, CompleteError> {
        self.check_held(task, st, payload)?;
        let Some(pos) = self.write_output(payload)? else { return Ok(false) };
        self.finish(task, st, Some((pos, payload.len())), elapsed_ns);
        Ok(true)
    }

    fn check_held(&self, task: u64, st: u8, payload: &[u8]) -> Result<(), CompleteError> {
        let b = &*self.board;
        if !matches!(st, state::DONE | state::FAILED) {
            return Err(CompleteError::NotAnOutcome(st));
        }
        let max = b.geometry().max_output();
        if payload.len() > max {
            return Err(TooBig { len: payload.len(), max }.into());
        }
        if b.task(task, task::WORD).load(Acquire) != pack(task, self.me(), state::CLAIMED) {
            return Err(CompleteError::NotHeld { task, worker: self.me() });
        }
        Ok(())
    }

    fn output_fits(&self, len: usize) -> Result<bool, BoardError> {
        let b = &*self.board;
        let head = b.worker(self.id, worker::OUT_HEAD).load(Relaxed);
        Ring::output(b, self.id).fits(head, b.worker(self.id, worker::OUT_TAIL).load(SeqCst), len)
    }

    /// Copies `payload` into this worker's ring; its position, or None if
    /// there is no room.
    fn write_output(&self, payload: &[u8]) -> Result<Option<u64>, BoardError> {
        let b = &*self.board;
        let head_at = b.worker(self.id, worker::OUT_HEAD);
        let tail = b.worker(self.id, worker::OUT_TAIL).load(Acquire);
        let Some((head, pos)) = Ring::output(b, self.id).push(head_at.load(Relaxed), tail, payload)? else {
            return Ok(None);
        };
        head_at.store(head, Release);
        Ok(Some(pos))
    }

    fn finish(&self, n: u64, st: u8, out: Option<(u64, usize)>, elapsed_ns: u64) {
        let b = &*self.board;
        let count = b.task(n, task::COUNT).load(Relaxed);
        let (pos, len) = out.unwrap_or((0, 0));
        b.task(n, task::OUT_POS).store(pos, Relaxed);
        b.task(n, task::OUT_LEN).store(len as u32, Relaxed);
        b.task(n, task::ELAPSED_NS).store(elapsed_ns, Relaxed);
        b.task(n, task::WORD).store(pack(n, self.me(), st), Release);
        b.field(header::COMPLETED).fetch_add(u64::from(count), AcqRel);
        if let Some(e) = b.job_at(b.task(n, task::JOB).load(Relaxed)) {
            b.job_field(e, job::DONE).fetch_add(u64::from(count), AcqRel);
        }
        b.worker(self.id, worker::DONE).fetch_add(1, Relaxed);
        b.notify_done();
    }
}
