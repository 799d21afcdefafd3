//! Handles: what one process sends another so that it maps the same array.
//!
//! A handle names a segment (by name and id, or, for an anonymous segment,
//! by the sender's pid and fd and the id), a view of its data (byte offset,
//! shape, byte strides, and a dtype when it differs from the segment's),
//! whether the view is read-only, and the host it was made on. It travels
//! as one compact byte string (see `docs/FORMAT.md`, "Handles"), which any
//! language can produce and read.
//!
//! Everything in a handle is checked as if an attacker wrote it:
//! [`Handle::decode`] refuses malformed bytes, a dtype that is not plain
//! data or whose description is inconsistent, and [`View::check`] refuses a
//! view any byte of which lies outside the segment's data.

use crate::dtype::{DType, DTypeError};
use crate::format::MAX_NDIM;
use crate::host::Host;
use crate::view::{check_view, ViewError};
use thiserror::Error;

/// First byte of every handle: the wire format's version.
pub const WIRE_VERSION: u8 = 1;

/// Longest dtype description a handle may carry.
pub const MAX_DESCR: usize = 4096;

/// Longest node name a handle may carry.
pub(crate) const MAX_NODE_NAME: usize = 255;

pub(crate) mod flag {
    pub const ANONYMOUS: u8 = 1;
    pub const READONLY: u8 = 2;
    pub const DTYPE: u8 = 4;
    /// A segment reference with no view.
    pub const REF_ONLY: u8 = 8;
    pub const ALL: u8 = ANONYMOUS | READONLY | DTYPE | REF_ONLY;
}

