//! `.npy` header pages, dtype descriptions and the literals they are made of.
//!
//! The first input byte picks what the rest is:
//! - 0: a whole header page (padded with spaces to a page, newline last);
//! - 1: the header dict's text, behind a valid version 1.0 prefix;
//! - 2: the same behind a version 3.0 (UTF-8) prefix;
//! - 3: a dtype description (`descr` text);
//! - otherwise: any Python literal.
//!
//! Properties: whatever is accepted re-serialises to text that parses to
//! the same value (header page, dtype, literal), and an accepted header's
//! sizes agree with its dtype and shape.

use ndshm::format::{FormatError, Header, PAGE};
use ndshm::literal;
use ndshm::DType;

/// A page whose first bytes are `bytes`, padded like numpy pads a header.
pub fn page_of(bytes: &[u8]) -> Box<[u8; PAGE]> {
    let mut page = Box::new([b' '; PAGE]);
    let n = bytes.len().min(PAGE - 1);
    page[..n].copy_from_slice(&bytes[..n]);
    page[PAGE - 1] = b'\n';
    page
}

/// A header page holding `dict` behind the prefix of .npy `version` 1 or 3.
pub fn framed(version: u8, dict: &[u8]) -> Box<[u8; PAGE]> {
    let pre = if version == 1 { 10 } else { 12 };
    let mut bytes = b"\x93NUMPY".to_vec();
    bytes.extend_from_slice(&[version, 0]);
    let hlen = PAGE - pre;
    if version == 1 {
        bytes.extend_from_slice(&(hlen as u16).to_le_bytes());
    } else {
        bytes.extend_from_slice(&(hlen as u32).to_le_bytes());
    }
    bytes.extend_from_slice(dict);
    page_of(&bytes)
}

pub fn check(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode {
        0 => check_page(&page_of(rest)),
        1 => check_page(&framed(1, rest)),
        2 => check_page(&framed(3, rest)),
        3 => {
            if let Ok(text) = std::str::from_utf8(rest) {
                check_descr(text);
            }
        }
        _ => {
            if let Ok(text) = std::str::from_utf8(rest) {
                check_literal(text);
            }
        }
    }
}

fn check_page(page: &[u8; PAGE]) {
    let Ok(h) = Header::decode(page) else { return };
    let len = h.data_len().expect("an accepted header has a data length");
    let product = h.shape.iter().fold(h.dtype.itemsize() as u128, |n, &d| n * d as u128);
    assert_eq!(len as u128, product, "data length is not shape × itemsize");
    // The canonical text may be longer than what was read (escapes of
    // control characters); then encode refuses cleanly, as documented.
    let again = match h.encode() {
        Ok(page) => page,
        Err(FormatError::BadHeader(why)) if why.contains("too long") => return,
        Err(e) => panic!("an accepted header does not re-encode: {e}"),
    };
    let back = Header::decode(&again).expect("a re-encoded header decodes");
    assert_eq!(back, h, "header changed through encode/decode");
    assert_eq!(*Header::decode(&back.encode().unwrap()).unwrap().encode().unwrap(), *again, "encoding is not stable");
}

fn check_descr(text: &str) {
    let Ok(d) = DType::parse(text) else { return };
    assert!(d.itemsize() <= 1 << 32, "itemsize beyond the limit");
    let again = DType::parse(&d.descr()).expect("an accepted dtype's descr parses");
    assert_eq!(again, d, "dtype changed through descr/parse");
    assert_eq!(again.itemsize(), d.itemsize());
}

fn check_literal(text: &str) {
    let Ok(v) = literal::parse(text) else { return };
    let again = literal::parse(&v.repr()).expect("a literal's repr parses");
    assert_eq!(again, v, "literal changed through repr/parse");
}
