//! The segment layout (see docs/FORMAT.md):
//!
//! ```text
//! 0           .npy header (magic, version, dict), padded with spaces to PAGE
//! PAGE        array data, data_len bytes, C or Fortran contiguous
//! PAGE + align_up(data_len)   control page: magic, version, ready word, ...
//! ```
//!
//! Everything here works on private copies of the two pages, so a segment
//! that another process rewrites while we read it can produce an error but
//! never an inconsistent decision.

use crate::dtype::{DType, DTypeError};
use crate::literal::{self, Literal};
use thiserror::Error;

/// Size of the header page and of the control page; data starts at `PAGE`.
pub const PAGE: usize = 4096;
/// Byte offset of the array data in a segment.
pub const DATA_OFFSET: usize = PAGE;
/// First bytes of the control page.
pub const CONTROL_MAGIC: [u8; 8] = *b"NDSHMCTL";
/// Version of the segment format written by this crate.
pub const FORMAT_VERSION: u32 = 1;
/// Value of the ready word once a segment is complete.
pub const READY: u32 = 0x5244_5921;
/// Largest data size accepted (2^48 bytes; beyond any machine, and keeps
/// all offset arithmetic far from overflow).
pub const MAX_DATA_LEN: u64 = 1 << 48;
/// Most dimensions an array may have (numpy's limit).
pub const MAX_NDIM: usize = 64;

/// Byte offsets of the fields of the control page. All words are in the
/// byte order of the machine that created the segment; the magic tells a
/// reader of the other order that the segment is not for it.
pub mod ctl {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 8;
    /// `READY` once the segment is complete (written last, with release order).
    pub const READY: usize = 12;
    pub const FLAGS: usize = 16;
    pub const HEADER_LEN: usize = 20;
    pub const DATA_LEN: usize = 24;
    pub const ID: usize = 32;
    pub const OWNER_PID: usize = 40;
    pub const OWNER_START: usize = 48;
    pub const CREATED_NS: usize = 56;
    pub const HEADER_HASH: usize = 64;
    /// Handles pickled but not yet attached (anonymous segments).
    pub const PENDING: usize = 72;
    /// The array's lock (`lock::LockWords`).
    pub const LOCK: usize = 128;
    pub const LOCK_LEN: usize = crate::lock::LOCK_BYTES;
}

/// Flag bits of the control page.
pub mod flags {
    /// The segment is an anonymous memfd, not a named file.
    pub const ANONYMOUS: u32 = 1;
}

/// Why a segment's bytes were refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FormatError {
    #[error("segment is {len} bytes, too short or not a whole number of pages")]
    BadLength { len: u64 },
    #[error("control page magic is wrong: not an ndshm segment, or written by a machine of the other byte order")]
    BadMagic,
    #[error("segment format version {0} is not supported (this build reads version {FORMAT_VERSION})")]
    UnsupportedVersion(u32),
    #[error("segment is not ready: its creator has not finished (or died while) creating it")]
    NotReady,
    #[error("the ready word holds {0:#x}, which no ndshm writes")]
    BadReady(u32),
    #[error("an array of {0} bytes is too large")]
    TooLarge(u128),
    #[error("header checksum mismatch: the header page was overwritten")]
    HeaderChecksum,
    #[error("segment sizes disagree: {0}")]
    SizeMismatch(String),
    #[error("bad .npy header: {0}")]
    BadHeader(String),
    #[error(transparent)]
    DType(#[from] DTypeError),
}

fn bad_header(what: impl Into<String>) -> FormatError {
    FormatError::BadHeader(what.into())
}

/// Rounds `n` up to a whole number of pages.
pub fn align_up(n: u64) -> u64 {
    n.div_ceil(PAGE as u64) * PAGE as u64
}

/// Total size of a segment holding `data_len` bytes of data.
pub fn segment_len(data_len: u64) -> u64 {
    PAGE as u64 + align_up(data_len) + PAGE as u64
}