/// Why a handle was refused, or its segment could not be reached.
#[derive(Debug, Error)]
pub enum HandleError {
    /// Bytes that are not a handle of this version.
    #[error("bad ndshm handle: {0}")]
    Malformed(&'static str),
    /// A handle written by another version of the format.
    #[error("bad ndshm handle: wire format version {0} (this ndshm reads version {WIRE_VERSION})")]
    Version(u8),
    /// A segment name that breaks the naming rules.
    #[error("bad ndshm handle: invalid segment name {0:?}")]
    Name(String),
    /// The view's dtype is not a valid plain-data description.
    #[error("bad ndshm handle: dtype: {0}")]
    DType(#[from] DTypeError),
    /// The view reaches outside the segment's data, or is malformed.
    #[error("bad ndshm handle: {0}")]
    View(#[from] ViewError),
    /// A handle made on another host: its segment does not exist here.
    #[error("this ndshm array lives in shared memory on host {host:?}, but this process runs on host {here:?}; shared memory cannot cross hosts")]
    Foreign { host: String, here: String },
    /// The name now names another segment.
    #[error("segment {0:?} was deleted and re-created since this handle was made")]
    Replaced(String),
    /// An anonymous segment whose sender no longer holds it.
    #[error("the shared array sent by process {pid} is gone: {why}")]
    Gone { pid: u32, why: String },
    /// The pid and fd of an anonymous handle name no ndshm segment.
    #[error("bad ndshm handle: fd {fd} of process {pid} is not an ndshm segment")]
    NotASegment { pid: u32, fd: i32 },
    /// The pid and fd name another segment than the handle's id.
    #[error("bad ndshm handle: fd {fd} of process {pid} is another segment (id {found:#x}, expected {expected:#x})")]
    OtherSegment { pid: u32, fd: i32, found: u64, expected: u64 },
    /// Opening the sender's segment was refused by the operating system.
    #[error("cannot open the array held by process {pid}: {why}")]
    Permission { pid: u32, why: String },
    /// Attaching the named segment failed (not found, corrupt, abandoned, ...).
    #[error(transparent)]
    Attach(#[from] crate::AttachError),
    /// Mapping the segment failed.
    #[error(transparent)]
    Segment(#[from] crate::SegmentError),
}

/// The segment a handle names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentRef {
    /// A named segment: its name and, so that a re-created name is noticed,
    /// its id.
    Named { name: String, id: u64 },
    /// An anonymous segment, reached as `/proc/PID/fd/FD` of its sender (or
    /// through the sender's keeper once it has exited).
    Anonymous { pid: u32, fd: i32, id: u64 },
}

impl SegmentRef {
    /// The segment's id.
    pub fn id(&self) -> u64 {
        match self {
            SegmentRef::Named { id, .. } | SegmentRef::Anonymous { id, .. } => *id,
        }
    }
}

/// A strided view of a segment's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// Byte offset of the first element from the start of the data.
    pub offset: i64,
    pub shape: Vec<i64>,
    /// Byte strides, one per dimension (negative ones allowed).
    pub strides: Vec<i64>,
    /// The view's dtype; `None` when it is the segment's own.
    pub dtype: Option<DType>,
}

impl View {
    /// Checks that every byte the view can reach lies inside `data_len`
    /// bytes of data, the item size being the view's dtype's or, without
    /// one, `segment_itemsize`. Returns the item size.
    pub fn check(&self, data_len: u64, segment_itemsize: usize) -> Result<usize, ViewError> {
        let itemsize = self.dtype.as_ref().map_or(segment_itemsize, DType::itemsize);
        if itemsize == 0 {
            return Err(ViewError::Malformed("item size 0".into()));
        }
        let isize = i64::try_from(itemsize).map_err(|_| ViewError::Malformed("item size too large".into()))?;
        check_view(data_len, self.offset, &self.shape, &self.strides, isize)?;
        Ok(itemsize)
    }
}

/// A handle: a segment, a view of it, and where it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handle {
    pub segment: SegmentRef,
    pub view: View,
    /// The receiver maps the view read-only.
    pub readonly: bool,
    /// The host the segment lives on.
    pub host: Host,
}

impl Handle {
    /// The handle's wire form.
    pub fn encode(&self) -> Vec<u8> {
        let descr = self.view.dtype.as_ref().map(DType::descr);
        let mut out = Vec::with_capacity(48 + descr.as_ref().map_or(0, String::len));
        let mut flags = 0;
        if self.readonly {
            flags |= flag::READONLY;
        }
        if descr.is_some() {
            flags |= flag::DTYPE;
        }
        put_ref(&mut out, flags, &self.segment, &self.host);
        put_ivarint(&mut out, self.view.offset);
        out.push(self.view.shape.len() as u8);
        for &d in &self.view.shape {
            put_ivarint(&mut out, d);
        }
        for &s in &self.view.strides {
            put_ivarint(&mut out, s);
        }
        if let Some(d) = descr {
            put_bytes(&mut out, d.as_bytes());
        }
        out
    }

    /// Reads a handle from its wire form, checking everything that can be
    /// checked without the segment: the format, the name, the dtype (plain
    /// data, consistent sizes) and the view's shape. The view's extent is
    /// checked against the segment by [`View::check`].
    pub fn decode(bytes: &[u8]) -> Result<Handle, HandleError> {
        let mut r = Reader { b: bytes };
        let (flags, segment, host) = read_ref(&mut r)?;
        let offset = r.ivarint()?;
        let ndim = r.byte()? as usize;
        if ndim > MAX_NDIM {
            return Err(HandleError::Malformed("too many dimensions"));
        }
        let mut shape = Vec::with_capacity(ndim);
        for _ in 0..ndim {
            shape.push(r.ivarint()?);
        }
        let mut strides = Vec::with_capacity(ndim);
        for _ in 0..ndim {
            strides.push(r.ivarint()?);
        }
        let dtype = if flags & flag::DTYPE != 0 {
            let text = r.text(MAX_DESCR, "dtype")?;
            Some(DType::parse(text)?)
        } else {
            None
        };
        r.end()?;
        if shape.iter().any(|&d| d < 0) {
            return Err(ViewError::Malformed("negative dimension".into()).into());
        }
        let view = View { offset, shape, strides, dtype };
        Ok(Handle { segment, view, readonly: flags & flag::READONLY != 0, host })
    }
}

/// The wire form of a reference to a segment alone (what a lock of an
/// array carries): a handle's first part, with no view.
pub fn encode_ref(segment: &SegmentRef, host: &Host) -> Vec<u8> {
    let mut out = Vec::with_capacity(40);
    put_ref(&mut out, flag::REF_ONLY, segment, host);
    out
}

/// Reads what [`encode_ref`] wrote.
pub fn decode_ref(bytes: &[u8]) -> Result<(SegmentRef, Host), HandleError> {
    let mut r = Reader { b: bytes };
    let (flags, segment, host) = read_ref(&mut r)?;
    if flags & flag::REF_ONLY == 0 {
        return Err(HandleError::Malformed("a handle of a view, not a segment reference"));
    }
    r.end()?;
    Ok((segment, host))
}

fn put_ref(out: &mut Vec<u8>, mut flags: u8, segment: &SegmentRef, host: &Host) {
    if matches!(segment, SegmentRef::Anonymous { .. }) {
        flags |= flag::ANONYMOUS;
    }
    out.push(WIRE_VERSION);
    out.push(flags);
    out.extend_from_slice(&segment.id().to_le_bytes());
    match segment {
        SegmentRef::Named { name, .. } => put_bytes(out, name.as_bytes()),
        SegmentRef::Anonymous { pid, fd, .. } => {
            put_uvarint(out, u64::from(*pid));
            put_uvarint(out, *fd as u32 as u64);
        }
    }
    out.extend_from_slice(&host.key.to_le_bytes());
    put_bytes(out, host.name.as_bytes());
}

fn read_ref(r: &mut Reader<'_>) -> Result<(u8, SegmentRef, Host), HandleError> {
    let version = r.byte()?;
    if version != WIRE_VERSION {
        return Err(HandleError::Version(version));
    }
    let flags = r.byte()?;
    if flags & !flag::ALL != 0 || (flags & flag::REF_ONLY != 0 && flags & (flag::READONLY | flag::DTYPE) != 0) {
        return Err(HandleError::Malformed("unknown flags"));
    }
    let id = r.u64()?;
    if id == 0 {
        return Err(HandleError::Malformed("segment id 0"));
    }
    let segment = if flags & flag::ANONYMOUS != 0 {
        let pid = r.uvarint()?;
        let fd = r.uvarint()?;
        if !(1..1 << 31).contains(&pid) || fd >= 1 << 31 {
            return Err(HandleError::Malformed("pid or fd out of range"));
        }
        SegmentRef::Anonymous { pid: pid as u32, fd: fd as i32, id }
    } else {
        let name = r.text(crate::name::MAX_LEN, "segment name")?;
        if crate::name::validate(name).is_err() {
            return Err(HandleError::Name(name.to_string()));
        }
        SegmentRef::Named { name: name.to_string(), id }
    };
    let key = r.u64()?;
    let node = r.text(MAX_NODE_NAME, "host name")?;
    Ok((flags, segment, Host { name: node.to_string(), key }))
}

/// Checks a handle's wire form and the view it describes against a
/// segment of `data_len` data bytes whose items are `segment_itemsize`
/// bytes: the whole validation a receiver does before any access, without
/// opening anything. Returns the handle and the view's item size.
pub fn check_wire(bytes: &[u8], data_len: u64, segment_itemsize: usize) -> Result<(Handle, usize), HandleError> {
    let h = Handle::decode(bytes)?;
    let itemsize = h.view.check(data_len, segment_itemsize)?;
    Ok((h, itemsize))
}

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Signed integers as zigzag varints: small magnitudes take few bytes.
fn put_ivarint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_uvarint(out, b.len() as u64);
    out.extend_from_slice(b);
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], HandleError> {
        if self.b.len() < n {
            return Err(HandleError::Malformed("truncated"));
        }
        let (head, tail) = self.b.split_at(n);
        self.b = tail;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, HandleError> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, HandleError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    fn uvarint(&mut self) -> Result<u64, HandleError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let c = self.byte()?;
            let bits = u64::from(c & 0x7f);
            // The tenth byte may only carry the top bit of 64.
            if i == 9 && c > 1 {
                return Err(HandleError::Malformed("integer beyond 64 bits"));
            }
            v |= bits << (7 * i);
            if c & 0x80 == 0 {
                // One encoding per value: no superfluous zero bytes.
                if c == 0 && i > 0 {
                    return Err(HandleError::Malformed("integer not in its shortest form"));
                }
                return Ok(v);
            }
        }
        Err(HandleError::Malformed("integer beyond 64 bits"))
    }

    fn end(&self) -> Result<(), HandleError> {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err(HandleError::Malformed("trailing bytes"))
        }
    }

    fn ivarint(&mut self) -> Result<i64, HandleError> {
        let z = self.uvarint()?;
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    fn text(&mut self, max: usize, what: &'static str) -> Result<&'a str, HandleError> {
        let n = self.uvarint()?;
        if n > max as u64 {
            return Err(HandleError::Malformed(what));
        }
        std::str::from_utf8(self.take(n as usize)?).map_err(|_| HandleError::Malformed(what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Host {
        Host { name: "node".into(), key: 0x1234_5678_9abc_def0 }
    }

    fn named(view: View) -> Handle {
        Handle { segment: SegmentRef::Named { name: "a.b-c".into(), id: 7 }, view, readonly: false, host: host() }
    }

    fn view(offset: i64, shape: &[i64], strides: &[i64], dtype: Option<&str>) -> View {
        View {
            offset,
            shape: shape.to_vec(),
            strides: strides.to_vec(),
            dtype: dtype.map(|d| DType::parse(d).unwrap()),
        }
    }

    #[test]
    fn round_trips() {
        let hs = [
            named(view(0, &[10], &[8], None)),
            named(view(72, &[3, 4], &[-8, 1 << 40], Some("[('', '|V8'), ('b', '<i8')]"))),
            Handle {
                segment: SegmentRef::Anonymous { pid: 4_000_000, fd: 3, id: u64::MAX },
                view: view(i64::MIN, &[], &[], Some("'<U3'")),
                readonly: true,
                host: host(),
            },
            named(view(i64::MAX, &[i64::MAX; 64], &[i64::MIN; 64], None)),
        ];
        for h in hs {
            let wire = h.encode();
            assert_eq!(Handle::decode(&wire).unwrap(), h);
        }
    }

    #[test]
    fn refs_round_trip_and_are_not_handles() {
        let r = SegmentRef::Anonymous { pid: 99, fd: 4, id: 5 };
        let wire = encode_ref(&r, &host());
        assert_eq!(decode_ref(&wire).unwrap(), (r, host()));
        assert!(Handle::decode(&wire).is_err());
        let h = named(view(0, &[1], &[8], None));
        assert!(decode_ref(&h.encode()).is_err());
    }

    #[test]
    fn small() {
        let h = Handle {
            segment: SegmentRef::Anonymous { pid: 123_456, fd: 12, id: u64::MAX },
            view: view(0, &[1000, 1000], &[8000, 8], None),
            readonly: false,
            host: host(),
        };
        assert!(h.encode().len() <= 40, "{}", h.encode().len());
    }

    #[test]
    fn every_truncation_and_extension_is_refused() {
        let wire = named(view(8, &[3, 4], &[32, 8], Some("'<f8'"))).encode();
        for n in 0..wire.len() {
            assert!(Handle::decode(&wire[..n]).is_err(), "truncated to {n}");
        }
        let mut longer = wire.clone();
        longer.push(0);
        assert!(matches!(Handle::decode(&longer), Err(HandleError::Malformed("trailing bytes"))));
    }

    #[test]
    fn hostile_fields_are_refused() {
        let mut w = named(view(0, &[1], &[8], None)).encode();
        w[0] = 2;
        assert!(matches!(Handle::decode(&w), Err(HandleError::Version(2))));
        let mut w = named(view(0, &[1], &[8], None)).encode();
        w[1] = 0x80;
        assert!(Handle::decode(&w).is_err());
        let bad_name =
            Handle { segment: SegmentRef::Named { name: "../x".into(), id: 1 }, ..named(view(0, &[], &[], None)) };
        assert!(matches!(Handle::decode(&bad_name.encode()), Err(HandleError::Name(_))));
        assert!(Handle::decode(&named(view(0, &[-1], &[8], None)).encode()).is_err());
        let no_id = Handle { segment: SegmentRef::Named { name: "x".into(), id: 0 }, ..named(view(0, &[], &[], None)) };
        assert!(Handle::decode(&no_id.encode()).is_err());
        let pid0 = Handle { segment: SegmentRef::Anonymous { pid: 0, fd: 3, id: 1 }, ..named(view(0, &[], &[], None)) };
        assert!(Handle::decode(&pid0.encode()).is_err());
        let fdneg =
            Handle { segment: SegmentRef::Anonymous { pid: 1, fd: -1, id: 1 }, ..named(view(0, &[], &[], None)) };
        assert!(Handle::decode(&fdneg.encode()).is_err());
    }

    #[test]
    fn overlong_integers_are_refused() {
        let mut r = Reader { b: &[0x80, 0x00] };
        assert!(r.uvarint().is_err());
        let mut r = Reader { b: &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02] };
        assert!(r.uvarint().is_err());
        let mut r = Reader { b: &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01] };
        assert_eq!(r.uvarint().unwrap(), u64::MAX);
    }

    fn dtype_text(text: &str) -> Vec<u8> {
        let mut w = named(view(0, &[1], &[8], Some("'<f8'"))).encode();
        let old = "'<f8'";
        w.truncate(w.len() - old.len() - 1);
        put_bytes(&mut w, text.as_bytes());
        w
    }

    #[test]
    fn dtypes_are_validated() {
        // Field offsets travel as padding: an offset moved to 16 or 2**24
        // makes the item that much bigger, so the view no longer fits.
        let data = 256 * 16;
        for (text, ok) in [
            ("[('', '|V8'), ('b', '<i8')]", true),
            ("[('', '|V16'), ('b', '<i8')]", false),
            ("[('', '|V16777216'), ('z', '<i8')]", false),
        ] {
            let mut h = named(view(0, &[256], &[16], None));
            h.view.dtype = Some(DType::parse(text).unwrap());
            let r = check_wire(&h.encode(), data, 16);
            assert_eq!(r.is_ok(), ok, "{text}: {r:?}");
        }
        for text in ["'|O'", "[('a', '<f8'), ('o', '|O')]", "'<V-8'", "'|V-8'", "'<T16'", "'<f8", "[]", "'|V0'"] {
            let r = check_wire(&dtype_text(text), 1 << 20, 8);
            assert!(r.is_err(), "{text} accepted");
        }
    }

    #[test]
    fn views_are_bounded() {
        let w = named(view(72, &[10], &[-8], None)).encode();
        assert_eq!(check_wire(&w, 80, 8).unwrap().1, 8);
        let w = named(view(73, &[1], &[8], None)).encode();
        assert!(check_wire(&w, 80, 8).is_err());
        let w = named(view(0, &[i64::MAX; 64], &[i64::MAX; 64], None)).encode();
        assert!(check_wire(&w, 80, 8).is_err());
    }

    /// Every byte an accepted view reaches, by brute force over its
    /// elements (small views only), and each field of its dtype.
    fn reach(view: &View, itemsize: usize) -> Option<(i128, i128)> {
        let n: i128 = view.shape.iter().map(|&d| d as i128).product();
        if n == 0 || n > 4096 {
            return None;
        }
        let (mut lo, mut hi) = (i128::MAX, i128::MIN);
        for k in 0..n {
            let (mut rest, mut at) = (k, view.offset as i128);
            for (&d, &st) in view.shape.iter().zip(&view.strides).rev() {
                at += (rest % d as i128) * st as i128;
                rest /= d as i128;
            }
            lo = lo.min(at);
            hi = hi.max(at + itemsize as i128);
        }
        Some((lo, hi))
    }

    #[test]
    fn mutated_handles_are_refused_or_inside_the_data() {
        let seeds = [
            named(view(8, &[3, 4], &[32, 8], None)),
            named(view(72, &[3, 2], &[-16, 8], Some("[('', '|V8'), ('b', '<i8')]"))),
            Handle {
                segment: SegmentRef::Anonymous { pid: 4242, fd: 7, id: 99 },
                view: view(0, &[5], &[16], Some("[('a', '<f4'), ('', '|V4'), ('c', '<i8')]")),
                readonly: true,
                host: host(),
            },
        ];
        let (data_len, seg_itemsize) = (96u64, 8usize);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..50_000 {
            let mut w = seeds[(rand() % 3) as usize].encode();
            for _ in 0..1 + rand() % 3 {
                let i = (rand() % w.len() as u64) as usize;
                match rand() % 4 {
                    0 => w[i] ^= 1 << (rand() % 8),
                    1 => w[i] = rand() as u8,
                    2 => w.truncate(i),
                    _ => w.insert(i, rand() as u8),
                }
                if w.is_empty() {
                    break;
                }
            }
            match check_wire(&w, data_len, seg_itemsize) {
                Ok((h, itemsize)) => {
                    accepted += 1;
                    assert!(itemsize > 0);
                    if let Some((lo, hi)) = reach(&h.view, itemsize) {
                        assert!(0 <= lo && hi <= data_len as i128, "{h:?} reaches {lo}..{hi}");
                    } else if h.view.shape.contains(&0) {
                        assert!((0..=data_len as i64).contains(&h.view.offset));
                    }
                }
                Err(_) => refused += 1,
            }
        }
        assert!(accepted > 100 && refused > 10_000, "{accepted} accepted, {refused} refused");
    }
}
