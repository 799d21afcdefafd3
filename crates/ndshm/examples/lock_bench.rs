//! Lock benchmarks, the Rust side: the cost of a segment's lock
//! uncontended, and under contention between 2 threads and 2 processes.
//!
//! ```text
//! cargo build --release -p ndshm --example lock_bench
//! target/release/examples/lock_bench [--iters N] [--repeats R] [--contended-iters N] [--contended-repeats R]
//! ```
//!
//! Prints `key=value` lines: the configuration, then one line per figure
//! (medians, in ns; `_samples` lines list every run), read by
//! `benchmarks/lock_bench.py`:
//!
//! ```text
//! rust_uncontended_ns          w.lock(None); w.unlock()
//! rust_try_lock_ns             w.try_lock(); w.unlock()
//! rust_std_mutex_ns            std::sync::Mutex lock + unlock (a floor)
//! rust_contended_threads_ns    2 threads, counter += 1 under the lock, per increment
//! rust_contended_procs_ns      2 processes, the same
//! rust_std_mutex_threads_ns    2 threads with a std::sync::Mutex
//! *_handoffs_per_1k            how often the lock changed hands, per 1000 increments
//! ```
//!
//! The second process is this binary re-executed as
//! `lock_bench child PID FD ID ITERS`: it attaches the parent's anonymous
//! segment through /proc and meets the parent at a start line in the data.

// An example: a failed step should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ndshm::{DType, Header, LockWords, Segment};
use std::error::Error;
use std::hint::black_box;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

type Res<T> = Result<T, Box<dyn Error>>;

/// Words of the segment's data (u64 each).
const COUNTER: usize = 0;
const READY: usize = 1;
const GO: usize = 2;
const DONE: usize = 3;
const LAST: usize = 4;
const WORDS: usize = 8;

struct Config {
    iters: u64,
    repeats: usize,
    contended_iters: u64,
    contended_repeats: usize,
}

fn word(seg: &Segment, i: usize) -> &AtomicU64 {
    assert!(i < WORDS && seg.data_len() >= WORDS * 8);
    // SAFETY: in bounds (checked), 8-aligned (the data starts on a page
    // boundary), lives as long as `seg`; every process accesses these words
    // only as atomics.
    unsafe { &*(seg.data_ptr().add(i * 8) as *const AtomicU64) }
}

