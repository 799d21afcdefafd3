//! Control-page validation of a segment (`format::validate`).
//!
//! Input layout: byte 0 holds flags; bytes 1..9 a file length (u64,
//! little-endian); the next 96 bytes the start of the control page (its
//! fixed fields; the rest stays zero); the remainder the header dict's text
//! behind a valid .npy 1.0 prefix. Flag bit 0 makes the file length the
//! one the control page's data length implies, bit 1 writes the header
//! page's true checksum into the control page: a fuzzer cannot invert a
//! hash or guess a page-multiple by chance.
//!
//! Property: `validate` accepts exactly the segments that docs/FORMAT.md
//! allows (checked here field by field), and what it returns agrees with
//! the bytes.

use crate::header::framed;
use ndshm::format::{self, ctl, Control, Header, CONTROL_MAGIC, FORMAT_VERSION, MAX_DATA_LEN, PAGE, READY};

const FIXED: usize = 96;

fn u32_at(p: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(p[off..off + 4].try_into().unwrap())
}

fn u64_at(p: &[u8], off: usize) -> u64 {
    u64::from_ne_bytes(p[off..off + 8].try_into().unwrap())
}

/// Whether FORMAT.md allows these pages in a file of `file_len` bytes.
fn allowed(file_len: u64, header: &[u8; PAGE], control: &[u8; PAGE]) -> bool {
    let data_len = u64_at(control, ctl::DATA_LEN);
    control[..8] == CONTROL_MAGIC
        && u32_at(control, ctl::VERSION) == FORMAT_VERSION
        && u32_at(control, ctl::READY) == READY
        && u32_at(control, ctl::HEADER_LEN) == PAGE as u32
        && data_len <= MAX_DATA_LEN
        && file_len == 2 * PAGE as u64 + data_len.div_ceil(PAGE as u64) * PAGE as u64
        && u64_at(control, ctl::HEADER_HASH) == format::header_hash(header)
        && Header::decode(header).is_ok_and(|h| h.data_len() == Ok(data_len))
}

pub fn check(data: &[u8]) {
    if data.len() < 9 + FIXED {
        return;
    }
    let flags = data[0];
    let mut control = Box::new([0u8; PAGE]);
    control[..FIXED].copy_from_slice(&data[9..9 + FIXED]);
    let header = framed(1, &data[9 + FIXED..]);
    let mut file_len = u64::from_le_bytes(data[1..9].try_into().unwrap());
    if flags & 1 != 0 {
        file_len = format::segment_len(u64_at(&control[..], ctl::DATA_LEN) % (MAX_DATA_LEN + 1));
    }
    if flags & 2 != 0 {
        control[ctl::HEADER_HASH..ctl::HEADER_HASH + 8].copy_from_slice(&format::header_hash(&header).to_ne_bytes());
    }
    let result = format::validate(file_len, &header, &control);
    assert_eq!(result.is_ok(), allowed(file_len, &header, &control), "validate disagrees with the format: {result:?}");
    let Ok((h, c)) = result else { return };
    assert_eq!(c.data_len, h.data_len().unwrap());
    assert_eq!(format::control_offset(c.data_len) + PAGE as u64, file_len);
    assert_eq!(c.header_hash, format::header_hash(&header));
    assert_eq!(Control::decode(&c.encode()), Ok(Control { ready: 0, ..c.clone() }), "control fields do not round-trip");
}
