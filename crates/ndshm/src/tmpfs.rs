//! A private tmpfs instance that gives big anonymous segments huge pages.
//!
//! A memfd takes its page size from `shmem_enabled`, which is `never`
//! unless an administrator changed it; a tmpfs mount takes it from its own
//! `huge=` option instead (only `shmem_enabled = deny` overrides that). So,
//! where the system lets it, a process makes a tmpfs of its own with
//! `huge=within_size`: a detached mount (`fsopen` + `fsmount`) that is in
//! no mount table and reachable only through a descriptor this process
//! holds. Big anonymous segments are unnamed files in it (`O_TMPFILE |
//! O_EXCL`, never linkable): like a memfd, such a file has no name, other
//! processes open it through `/proc/PID/fd`, and its memory is freed with
//! the last descriptor or mapping. Fresh memory in 2 MiB pages costs a
//! fraction of 4 KiB ones (see `crate::huge`).
//!
//! Mounting needs `CAP_SYS_ADMIN` over the current mount namespace: root
//! has it; other users get it in a user namespace of their own, which a
//! short-lived child makes (a process with threads cannot) before sending
//! the mount back. Where neither works (a container that forbids both, a
//! kernel before 5.2), anonymous segments stay memfds.
//!
//! The price: tmpfs files take no seals, so a process of the same user
//! that opens such a file could truncate it under others' mappings, as it
//! could a named segment. ndshm never does.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;
use std::time::Duration;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags};

use crate::fdpass;

/// The mount, and its identity: a forked child that closed its descriptors
/// may find the number reused by another file.
struct Mount {
    fd: OwnedFd,
    dev: u64,
    ino: u64,
}

static MOUNT: OnceLock<Option<Mount>> = OnceLock::new();

/// A new unnamed file in this process's private tmpfs (made on first use),
/// or `None` where there is none.
pub(crate) fn create_file() -> Option<File> {
    let m = mount_once()?;
    let st = rustix::fs::fstat(&m.fd).ok()?;
    if st.st_dev != m.dev || st.st_ino != m.ino {
        return None;
    }
    let flags = OFlags::TMPFILE | OFlags::RDWR | OFlags::EXCL | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(&m.fd, c".", flags, Mode::RUSR | Mode::WUSR).ok()?;
    Some(File::from(fd))
}

/// Whether this process has a private tmpfs (making it if it can).
pub fn available() -> bool {
    mount_once().is_some()
}

fn mount_once() -> Option<&'static Mount> {
    MOUNT.get_or_init(|| mount().ok()).as_ref()
}

fn mount() -> rustix::io::Result<Mount> {
    let fd = match make() {
        Ok(fd) => fd,
        Err(_) => in_user_namespace()?,
    };
    let st = rustix::fs::fstat(&fd)?;
    Ok(Mount { fd, dev: st.st_dev, ino: st.st_ino })
}

/// Makes the detached tmpfs mount. Allocates nothing: a forked child runs it.
fn make() -> rustix::io::Result<OwnedFd> {
    let fs = rustix::mount::fsopen(c"tmpfs", FsOpenFlags::FSOPEN_CLOEXEC)?;
    // No size or inode limit of its own (the memory checks at creation and
    // the memory cgroup apply, as to memfds); only this user may enter it.
    for (key, value) in [(c"huge", c"within_size"), (c"size", c"0"), (c"nr_inodes", c"0"), (c"mode", c"0700")] {
        rustix::mount::fsconfig_set_string(&fs, key, value)?;
    }
    rustix::mount::fsconfig_create(&fs)?;
    let attrs =
        MountAttrFlags::MOUNT_ATTR_NODEV | MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NOEXEC;
    rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
}

/// Makes the mount in a child that enters a new user namespace, where
/// this user is root, and sends it back.
pub(crate) fn in_user_namespace() -> rustix::io::Result<OwnedFd> {
    // Ubuntu's AppArmor denies unprivileged user namespaces, logging each try.
    let restricted = std::fs::read_to_string("/proc/sys/kernel/apparmor_restrict_unprivileged_userns");
    if restricted.is_ok_and(|v| v.trim() == "1") {
        return Err(Errno::PERM);
    }
    // Prepared before the child starts: it must not allocate.
    let uid_map = format!("0 {} 1", rustix::process::getuid().as_raw());
    let gid_map = format!("0 {} 1", rustix::process::getgid().as_raw());
    let (here, there) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    let timeout = Some(Duration::from_secs(5));
    rustix::net::sockopt::set_socket_timeout(&here, rustix::net::sockopt::Timeout::Recv, timeout)?;
    // SAFETY: a fork that runs no fork handlers (the raw system call), in a
    // process that may have other threads: the child only makes system
    // calls on memory prepared above and leaves with _exit.
    let pid = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_long, 0usize, 0usize, 0usize, 0usize) };
    if pid == 0 {
        let sent = child(there.as_fd(), uid_map.as_bytes(), gid_map.as_bytes()).is_ok();
        // SAFETY: leaves the child without running the parent's exit handlers.
        unsafe { libc::_exit(if sent { 0 } else { 1 }) }
    }
    drop(there);
    if pid < 0 {
        return Err(Errno::from_raw_os_error(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)));
    }
    let got = fdpass::recv(&here);
    // Reaped here unless the application reaps every child itself.
    let _ = rustix::process::waitpid(rustix::process::Pid::from_raw(pid as i32), rustix::process::WaitOptions::empty());
    got.ok_or(Errno::PERM)
}

