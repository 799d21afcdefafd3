//! How much shared memory a new segment may take, checked before any page
//! is allocated so that running out is an error at creation, never an OOM
//! kill or a SIGBUS later.

use crate::error::SegmentError;
use std::path::Path;

fn no_memory(what: String) -> SegmentError {
    SegmentError::NoMemory(what)
}

/// Room for a named segment of `bytes` in the filesystem at `dir`.
pub fn check_named(dir: &Path, bytes: u64) -> Result<(), SegmentError> {
    let st = rustix::fs::statvfs(dir).map_err(|e| SegmentError::io(format!("statvfs {}", dir.display()), e.into()))?;
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    if bytes > free {
        return Err(no_memory(format!(
            "a segment of {bytes} bytes does not fit in {} ({free} bytes free)",
            dir.display()
        )));
    }
    Ok(())
}

/// Room for an anonymous segment of `bytes`: memory this process may still
/// use, the tightest of the machine's available memory and every memory
/// cgroup limit above this process.
pub fn check_anonymous(bytes: u64) -> Result<(), SegmentError> {
    if let Some((room, what)) = room() {
        if bytes > room {
            return Err(no_memory(format!(
                "an anonymous segment of {bytes} bytes exceeds the {room} bytes {what} allows"
            )));
        }
    }
    Ok(())
}

fn room() -> Option<(u64, &'static str)> {
    let mut best: Option<(u64, &'static str)> = meminfo_available().map(|r| (r, "available memory"));
    if let Some(r) = cgroup_room() {
        if best.is_none_or(|(b, _)| r < b) {
            best = Some((r, "the memory cgroup limit"));
        }
    }
    best
}

fn meminfo_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn stat_field(path: &Path, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(' ')).map(|v| v.trim().parse().ok()))
        })
        .flatten()
        .unwrap_or(0)
}

/// Smallest `limit - usage + reclaimable cache` over this process's memory
/// cgroup and its ancestors, for cgroup v2 and v1.
fn cgroup_room() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut best: Option<u64> = None;
    let mut consider = |dir: &Path, limit: &str, usage: &str, inactive: &str| {
        let mut d = dir.to_path_buf();
        loop {
            if let (Some(lim), Some(used)) = (read_u64(&d.join(limit)), read_u64(&d.join(usage))) {
                let cache = stat_field(&d.join("memory.stat"), inactive);
                let r = lim.saturating_sub(used.saturating_sub(cache));
                best = Some(best.map_or(r, |b| b.min(r)));
            }
            if !d.pop() || !d.starts_with("/sys/fs/cgroup") {
                break;
            }
        }
    };
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        let path = path.trim_start_matches('/');
        if ctrls.is_empty() {
            let dir = Path::new("/sys/fs/cgroup").join(path);
            // "max" does not parse: no limit at that level.
            consider(&dir, "memory.max", "memory.current", "inactive_file");
        } else if ctrls.split(',').any(|c| c == "memory") {
            let dir = Path::new("/sys/fs/cgroup/memory").join(path);
            consider(&dir, "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file");
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_sizes_are_refused() {
        assert!(matches!(check_anonymous(1 << 60), Err(SegmentError::NoMemory(_))));
        assert!(matches!(check_named(Path::new("/tmp"), 1 << 60), Err(SegmentError::NoMemory(_))));
        check_anonymous(4096).unwrap();
    }
}
