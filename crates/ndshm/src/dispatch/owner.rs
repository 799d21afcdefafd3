//! The owner watch: a worker leaves when the pool's process is gone.

use super::board::Board;
use super::error::OwnerWatchError;
use std::sync::Arc;
use std::time::Duration;

/// Ends this process when the board's owner is gone, from a thread of its
/// own, so a worker busy in a long task leaves too. The thread sleeps on a
/// pidfd of the owner (readable when it exits: no wake-ups while it lives),
/// or checks every `interval` where pidfds are not available.
pub fn exit_with_owner(board: Arc<Board>, interval: Duration) -> Result<(), OwnerWatchError> {
    std::thread::Builder::new().name("ndshm-owner-watch".into()).spawn(move || {
        if let Some(pidfd) = owner_pidfd(&board) {
            let mut fds = [rustix::event::PollFd::new(&pidfd, rustix::event::PollFlags::IN)];
            while let Err(rustix::io::Errno::INTR) = rustix::event::poll(&mut fds, None) {}
        }
        while board.owner_alive() {
            std::thread::sleep(interval);
        }
        // SAFETY: _exit ends the process at once, running nothing of
        // this process's state; that is the point.
        unsafe { libc::_exit(0) };
    })?;
    Ok(())
}

/// A pidfd of the board's owner, checked to be that process (pid and start
/// time) after it was opened, so a reused pid cannot stand in for it.
fn owner_pidfd(board: &Board) -> Option<std::os::fd::OwnedFd> {
    let pid = rustix::process::Pid::from_raw(i32::try_from(board.owner().0).ok()?)?;
    let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()?;
    board.owner_alive().then_some(fd)
}