fn child(sock: BorrowedFd<'_>, uid_map: &[u8], gid_map: &[u8]) -> rustix::io::Result<()> {
    // SAFETY: this process has one thread (a fresh fork), so the new
    // namespaces cannot surprise another thread.
    unsafe {
        rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWUSER | rustix::thread::UnshareFlags::NEWNS)
    }?;
    write(c"/proc/self/setgroups", b"deny")?;
    write(c"/proc/self/uid_map", uid_map)?;
    write(c"/proc/self/gid_map", gid_map)?;
    let mnt = make()?;
    fdpass::send(sock, mnt.as_fd())
}

fn write(path: &std::ffi::CStr, text: &[u8]) -> rustix::io::Result<()> {
    let fd = rustix::fs::open(path, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty())?;
    rustix::io::write(&fd, text).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn huge_kib_at(addr: usize) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            let head = line.split(' ').next().unwrap_or("");
            if let Some((lo, hi)) = head.split_once('-').filter(|_| !head.contains(':')) {
                let (lo, hi) = (usize::from_str_radix(lo, 16).unwrap(), usize::from_str_radix(hi, 16).unwrap());
                inside = lo <= addr && addr < hi;
            } else if inside && line.starts_with("ShmemPmdMapped:") {
                return line.split_whitespace().nth(1).unwrap().parse().unwrap();
            }
        }
        0
    }

    /// Files made in `mnt` get huge pages, have no name, and are private.
    fn check_mount(mnt: &OwnedFd) {
        let flags = OFlags::TMPFILE | OFlags::RDWR | OFlags::EXCL | OFlags::CLOEXEC;
        let file = File::from(rustix::fs::openat(mnt, c".", flags, Mode::RUSR | Mode::WUSR).unwrap());
        let meta = file.metadata().unwrap();
        assert_eq!(meta.nlink(), 0, "an unnamed file");
        assert_eq!(meta.mode() & 0o777, 0o600);
        let len = 8 << 20;
        file.set_len(len as u64).unwrap();
        let map = memmap2::MmapOptions::new().len(len).map_raw(&file).unwrap();
        // SAFETY: the mapping is `len` bytes of a file of that size.
        unsafe { std::ptr::write_bytes(map.as_mut_ptr(), 7, len) };
        assert!(huge_kib_at(map.as_mut_ptr() as usize) >= 2048, "no huge pages in the private tmpfs");
        let dir = rustix::fs::fstat(mnt).unwrap();
        assert_eq!(dir.st_mode & 0o777, 0o700);
    }

    fn thp_possible() -> bool {
        let s = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/shmem_enabled").unwrap_or_default();
        !s.is_empty() && !s.contains("[deny]")
    }

    #[test]
    fn a_private_tmpfs_gives_unnamed_files_huge_pages() {
        if !thp_possible() {
            eprintln!("skipped: no shmem THP on this kernel");
            return;
        }
        match make().or_else(|_| in_user_namespace()) {
            Ok(mnt) => check_mount(&mnt),
            Err(e) if !rustix::process::geteuid().is_root() => {
                eprintln!("skipped: this system allows this user no private tmpfs ({e})")
            }
            Err(e) => panic!("root could not make a private tmpfs: {e}"),
        }
    }

    #[test]
    fn the_user_namespace_route_works_where_user_namespaces_do() {
        let allowed = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
            .is_ok_and(|v| v.trim().parse::<u64>().is_ok_and(|n| n > 0));
        if !thp_possible() || !allowed {
            eprintln!("skipped: no user namespaces or no shmem THP");
            return;
        }
        match in_user_namespace() {
            Ok(mnt) => check_mount(&mnt),
            Err(e) if !rustix::process::geteuid().is_root() => {
                eprintln!("skipped: user namespaces refused to this user ({e})")
            }
            Err(e) => panic!("root could not make a user namespace: {e}"),
        }
    }
}
