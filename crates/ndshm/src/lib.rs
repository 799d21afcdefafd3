//! ndshm: n-dimensional arrays in shared memory that describe themselves.
//!
//! A segment holds one array: a valid `.npy` header, the data, and a
//! control page (see `docs/FORMAT.md`). Named segments live in `/dev/shm`
//! until deleted; anonymous ones are memfds (big ones: unnamed files in a
//! private tmpfs with huge pages) that vanish with the last process holding
//! them.
//!
//! ```no_run
//! use ndshm::{DType, Header, Segment};
//! let header = Header { dtype: DType::from_typestr("<f8")?, shape: vec![3, 4], fortran_order: false };
//! let seg = Segment::create(&header, Some("example"))?;
//! seg.write_from(&[1.0f64; 12])?;
//! let seg = seg.publish();
//! let again = Segment::attach("example", true)?;
//! assert_eq!(again.to_array::<f64>()?.sum(), 12.0);
//! ndshm::delete("example")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod attach;
pub mod cache;
mod claim;
mod create;
mod directory;
pub mod dispatch;
#[cfg(test)]
mod doc_tables;
mod dtype;
mod error;
mod fdpass;
pub mod format;
#[cfg(test)]
mod format_doc;
pub mod handle;
pub mod handoff;
mod headers;
pub mod host;
mod huge;
pub mod keeper;
pub mod literal;
pub mod lock;
mod memory;
pub mod name;
mod populate;
mod process;
pub mod receive;
mod registry;
mod segment;
pub mod tmpfs;
mod view;

pub use create::Created;
pub use directory::{delete, exists, gc, info, list, Entry, Status};
pub use dtype::{DType, DTypeError, Element};
pub use error::{AttachError, CreateError, SegmentError};
pub use format::{FormatError, Header};
pub use handle::{Handle, HandleError, SegmentRef, View};
pub use lock::{LockError, LockWords, Outcome};
pub use segment::{Info, Segment};
pub use view::{check_view, ViewError};
