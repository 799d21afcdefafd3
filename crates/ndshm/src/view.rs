//! Views into a segment's data: bounds checks for handles that describe a
//! strided view, and typed `ndarray` views for Rust callers.

use crate::dtype::Element;
use crate::segment::Segment;
use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, IxDyn, ShapeBuilder};
use thiserror::Error;

/// Why a view was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ViewError {
    #[error("view reaches bytes {lo}..{hi}, outside the segment's {len} data bytes")]
    OutOfBounds { lo: i128, hi: i128, len: u64 },
    #[error("bad view: {0}")]
    Malformed(String),
    #[error("dtype mismatch: the segment holds {found}, the view asks for {wanted}")]
    DType { found: String, wanted: String },
    #[error("the segment is mapped read-only")]
    ReadOnly,
}

/// Checks that the strided view at byte `offset` (from the start of the
/// data) with `shape`, byte `strides` and `itemsize` lies inside `len`
/// data bytes. An empty view must still start inside (or at the end of)
/// the data.
pub fn check_view(len: u64, offset: i64, shape: &[i64], strides: &[i64], itemsize: i64) -> Result<(), ViewError> {
    if shape.len() != strides.len() {
        return Err(ViewError::Malformed("shape and strides differ in length".into()));
    }
    if shape.len() > crate::format::MAX_NDIM {
        return Err(ViewError::Malformed("too many dimensions".into()));
    }
    if itemsize < 0 || shape.iter().any(|&d| d < 0) {
        return Err(ViewError::Malformed("negative size".into()));
    }
    let len_i = len as i128;
    let off = offset as i128;
    if shape.contains(&0) {
        if !(0..=len_i).contains(&off) {
            return Err(ViewError::OutOfBounds { lo: off, hi: off, len });
        }
        return Ok(());
    }
    // Each step stays within i128 (|reach| < 2**126); the sums are checked,
    // and leave the data as soon as they pass its bounds, so they cannot
    // wrap back into it.
    let (mut lo, mut hi) = (off, off + itemsize as i128);
    for (&n, &s) in shape.iter().zip(strides) {
        let reach = (n as i128 - 1) * s as i128;
        if reach < 0 {
            lo += reach;
        } else {
            hi += reach;
        }
        if lo < 0 || hi > len_i {
            return Err(ViewError::OutOfBounds { lo, hi, len });
        }
    }
    if lo < 0 || hi > len_i {
        return Err(ViewError::OutOfBounds { lo, hi, len });
    }
    Ok(())
}

impl Segment {
    fn typed_shape<T: Element>(&self) -> Result<ndarray::Shape<IxDyn>, ViewError> {
        let h = self.header();
        let found = h.dtype.typestr().unwrap_or("structured");
        if found != T::typestr() {
            return Err(ViewError::DType { found: h.dtype.descr(), wanted: T::typestr().to_string() });
        }
        let shape = IxDyn(&h.shape);
        Ok(if h.fortran_order { shape.f() } else { shape.into_shape_with_order() })
    }

    /// The whole array as a typed view, checked against the segment's dtype.
    ///
    /// # Safety
    /// Other processes share this memory. The caller must make sure nobody
    /// writes it while the view lives (hold the array's lock, or own the
    /// data by convention); otherwise reads race with those writes.
    pub unsafe fn as_array<T: Element>(&self) -> Result<ArrayViewD<'_, T>, ViewError> {
        let shape = self.typed_shape::<T>()?;
        // SAFETY: dtype and size were checked (shape × itemsize = data_len
        // at attach), the data is page-aligned, and the caller promises no
        // concurrent writer.
        Ok(unsafe { ArrayViewD::from_shape_ptr(shape, self.data_ptr() as *const T) })
    }

    /// The whole array as a mutable typed view.
    ///
    /// # Safety
    /// As for [`as_array`](Segment::as_array), and nobody else may read or
    /// write the memory while the view lives.
    pub unsafe fn as_array_mut<T: Element>(&self) -> Result<ArrayViewMutD<'_, T>, ViewError> {
        if self.is_readonly() {
            return Err(ViewError::ReadOnly);
        }
        let shape = self.typed_shape::<T>()?;
        // SAFETY: as in `as_array`; the mapping is writable.
        Ok(unsafe { ArrayViewMutD::from_shape_ptr(shape, self.data_ptr() as *mut T) })
    }

    /// A private copy of the array, read through raw pointers (safe even
    /// while other processes write; the copy may then mix old and new).
    pub fn to_array<T: Element>(&self) -> Result<ArrayD<T>, ViewError> {
        let shape = self.typed_shape::<T>()?;
        let n = self.data_len() / std::mem::size_of::<T>().max(1);
        let mut v: Vec<T> = Vec::with_capacity(n);
        // SAFETY: data holds n items of T (checked above); the vector has
        // room for n; volatile-free byte copy of plain data.
        unsafe {
            std::ptr::copy_nonoverlapping(self.data_ptr() as *const T, v.as_mut_ptr(), n);
            v.set_len(n);
        }
        ArrayD::from_shape_vec(shape, v).map_err(|e| ViewError::Malformed(e.to_string()))
    }

    /// Writes `values` (in the segment's memory order) into the array.
    pub fn write_from<T: Element>(&self, values: &[T]) -> Result<(), ViewError> {
        self.typed_shape::<T>()?;
        if self.is_readonly() {
            return Err(ViewError::ReadOnly);
        }
        if std::mem::size_of_val(values) != self.data_len() {
            return Err(ViewError::Malformed(format!(
                "{} values for an array of {} bytes",
                values.len(),
                self.data_len()
            )));
        }
        // SAFETY: sizes match, the mapping is writable, ranges are distinct.
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), self.data_ptr() as *mut T, values.len()) };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert!(check_view(80, 0, &[10], &[8], 8).is_ok());
        assert!(check_view(80, 8, &[10], &[8], 8).is_err());
        assert!(check_view(80, 72, &[10], &[-8], 8).is_ok());
        assert!(check_view(80, 64, &[10], &[-8], 8).is_err());
        assert!(check_view(80, 0, &[2, 5], &[40, 8], 8).is_ok());
        assert!(check_view(80, 0, &[3, 5], &[40, 8], 8).is_err());
        assert!(check_view(80, 0, &[1000, 10], &[0, 8], 8).is_ok()); // broadcast
        assert!(check_view(80, 80, &[0], &[8], 8).is_ok());
        assert!(check_view(80, 81, &[0], &[8], 8).is_err());
        assert!(check_view(80, -1, &[1], &[8], 1).is_err());
        assert!(check_view(80, 0, &[i64::MAX], &[i64::MAX], 8).is_err());
        assert!(check_view(80, 0, &[1], &[8, 8], 8).is_err());
        assert!(check_view(80, 0, &[-1], &[8], 8).is_err());
        // Sums that would pass i128's range if not stopped at the bounds.
        assert!(check_view(80, 0, &[i64::MAX; 64], &[i64::MAX; 64], 8).is_err());
        assert!(check_view(80, 72, &[i64::MAX; 64], &[i64::MIN; 64], 8).is_err());
    }
}
