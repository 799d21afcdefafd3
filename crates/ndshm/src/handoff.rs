//! Keeping anonymous segments alive until receivers attach them, while
//! this process runs (at exit, `keeper` takes over).
//!
//! An anonymous segment exists only while some process holds its memfd. A
//! handle names the sender's pid and fd; the receiver opens
//! `/proc/PID/fd/FD`. Each pickled handle counts one pending handoff in the
//! control page, and each attach settles one. So that a sender may drop the
//! array, or exit, right after sending:
//!
//! - dropping the last reference with handoffs pending moves the memfd to
//!   a linger list, keeping its fd number, until they are settled or
//!   `LINGER` has passed;
//! - at exit, a process with handoffs pending forks a keeper (`keeper`): a small child
//!   that holds those memfds and hands them out over abstract unix sockets
//!   named after the segment id, until they are settled or `LINGER` passes.
//!   Abstract sockets vanish with their process: nothing can leak.
//!
//! A sender killed by a signal leaves neither, and its receivers get a
//! clear error naming it.

use crate::format::{ctl, PAGE};
use memmap2::{MmapOptions, MmapRaw};
use std::fs::File;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a sender keeps an unattached handoff alive, unless
/// `NDSHM_HANDOFF_LINGER` (seconds) says otherwise.
pub(crate) const LINGER: Duration = Duration::from_secs(30);

/// The linger time in force.
pub(crate) fn linger_time() -> Duration {
    std::env::var("NDSHM_HANDOFF_LINGER")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(LINGER, |s| Duration::from_secs_f64(s.min(3600.0)))
}

/// A segment this process let go of with handoffs pending.
pub(crate) struct Lingering {
    pub(crate) file: File,
    /// Its control page, mapped on its own.
    pub(crate) control: MmapRaw,
    pub(crate) id: u64,
    pid: u32,
    until: Instant,
}

impl Lingering {
    pub(crate) fn pending(&self) -> &AtomicU32 {
        // SAFETY: `control` maps one whole page; PENDING is an aligned word
        // inside it; the reference lives no longer than `self`.
        unsafe { &*(self.control.as_mut_ptr().add(ctl::PENDING) as *const AtomicU32) }
    }
}

static LINGERING: Mutex<Vec<Lingering>> = Mutex::new(Vec::new());

/// Keeps `file` (an anonymous segment with handoffs pending) open.
pub(crate) fn linger(file: File, id: u64) {
    let Ok(len) = file.metadata().map(|m| m.len()) else { return };
    let mut o = MmapOptions::new();
    o.offset(len.saturating_sub(PAGE as u64)).len(PAGE);
    let Ok(control) = o.map_raw(&file) else { return };
    let mut list = LINGERING.lock().unwrap_or_else(|e| e.into_inner());
    list.push(Lingering { file, control, id, pid: std::process::id(), until: Instant::now() + linger_time() });
    sweep_locked(&mut list);
}

fn sweep_locked(list: &mut Vec<Lingering>) {
    let now = Instant::now();
    let me = std::process::id();
    // Entries inherited through fork belong to the parent: drop our copies.
    list.retain(|l| l.pid == me && now < l.until && l.pending().load(Ordering::Acquire) > 0);
}

/// Closes lingering segments whose handoffs are all settled or expired.
pub fn sweep() {
    let mut list = LINGERING.lock().unwrap_or_else(|e| e.into_inner());
    if !list.is_empty() {
        sweep_locked(&mut list);
    }
}

/// Takes every lingering segment whose handoffs are still pending (for the
/// keeper, at exit).
pub(crate) fn take_lingering() -> Vec<Lingering> {
    let mut list = LINGERING.lock().unwrap_or_else(|e| e.into_inner());
    sweep_locked(&mut list);
    list.drain(..).collect()
}
