//! The segments this process has mapped, by id. A process maps each segment
//! at most once: a second attach of a name, or a received handle of a
//! segment already mapped here, reuses the mapping. The registry holds weak
//! references, so it keeps nothing mapped.

use crate::segment::{Segment, WeakSegment};
use std::collections::HashMap;
use std::sync::Mutex;

static REGISTRY: Mutex<Option<HashMap<u64, WeakSegment>>> = Mutex::new(None);

/// This process's mapping of segment `id`, if it fits the access wanted.
pub(crate) fn get(id: u64, readonly: bool) -> Option<Segment> {
    let reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    reg.as_ref()?.get(&id)?.upgrade(readonly)
}

/// Records a mapping made (and published) in this process.
pub(crate) fn put(seg: &Segment) {
    let mut reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    let map = reg.get_or_insert_with(HashMap::new);
    // Sweeps gone mappings as the table doubles: amortised, never a scan
    // per insert.
    if map.len() >= 64 && map.len().is_power_of_two() {
        map.retain(|_, w| !w.is_gone());
    }
    map.insert(seg.id(), seg.downgrade());
}

/// Every anonymous segment this process has mapped and still holds (the
/// keeper's candidates at exit).
pub(crate) fn live_anonymous() -> Vec<Segment> {
    let reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    reg.iter().flat_map(|m| m.values()).filter_map(|w| w.upgrade(true)).filter(|s| s.name().is_none()).collect()
}

impl Segment {
    /// The mapping of segment `id` if this process holds one.
    pub fn lookup(id: u64, readonly: bool) -> Option<Segment> {
        get(id, readonly)
    }
}
