//! Names of named segments and where they live.

use crate::error::SegmentError;
use std::path::PathBuf;

/// Every named segment is the file `<dir>/ndshm-NAME`.
pub(crate) const PREFIX: &str = "ndshm-";
/// Longest NAME: `/ndshm-` plus 24 characters fits macOS's 31-byte limit.
pub const MAX_LEN: usize = 24;

/// Checks a user-supplied segment name: 1 to 24 of letters, digits, `.`,
/// `_` and `-`, not starting with `.` or `-`.
pub fn validate(name: &str) -> Result<(), SegmentError> {
    let why = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_LEN {
        Some("it is longer than 24 characters")
    } else if !name.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-')) {
        Some("only letters, digits, '.', '_' and '-' are allowed")
    } else if name.starts_with('.') || name.starts_with('-') {
        Some("it must not start with '.' or '-'")
    } else {
        None
    };
    match why {
        Some(why) => Err(SegmentError::InvalidName { name: name.to_string(), why }),
        None => Ok(()),
    }
}

/// The directory of named segments: `$NDSHM_DIR`, or `/dev/shm`.
pub fn dir() -> PathBuf {
    std::env::var_os("NDSHM_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/dev/shm"))
}

/// The file of a (validated) name.
pub(crate) fn path_of(name: &str) -> PathBuf {
    let mut path = dir().into_os_string();
    path.reserve(1 + PREFIX.len() + name.len());
    path.push("/");
    path.push(PREFIX);
    path.push(name);
    path.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        for ok in ["a", "train-2024.v1_x", "A9", &"x".repeat(24)] {
            validate(ok).unwrap();
        }
    }

    #[test]
    fn rejects_hostile_names() {
        for bad in ["", ".", "..", "../x", "a/b", "a\0b", "-rf", " a", "ü", &"x".repeat(25)] {
            assert!(matches!(validate(bad), Err(SegmentError::InvalidName { .. })), "{bad:?} accepted");
        }
    }
}