fn lock_of(seg: &Segment) -> Res<&LockWords> {
    seg.lock().ok_or_else(|| "the segment's lock is not writable".into())
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn report(key: &str, samples: &[f64]) {
    let list: Vec<String> = samples.iter().map(|s| format!("{s:.2}")).collect();
    println!("{key}={:.2}", median(samples));
    println!("{key}_samples={}", list.join(","));
}

fn ns_per(elapsed: Duration, n: u64) -> f64 {
    elapsed.as_nanos() as f64 / n as f64
}

fn new_segment() -> Res<Segment> {
    let header = Header { dtype: DType::from_typestr("<u8")?, shape: vec![WORDS], fortran_order: false };
    Ok(Segment::create(&header, None)?.publish())
}

/// `counter += 1` under the lock, `n` times (a plain read then write: the
/// lock is what makes it exact). `last` records who incremented last, so
/// that we can count handoffs: how often the lock changed hands. Returns
/// the handoffs to worker `me`.
fn increments(w: &LockWords, counter: &AtomicU64, last: &AtomicU64, me: u64, n: u64) -> Res<u64> {
    let mut handoffs = 0;
    for _ in 0..n {
        w.lock(None);
        counter.store(counter.load(Relaxed) + 1, Relaxed);
        if last.load(Relaxed) != me {
            last.store(me, Relaxed);
            handoffs += 1;
        }
        w.unlock()?;
    }
    Ok(handoffs)
}

/// The same with a `std::sync::Mutex` over (counter, last).
fn std_increments(m: &Mutex<(u64, u64)>, me: u64, n: u64) -> u64 {
    let mut handoffs = 0;
    for _ in 0..n {
        let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
        g.0 += 1;
        if g.1 != me {
            g.1 = me;
            handoffs += 1;
        }
    }
    handoffs
}

/// Handoffs per 1000 increments (1000: strict alternation; ~0: each worker
/// ran alone in turn).
fn per_1k(handoffs: u64, increments: u64) -> f64 {
    handoffs as f64 * 1000.0 / increments as f64
}

fn uncontended(cfg: &Config, w: &LockWords) -> Res<()> {
    let (mut lock, mut try_lock, mut std_mutex) = (vec![], vec![], vec![]);
    let m = Mutex::new(0u64);
    // Warm up (thread id, page faults).
    for _ in 0..100_000 {
        w.lock(None);
        w.unlock()?;
    }
    for _ in 0..cfg.repeats {
        let t = Instant::now();
        for _ in 0..cfg.iters {
            w.lock(None);
            w.unlock()?;
        }
        lock.push(ns_per(t.elapsed(), cfg.iters));

        let t = Instant::now();
        for _ in 0..cfg.iters {
            if !w.try_lock() {
                return Err("try_lock failed on a free lock".into());
            }
            w.unlock()?;
        }
        try_lock.push(ns_per(t.elapsed(), cfg.iters));

        let t = Instant::now();
        for _ in 0..cfg.iters {
            let g = m.lock().unwrap_or_else(|e| e.into_inner());
            black_box(&g);
            drop(g);
        }
        std_mutex.push(ns_per(t.elapsed(), cfg.iters));
    }
    report("rust_uncontended_ns", &lock);
    report("rust_try_lock_ns", &try_lock);
    report("rust_std_mutex_ns", &std_mutex);
    Ok(())
}

/// Runs `work(me)` on 2 threads started together; the wall time from the
/// first thread's start to the last one's end, and the sum of the results.
fn two_threads(work: impl Fn(u64) -> Res<u64> + Sync) -> Res<(Duration, u64)> {
    let start = Barrier::new(2);
    let (work, start) = (&work, &start);
    let spans = std::thread::scope(|s| {
        let workers: Vec<_> = (1..=2)
            .map(|me| {
                s.spawn(move || {
                    start.wait();
                    let t0 = Instant::now();
                    let r = work(me).map_err(|e| e.to_string());
                    (t0, Instant::now(), r)
                })
            })
            .collect();
        workers.into_iter().map(|h| h.join()).collect::<Vec<_>>()
    });
    let mut total = 0;
    let (mut first, mut last) = (None::<Instant>, None::<Instant>);
    for span in spans {
        let (t0, t1, r) = span.map_err(|_| "worker panicked")?;
        total += r?;
        first = Some(first.map_or(t0, |f| f.min(t0)));
        last = Some(last.map_or(t1, |l| l.max(t1)));
    }
    let (first, last) = first.zip(last).ok_or("no workers")?;
    Ok((last - first, total))
}

fn contended_threads(cfg: &Config, seg: &Segment) -> Res<()> {
    let n = cfg.contended_iters;
    let w = lock_of(seg)?;
    let (counter, last) = (word(seg, COUNTER), word(seg, LAST));
    let (mut ours, mut ours_h, mut std_mutex, mut std_h) = (vec![], vec![], vec![], vec![]);
    for _ in 0..cfg.contended_repeats {
        counter.store(0, SeqCst);
        last.store(0, SeqCst);
        let (elapsed, handoffs) = two_threads(|me| increments(w, counter, last, me, n))?;
        if counter.load(SeqCst) != 2 * n {
            return Err(format!("threads: counter {} != {}", counter.load(SeqCst), 2 * n).into());
        }
        ours.push(ns_per(elapsed, 2 * n));
        ours_h.push(per_1k(handoffs, 2 * n));

        let m = Mutex::new((0u64, 0u64));
        let (elapsed, handoffs) = two_threads(|me| Ok(std_increments(&m, me, n)))?;
        if m.lock().unwrap_or_else(|e| e.into_inner()).0 != 2 * n {
            return Err("std mutex: counter not exact".into());
        }
        std_mutex.push(ns_per(elapsed, 2 * n));
        std_h.push(per_1k(handoffs, 2 * n));
    }
    report("rust_contended_threads_ns", &ours);
    report("rust_contended_threads_handoffs_per_1k", &ours_h);
    report("rust_std_mutex_threads_ns", &std_mutex);
    report("rust_std_mutex_threads_handoffs_per_1k", &std_h);
    Ok(())
}

fn spin_until(w: &AtomicU64, want: u64, what: &str, child: &mut std::process::Child) -> Res<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut k = 0u32;
    while w.load(SeqCst) < want {
        k += 1;
        if k % 1024 == 0 {
            if let Some(status) = child.try_wait()? {
                return Err(format!("the child exited ({status}) before {what}").into());
            }
            if Instant::now() > deadline {
                return Err(format!("timed out waiting for {what}").into());
            }
            std::thread::yield_now();
        }
        std::hint::spin_loop();
    }
    Ok(())
}

