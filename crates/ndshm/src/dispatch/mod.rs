//! The dispatch board: a task queue in shared memory between one parent
//! (the pool) and its worker processes. See `docs/ENGINE.md`.
//!
//! - `layout`: where every word lies, the task states and the state word;
//! - `board`: a [`Board`] mapped in this process, its words and waits;
//! - `ring`: the byte rings that carry payloads;
//! - `parent` and `worker`: the two sides of the protocol ([`Parent`], [`Worker`]);
//! - `owner`: [`exit_with_owner`], workers leave with the pool's process;
//! - `error`: what each operation can fail with.
//!
//! A task slot's state word packs `task number << 16 | worker << 8 | state`:
//! workers claim a task by compare-and-swap on it, so the claim and the
//! record of who holds the task are one atomic step, and a worker that dies
//! at any instant leaves its task findable. The `claimed` counter is only a
//! hint of where to look next.
//!
//! Every word that two processes touch is an atomic; payload bytes are
//! copied in and out through raw pointers, never through slices of shared
//! memory. Every value read from the board is checked before it is used:
//! a corrupt one is an error, never a panic or an access outside the board.

mod board;
mod error;
mod layout;
#[cfg(test)]
mod layout_doc;
mod owner;
mod parent;
mod ring;
mod worker;

pub use board::Board;
pub use error::{
    BoardError, BuryError, ClaimError, CompleteError, DispatchError, GeometryError, JobError, NoSuchWorker, OpenError,
    OwnerWatchError, PublishError, TooBig,
};
pub use layout::{state, Geometry, JOB_BYTES, JOB_HEAD, MAX_WORKERS};
pub use owner::exit_with_owner;
pub use parent::{Completion, Parent};
pub use worker::{Claim, Claimed, Worker};

#[cfg(test)]
mod tests;
