//! Transparent huge pages for segment memory, where the system allows them.
//!
//! Shared memory gets 4 KiB pages unless the administrator allows huge ones:
//! `/sys/kernel/mm/transparent_hugepage/shmem_enabled` governs memfds
//! (anonymous segments), the tmpfs mount's `huge=` option files in it
//! (named segments); `force` in the former overrides both. Allocating a page
//! dominates the cost of fresh shared memory, so 2 MiB pages make it several
//! times cheaper (measured on 2 cores: copying 1 GiB into a fresh memfd, 62
//! ms with huge pages against 390 ms without).
//!
//! Under `advise`, only faults through a mapping marked `MADV_HUGEPAGE` get
//! huge pages (`fallocate` never does), so every mapping of a segment big
//! enough is marked, and such segments are reserved through the mapping.
//! The setting is read again at most once a second: an administrator's
//! change reaches running processes.
//!
//! Where `shmem_enabled` gives memfds no huge pages, big anonymous segments
//! go to a private tmpfs mounted with `huge=within_size` instead (see
//! `crate::tmpfs`), unless `shmem_enabled` is `deny`. `NDSHM_HUGE_PAGES=off`
//! (read with the setting) makes ndshm ask for huge pages nowhere.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Segments smaller than one huge page gain nothing.
pub const MIN_LEN: usize = 2 << 20;

const SHMEM_ENABLED: &str = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";
const REFRESH: Duration = Duration::from_secs(1);

/// Whether the kernel gives a shared-memory file huge pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Never (the kernel's default).
    Never,
    /// Only through mappings marked `MADV_HUGEPAGE`.
    Advise,
    /// Wherever a huge page fits.
    Always,
}

impl Policy {
    /// Reads a `shmem_enabled` or `huge=` value.
    pub fn parse(value: &str) -> Policy {
        match value.trim() {
            "always" | "within_size" | "force" => Policy::Always,
            "advise" => Policy::Advise,
            _ => Policy::Never,
        }
    }

    /// Whether mappings should be marked and memory reserved through them.
    pub fn wanted(self) -> bool {
        self != Policy::Never
    }
}

/// The selected value of a sysfs choice list such as `always [never] advise`.
pub fn selected(list: &str) -> Option<&str> {
    let start = list.find('[')? + 1;
    let end = start + list[start..].find(']')?;
    Some(&list[start..end])
}

/// The `huge=` option of the tmpfs mount holding `dir`, from
/// `/proc/self/mountinfo` text (the longest mount point that contains it).
pub fn mount_option(mountinfo: &str, dir: &Path) -> Option<String> {
    let mut best: Option<(usize, Option<String>)> = None;
    for line in mountinfo.lines() {
        let mut fields = line.split(' ');
        let Some(point) = fields.nth(4) else { continue };
        // Mount points escape spaces and the like as octal: compare as given.
        if !dir.starts_with(point) || best.as_ref().is_some_and(|(n, _)| *n >= point.len()) {
            continue;
        }
        let rest: Vec<&str> = fields.collect();
        let Some(sep) = rest.iter().position(|f| *f == "-") else { continue };
        let (fstype, super_opts) = (rest.get(sep + 1), rest.get(sep + 3));
        let huge = match (fstype, super_opts) {
            (Some(&"tmpfs"), Some(opts)) => opts.split(',').find_map(|o| o.strip_prefix("huge=")).map(str::to_string),
            _ => None,
        };
        best = Some((point.len(), huge));
    }
    best.and_then(|(_, h)| h)
}

struct Cached {
    at: Instant,
    shmem: Policy,
    force: bool,
    deny: bool,
    off: bool,
    dir: Option<(PathBuf, Policy)>,
}

static CACHE: Mutex<Option<Cached>> = Mutex::new(None);

/// Reads the kernel setting (absent: no shmem THP at all, as `deny`) and
/// `NDSHM_HUGE_PAGES`.
fn read_settings(at: Instant) -> Cached {
    let text = std::fs::read_to_string(SHMEM_ENABLED).unwrap_or_default();
    let value = selected(&text).unwrap_or("deny");
    let off = std::env::var("NDSHM_HUGE_PAGES").is_ok_and(|v| v.trim().eq_ignore_ascii_case("off"));
    Cached { at, shmem: Policy::parse(value), force: value == "force", deny: value == "deny", off, dir: None }
}

