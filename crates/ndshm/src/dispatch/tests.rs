//! The protocol end to end, and boards whose words another process
//! corrupted: every such case is an error, never a panic (these tests run
//! with overflow checks) or an access outside the board.

use super::layout::{header, pack, record, task, worker, Geometry};
use super::*;
use crate::Segment;
use std::sync::atomic::Ordering::*;
use std::sync::Arc;
use std::time::Duration;

/// A corruption of a board's words, and one at a board offset.
type Corrupt = fn(&Board);
type CorruptAt = fn(&Board, usize);

fn board(geo: Geometry) -> Arc<Board> {
    let seg = Segment::create(&Board::header(&geo).unwrap(), None).unwrap();
    let seg = seg.publish();
    Arc::new(Board::init(seg, geo).unwrap())
}

fn small() -> Geometry {
    Geometry { workers: 2, capacity: 8, jobs: 2, input_len: 4096, output_len: 4096 }
}

fn claim_now(w: &Worker) -> Claimed {
    match w.claim(Duration::ZERO).unwrap() {
        Claim::Task(t) => t,
        other => panic!("no task: {other:?}"),
    }
}

#[test]
fn publish_claim_complete_collect() {
    let b = board(small());
    let mut p = Parent::new(b.clone());
    assert!(p.open_job(7, b"fn").unwrap());
    assert_eq!(b.job(7).unwrap(), b"fn".to_vec());
    let w = Worker::new(b.clone(), 1).unwrap();
    assert_eq!(w.claim(Duration::ZERO).unwrap(), Claim::Idle);
    for i in 0..3u64 {
        assert_eq!(p.publish(7, i * 10, 2, format!("in{i}").as_bytes()).unwrap(), Some(i));
    }
    let mut out = Vec::new();
    for i in 0..3u64 {
        let t = claim_now(&w);
        assert_eq!((t.task, t.job, t.tag, t.count), (i, 7, i * 10, 2));
        assert_eq!(t.payload, format!("in{i}").into_bytes());
        // Only the task completed in the round before is collected.
        assert_eq!(p.poll(&mut out).unwrap(), usize::from(i > 0), "claimed is not done");
        w.complete(t.task, state::DONE, format!("out{i}").as_bytes(), 5).unwrap();
    }
    assert_eq!(p.poll(&mut out).unwrap(), 1);
    assert_eq!(out.iter().map(|c| c.task).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(out[2].payload, b"out2");
    assert_eq!(out[2].worker, 1);
    assert_eq!(b.completed(), 6);
    assert_eq!(b.job_completed(7), 6);
    assert_eq!(p.in_flight(), 0);
    assert_eq!(w.claim(Duration::from_millis(1)).unwrap(), Claim::Idle);
}

#[test]
fn rings_wrap_and_fill() {
    let b = board(small());
    let mut p = Parent::new(b.clone());
    p.open_job(1, b"").unwrap();
    let w = Worker::new(b.clone(), 0).unwrap();
    let big = vec![0xabu8; 1000];
    assert!(matches!(p.publish(1, 0, 1, &[0; 1025]), Err(PublishError::TooBig(_))));
    let mut out = Vec::new();
    for round in 0..50u64 {
        // Four records of 1008 bytes fill the 4096-byte ring.
        let mut got = 0;
        while p.publish(1, round, 1, &big).unwrap().is_some() {
            got += 1;
        }
        assert!((3..=4).contains(&got), "{got}");
        while let Claim::Task(t) = w.claim(Duration::ZERO).unwrap() {
            assert_eq!(t.payload, big);
            w.complete(t.task, state::DONE, &big[..900], 0).unwrap();
        }
        out.clear();
        assert_eq!(p.poll(&mut out).unwrap(), got);
        assert!(out.iter().all(|c| c.payload == big[..900]));
    }
}

#[test]
fn cancelled_jobs_are_skipped_and_dead_workers_buried() {
    let b = board(small());
    let mut p = Parent::new(b.clone());
    p.open_job(1, b"").unwrap();
    p.open_job(2, b"").unwrap();
    assert!(!p.open_job(3, b"").unwrap(), "table full");
    for j in [1, 2, 1] {
        p.publish(j, 0, 1, b"x").unwrap();
    }
    let w0 = Worker::new(b.clone(), 0).unwrap();
    let t0 = claim_now(&w0);
    p.cancel_job(2);
    let w1 = Worker::new(b.clone(), 1).unwrap();
    let t1 = claim_now(&w1);
    assert_eq!(t1.task, 2, "task 1 (job 2) skipped");
    let mut out = Vec::new();
    p.poll(&mut out).unwrap();
    assert_eq!(out.iter().map(|c| (c.task, c.state)).collect::<Vec<_>>(), [(1, state::SKIPPED)]);
    // Worker 0 "dies" holding task 0.
    out.clear();
    p.bury_worker(0, &mut out).unwrap();
    assert_eq!(out.iter().map(|c| (c.task, c.state)).collect::<Vec<_>>(), [(0, state::DIED)]);
    assert!(matches!(
        w0.complete(t0.task, state::DONE, b"late", 0),
        Err(CompleteError::NotHeld { task: 0, worker: 0 })
    ));
    assert!(matches!(p.bury_worker(2, &mut out), Err(BuryError::NoSuchWorker(_))));
    // A task not yet claimed can be withdrawn; a claimed one cannot.
    let n = p.publish(1, 9, 1, b"y").unwrap().unwrap();
    assert_eq!(p.task_state(n), Some(state::READY));
    assert!(p.cancel_task(n).unwrap());
    assert_eq!(p.task_state(n), None);
    assert!(!p.cancel_task(t1.task).unwrap());
    assert!(matches!(w1.complete(t1.task, state::CLAIMED, b"", 0), Err(CompleteError::NotAnOutcome(_))));
    w1.complete(t1.task, state::DONE, b"ok", 0).unwrap();
    out.clear();
    p.poll(&mut out).unwrap();
    assert_eq!(out[0].payload, b"ok");
    assert_eq!(p.in_flight(), 0);
    p.close_job(2);
    assert!(p.open_job(3, b"").unwrap());
}

#[test]
fn threads_share_the_work() {
    let b = board(Geometry::for_workers(3));
    let mut p = Parent::new(b.clone());
    p.open_job(1, b"").unwrap();
    let workers: Vec<_> = (0..3)
        .map(|i| {
            let w = Worker::new(b.clone(), i).unwrap();
            std::thread::spawn(move || loop {
                match w.claim(Duration::from_secs(5)).unwrap() {
                    Claim::Task(t) => {
                        let v = u64::from_le_bytes(t.payload.try_into().unwrap());
                        w.complete(t.task, state::DONE, &(v * 2).to_le_bytes(), 0).unwrap();
                    }
                    Claim::Idle => panic!("idle"),
                    Claim::Shutdown => return,
                }
            })
        })
        .collect();
    let total = 100_000u64;
    let (mut sent, mut sum, mut got) = (0u64, 0u64, 0u64);
    let mut out = Vec::new();
    while got < total {
        while sent < total && p.publish(1, sent, 1, &sent.to_le_bytes()).unwrap().is_some() {
            sent += 1;
        }
        p.wake_workers(3);
        let seen = b.done_seq();
        out.clear();
        if p.poll(&mut out).unwrap() == 0 {
            b.wait_done(seen, Duration::from_millis(100));
        }
        for c in &out {
            sum += u64::from_le_bytes(c.payload.clone().try_into().unwrap());
            got += 1;
        }
    }
    b.shutdown();
    for t in workers {
        t.join().unwrap();
    }
    assert_eq!(sum, total * (total - 1));
    assert_eq!(b.completed(), total);
}

#[test]
fn open_checks_the_segment() {
    let b = board(small());
    assert!(b.segment().held_by_creator(), "this process made it and holds it");
    let again = Board::open(b.segment().clone()).unwrap();
    assert_eq!(again.geometry(), small());
    let plain = Segment::create(&Board::header(&small()).unwrap(), None).unwrap().publish();
    assert!(matches!(Board::open(plain), Err(OpenError::Magic)));
    assert!(matches!(Geometry { capacity: 6, ..small() }.check(), Err(GeometryError::Capacity(6))));
    assert!(matches!(Worker::new(b.clone(), 2), Err(NoSuchWorker { worker: 2, workers: 2 })));
}

#[test]
fn corrupt_headers_are_refused_on_open() {
    let corruptions: [(&str, Corrupt); 7] = [
        ("magic", |b| b.field(header::MAGIC).store(1, Relaxed)),
        ("version", |b| b.field(header::VERSION).store(99, Relaxed)),
        ("no workers", |b| b.field(header::WORKERS).store(0, Relaxed)),
        ("too many workers", |b| b.field(header::WORKERS).store(3, Relaxed)),
        ("capacity", |b| b.field(header::CAPACITY).store(u32::MAX, Relaxed)),
        ("jobs", |b| b.field(header::JOBS).store(1 << 20, Relaxed)),
        ("ring", |b| b.field(header::OUTPUT_LEN).store(u64::MAX, Relaxed)),
    ];
    for (what, corrupt) in corruptions {
        let b = board(small());
        corrupt(&b);
        assert!(Board::open(b.segment().clone()).is_err(), "{what}");
    }
}

/// A board with one task published, and worker 0.
fn one_task() -> (Arc<Board>, Parent, Worker) {
    let b = board(small());
    let mut p = Parent::new(b.clone());
    p.open_job(1, b"").unwrap();
    p.publish(1, 0, 1, b"payload").unwrap();
    let w = Worker::new(b.clone(), 0).unwrap();
    (b, p, w)
}

#[test]
fn corrupt_input_positions_and_lengths_fail_the_claim() {
    let cases: [(u64, u32); 6] = [
        (3, 7),                  // not a record's position
        (0, 7),                  // before the first record
        (8, 1025),               // longer than a payload can be
        (4096 - 8, 16),          // would run past the ring's end
        (u64::MAX - 7, 20),      // near the end of the position space
        (3592 + (1 << 40), 900), // far ahead, running past the end
    ];
    for (pos, len) in cases {
        let (b, _p, w) = one_task();
        b.task(0, task::IN_POS).store(pos, Relaxed);
        b.task(0, task::IN_LEN).store(len, Relaxed);
        let got = w.claim(Duration::ZERO);
        assert!(matches!(got, Err(ClaimError::Board(BoardError::Payload { .. }))), "{pos} {len}: {got:?}");
    }
}

#[test]
fn corrupt_claim_hints_do_not_run_away() {
    for (claimed, published) in [(0, u64::MAX), (u64::MAX, 1), (5, 3), (0, 1 << 40)] {
        let (b, _p, w) = one_task();
        b.field(header::CLAIMED).store(claimed, Relaxed);
        b.field(header::PUBLISHED).store(published, Relaxed);
        assert!(matches!(w.claim(Duration::ZERO), Ok(Claim::Idle | Claim::Task(_))), "{claimed} {published}");
    }
}

#[test]
fn corrupt_output_indices_fail_the_completion() {
    let cases: [(u64, u64); 4] = [(0, 8), (4096 + 8, 0), (3, 0), (1 << 20, 0)];
    for (head, tail) in cases {
        let (b, _p, w) = one_task();
        let t = claim_now(&w);
        let id = b.worker_id(0).unwrap();
        b.worker(id, worker::OUT_HEAD).store(head, Relaxed);
        b.worker(id, worker::OUT_TAIL).store(tail, Relaxed);
        let got = w.try_complete(t.task, state::DONE, b"result", 0);
        assert!(matches!(got, Err(CompleteError::Board(BoardError::RingIndices { .. }))), "{head} {tail}: {got:?}");
        let got = w.complete(t.task, state::DONE, b"result", 0);
        assert!(matches!(got, Err(CompleteError::Board(_))), "{head} {tail}: {got:?}");
    }
}

/// One task completed by worker 0, and one more, not yet completed.
fn two_done() -> (Arc<Board>, Parent, Worker) {
    let (b, mut p, w) = one_task();
    p.publish(1, 1, 1, b"second").unwrap();
    for _ in 0..2 {
        let t = claim_now(&w);
        w.complete(t.task, state::DONE, b"result", 0).unwrap();
    }
    (b, p, w)
}

#[test]
fn corrupt_results_fail_the_poll_after_the_good_ones() {
    let corruptions: [(&str, Corrupt); 6] = [
        ("unaligned position", |b| b.task(1, task::OUT_POS).store(13, Relaxed)),
        ("position 0", |b| b.task(1, task::OUT_POS).store(0, Relaxed)),
        ("too long", |b| b.task(1, task::OUT_LEN).store(u32::MAX, Relaxed)),
        ("past the ring", |b| b.task(1, task::OUT_POS).store(4096, Relaxed)),
        ("worker", |b| b.task(1, task::WORD).store(pack(1, 200, state::DONE), Relaxed)),
        ("input position", |b| b.task(1, task::IN_POS).store(7, Relaxed)),
    ];
    for (what, corrupt) in corruptions {
        let (b, mut p, _w) = two_done();
        corrupt(&b);
        let mut out = Vec::new();
        assert!(p.poll(&mut out).is_err(), "{what}");
        assert_eq!(out.iter().map(|c| c.task).collect::<Vec<_>>(), [0], "{what}: the good task is handed out");
        out.clear();
        assert!(p.poll(&mut out).is_err() && out.is_empty(), "{what}: the bad task stays, and fails again");
        assert!(matches!(p.bury_worker(0, &mut out), Err(BuryError::Board(_))), "{what}");
    }
}

#[test]
fn corrupt_ring_records_fail_the_poll() {
    let corruptions: [(&str, CorruptAt); 4] = [
        ("kind", |b, at| b.u32_at(at + record::KIND).unwrap().store(77, Relaxed)),
        ("freed length", |b, at| {
            b.u32_at(at + record::KIND).unwrap().store(record::FREED, Relaxed);
            b.u32_at(at + record::LEN).unwrap().store(u32::MAX, Relaxed);
        }),
        ("padding short of the end", |b, at| {
            b.u32_at(at + record::KIND).unwrap().store(record::PAD, Relaxed);
            b.u32_at(at + record::LEN).unwrap().store(8, Relaxed);
        }),
        ("head", |b, _| {
            let id = b.worker_id(0).unwrap();
            b.worker(id, worker::OUT_HEAD).store(u64::MAX, Relaxed);
        }),
    ];
    for (what, corrupt) in corruptions {
        let (b, mut p, _w) = two_done();
        // A record after the two results (16 bytes each), which no task
        // names: the parent meets it only when it moves the ring's tail.
        let id = b.worker_id(0).unwrap();
        b.worker(id, worker::OUT_HEAD).store(48, Relaxed);
        corrupt(&b, b.geometry().output_at(0) + 32);
        let mut out = Vec::new();
        assert!(matches!(p.poll(&mut out), Err(BoardError::Record { .. } | BoardError::RingIndices { .. })), "{what}");
    }
}

/// A small deterministic generator, for the random corruption below.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Words of the board overwritten at random while the protocol runs: every
/// call returns (an error or not), none panics or reaches outside the board.
#[test]
fn random_corruption_never_panics() {
    let geo = small();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    // Where the words are: (start, 8-byte words) of the header's counters
    // and futex words, the worker slots, the task slots, the rings' starts.
    let areas = [
        (40, 9),
        (geo.workers_at(), 16),
        (geo.tasks_at(), 64),
        (geo.input_at(), 64),
        (geo.output_at(0), 64),
        (geo.output_at(1), 64),
    ];
    let (mut calls, mut errors) = (0u32, 0u32);
    let mut count = |ok: bool| {
        calls += 1;
        errors += u32::from(!ok);
    };
    for _round in 0..1000 {
        let b = board(geo);
        let mut p = Parent::new(b.clone());
        p.open_job(1, b"f").unwrap();
        let ws = [Worker::new(b.clone(), 0).unwrap(), Worker::new(b.clone(), 1).unwrap()];
        let mut out = Vec::new();
        for step in 0..40u64 {
            for _ in 0..(rng.next() % 3) {
                let value = match rng.next() % 4 {
                    0 => rng.next(),
                    1 => rng.next() % 4096,
                    2 => u64::MAX - rng.next() % 16,
                    _ => rng.next() % 16,
                };
                let (at, n) = areas[rng.next() as usize % areas.len()];
                let off = at + (rng.next() as usize % n) * 8;
                b.u32_at(off).unwrap().store(value as u32, Relaxed);
                b.u32_at(off + 4).unwrap().store((value >> 32) as u32, Relaxed);
            }
            count(p.publish(1, step, 1, &vec![1u8; (rng.next() % 300) as usize]).is_ok());
            let w = &ws[(rng.next() % 2) as usize];
            let claimed = w.claim(Duration::ZERO);
            count(claimed.is_ok());
            if let Ok(Claim::Task(t)) = claimed {
                let st = if rng.next() % 2 == 0 { state::DONE } else { state::FAILED };
                count(w.try_complete(t.task, st, &vec![2u8; (rng.next() % 300) as usize], 1).is_ok());
            }
            out.clear();
            count(p.poll(&mut out).is_ok());
            if rng.next() % 16 == 0 {
                count(p.bury_worker((rng.next() % 2) as u32, &mut out).is_ok());
            }
            if rng.next() % 16 == 0 {
                let _ = p.cancel_task(rng.next() % 64);
                let _ = p.task_state(rng.next());
                let _ = b.job(1);
                b.counters();
            }
        }
    }
    // The corruption reached the checks, and left the protocol working often.
    assert!(errors > calls / 100 && errors < calls / 2, "{errors} errors in {calls} calls");
}
