//! Processes that die at the worst moment, killed with SIGKILL: a lock
//! holder, a lock waiter asleep, a keeper, and creators at many points of
//! a create. Each child is this test binary run again with only the test
//! `child` selected and `NDSHM_DEATH_ROLE` set; it is killed by its pid.

// A test: a failed step should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ndshm::lock::Outcome;
use ndshm::{AttachError, DType, Header, Segment, Status};
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

const ROLE: &str = "NDSHM_DEATH_ROLE";
const ARG: &str = "NDSHM_DEATH_ARG";

fn header(n: usize) -> Header {
    Header { dtype: DType::from_typestr("<u8").unwrap(), shape: vec![n], fortran_order: false }
}

/// A unique segment name, deleted (if it still exists) when dropped, so a
/// failing test leaves nothing behind.
struct Name(String);

impl std::ops::Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Drop for Name {
    fn drop(&mut self) {
        let _ = ndshm::delete(&self.0);
    }
}

fn unique(tag: &str) -> Name {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    Name(format!("rd-{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)))
}

/// A child running `role` with `arg`, and its stdout.
struct Kid {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Kid {
    fn spawn(role: &str, arg: &str) -> Kid {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child", "--nocapture", "--test-threads=1"])
            .env(ROLE, role)
            .env(ARG, arg)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        Kid { child, out }
    }

    /// The words after `@ready` in the first line of the child that has it.
    fn ready(&mut self) -> Vec<String> {
        let mut line = String::new();
        loop {
            line.clear();
            assert!(self.out.read_line(&mut line).unwrap() > 0, "the child ended before it was ready");
            // With --nocapture the harness may print "test child ... " first.
            if let Some((_, rest)) = line.split_once("@ready") {
                return rest.split_whitespace().map(str::to_string).collect();
            }
        }
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

fn forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// What a child does; a no-op in a normal run.
#[test]
fn child() {
    let (Ok(role), Ok(arg)) = (std::env::var(ROLE), std::env::var(ARG)) else { return };
    match role.as_str() {
        "hold" => {
            let seg = Segment::attach(&arg, false).unwrap();
            assert!(seg.lock().unwrap().lock(None).acquired());
            println!("@ready");
            forever()
        }
        "wait" => {
            let seg = Segment::attach(&arg, false).unwrap();
            println!("@ready");
            seg.lock().unwrap().lock(None);
            forever()
        }
        "create" => {
            let _seg = Segment::create(&header(1000), Some(&arg)).unwrap();
            println!("@ready");
            forever()
        }
        "create-loop" => {
            let (name, n) = arg.split_once(':').unwrap();
            let n: usize = n.parse().unwrap();
            let data: Vec<u64> = (0..n as u64).collect();
            println!("@ready");
            loop {
                let seg = Segment::create(&header(n), Some(name)).unwrap();
                seg.write_from(&data).unwrap();
                drop(seg.publish());
                ndshm::delete(name).unwrap();
            }
        }
        "send" => {
            let seg = Segment::create(&header(1000), None).unwrap();
            seg.write_from(&(0..1000u64).collect::<Vec<_>>()).unwrap();
            let seg = seg.publish();
            seg.note_sent();
            let fd = std::os::fd::AsRawFd::as_raw_fd(&seg.fd().unwrap());
            let keeper = ndshm::keeper::at_exit().unwrap();
            println!("@ready {} {fd} {} {keeper}", std::process::id(), seg.id());
            std::process::exit(0)
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn a_lock_holder_killed_is_taken_over() {
    let name = unique("hold");
    let seg = Segment::create(&header(1), Some(&name)).unwrap().publish();
    let mut kid = Kid::spawn("hold", &name);
    kid.ready();
    assert!(seg.lock().unwrap().is_locked());
    kid.kill();
    assert!(matches!(seg.lock().unwrap().lock(Some(Duration::from_secs(10))), Outcome::OwnerDied(..)));
    seg.lock().unwrap().unlock().unwrap();
    ndshm::delete(&name).unwrap();
}

#[test]
fn a_waiter_killed_asleep_leaves_no_sleeper_behind() {
    let name = unique("wait");
    let seg = Segment::create(&header(1), Some(&name)).unwrap().publish();
    let lock = seg.lock().unwrap();
    assert!(lock.lock(None).acquired());
    let mut kid = Kid::spawn("wait", &name);
    kid.ready();
    let deadline = Instant::now() + Duration::from_secs(10);
    while lock.sleepers() == 0 {
        assert!(Instant::now() < deadline, "the waiter never slept");
        std::thread::sleep(Duration::from_millis(5));
    }
    kid.kill();
    assert_eq!(lock.sleepers(), 1, "the dead waiter is still counted");
    // The release finds nobody to wake and starts the count again.
    lock.unlock().unwrap();
    assert_eq!(lock.sleepers(), 0);
    assert!(lock.lock(None).acquired());
    lock.unlock().unwrap();
    assert_eq!(lock.sleepers(), 0);
    ndshm::delete(&name).unwrap();
}

#[test]
fn a_keeper_killed_gives_a_clean_error() {
    let mut kid = Kid::spawn("send", "");
    let w = kid.ready();
    let pid: u32 = w[0].parse().unwrap();
    let (fd, id): (i32, u64) = (w[1].parse().unwrap(), w[2].parse().unwrap());
    let keeper: i32 = w[3].parse().unwrap();
    assert!(kid.child.wait().unwrap().success());
    // The keeper is the child's child, started for this test: killed by pid.
    let keeper = rustix::process::Pid::from_raw(keeper).unwrap();
    rustix::process::kill_process(keeper, rustix::process::Signal::KILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while rustix::process::test_kill_process(keeper).is_ok()
        && !std::fs::read_to_string(format!("/proc/{}/stat", keeper.as_raw_nonzero()))
            .is_ok_and(|s| s.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z')))
    {
        assert!(Instant::now() < deadline, "the keeper did not die");
        std::thread::sleep(Duration::from_millis(5));
    }
    let r = ndshm::handle::SegmentRef::Anonymous { pid, fd, id };
    match ndshm::receive::attach(&r, true) {
        Err(ndshm::HandleError::Gone { .. }) => {}
        other => panic!("expected Gone, got {:?}", other.map(|s| s.id())),
    }
}

#[test]
fn a_creator_killed_before_publishing_leaves_what_gc_removes() {
    let name = unique("create");
    let mut kid = Kid::spawn("create", &name);
    kid.ready();
    assert_eq!(ndshm::info(&name).unwrap().status, Status::Creating);
    kid.kill();
    assert_eq!(ndshm::info(&name).unwrap().status, Status::Abandoned);
    match Segment::attach(&name, false) {
        Err(AttachError::Abandoned(_)) => {}
        other => panic!("expected an abandoned segment, got {:?}", other.map(|s| s.id())),
    }
    assert_eq!(ndshm::gc().unwrap(), vec![name.0.clone()]);
    assert!(!ndshm::exists(&name).unwrap());
}

/// Files in the segment directory that belong to `name` or to process `pid`.
fn leftovers(name: &str, pid: u32) -> Vec<String> {
    let private = format!("ndshm-.new-{pid}-");
    std::fs::read_dir(ndshm::name::dir())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|f| f == &format!("ndshm-{name}") || f.starts_with(&private))
        .collect()
}

#[test]
fn creators_killed_anywhere_leave_only_documented_states() {
    let mut seen = std::collections::BTreeMap::<&str, u32>::new();
    let mut rng = std::process::id() as u64 | 1;
    for i in 0..24 {
        // Small, and huge-page sized (reserved by threads where allowed).
        let n = if i % 2 == 0 { 512 } else { (4 << 20) / 8 };
        let name = unique("loop");
        let mut kid = Kid::spawn("create-loop", &format!("{}:{n}", name.0));
        kid.ready();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_micros(rng % 3000));
        let pid = kid.child.id();
        kid.kill();
        match Segment::attach(&name, true) {
            Ok(seg) => {
                assert!(seg.to_array::<u64>().unwrap().iter().copied().eq(0..n as u64), "incomplete data");
                *seen.entry("attached").or_default() += 1;
            }
            Err(AttachError::NotFound(_)) => *seen.entry("not found").or_default() += 1,
            Err(AttachError::Abandoned(_)) => {
                assert_eq!(ndshm::info(&name).unwrap().status, Status::Abandoned);
                *seen.entry("abandoned").or_default() += 1;
            }
            Err(e) => panic!("undocumented outcome: {e}"),
        }
        ndshm::gc().unwrap();
        if let Ok(e) = ndshm::info(&name) {
            assert_eq!(e.status, Status::Ready, "gc left {} {:?}", name.0, e.status);
            ndshm::delete(&name).unwrap();
        }
        assert_eq!(leftovers(&name, pid), Vec::<String>::new());
    }
    eprintln!("creators killed: {seen:?}");
}
