//! Process identity that survives pid reuse: a pid plus its start time.

/// Start time of `pid` in clock ticks since boot (field 22 of
/// `/proc/PID/stat`), or `None` if there is no such process.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: skip past
    // the last ')' and count from there (state is field 3).
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// This process: (pid, start time). Read from `/proc` once per process
/// (a fork child has another pid, and reads its own).
pub fn current() -> (u32, u64) {
    use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};
    static PID: AtomicU32 = AtomicU32::new(0);
    static START: AtomicU64 = AtomicU64::new(0);
    let pid = std::process::id();
    if PID.load(Acquire) == pid {
        let start = START.load(Acquire);
        // Writers of another pid clear PID before they store START.
        if PID.load(Acquire) == pid {
            return (pid, start);
        }
    }
    let start = start_time(pid).unwrap_or(0);
    PID.store(0, Release);
    START.store(start, Release);
    PID.store(pid, Release);
    (pid, start)
}

/// Whether the process `pid` that started at `start` is still running
/// (a zombie counts as gone).
pub fn is_alive(pid: u32, start: u64) -> bool {
    if pid == 0 {
        return false;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(close) = stat.rfind(')') else { return false };
    let mut fields = stat[close + 1..].split_ascii_whitespace();
    let state = fields.next();
    if matches!(state, Some("Z" | "X")) {
        return false;
    }
    fields.nth(18).and_then(|s| s.parse::<u64>().ok()).is_some_and(|s| s == start || start == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive() {
        let (pid, start) = current();
        assert!(start > 0);
        assert!(is_alive(pid, start));
        assert!(!is_alive(pid, start + 1));
        assert!(!is_alive(0, 0));
    }
}
