//! The parent's side of a board: opens jobs, publishes tasks, collects
//! results, buries dead workers.

use super::board::{wake, Board, WorkerId};
use super::error::{BoardError, BuryError, JobError, PublishError, TooBig};
use super::layout::{header, job, pack, state, state_of, task, task_of, worker, worker_of, MAX_WORKERS};
use super::ring::Ring;
use std::collections::VecDeque;
use std::sync::atomic::Ordering::*;
use std::sync::Arc;

/// A finished (or failed, skipped, orphaned) task, as the parent collects it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub task: u64,
    pub job: u64,
    pub tag: u64,
    pub count: u32,
    /// `DONE`, `FAILED`, `SKIPPED` or `DIED` (see [`state`]).
    pub state: u8,
    /// The worker that ran it.
    pub worker: u32,
    pub payload: Vec<u8>,
    pub elapsed_ns: u64,
}

/// The parent's side of a board. Not shared between threads (wrap it in a
/// lock). Only the parent writes the input ring, so its head and tail live
/// here, not on the board.
pub struct Parent {
    board: Arc<Board>,
    /// Next task number.
    next: u64,
    /// Lowest task number not yet collected.
    low: u64,
    /// Collected flags for tasks `low..next`.
    collected: VecDeque<bool>,
    /// Job-table entries in use: the job id in each.
    jobs: Vec<Option<u64>>,
    /// Input ring: next write position, end of the freed prefix.
    in_head: u64,
    in_tail: u64,
}

impl Parent {
    pub fn new(board: Arc<Board>) -> Parent {
        let jobs = vec![None; board.geometry().jobs as usize];
        Parent { board, next: 0, low: 0, collected: VecDeque::new(), jobs, in_head: 0, in_tail: 0 }
    }

    pub fn board(&self) -> &Board {
        &self.board
    }

    /// Tasks published and not collected.
    pub fn in_flight(&self) -> u64 {
        self.next - self.low
    }

    /// Opens job `id` with its function bytes; false if the table is full.
    pub fn open_job(&mut self, id: u64, func: &[u8]) -> Result<bool, JobError> {
        if id == 0 {
            return Err(JobError::NoJob(0));
        }
        let max = super::JOB_BYTES - super::JOB_HEAD;
        if func.len() > max {
            return Err(TooBig { len: func.len(), max }.into());
        }
        let Some(slot) = self.jobs.iter().position(Option::is_none) else { return Ok(false) };
        let Some(e) = self.board.job_entry(slot) else { return Ok(false) };
        let b = &*self.board;
        if !b.write_job(e, func) {
            return Err(TooBig { len: func.len(), max }.into());
        }
        b.job_field(e, job::DONE).store(0, Relaxed);
        b.job_field(e, job::LEN).store(func.len() as u32, Relaxed);
        b.job_field(e, job::CANCELLED).store(0, Relaxed);
        b.job_field(e, job::ID).store(id, Release);
        self.jobs[slot] = Some(id);
        Ok(true)
    }

    /// Marks job `id` cancelled: workers skip its remaining tasks.
    pub fn cancel_job(&mut self, id: u64) {
        if let Some(e) = self.jobs.iter().position(|j| *j == Some(id)).and_then(|e| self.board.job_entry(e)) {
            self.board.job_field(e, job::CANCELLED).store(1, Release);
        }
    }

    /// Frees job `id`'s entry; call once none of its tasks is in flight.
    pub fn close_job(&mut self, id: u64) {
        if let Some(slot) = self.jobs.iter().position(|j| *j == Some(id)) {
            if let Some(e) = self.board.job_entry(slot) {
                self.board.job_field(e, job::ID).store(0, Release);
            }
            self.jobs[slot] = None;
        }
    }

