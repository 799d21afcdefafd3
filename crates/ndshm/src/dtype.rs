//! Element types, described the way numpy describes them in `.npy` headers
//! (`'<f8'`, `'|S10'`, `'<M8[ns]'`, or a list of fields for structured
//! types), so that a segment header is also a valid `.npy` header.

use crate::literal::{self, Literal};
use thiserror::Error;

/// Why a dtype description was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DTypeError {
    /// Well-formed, but not a fixed-size plain-data type (object, for example).
    #[error("unsupported dtype {0}: shared arrays hold fixed-size plain data only (object and variable-width dtypes cannot live in shared memory)")]
    Unsupported(String),
    /// Not a dtype description at all.
    #[error("malformed dtype description: {0}")]
    Malformed(String),
}

/// Largest item ndshm accepts; far beyond any real dtype, small enough that
/// size arithmetic cannot overflow.
const MAX_ITEMSIZE: u64 = 1 << 32;

/// A validated dtype description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DType {
    descr: Literal,
    itemsize: usize,
}

impl DType {
    /// Parses the text numpy writes for `descr` (e.g. `'<f8'` with its quotes).
    pub fn parse(text: &str) -> Result<DType, DTypeError> {
        let lit = literal::parse(text).map_err(|e| DTypeError::Malformed(e.to_string()))?;
        DType::from_literal(lit)
    }

    /// From an already parsed descr value.
    pub fn from_literal(descr: Literal) -> Result<DType, DTypeError> {
        let itemsize = itemsize_of(&descr, 0)?;
        Ok(DType { descr, itemsize: itemsize as usize })
    }

    /// A simple (non-structured) dtype from its type string, e.g. `"<f8"`.
    pub fn from_typestr(typestr: &str) -> Result<DType, DTypeError> {
        DType::from_literal(Literal::Str(typestr.to_string()))
    }

    /// Bytes per element.
    pub fn itemsize(&self) -> usize {
        self.itemsize
    }

    /// The description as numpy's header writes it (Python literal syntax).
    pub fn descr(&self) -> String {
        self.descr.repr()
    }

    /// The parsed description.
    pub fn literal(&self) -> &Literal {
        &self.descr
    }

    /// The type string of a simple dtype (`"<f8"`), `None` for structured ones.
    pub fn typestr(&self) -> Option<&str> {
        match &self.descr {
            Literal::Str(s) => Some(s),
            _ => None,
        }
    }
}

fn malformed(what: impl Into<String>) -> DTypeError {
    DTypeError::Malformed(what.into())
}

fn itemsize_of(descr: &Literal, depth: usize) -> Result<u64, DTypeError> {
    if depth > 8 {
        return Err(malformed("structured dtype nested too deeply"));
    }
    let size = match descr {
        Literal::Str(s) => typestr_itemsize(s)?,
        Literal::List(fields) => {
            if fields.is_empty() {
                return Err(malformed("structured dtype with no fields"));
            }
            let mut total: u64 = 0;
            for f in fields {
                total = total
                    .checked_add(field_itemsize(f, depth)?)
                    .ok_or_else(|| malformed("structured dtype too large"))?;
            }
            total
        }
        other => return Err(malformed(format!("descr must be a string or a list of fields, not {}", other.repr()))),
    };
    if size > MAX_ITEMSIZE {
        return Err(malformed("itemsize too large"));
    }
    Ok(size)
}

fn field_itemsize(field: &Literal, depth: usize) -> Result<u64, DTypeError> {
    let Literal::Tuple(parts) = field else {
        return Err(malformed("a field must be a tuple (name, dtype[, shape])"));
    };
    let (name, descr, shape) = match parts.as_slice() {
        [n, d] => (n, d, None),
        [n, d, s] => (n, d, Some(s)),
        _ => return Err(malformed("a field must be a tuple (name, dtype[, shape])")),
    };
    match name {
        Literal::Str(_) => {}
        // (title, name)
        Literal::Tuple(t) if t.len() == 2 && matches!(t[1], Literal::Str(_)) => {}
        _ => return Err(malformed("a field name must be a string or (title, name)")),
    }
    let mut size = itemsize_of(descr, depth + 1)?;
    if let Some(shape) = shape {
        let dims: Vec<&Literal> = match shape {
            Literal::Tuple(d) => d.iter().collect(),
            one => vec![one],
        };
        for d in dims {
            let Literal::Int(n) = d else {
                return Err(malformed("a field shape must hold integers"));
            };
            let n = u64::try_from(*n).map_err(|_| malformed("negative field shape"))?;
            size = size.checked_mul(n).filter(|s| *s <= MAX_ITEMSIZE).ok_or_else(|| malformed("field too large"))?;
        }
    }
    Ok(size)
}