fn contended_procs(cfg: &Config, seg: &Segment) -> Res<()> {
    let n = cfg.contended_iters;
    let exe = std::env::current_exe()?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&seg.fd().ok_or("not an anonymous segment")?);
    let w = lock_of(seg)?;
    let (mut samples, mut handoff_samples) = (vec![], vec![]);
    for _ in 0..cfg.contended_repeats {
        for i in [COUNTER, READY, GO, DONE, LAST] {
            word(seg, i).store(0, SeqCst);
        }
        seg.note_sent();
        let mut child = Command::new(&exe)
            .args(["child", &std::process::id().to_string(), &fd.to_string(), &seg.id().to_string(), &n.to_string()])
            .stdout(Stdio::piped())
            .spawn()?;
        let mut timed = || -> Res<(Duration, u64)> {
            spin_until(word(seg, READY), 1, "the child to attach", &mut child)?;
            let t = Instant::now();
            word(seg, GO).store(1, SeqCst);
            let mine = increments(w, word(seg, COUNTER), word(seg, LAST), 1, n)?;
            spin_until(word(seg, DONE), 1, "the child to finish", &mut child)?;
            Ok((t.elapsed(), mine))
        };
        let (elapsed, mine) = match timed() {
            Ok(v) => v,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        let out = child.wait_with_output()?;
        if !out.status.success() {
            return Err(format!("child failed: {}", out.status).into());
        }
        let theirs: u64 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
        let count = word(seg, COUNTER).load(SeqCst);
        if count != 2 * n {
            return Err(format!("processes: counter {count} != {}", 2 * n).into());
        }
        samples.push(ns_per(elapsed, 2 * n));
        handoff_samples.push(per_1k(mine + theirs, 2 * n));
    }
    report("rust_contended_procs_ns", &samples);
    report("rust_contended_procs_handoffs_per_1k", &handoff_samples);
    Ok(())
}

/// The second process: prints its handoff count.
fn child(pid: &str, fd: &str, id: &str, iters: &str) -> Res<()> {
    let r = ndshm::SegmentRef::Anonymous { pid: pid.parse()?, fd: fd.parse()?, id: id.parse()? };
    let seg = ndshm::receive::attach(&r, false)?;
    let n: u64 = iters.parse()?;
    let w = lock_of(&seg)?;
    // Take and drop the lock once so the thread id is computed before the
    // start line.
    w.lock(None);
    w.unlock()?;
    word(&seg, READY).fetch_add(1, SeqCst);
    let deadline = Instant::now() + Duration::from_secs(60);
    while word(&seg, GO).load(SeqCst) == 0 {
        std::hint::spin_loop();
        if Instant::now() > deadline {
            return Err("timed out waiting for the parent's start".into());
        }
    }
    let handoffs = increments(w, word(&seg, COUNTER), word(&seg, LAST), 2, n)?;
    word(&seg, DONE).fetch_add(1, SeqCst);
    println!("{handoffs}");
    Ok(())
}

fn parse(args: &[String]) -> Res<Config> {
    let mut cfg = Config { iters: 10_000_000, repeats: 7, contended_iters: 2_000_000, contended_repeats: 7 };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--iters" => cfg.iters = value.parse()?,
            "--repeats" => cfg.repeats = value.parse()?,
            "--contended-iters" => cfg.contended_iters = value.parse()?,
            "--contended-repeats" => cfg.contended_repeats = value.parse()?,
            _ => return Err(format!("unknown option {flag}").into()),
        }
    }
    if cfg.iters == 0 || cfg.repeats == 0 || cfg.contended_iters == 0 || cfg.contended_repeats == 0 {
        return Err("counts must be positive".into());
    }
    Ok(cfg)
}

fn run(args: &[String]) -> Res<()> {
    if let [cmd, pid, fd, id, iters] = args {
        if cmd == "child" {
            return child(pid, fd, id, iters);
        }
    }
    let cfg = parse(args)?;
    let seg = new_segment()?;
    println!("iters={}", cfg.iters);
    println!("repeats={}", cfg.repeats);
    println!("contended_iters={}", cfg.contended_iters);
    println!("contended_repeats={}", cfg.contended_repeats);
    uncontended(&cfg, lock_of(&seg)?)?;
    contended_threads(&cfg, &seg)?;
    contended_procs(&cfg, &seg)?;
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lock_bench: {e}");
            ExitCode::FAILURE
        }
    }
}