    /// Publishes a task; `None` when the board is full (collect first).
    /// Does not wake workers: call [`wake_workers`](Parent::wake_workers)
    /// after a batch.
    pub fn publish(&mut self, job: u64, tag: u64, count: u32, payload: &[u8]) -> Result<Option<u64>, PublishError> {
        let max = self.board.geometry().max_input();
        if payload.len() > max {
            return Err(TooBig { len: payload.len(), max }.into());
        }
        if self.next - self.low >= u64::from(self.board.geometry().capacity) {
            return Ok(None);
        }
        let b = &*self.board;
        let Some((head, pos)) = Ring::input(b).push(self.in_head, self.in_tail, payload)? else { return Ok(None) };
        self.in_head = head;
        let n = self.next;
        b.task(n, task::JOB).store(job, Relaxed);
        b.task(n, task::TAG).store(tag, Relaxed);
        b.task(n, task::IN_POS).store(pos, Relaxed);
        b.task(n, task::IN_LEN).store(payload.len() as u32, Relaxed);
        b.task(n, task::COUNT).store(count, Relaxed);
        b.task(n, task::WORD).store(pack(n, 0, state::READY), Release);
        self.next += 1;
        self.collected.push_back(false);
        b.field(header::PUBLISHED).store(self.next, SeqCst);
        Ok(Some(n))
    }

    /// Whether task `n` is published and not yet collected.
    fn uncollected(&self, n: u64) -> bool {
        n >= self.low && n < self.next && self.collected.get((n - self.low) as usize) == Some(&false)
    }

    /// Withdraws task `n` if no worker has claimed it yet; true if it was
    /// withdrawn (it will not run and is not collected).
    pub fn cancel_task(&mut self, n: u64) -> Result<bool, BoardError> {
        if !self.uncollected(n) {
            return Ok(false);
        }
        let word = self.board.task(n, task::WORD);
        let ready = pack(n, 0, state::READY);
        if word.compare_exchange(ready, pack(n, 0, state::SKIPPED), AcqRel, Acquire).is_err() {
            return Ok(false);
        }
        self.settle(n)?;
        Ok(true)
    }

    /// The state of task `n` on the board, or None once it is collected.
    pub fn task_state(&self, n: u64) -> Option<u8> {
        self.uncollected(n).then(|| state_of(self.board.task(n, task::WORD).load(Acquire)))
    }

    /// Wakes up to `n` sleeping workers.
    pub fn wake_workers(&self, n: u32) {
        let b = &*self.board;
        b.field(header::WORK_SEQ).fetch_add(1, SeqCst);
        if b.field(header::WORK_SLEEPERS).load(SeqCst) > 0 {
            wake(b.field(header::WORK_SEQ), n);
        }
    }

    /// Takes task `n` off the board: frees its input and marks it
    /// collected. Nothing changes if its input position is corrupt.
    fn settle(&mut self, n: u64) -> Result<(), BoardError> {
        let b = &*self.board;
        let input = Ring::input(b);
        input.free(b.task(n, task::IN_POS).load(Relaxed))?;
        b.task(n, task::WORD).store(pack(n, 0, state::EMPTY), Release);
        if let Some(c) = self.collected.get_mut((n - self.low) as usize) {
            *c = true;
        }
        while self.collected.front() == Some(&true) {
            self.collected.pop_front();
            self.low += 1;
        }
        self.in_tail = input.advance(self.in_tail, self.in_head)?;
        Ok(())
    }

    /// Collects every finished task into `out`; returns how many. On a
    /// corrupt task the error comes after the tasks before it are in `out`;
    /// the task stays on the board.
    pub fn poll(&mut self, out: &mut Vec<Completion>) -> Result<usize, BoardError> {
        let before = out.len();
        let mut freed = [false; MAX_WORKERS as usize + 1];
        let mut result = self.collect(out, &mut freed);
        for w in self.board.worker_ids() {
            if freed[w.get() as usize] {
                result = result.and(self.advance_output(w));
            }
        }
        result.map(|()| out.len() - before)
    }

