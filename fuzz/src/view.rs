//! Bounds checks of views described by handles.
//!
//! The input decodes to a [`ViewCase`]: data length, byte offset, shape,
//! byte strides and item size, biased towards small numbers so that edges
//! are hit often. Property: [`accepts`] accepts exactly the views whose
//! every item lies inside the data (an empty view: whose offset does), as
//! an independent oracle computes it (by visiting every item when there
//! are few, else from each dimension's extreme indices).
//!
//! [`accepts`] is the one place that calls the code under test: the bounds
//! check, and the same view sent through the handle wire format.

use libfuzzer_sys::arbitrary::{Result, Unstructured};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewCase {
    pub len: u64,
    pub offset: i64,
    pub shape: Vec<i64>,
    pub strides: Vec<i64>,
    pub itemsize: i64,
}

/// Whether the code under test accepts the view: the bounds check itself,
/// and a receiver's whole check of the same view sent as a handle's wire
/// form (which must agree with it).
pub fn accepts(c: &ViewCase) -> bool {
    let direct = ndshm::check_view(c.len, c.offset, &c.shape, &c.strides, c.itemsize).is_ok();
    let Some(itemsize) = usize::try_from(c.itemsize).ok().filter(|&n| n > 0) else { return direct };
    let handle = ndshm::Handle {
        segment: ndshm::SegmentRef::Anonymous { pid: 1, fd: 3, id: 1 },
        view: ndshm::View { offset: c.offset, shape: c.shape.clone(), strides: c.strides.clone(), dtype: None },
        readonly: true,
        host: ndshm::host::this().clone(),
    };
    let wire = ndshm::handle::check_wire(&handle.encode(), c.len, itemsize).is_ok();
    assert_eq!(wire, direct, "the wire form and the bounds check disagree on {c:?}");
    direct
}

/// A number that is small (and so meets edges) most of the time.
fn num(u: &mut Unstructured, small: i64) -> Result<i64> {
    Ok(match u.int_in_range(0u8..=15)? {
        0 => u.arbitrary::<i64>()?,
        1 => -(u.int_in_range(0..=small)?),
        2 => i64::MAX - u.int_in_range(0..=small)?,
        3 => i64::MIN + u.int_in_range(0..=small)?,
        _ => u.int_in_range(0..=small)?,
    })
}

impl ViewCase {
    pub fn decode(data: &[u8]) -> Result<ViewCase> {
        let mut u = Unstructured::new(data);
        let len = if u.ratio(1u8, 16)? { u.arbitrary::<u64>()? >> 16 } else { u.int_in_range(0..=512)? };
        let itemsize = num(&mut u, 24)?;
        let offset = num(&mut u, 520)?;
        let ndim = u.int_in_range(0..=6)?;
        let shape = (0..ndim).map(|_| num(&mut u, 12)).collect::<Result<Vec<_>>>()?;
        let mut strides = Vec::with_capacity(ndim);
        for _ in 0..ndim {
            let s = num(&mut u, 64)?;
            strides.push(if u.arbitrary::<bool>()? { s.wrapping_neg() } else { s });
        }
        // Now and then a malformed pair: shape and strides of other lengths.
        if u.ratio(1u8, 32)? {
            strides.push(8);
        }
        Ok(ViewCase { len, offset, shape, strides, itemsize })
    }

    /// The oracle: does every byte of every item lie in `0..len`?
    pub fn inside(&self) -> bool {
        if self.shape.len() != self.strides.len()
            || self.shape.len() > ndshm::format::MAX_NDIM
            || self.itemsize < 0
            || self.shape.iter().any(|&n| n < 0)
        {
            return false;
        }
        let len = self.len as i128;
        let items = self.shape.iter().fold(1u128, |p, &n| p.saturating_mul(n as u128));
        if items == 0 {
            return (0..=len).contains(&(self.offset as i128));
        }
        let (mut lo, mut hi) = (i128::MAX, i128::MIN);
        if items <= 4096 {
            // Every item, by its index.
            let mut index = vec![0i64; self.shape.len()];
            loop {
                let start: i128 = self.offset as i128
                    + index.iter().zip(&self.strides).map(|(&i, &s)| i as i128 * s as i128).sum::<i128>();
                lo = lo.min(start);
                hi = hi.max(start + self.itemsize as i128);
                let mut d = self.shape.len();
                loop {
                    if d == 0 {
                        return lo >= 0 && hi <= len;
                    }
                    d -= 1;
                    index[d] += 1;
                    if index[d] < self.shape[d] {
                        break;
                    }
                    index[d] = 0;
                }
            }
        }
        // Too many items to visit: the lowest and highest item are reached
        // at each dimension's first or last index. Saturating sums: a sum
        // that saturates is far outside any data either way.
        let corners = self.shape.iter().zip(&self.strides).map(|(&n, &s)| [0, (n as i128 - 1) * s as i128]);
        lo = corners.clone().fold(self.offset as i128, |a, c| a.saturating_add(c[0].min(c[1])));
        hi = corners.fold(self.offset as i128 + self.itemsize as i128, |a, c| a.saturating_add(c[0].max(c[1])));
        lo >= 0 && hi <= len
    }
}

pub fn check(data: &[u8]) {
    let Ok(case) = ViewCase::decode(data) else { return };
    let accepted = accepts(&case);
    let inside = case.inside();
    assert_eq!(accepted, inside, "accepted={accepted} but inside={inside} for {case:?}");
}