/// Offset of the control page in a segment holding `data_len` bytes of data.
pub fn control_offset(data_len: u64) -> u64 {
    PAGE as u64 + align_up(data_len)
}

/// What the `.npy` header says: dtype, shape and memory order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub fortran_order: bool,
}

impl Header {
    /// Bytes of data: product of the shape times the item size, checked.
    pub fn data_len(&self) -> Result<u64, FormatError> {
        let mut n = self.dtype.itemsize() as u128;
        for &d in &self.shape {
            n = n.saturating_mul(d as u128);
        }
        // An empty array may have huge other dimensions; that is fine.
        if n > MAX_DATA_LEN as u128 {
            return Err(FormatError::TooLarge(n));
        }
        Ok(n as u64)
    }

    fn check(&self) -> Result<(), FormatError> {
        if self.shape.len() > MAX_NDIM {
            return Err(bad_header(format!("{} dimensions (at most {MAX_NDIM})", self.shape.len())));
        }
        if self.shape.iter().any(|&d| d as u64 > MAX_DATA_LEN) {
            return Err(bad_header("dimension too large"));
        }
        self.data_len().map(|_| ())
    }

    /// The header page: a valid `.npy` header padded with spaces to `PAGE`.
    pub fn encode(&self) -> Result<Box<[u8; PAGE]>, FormatError> {
        self.check()?;
        let shape = Literal::Tuple(self.shape.iter().map(|&d| Literal::Int(d as i128)).collect());
        let dict = format!(
            "{{'descr': {}, 'fortran_order': {}, 'shape': {}, }}",
            self.dtype.descr(),
            if self.fortran_order { "True" } else { "False" },
            shape.repr()
        );
        // Version 1.0 is latin-1 with a 2-byte length; 3.0 is UTF-8 with 4.
        let latin1: Option<Vec<u8>> = dict.chars().map(|c| u8::try_from(c as u32).ok()).collect();
        let (version, text) = match latin1 {
            Some(bytes) => (1u8, bytes),
            None => (3u8, dict.into_bytes()),
        };
        let pre = if version == 1 { 10 } else { 12 };
        if pre + text.len() + 1 > PAGE {
            return Err(bad_header("dtype description too long for the header page"));
        }
        let mut page = Box::new([b' '; PAGE]);
        page[..6].copy_from_slice(b"\x93NUMPY");
        page[6] = version;
        page[7] = 0;
        let hlen = PAGE - pre;
        if version == 1 {
            page[8..10].copy_from_slice(&(hlen as u16).to_le_bytes());
        } else {
            page[8..12].copy_from_slice(&(hlen as u32).to_le_bytes());
        }
        page[pre..pre + text.len()].copy_from_slice(&text);
        page[PAGE - 1] = b'\n';
        Ok(page)
    }