    fn collect(&mut self, out: &mut Vec<Completion>, freed: &mut [bool]) -> Result<(), BoardError> {
        let hint = self.board.field(header::CLAIMED).load(Acquire).min(self.next);
        for n in self.low..hint.max(self.low) {
            if !self.uncollected(n) {
                continue;
            }
            let b = &*self.board;
            let word = b.task(n, task::WORD).load(Acquire);
            let st = state_of(word);
            if task_of(word) != n || !matches!(st, state::DONE | state::FAILED | state::SKIPPED) {
                continue;
            }
            let w = worker_of(word);
            let mut c = self.completion(n, st, w);
            if st != state::SKIPPED {
                let id = b.worker_id(w).map_err(|_| BoardError::TaskWorker {
                    task: n,
                    worker: w,
                    workers: b.geometry().workers,
                })?;
                let pos = b.task(n, task::OUT_POS).load(Relaxed);
                let len = b.task(n, task::OUT_LEN).load(Relaxed);
                let ring = Ring::output(b, id);
                c.payload = ring.read(pos, len.into())?;
                ring.free(pos)?;
                freed[w as usize] = true;
            }
            self.settle_into(n, c, out)?;
        }
        Ok(())
    }

    /// Settles task `n` and hands `c` out if it was taken off the board
    /// (even when moving the input ring's tail then failed).
    fn settle_into(&mut self, n: u64, c: Completion, out: &mut Vec<Completion>) -> Result<(), BoardError> {
        let settled = self.settle(n);
        if !self.uncollected(n) {
            out.push(c);
        }
        settled
    }

    fn completion(&self, n: u64, st: u8, w: u32) -> Completion {
        let b = &*self.board;
        Completion {
            task: n,
            job: b.task(n, task::JOB).load(Relaxed),
            tag: b.task(n, task::TAG).load(Relaxed),
            count: b.task(n, task::COUNT).load(Relaxed),
            state: st,
            worker: w,
            payload: Vec::new(),
            elapsed_ns: b.task(n, task::ELAPSED_NS).load(Relaxed),
        }
    }

    fn advance_output(&self, w: WorkerId) -> Result<(), BoardError> {
        let b = &*self.board;
        let head = b.worker(w, worker::OUT_HEAD).load(Acquire);
        let tail_at = b.worker(w, worker::OUT_TAIL);
        let tail = Ring::output(b, w).advance(tail_at.load(Relaxed), head)?;
        tail_at.store(tail, Release);
        if b.worker(w, worker::SPACE_WAIT).load(SeqCst) != 0 {
            b.worker(w, worker::SPACE_SEQ).fetch_add(1, SeqCst);
            wake(b.worker(w, worker::SPACE_SEQ), 1);
        }
        Ok(())
    }

    /// Worker `w` died: collects what it finished, fails the task it held
    /// (state `DIED`, in `out`), and clears its slot for a successor.
    pub fn bury_worker(&mut self, w: u32, out: &mut Vec<Completion>) -> Result<(), BuryError> {
        let id = self.board.worker_id(w)?;
        self.poll(out)?;
        for n in self.low..self.next {
            if !self.uncollected(n) {
                continue;
            }
            let word = self.board.task(n, task::WORD).load(Acquire);
            if task_of(word) == n && state_of(word) == state::CLAIMED && worker_of(word) == w {
                let c = self.completion(n, state::DIED, w);
                self.settle_into(n, c, out)?;
            }
        }
        // Whatever is left in its ring was never handed over: start afresh
        // (at a record boundary, whatever the dead worker left in its head).
        let b = &*self.board;
        let head = b.worker(id, worker::OUT_HEAD).load(Acquire) & !7;
        b.worker(id, worker::OUT_HEAD).store(head, Release);
        b.worker(id, worker::OUT_TAIL).store(head, Release);
        b.worker(id, worker::PID).store(0, Release);
        b.worker(id, worker::SPACE_WAIT).store(0, Release);
        // Its claim may have stopped the hint short of a task it held.
        let _ = b.field(header::CLAIMED).fetch_max(self.low, SeqCst);
        Ok(())
    }
}