/// Item size of a numpy type string such as `<f8`, `|S10`, `<U3`, `<M8[ns]`.
fn typestr_itemsize(s: &str) -> Result<u64, DTypeError> {
    let b = s.as_bytes();
    let (order, rest) = match b.first() {
        Some(c @ (b'<' | b'>' | b'|' | b'=')) => (*c, &s[1..]),
        _ => (b'=', s),
    };
    let mut chars = rest.chars();
    let kind = chars.next().ok_or_else(|| malformed(format!("empty type string {s:?}")))?;
    let tail = chars.as_str();
    let (digits, unit) = match tail.find('[') {
        Some(i) => (&tail[..i], Some(&tail[i..])),
        None => (tail, None),
    };
    if kind == 'O' {
        return Err(DTypeError::Unsupported(format!("{s:?} (object)")));
    }
    if !digits.bytes().all(|c| c.is_ascii_digit()) || digits.len() > 12 {
        return Err(malformed(format!("bad type string {s:?}")));
    }
    let n: Option<u64> = if digits.is_empty() { None } else { digits.parse().ok() };
    if unit.is_some() && !matches!(kind, 'M' | 'm') {
        return Err(malformed(format!("bad type string {s:?}")));
    }
    let fixed = |allowed: &[u64]| -> Result<u64, DTypeError> {
        match n {
            Some(n) if allowed.contains(&n) => Ok(n),
            _ => Err(malformed(format!("bad size in type string {s:?}"))),
        }
    };
    let size = match kind {
        'b' => fixed(&[1])?,
        'i' | 'u' => fixed(&[1, 2, 4, 8])?,
        'f' => fixed(&[2, 4, 8, 12, 16])?,
        'c' => fixed(&[8, 16, 24, 32])?,
        'M' | 'm' => {
            if let Some(u) = unit {
                let inner = u.strip_prefix('[').and_then(|u| u.strip_suffix(']'));
                // numpy's units, with an optional multiplier (a C int there).
                let ok = inner.is_some_and(|u| {
                    let digits = u.bytes().take_while(u8::is_ascii_digit).count();
                    const UNITS: [&str; 14] =
                        ["Y", "M", "W", "D", "h", "m", "s", "ms", "us", "ns", "ps", "fs", "as", "generic"];
                    digits <= 9 && UNITS.contains(&&u[digits..]) && (digits == 0 || &u[digits..] != "generic")
                });
                if !ok {
                    return Err(malformed(format!("bad datetime unit in {s:?}")));
                }
            }
            fixed(&[8])?
        }
        'S' | 'a' | 'V' => n.ok_or_else(|| malformed(format!("missing size in {s:?}")))?,
        'U' => n.and_then(|n| n.checked_mul(4)).ok_or_else(|| malformed(format!("missing size in {s:?}")))?,
        _ => return Err(DTypeError::Unsupported(format!("{s:?}"))),
    };
    if order == b'|' && size > 1 && matches!(kind, 'i' | 'u' | 'f' | 'c' | 'M' | 'm') {
        return Err(malformed(format!("multi-byte type {s:?} needs a byte order")));
    }
    Ok(size)
}

/// Rust element types with a fixed numpy equivalent, for typed views.
pub trait Element: Copy + 'static {
    /// The numpy type string of this type in native byte order.
    fn typestr() -> &'static str;
}

macro_rules! element {
    ($($t:ty => $le:literal, $be:literal;)*) => {$(
        impl Element for $t {
            fn typestr() -> &'static str {
                if cfg!(target_endian = "little") { $le } else { $be }
            }
        }
    )*};
}

element! {
    bool => "|b1", "|b1";
    i8 => "|i1", "|i1";
    u8 => "|u1", "|u1";
    i16 => "<i2", ">i2";
    u16 => "<u2", ">u2";
    i32 => "<i4", ">i4";
    u32 => "<u4", ">u4";
    i64 => "<i8", ">i8";
    u64 => "<u8", ">u8";
    f32 => "<f4", ">f4";
    f64 => "<f8", ">f8";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(text: &str) -> Result<usize, DTypeError> {
        DType::parse(text).map(|d| d.itemsize())
    }

    #[test]
    fn scalar_sizes() {
        assert_eq!(size("'<f8'"), Ok(8));
        assert_eq!(size("'|b1'"), Ok(1));
        assert_eq!(size("'>i2'"), Ok(2));
        assert_eq!(size("'<c16'"), Ok(16));
        assert_eq!(size("'<M8[ns]'"), Ok(8));
        assert_eq!(size("'<m8[10ms]'"), Ok(8));
        assert_eq!(size("'|S10'"), Ok(10));
        assert_eq!(size("'<U3'"), Ok(12));
        assert_eq!(size("'|V16'"), Ok(16));
        assert_eq!(size("'<f2'"), Ok(2));
    }

    #[test]
    fn structured_sizes() {
        assert_eq!(size("[('x', '<f8'), ('y', '<i4', (2, 3))]"), Ok(32));
        assert_eq!(size("[(('title', 'x'), '<f4'), ('', '|V4')]"), Ok(8));
        assert_eq!(size("[('p', [('a', '|u1'), ('b', '<u2')]), ('q', '<f8', 2)]"), Ok(19));
    }

    #[test]
    fn object_is_unsupported_not_malformed() {
        assert!(matches!(DType::parse("'|O'"), Err(DTypeError::Unsupported(_))));
        assert!(matches!(DType::parse("[('a', '|O')]"), Err(DTypeError::Unsupported(_))));
        assert!(matches!(DType::parse("'<T16'"), Err(DTypeError::Unsupported(_))));
    }

    #[test]
    fn malformed_descrs() {
        for bad in [
            "'<f3'",
            "'<i'",
            "'|f8'",
            "'<M8[n s]'",
            "'<M8[xyz]'",
            "'<m8[1000000000000s]'",
            "'<M8[s1]'",
            "3",
            "[]",
            "[('a',)]",
            "[('a', '<f8', -1)]",
            "'S99999999999999'",
        ] {
            assert!(matches!(DType::parse(bad), Err(DTypeError::Malformed(_))), "{bad} accepted");
        }
    }

    #[test]
    fn descr_round_trips() {
        for text in ["'<f8'", "[('x', '<f8'), ('y', '<i4', (2, 3))]", "[('a', '|S3', (1,))]"] {
            let d = DType::parse(text).unwrap();
            assert_eq!(d.descr(), text);
            assert_eq!(DType::parse(&d.descr()).unwrap(), d);
        }
    }

    #[test]
    fn element_typestrs_parse() {
        for t in [f64::typestr(), i32::typestr(), bool::typestr(), u8::typestr()] {
            DType::from_typestr(t).unwrap();
        }
    }
}
