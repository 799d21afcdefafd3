//! Header pages this process has decoded before. Besides its system calls,
//! attaching a segment costs a checksum of its 4 KiB header page and a parse
//! of the `.npy` dict in it. Processes tend to attach arrays of a few dtypes
//! and shapes over and over, so a page byte-for-byte equal to one decoded
//! before reuses that work: one compare instead of a hash and a parse.

use crate::format::{header_hash, FormatError, Header, PAGE};
use parking_lot::Mutex;
use std::sync::Arc;

/// Most pages kept (the least recently used goes first).
const MAX_ENTRIES: usize = 16;

/// A header page and what it decodes to.
pub(crate) struct Decoded {
    page: Box<[u8; PAGE]>,
    /// `header_hash(page)`.
    pub hash: u64,
    pub header: Header,
    /// `header.dtype.descr()`.
    pub descr: String,
}

/// Decoded pages, most recently used first.
struct Seen(Vec<Arc<Decoded>>);

impl Seen {
    fn find(&mut self, page: &[u8; PAGE]) -> Option<Arc<Decoded>> {
        let i = self.0.iter().position(|d| d.page[..] == page[..])?;
        let d = self.0.remove(i);
        self.0.insert(0, d.clone());
        Some(d)
    }

    fn keep(&mut self, d: &Arc<Decoded>) {
        self.0.insert(0, d.clone());
        self.0.truncate(MAX_ENTRIES);
    }
}

static SEEN: Mutex<Seen> = Mutex::new(Seen(Vec::new()));

/// The checksum of `page` and its decoding, reused when an equal page was
/// decoded before.
pub(crate) fn decode(page: &[u8; PAGE]) -> (u64, Result<Arc<Decoded>, FormatError>) {
    // `try_lock`: never wait, so neither another thread nor a fork taken
    // while the lock was held can stall an attach; a miss only costs the parse.
    if let Some(d) = SEEN.try_lock().and_then(|mut seen| seen.find(page)) {
        return (d.hash, Ok(d));
    }
    match fresh(page) {
        Ok(d) => {
            if let Some(mut seen) = SEEN.try_lock() {
                seen.keep(&d);
            }
            (d.hash, Ok(d))
        }
        Err(e) => (header_hash(page), Err(e)),
    }
}

fn fresh(page: &[u8; PAGE]) -> Result<Arc<Decoded>, FormatError> {
    let header = Header::decode(page)?;
    let descr = header.dtype.descr();
    Ok(Arc::new(Decoded { page: Box::new(*page), hash: header_hash(page), header, descr }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;

    fn page(shape: &[usize]) -> Box<[u8; PAGE]> {
        Header { dtype: DType::parse("'<f8'").unwrap(), shape: shape.to_vec(), fortran_order: false }.encode().unwrap()
    }

    #[test]
    fn an_equal_page_finds_its_decoding_and_no_other() {
        let mut seen = Seen(Vec::new());
        let (a, b) = (page(&[3, 4]), page(&[4, 3]));
        let da = fresh(&a).unwrap();
        seen.keep(&da);
        assert!(seen.find(&b).is_none());
        let again = seen.find(&a.clone()).unwrap();
        assert!(Arc::ptr_eq(&da, &again));
        assert_eq!((again.hash, &again.header.shape, again.descr.as_str()), (header_hash(&a), &vec![3, 4], "'<f8'"));
    }

    #[test]
    fn the_least_recently_used_goes_first() {
        let mut seen = Seen(Vec::new());
        let pages: Vec<_> = (0..=MAX_ENTRIES).map(|n| page(&[n])).collect();
        for p in &pages[..MAX_ENTRIES] {
            seen.keep(&fresh(p).unwrap());
        }
        assert!(seen.find(&pages[0]).is_some()); // used again: now the newest
        seen.keep(&fresh(&pages[MAX_ENTRIES]).unwrap());
        assert!(seen.find(&pages[1]).is_none());
        assert!(seen.find(&pages[0]).is_some());
        assert_eq!(seen.0.len(), MAX_ENTRIES);
    }

    #[test]
    fn a_bad_page_decodes_to_its_error_every_time() {
        let mut p = page(&[5]);
        p[0] ^= 1;
        for _ in 0..2 {
            let (hash, d) = decode(&p);
            assert_eq!(hash, header_hash(&p));
            assert!(d.is_err());
        }
    }
}
