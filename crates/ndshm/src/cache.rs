//! Segments received through handles stay mapped for a moment after their
//! last user in this process lets go (`NDSHM_MAP_CACHE` seconds, default 1;
//! 0 turns it off). A worker that receives the same array task after task
//! then maps it once, and each further handoff costs no system call. A
//! timer thread lets the segments go when their time is up, so memory is
//! still returned about a second after the last user is done with it.

use crate::segment::Segment;
use parking_lot::Mutex;
use std::sync::{Once, OnceLock};
use std::time::{Duration, Instant};

/// Most segments kept at once (the oldest goes first).
const MAX_ENTRIES: usize = 64;

struct State {
    entries: Vec<(Segment, Instant)>,
    timer: bool,
}

static CACHE: Mutex<State> = Mutex::new(State { entries: Vec::new(), timer: false });
static ATFORK: Once = Once::new();

/// How long a received segment stays mapped after its last use.
pub(crate) fn ttl() -> Duration {
    static TTL: OnceLock<Duration> = OnceLock::new();
    *TTL.get_or_init(|| {
        std::env::var("NDSHM_MAP_CACHE")
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map_or(Duration::from_secs(1), |s| Duration::from_secs_f64(s.min(3600.0)))
    })
}

// The timer thread takes the lock: a fork while it holds it would leave the
// child's copy locked forever. Hold it across fork instead.
extern "C" fn before_fork() {
    std::mem::forget(CACHE.lock());
}

extern "C" fn after_fork_parent() {
    // SAFETY: locked by `before_fork` in this thread, guard forgotten.
    unsafe { CACHE.force_unlock(parking_lot::lock_api::GuardNoSend::new()) };
}

extern "C" fn after_fork_child() {
    // SAFETY: as above; the child's only thread is this one.
    unsafe { CACHE.force_unlock(parking_lot::lock_api::GuardNoSend::new()) };
    // The timer thread did not come along.
    CACHE.lock().timer = false;
}

/// Keeps `seg` mapped for `ttl()` after now.
pub(crate) fn keep(seg: &Segment) {
    let ttl = ttl();
    if ttl.is_zero() {
        return;
    }
    ATFORK.call_once(|| {
        // SAFETY: registers handlers that only lock, unlock and set a flag.
        unsafe { libc::pthread_atfork(Some(before_fork), Some(after_fork_parent), Some(after_fork_child)) };
    });
    let now = Instant::now();
    let evicted = {
        let mut st = CACHE.lock();
        match st.entries.iter_mut().find(|(s, _)| s.same_mapping(seg)) {
            Some(e) => e.1 = now,
            None => st.entries.push((seg.clone(), now)),
        }
        let evicted = if st.entries.len() > MAX_ENTRIES {
            st.entries.sort_by_key(|e| std::cmp::Reverse(e.1));
            st.entries.split_off(MAX_ENTRIES)
        } else {
            Vec::new()
        };
        if !st.timer {
            st.timer = std::thread::Builder::new().name("ndshm-cache".into()).spawn(move || timer(ttl)).is_ok();
        }
        evicted
    };
    drop(evicted); // unmapping happens outside the lock
}

fn timer(ttl: Duration) {
    let tick = (ttl / 4).clamp(Duration::from_millis(10), Duration::from_millis(250));
    loop {
        std::thread::sleep(tick);
        let (expired, done) = {
            let mut st = CACHE.lock();
            let now = Instant::now();
            let (fresh, expired): (Vec<_>, Vec<_>) =
                std::mem::take(&mut st.entries).into_iter().partition(|(_, t)| now.duration_since(*t) < ttl);
            st.entries = fresh;
            let done = st.entries.is_empty();
            if done {
                st.timer = false;
            }
            (expired, done)
        };
        drop(expired);
        if done {
            return;
        }
    }
}

/// Lets every kept segment go now (their users, if any, keep them mapped).
pub fn clear() {
    let entries = std::mem::take(&mut CACHE.lock().entries);
    drop(entries);
}

/// Segments kept now.
pub fn len() -> usize {
    CACHE.lock().entries.len()
}
