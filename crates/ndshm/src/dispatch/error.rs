//! What each board operation can fail with. A board is memory another
//! process (possibly a dying or hostile one) can write: every value read
//! from it is checked, and one that the protocol cannot have put there is a
//! [`BoardError`], never a panic or an access outside the board.

use crate::dtype::DTypeError;
use thiserror::Error;

/// Sizes outside what a board supports.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum GeometryError {
    #[error("a board has 1 to 255 workers, not {0}")]
    Workers(u32),
    #[error("a board's task capacity is a power of two from 2 to 2**20, not {0}")]
    Capacity(u32),
    #[error("a board has 1 to 1024 job entries, not {0}")]
    Jobs(u32),
    #[error("a board's ring sizes are multiples of 4096 from 4096 to 4 GiB, not {0}")]
    RingLen(u64),
}

/// Why a segment cannot be laid out as, or opened as, a board.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum OpenError {
    #[error(transparent)]
    Geometry(#[from] GeometryError),
    #[error("not a dispatch board: the segment is read-only")]
    ReadOnly,
    #[error("not a dispatch board: a board needs a 1-d |u1 segment of {want} bytes, not {len} bytes")]
    Segment { len: usize, want: usize },
    #[error("not a dispatch board: its memory is not aligned to 8 bytes")]
    Misaligned,
    #[error("not a dispatch board: bad magic")]
    Magic,
    #[error("not a dispatch board: unknown version {0}")]
    Version(u32),
    #[error("not a dispatch board: the segment is not fresh")]
    NotFresh,
    #[error(transparent)]
    DType(#[from] DTypeError),
}

/// A value on the board that the protocol cannot have written there.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BoardError {
    #[error("corrupt dispatch board: ring indices head {head}, tail {tail} are not within one ring of each other")]
    RingIndices { head: u64, tail: u64 },
    #[error("corrupt dispatch board: ring position {pos} is not a record's")]
    RingPosition { pos: u64 },
    #[error("corrupt dispatch board: a record at {pos} of kind {kind} and {len} bytes")]
    Record { pos: u64, kind: u32, len: u32 },
    #[error("corrupt dispatch board: a payload of {len} bytes at {pos} does not fit its ring")]
    Payload { pos: u64, len: u64 },
    #[error("corrupt dispatch board: task {task} names worker {worker}, of {workers}")]
    TaskWorker { task: u64, worker: u32, workers: u32 },
}

/// A worker index beyond the board's.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("no worker {worker} on a board of {workers}")]
pub struct NoSuchWorker {
    pub worker: u32,
    pub workers: u32,
}

/// A payload larger than the board carries (the caller sends it another way).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("a payload of {len} bytes does not fit the board (at most {max})")]
pub struct TooBig {
    pub len: usize,
    pub max: usize,
}

/// Opening a job or reading its function.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum JobError {
    #[error("no job {0} on the board")]
    NoJob(u64),
    #[error(transparent)]
    TooBig(#[from] TooBig),
}

/// Publishing a task.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PublishError {
    #[error(transparent)]
    TooBig(#[from] TooBig),
    #[error(transparent)]
    Board(#[from] BoardError),
}

/// Claiming a task.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ClaimError {
    #[error(transparent)]
    Board(#[from] BoardError),
}

/// Handing back a task's outcome.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CompleteError {
    #[error(transparent)]
    TooBig(#[from] TooBig),
    #[error("task {task} is not held by worker {worker}")]
    NotHeld { task: u64, worker: u32 },
    #[error("state {0} is not a task's outcome (DONE or FAILED)")]
    NotAnOutcome(u8),
    #[error(transparent)]
    Board(#[from] BoardError),
}

/// Burying a dead worker.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BuryError {
    #[error(transparent)]
    NoSuchWorker(#[from] NoSuchWorker),
    #[error(transparent)]
    Board(#[from] BoardError),
}

/// Starting the thread that watches the board's owner.
#[derive(Debug, Error)]
#[error("cannot start the thread that watches the pool's process: {0}")]
pub struct OwnerWatchError(#[from] pub std::io::Error);

/// Any of the above, for callers that map them all in one place.
#[derive(Debug, Error)]
pub enum DispatchError {
    #[error(transparent)]
    Geometry(#[from] GeometryError),
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Board(#[from] BoardError),
    #[error(transparent)]
    NoSuchWorker(#[from] NoSuchWorker),
    #[error(transparent)]
    Job(#[from] JobError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Claim(#[from] ClaimError),
    #[error(transparent)]
    Complete(#[from] CompleteError),
    #[error(transparent)]
    Bury(#[from] BuryError),
    #[error(transparent)]
    OwnerWatch(#[from] OwnerWatchError),
}