    /// Reads a header page. Requires the header to fill exactly one page.
    pub fn decode(page: &[u8; PAGE]) -> Result<Header, FormatError> {
        if &page[..6] != b"\x93NUMPY" {
            return Err(bad_header("no .npy magic"));
        }
        let (pre, hlen) = match (page[6], page[7]) {
            (1, 0) => (10, u16::from_le_bytes([page[8], page[9]]) as usize),
            (2 | 3, 0) => (12, u32::from_le_bytes([page[8], page[9], page[10], page[11]]) as usize),
            (a, b) => return Err(bad_header(format!("unknown .npy version {a}.{b}"))),
        };
        if pre + hlen != PAGE {
            return Err(bad_header("header does not end at the data offset"));
        }
        // Only the dict matters: drop the padding (spaces and the final
        // newline) before decoding, instead of parsing ~4 KB of spaces.
        let mut end = PAGE;
        if page[end - 1] == b'\n' {
            end -= 1;
        }
        // Whole runs of spaces first (compared a block at a time), then bytes.
        const SPACES: [u8; 64] = [b' '; 64];
        while end - pre >= SPACES.len() && page[end - SPACES.len()..end] == SPACES {
            end -= SPACES.len();
        }
        while end > pre && matches!(page[end - 1], b' ' | b'\n') {
            end -= 1;
        }
        let raw = &page[pre..end];
        let text: String = if page[6] == 3 {
            std::str::from_utf8(raw).map_err(|_| bad_header("header is not UTF-8"))?.to_owned()
        } else {
            raw.iter().map(|&b| b as char).collect()
        };
        let lit = literal::parse(&text).map_err(|e| bad_header(e.to_string()))?;
        let Literal::Dict(items) = lit else {
            return Err(bad_header("header is not a dict"));
        };
        let (mut descr, mut fortran, mut shape) = (None, None, None);
        for (k, v) in items {
            let slot = match k {
                Literal::Str(ref s) if s == "descr" => &mut descr,
                Literal::Str(ref s) if s == "fortran_order" => &mut fortran,
                Literal::Str(ref s) if s == "shape" => &mut shape,
                _ => return Err(bad_header(format!("unexpected key {}", k.repr()))),
            };
            if slot.replace(v).is_some() {
                return Err(bad_header("duplicate key"));
            }
        }
        let (Some(descr), Some(fortran), Some(shape)) = (descr, fortran, shape) else {
            return Err(bad_header("missing key"));
        };
        let Literal::Bool(fortran_order) = fortran else {
            return Err(bad_header("fortran_order is not a bool"));
        };
        let Literal::Tuple(dims) = shape else {
            return Err(bad_header("shape is not a tuple"));
        };
        let shape = dims
            .into_iter()
            .map(|d| match d {
                Literal::Int(n) if (0..=MAX_DATA_LEN as i128).contains(&n) => Ok(n as usize),
                _ => Err(bad_header("shape must hold non-negative integers")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let header = Header { dtype: DType::from_literal(descr)?, shape, fortran_order };
        header.check()?;
        Ok(header)
    }
}

/// Checksum of the header page, kept in the control page (public for the
/// fuzz targets, like [`validate`]).
pub fn header_hash(page: &[u8; PAGE]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(page)
}

/// The fixed fields of a control page, as read at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    pub version: u32,
    pub ready: u32,
    pub flags: u32,
    pub data_len: u64,
    pub id: u64,
    pub owner_pid: u32,
    pub owner_start: u64,
    pub created_ns: u64,
    pub header_hash: u64,
}

// The offsets are the `ctl` constants, all inside the page: the 0 for an
// offset past its end is never seen.
fn u32_at(p: &[u8; PAGE], off: usize) -> u32 {
    p.get(off..).and_then(<[u8]>::first_chunk).map_or(0, |b| u32::from_ne_bytes(*b))
}

fn u64_at(p: &[u8; PAGE], off: usize) -> u64 {
    p.get(off..).and_then(<[u8]>::first_chunk).map_or(0, |b| u64::from_ne_bytes(*b))
}

impl Control {
    /// Reads the fields; checks only the magic.
    pub fn decode(page: &[u8; PAGE]) -> Result<Control, FormatError> {
        if page[..8] != CONTROL_MAGIC {
            return Err(FormatError::BadMagic);
        }
        Ok(Control {
            version: u32_at(page, ctl::VERSION),
            ready: u32_at(page, ctl::READY),
            flags: u32_at(page, ctl::FLAGS),
            data_len: u64_at(page, ctl::DATA_LEN),
            id: u64_at(page, ctl::ID),
            owner_pid: u32_at(page, ctl::OWNER_PID),
            owner_start: u64_at(page, ctl::OWNER_START),
            created_ns: u64_at(page, ctl::CREATED_NS),
            header_hash: u64_at(page, ctl::HEADER_HASH),
        })
    }

    /// A control page with these fields, the ready word still clear.
    pub fn encode(&self) -> Box<[u8; PAGE]> {
        let mut p = Box::new([0u8; PAGE]);
        p[..8].copy_from_slice(&CONTROL_MAGIC);
        let mut put32 = |off: usize, v: u32| p[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        put32(ctl::VERSION, self.version);
        put32(ctl::FLAGS, self.flags);
        put32(ctl::HEADER_LEN, PAGE as u32);
        put32(ctl::OWNER_PID, self.owner_pid);
        let mut put64 = |off: usize, v: u64| p[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        put64(ctl::DATA_LEN, self.data_len);
        put64(ctl::ID, self.id);
        put64(ctl::OWNER_START, self.owner_start);
        put64(ctl::CREATED_NS, self.created_ns);
        put64(ctl::HEADER_HASH, self.header_hash);
        p
    }
}

/// Checks a segment of `file_len` bytes given private copies of its header
/// page and control page. Returns the header and control fields when every
/// size agrees: file length, control page, and shape × itemsize.
pub fn validate(file_len: u64, header: &[u8; PAGE], control: &[u8; PAGE]) -> Result<(Header, Control), FormatError> {
    let decoded = Header::decode(header);
    let c = validate_decoded(file_len, header_hash(header), decoded.as_ref().map_err(Clone::clone), control)?;
    Ok((decoded?, c))
}

/// [`validate`] for a header page already checksummed and decoded (`hash`
/// and `decoded` are what `header_hash` and `Header::decode` gave for it).
/// Control-page errors still come first.
pub(crate) fn validate_decoded(
    file_len: u64,
    hash: u64,
    decoded: Result<&Header, FormatError>,
    control: &[u8; PAGE],
) -> Result<Control, FormatError> {
    if file_len < 2 * PAGE as u64 || file_len % PAGE as u64 != 0 {
        return Err(FormatError::BadLength { len: file_len });
    }
    let c = Control::decode(control)?;
    if c.version != FORMAT_VERSION {
        return Err(FormatError::UnsupportedVersion(c.version));
    }
    match c.ready {
        READY => {}
        0 => return Err(FormatError::NotReady),
        other => return Err(FormatError::BadReady(other)),
    }
    if u32_at(control, ctl::HEADER_LEN) != PAGE as u32 {
        return Err(FormatError::SizeMismatch("header length is not one page".into()));
    }
    if c.data_len > MAX_DATA_LEN || segment_len(c.data_len) != file_len {
        return Err(FormatError::SizeMismatch(format!(
            "control page says {} data bytes, file has {file_len} bytes",
            c.data_len
        )));
    }
    if hash != c.header_hash {
        return Err(FormatError::HeaderChecksum);
    }
    let h = decoded?;
    let n = h.data_len()?;
    if n != c.data_len {
        return Err(FormatError::SizeMismatch(format!(
            "header shape {:?} × itemsize {} = {n} bytes, control page says {}",
            h.shape,
            h.dtype.itemsize(),
            c.data_len
        )));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(descr: &str, shape: &[usize], fortran: bool) -> Header {
        Header { dtype: DType::parse(descr).unwrap(), shape: shape.to_vec(), fortran_order: fortran }
    }

    fn pages(h: &Header) -> (Box<[u8; PAGE]>, Box<[u8; PAGE]>, u64) {
        let hp = h.encode().unwrap();
        let data_len = h.data_len().unwrap();
        let c = Control {
            version: FORMAT_VERSION,
            ready: 0,
            flags: 0,
            data_len,
            id: 7,
            owner_pid: 1,
            owner_start: 2,
            created_ns: 3,
            header_hash: header_hash(&hp),
        };
        let mut cp = c.encode();
        cp[ctl::READY..ctl::READY + 4].copy_from_slice(&READY.to_ne_bytes());
        (hp, cp, segment_len(data_len))
    }

    #[test]
    fn header_round_trip() {
        for h in [
            header("'<f8'", &[3, 4], false),
            header("'>i2'", &[], false),
            header("'|u1'", &[0, 5], true),
            header("[('x', '<f8'), ('y', '|S3', (2,))]", &[7], false),
            header("[('é', '<f4')]", &[2], false),
        ] {
            let page = h.encode().unwrap();
            assert_eq!(page[PAGE - 1], b'\n');
            assert_eq!(Header::decode(&page).unwrap(), h);
        }
    }

    #[test]
    fn a_checksummed_header_with_a_unit_numpy_lacks_is_refused() {
        let (mut hp, mut cp, len) = pages(&header("'<M8[ns]'", &[10], false));
        let at = hp.windows(6).position(|w| w == b"M8[ns]").unwrap();
        hp[at..at + 6].copy_from_slice(b"M8[xy]");
        cp[ctl::HEADER_HASH..ctl::HEADER_HASH + 8].copy_from_slice(&header_hash(&hp).to_ne_bytes());
        assert!(matches!(validate(len, &hp, &cp), Err(FormatError::DType(crate::DTypeError::Malformed(_)))));
    }

    #[test]
    fn validate_accepts_what_it_wrote() {
        let (hp, cp, len) = pages(&header("'<f8'", &[1000], false));
        let (h, c) = validate(len, &hp, &cp).unwrap();
        assert_eq!(h.shape, vec![1000]);
        assert_eq!(c.data_len, 8000);
    }

    #[test]
    fn validate_rejects_every_size_lie() {
        let (hp, cp, len) = pages(&header("'<f8'", &[1000], false));
        assert!(matches!(validate(len - PAGE as u64, &hp, &cp), Err(FormatError::SizeMismatch(_))));
        assert!(matches!(validate(len + 1, &hp, &cp), Err(FormatError::BadLength { .. })));
        let mut bad = cp.clone();
        bad[ctl::DATA_LEN] ^= 0x40;
        assert!(validate(len, &hp, &bad).is_err());
        let mut notready = cp.clone();
        notready[ctl::READY..ctl::READY + 4].fill(0);
        assert_eq!(validate(len, &hp, &notready), Err(FormatError::NotReady));
        let mut garbage = cp.clone();
        garbage[ctl::READY] = 0;
        assert!(matches!(validate(len, &hp, &garbage), Err(FormatError::BadReady(_))));
        let mut badver = cp.clone();
        badver[ctl::VERSION] = 9;
        assert_eq!(validate(len, &hp, &badver), Err(FormatError::UnsupportedVersion(9)));
    }

    #[test]
    fn every_single_byte_corruption_of_the_header_is_caught() {
        let (hp, cp, len) = pages(&header("'<f8'", &[10, 10], false));
        for i in 0..PAGE {
            let mut h = hp.clone();
            h[i] ^= 0x21;
            assert!(validate(len, &h, &cp).is_err(), "byte {i} corruption accepted");
        }
    }

    #[test]
    fn header_that_lies_consistently_is_still_size_checked() {
        // Rewrite both header and checksum: sizes must still agree.
        let (_, cp, len) = pages(&header("'<f8'", &[1000], false));
        let liar = header("'<f8'", &[2000], false).encode().unwrap();
        let mut cp2 = cp.clone();
        cp2[ctl::HEADER_HASH..ctl::HEADER_HASH + 8].copy_from_slice(&header_hash(&liar).to_ne_bytes());
        assert!(matches!(validate(len, &liar, &cp2), Err(FormatError::SizeMismatch(_))));
    }

    #[test]
    fn too_long_descr_is_an_error() {
        let fields: Vec<String> = (0..400).map(|i| format!("('field_{i}', '<f8')")).collect();
        let h = header(&format!("[{}]", fields.join(", ")), &[1], false);
        assert!(matches!(h.encode(), Err(FormatError::BadHeader(_))));
    }
}
