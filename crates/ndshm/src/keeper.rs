//! The keeper: a small process that serves anonymous segments to late
//! receivers after their sender has exited.
//!
//! At exit, a process with handoffs pending (see `handoff`) forks a keeper
//! that holds those memfds and hands them out over abstract unix sockets
//! named after the segment id, until they are settled or the linger time
//! passes. Abstract sockets vanish with their process: nothing can leak. A
//! receiver that finds the sender gone asks the keeper (`fetch`).

use crate::format::{ctl, PAGE};
use crate::{handoff, registry};
use memmap2::{MmapOptions, MmapRaw};
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

fn socket_name(id: u64) -> Option<SocketAddrUnix> {
    let uid = rustix::process::getuid().as_raw();
    SocketAddrUnix::new_abstract_name(format!("ndshm-keep-{uid}-{id:016x}").as_bytes()).ok()
}

/// Asks a keeper for the segment `id`; `None` if there is no keeper.
pub(crate) fn fetch(id: u64) -> Option<File> {
    let addr = socket_name(id)?;
    let sock = rustix::net::socket_with(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::CLOEXEC, None).ok()?;
    rustix::net::sockopt::set_socket_timeout(&sock, rustix::net::sockopt::Timeout::Recv, Some(Duration::from_secs(5)))
        .ok()?;
    rustix::net::connect(&sock, &addr).ok()?;
    crate::fdpass::recv(&sock).map(File::from)
}

/// One segment a keeper serves: its listening socket, its memfd, and its
/// pending-handoff word (in a mapping the keeper inherits).
struct Served {
    listener: OwnedFd,
    file: File,
    pending: *const AtomicU32,
    _control: Option<MmapRaw>,
}

/// At exit: hands segments with unsettled handoffs to a keeper process.
/// Returns the keeper's pid, if one was started.
pub fn at_exit() -> Option<u32> {
    let me = std::process::id();
    let mut served: Vec<Served> = Vec::new();
    let mut listen = |id: u64, file: File, pending: *const AtomicU32, control: Option<MmapRaw>| {
        let addr = socket_name(id)?;
        let sock =
            rustix::net::socket_with(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::CLOEXEC, None).ok()?;
        rustix::net::bind(&sock, &addr).ok()?;
        rustix::net::listen(&sock, 64).ok()?;
        served.push(Served { listener: sock, file, pending, _control: control });
        Some(())
    };
    for seg in registry::live_anonymous() {
        if seg.sent_by() == me && seg.pending() > 0 {
            let Some(fd) = seg.fd() else { continue };
            let Ok(file) = fd.try_clone_to_owned().map(File::from) else { continue };
            // A private mapping of the control page, so the keeper's pointer
            // stays valid whatever else this process unmaps.
            let Ok(len) = file.metadata().map(|m| m.len()) else { continue };
            let mut o = MmapOptions::new();
            o.offset(len - PAGE as u64).len(PAGE);
            let Ok(control) = o.map_raw(&file) else { continue };
            // SAFETY: PENDING is an aligned word inside the mapped page.
            let p = unsafe { control.as_mut_ptr().add(ctl::PENDING) } as *const AtomicU32;
            listen(seg.id(), file, p, Some(control));
        }
    }
    for l in handoff::take_lingering() {
        let p = l.pending() as *const AtomicU32;
        listen(l.id, l.file, p, Some(l.control));
    }
    if served.is_empty() {
        return None;
    }
    // Computed before fork: the keeper must not allocate (env lookup does).
    let linger = handoff::linger_time();
    let deadline =
        rustix::time::clock_gettime(rustix::time::ClockId::Monotonic).tv_sec + linger.as_secs().max(1) as i64;
    let mut keep: Vec<i32> = served.iter().flat_map(|s| [s.listener.as_raw_fd(), s.file.as_raw_fd()]).collect();
    keep.sort_unstable();
    let mut polls: Vec<rustix::event::PollFd<'_>> =
        served.iter().map(|s| rustix::event::PollFd::new(&s.listener, rustix::event::PollFlags::IN)).collect();
    // SAFETY: fork in a process that may have other threads: the child only
    // makes system calls on memory prepared above (no allocation, no locks)
    // and leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid != 0 {
        return (pid > 0).then_some(pid as u32);
    }
    // Keeper. Close everything else first: holding a pipe's write end would
    // keep a reader waiting for EOF.
    let mut next = 0i32;
    for &fd in &keep {
        close_range(next, fd - 1);
        next = fd + 1;
    }
    close_range(next, i32::MAX);
    let timeout = rustix::time::Timespec { tv_sec: 0, tv_nsec: 20_000_000 };
    loop {
        // SAFETY: each pointer is into a mapping the keeper keeps.
        let settled = served.iter().all(|s| unsafe { &*s.pending }.load(Ordering::Acquire) == 0);
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic).tv_sec;
        if settled || now >= deadline {
            break;
        }
        if rustix::event::poll(&mut polls, Some(&timeout)).unwrap_or(0) == 0 {
            continue;
        }
        for (p, s) in polls.iter().zip(&served) {
            if p.revents().contains(rustix::event::PollFlags::IN) {
                if let Ok(conn) = rustix::net::accept_with(&s.listener, SocketFlags::CLOEXEC) {
                    let _ = crate::fdpass::send(conn.as_fd(), s.file.as_fd());
                }
            }
        }
    }
    // SAFETY: leaving the keeper without running the parent's exit handlers.
    unsafe { libc::_exit(0) }
}

fn close_range(first: i32, last: i32) {
    if first <= last {
        // SAFETY: closes descriptors only; the keeper uses none of these.
        unsafe { libc::syscall(libc::SYS_close_range, first as u32, last as u32, 0u32) };
    }
}