fn read_mount(dir: &Path) -> Policy {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mount_option(&info, dir).map_or(Policy::Never, |v| Policy::parse(&v))
}

fn settings<T>(f: impl FnOnce(&mut Cached) -> T) -> T {
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    let c = match cache.as_mut() {
        Some(c) if now.duration_since(c.at) < REFRESH => c,
        _ => cache.insert(read_settings(now)),
    };
    f(c)
}

/// The policy for a memfd (`named_dir` None) or a named segment in
/// `named_dir`: what ndshm's mappings should ask for.
pub fn policy(named_dir: Option<&Path>) -> Policy {
    settings(|c| policy_of(c, named_dir))
}

/// Whether a segment of `len` bytes, anonymous or named in `named_dir`,
/// should ask for huge pages.
pub fn wanted_for(len: usize, named_dir: Option<&Path>) -> bool {
    len >= MIN_LEN && policy(named_dir).wanted()
}

/// Whether a new anonymous segment of `len` bytes should be a file in the
/// private tmpfs rather than a memfd: big enough, huge pages not refused,
/// and none to be had from a memfd.
pub fn wants_private_tmpfs(len: usize) -> bool {
    len >= MIN_LEN && settings(|c| !c.off && !c.deny && c.shmem == Policy::Never)
}

fn policy_of(c: &mut Cached, named_dir: Option<&Path>) -> Policy {
    if c.off {
        return Policy::Never;
    }
    if c.force {
        return Policy::Always;
    }
    let Some(dir) = named_dir else { return c.shmem };
    match &c.dir {
        Some((d, p)) if d == dir => *p,
        _ => {
            let p = read_mount(dir);
            c.dir = Some((dir.to_path_buf(), p));
            p
        }
    }
}

/// Marks `[ptr, ptr + len)` for huge pages (errors ignored: the advice is
/// an optimization, and kernels without THP refuse it).
///
/// # Safety
/// The range must lie inside one mapping this process made.
pub unsafe fn advise(ptr: *mut u8, len: usize) {
    // SAFETY: the range is a mapping of ours (caller's promise); this advice
    // changes no data and no protection.
    let _ = unsafe { rustix::mm::madvise(ptr.cast(), len, rustix::mm::Advice::LinuxHugepage) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_selected_value() {
        assert_eq!(selected("always within_size advise [never] deny force"), Some("never"));
        assert_eq!(selected("[advise] never"), Some("advise"));
        assert_eq!(selected("never"), None);
        for (v, p) in [
            ("never", Policy::Never),
            ("deny", Policy::Never),
            ("advise", Policy::Advise),
            ("always", Policy::Always),
            ("within_size", Policy::Always),
            ("force", Policy::Always),
            ("", Policy::Never),
        ] {
            assert_eq!(Policy::parse(v), p, "{v}");
        }
    }

    #[test]
    fn finds_the_mount_holding_a_directory() {
        let info = "\
22 1 0:21 / / rw,relatime - ext4 /dev/vda rw
25 22 0:23 / /dev/shm rw,nosuid,nodev - tmpfs tmpfs rw,size=1024k,huge=advise
26 25 0:24 / /dev/shm/sub rw - tmpfs tmpfs rw,size=1024k
27 22 0:25 / /dev/shmother rw - tmpfs tmpfs rw,huge=always
";
        assert_eq!(mount_option(info, Path::new("/dev/shm")).as_deref(), Some("advise"));
        assert_eq!(mount_option(info, Path::new("/dev/shm/x")).as_deref(), Some("advise"));
        assert_eq!(mount_option(info, Path::new("/dev/shm/sub")), None);
        assert_eq!(mount_option(info, Path::new("/dev/shmother")).as_deref(), Some("always"));
        assert_eq!(mount_option(info, Path::new("/tmp")), None);
    }
}
