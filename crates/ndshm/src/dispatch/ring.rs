//! The byte rings of a board: records `[len u32, kind u32, payload, pad to
//! 8]`, positions that grow forever and are taken modulo the ring's length.
//! One side allocates (moves `head`), the other frees records in any order;
//! `tail` moves over the freed prefix. A record never wraps: the rest of
//! the ring is padded instead.
//!
//! Head, tail, positions and record headers may come from another process:
//! each is checked before a byte is touched.

use super::board::{Board, WorkerId};
use super::error::BoardError;
use super::layout::record;
use std::sync::atomic::{AtomicU32, Ordering::*};

/// One ring of a board: `len` bytes at board offset `base`.
pub(crate) struct Ring<'a> {
    board: &'a Board,
    base: usize,
    len: u64,
}

impl<'a> Ring<'a> {
    /// The input ring (written by the parent).
    pub(crate) fn input(board: &'a Board) -> Ring<'a> {
        let geo = board.geometry();
        Ring { board, base: geo.input_at(), len: geo.input_len }
    }
    /// Worker `w`'s output ring (written by that worker).
    pub(crate) fn output(board: &'a Board, w: WorkerId) -> Ring<'a> {
        let geo = board.geometry();
        Ring { board, base: geo.output_at(w.get()), len: geo.output_len }
    }

    /// The largest payload the ring takes.
    fn max_payload(&self) -> u64 {
        self.len / 4
    }

    /// Board offset of ring position `pos`.
    fn offset(&self, pos: u64) -> usize {
        self.base + (pos % self.len) as usize
    }

    /// A word of the record header at `pos`.
    fn header(&self, pos: u64, field: usize) -> Result<&'a AtomicU32, BoardError> {
        if pos % 8 != 0 {
            return Err(BoardError::RingPosition { pos });
        }
        // An aligned position leaves room for the header before the ring's
        // end (the ring's length is a multiple of 8).
        self.board.u32_at(self.offset(pos) + field).ok_or(BoardError::RingPosition { pos })
    }

    /// Head and tail are record boundaries at most one ring apart, and far
    /// from the end of the position space (2**63 bytes take a century to
    /// pass through a ring), so no sum of positions below can overflow.
    fn check(&self, head: u64, tail: u64) -> Result<(), BoardError> {
        if tail > head || head - tail > self.len || head % 8 != 0 || tail % 8 != 0 || head >= 1 << 63 {
            return Err(BoardError::RingIndices { head, tail });
        }
        Ok(())
    }

    /// Padding before a record of `need` bytes at `head`, so it does not wrap.
    fn pad(&self, head: u64, need: u64) -> u64 {
        let off = head % self.len;
        if off + need > self.len {
            self.len - off
        } else {
            0
        }
    }

    /// Whether a record of `payload` bytes fits between `tail` and `head`.
    pub(crate) fn fits(&self, head: u64, tail: u64, payload: usize) -> Result<bool, BoardError> {
        self.check(head, tail)?;
        let payload = payload as u64;
        if payload > self.max_payload() {
            return Ok(false);
        }
        let need = record::len(payload);
        Ok(head - tail + self.pad(head, need) + need <= self.len)
    }

    /// Writes a record of `payload` at `head` if it fits: (new head, payload
    /// position), or None when the ring has no room.
    pub(crate) fn push(&self, head: u64, tail: u64, payload: &[u8]) -> Result<Option<(u64, u64)>, BoardError> {
        if !self.fits(head, tail, payload.len())? {
            return Ok(None);
        }
        let need = record::len(payload.len() as u64);
        let pad = self.pad(head, need);
        if pad > 0 {
            self.header(head, record::LEN)?.store((pad - record::HEAD) as u32, Relaxed);
            self.header(head, record::KIND)?.store(record::PAD, Release);
        }
        let rec = head + pad;
        let pos = rec + record::HEAD;
        self.header(rec, record::LEN)?.store(payload.len() as u32, Relaxed);
        self.header(rec, record::KIND)?.store(record::LIVE, Release);
        if !self.board.write(self.offset(pos), payload) {
            return Err(BoardError::Payload { pos, len: payload.len() as u64 });
        }
        Ok(Some((rec + need, pos)))
    }

    /// Copies out the `len` bytes of the record whose payload is at `pos`.
    pub(crate) fn read(&self, pos: u64, len: u64) -> Result<Vec<u8>, BoardError> {
        let bad = BoardError::Payload { pos, len };
        if pos < record::HEAD || pos % 8 != 0 || len > self.max_payload() {
            return Err(bad);
        }
        if (pos - record::HEAD) % self.len + record::len(len) > self.len {
            return Err(bad);
        }
        self.board.read(self.offset(pos), len as usize).ok_or(bad)
    }

    /// Frees the record whose payload is at `pos`.
    pub(crate) fn free(&self, pos: u64) -> Result<(), BoardError> {
        if pos < record::HEAD {
            return Err(BoardError::RingPosition { pos });
        }
        self.header(pos - record::HEAD, record::KIND)?.store(record::FREED, Release);
        Ok(())
    }

    /// The tail moved over every freed record from `tail` up to `head`.
    pub(crate) fn advance(&self, mut tail: u64, head: u64) -> Result<u64, BoardError> {
        self.check(head, tail)?;
        while tail < head {
            let kind = self.header(tail, record::KIND)?.load(Acquire);
            if kind == record::LIVE {
                break;
            }
            let len = self.header(tail, record::LEN)?.load(Relaxed);
            let off = tail % self.len;
            let step = match kind {
                record::FREED => record::len(u64::from(len)),
                // Padding runs to the ring's end.
                record::PAD if off + record::HEAD + u64::from(len) == self.len => record::HEAD + u64::from(len),
                _ => 0,
            };
            if step == 0 || off + step > self.len || step > head - tail {
                return Err(BoardError::Record { pos: tail, kind, len });
            }
            tail += step;
        }
        Ok(tail)
    }
}
