//! A Rust process that shares segments with Python (used by the test suite).
//!
//! ```text
//! peer create NAME ROWS COLS   a float64 ROWS×COLS array, a[i, j] = i*COLS + j
//! peer check NAME OFFSET       exit 0 iff a[i, j] == i*COLS + j + OFFSET
//! peer add NAME DELTA          adds DELTA to every element
//! peer incr NAME N             N times, under the array's lock: a[0] += 1
//! peer send ROWS COLS          an anonymous float64 array as above, sent as a
//!                              handle of its view a[1:, ::2] (hex on stdout);
//!                              then, at each line read from stdin, prints the
//!                              sum of the whole array; exits at end of input
//! peer recv HANDLE DELTA       receives the handle (hex) of a float64 view and
//!                              adds DELTA to every element of the view
//! ```

// An example: a failed step should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ndshm::handle::{Handle, SegmentRef, View};
use ndshm::{DType, Header, Segment};
use std::io::BufRead;
use std::os::fd::AsRawFd;
use std::process::ExitCode;

fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    match args {
        [cmd, name, rows, cols] if cmd == "create" => {
            let (rows, cols): (usize, usize) = (rows.parse()?, cols.parse()?);
            let header = Header {
                dtype: DType::from_typestr(<f64 as ndshm::Element>::typestr())?,
                shape: vec![rows, cols],
                fortran_order: false,
            };
            let seg = Segment::create(&header, Some(name))?;
            let values: Vec<f64> = (0..rows * cols).map(|k| k as f64).collect();
            seg.write_from(&values)?;
            seg.publish();
        }
        [cmd, name, offset] if cmd == "check" => {
            let offset: f64 = offset.parse()?;
            let seg = Segment::attach(name, true)?;
            let a = seg.to_array::<f64>()?;
            let cols = a.shape()[1];
            for ((i, j), v) in a.into_dimensionality::<ndarray::Ix2>()?.indexed_iter() {
                let want = (i * cols + j) as f64 + offset;
                if *v != want {
                    return Err(format!("a[{i}, {j}] = {v}, expected {want}").into());
                }
            }
        }
        [cmd, name, delta] if cmd == "add" => {
            let delta: f64 = delta.parse()?;
            let seg = Segment::attach(name, false)?;
            // SAFETY: the test runs this process alone on the array.
            let mut a = unsafe { seg.as_array_mut::<f64>()? };
            a += delta;
        }
        [cmd, name, n] if cmd == "incr" => {
            let n: u64 = n.parse()?;
            let seg = Segment::attach(name, false)?;
            let lock = seg.lock().ok_or("the segment's lock is not writable")?;
            let first = seg.data_ptr() as *mut f64;
            for _ in 0..n {
                lock.lock(None);
                // SAFETY: element 0 exists (checked by the caller's dtype and
                // shape); the lock serialises every writer of it.
                unsafe { first.write_volatile(first.read_volatile() + 1.0) };
                lock.unlock()?;
            }
        }
        [cmd, rows, cols] if cmd == "send" => {
            let (rows, cols): (usize, usize) = (rows.parse()?, cols.parse()?);
            let seg = Segment::create(&f64_header(rows, cols)?, None)?;
            let values: Vec<f64> = (0..rows * cols).map(|k| k as f64).collect();
            seg.write_from(&values)?;
            let seg = seg.publish();
            // The handle of a[1:, ::2]: it leaves this process, so it counts
            // as a pending handoff.
            seg.note_sent();
            let fd = seg.fd().ok_or("an anonymous segment has a file")?.as_raw_fd();
            let h = Handle {
                segment: SegmentRef::Anonymous { pid: std::process::id(), fd, id: seg.id() },
                view: View {
                    offset: (cols * 8) as i64,
                    shape: vec![rows as i64 - 1, cols.div_ceil(2) as i64],
                    strides: vec![(cols * 8) as i64, 16],
                    dtype: None,
                },
                readonly: false,
                host: ndshm::host::this().clone(),
            };
            println!("{}", hex(&h.encode()));
            for line in std::io::stdin().lock().lines() {
                line?;
                println!("{}", seg.to_array::<f64>()?.sum());
            }
            return Ok(());
        }
        [cmd, wire, delta] if cmd == "recv" => {
            let delta: f64 = delta.parse()?;
            let h = Handle::decode(&unhex(wire)?)?;
            let (seg, itemsize) = ndshm::receive::receive(&h)?;
            if h.view.dtype.is_some() || seg.header().dtype.typestr() != Some(<f64 as ndshm::Element>::typestr()) {
                return Err("the view is not of float64".into());
            }
            if h.readonly || seg.is_readonly() {
                return Err("the view is read-only".into());
            }
            assert_eq!(itemsize, 8);
            for_each_offset(&h.view, &mut |off| {
                // SAFETY: `receive` checked that every element of the view
                // lies inside the segment's data; the test runs this process
                // alone on the array.
                unsafe {
                    let p = seg.data_ptr().offset(off as isize) as *mut f64;
                    p.write_unaligned(p.read_unaligned() + delta);
                }
            });
        }
        _ => {
            return Err("usage: peer create NAME ROWS COLS | check NAME OFFSET | add NAME DELTA | incr NAME N \
                         | send ROWS COLS | recv HANDLE DELTA"
                .into())
        }
    }
    Ok(())
}

fn f64_header(rows: usize, cols: usize) -> Result<Header, ndshm::DTypeError> {
    Ok(Header {
        dtype: DType::from_typestr(<f64 as ndshm::Element>::typestr())?,
        shape: vec![rows, cols],
        fortran_order: false,
    })
}

/// Calls `f` with the byte offset of every element of `view`.
fn for_each_offset(view: &View, f: &mut dyn FnMut(i64)) {
    fn walk(shape: &[i64], strides: &[i64], at: i64, f: &mut dyn FnMut(i64)) {
        match (shape.split_first(), strides.split_first()) {
            (Some((&n, shape)), Some((&s, strides))) => {
                for i in 0..n {
                    walk(shape, strides, at + i * s, f);
                }
            }
            _ => f(at),
        }
    }
    walk(&view.shape, &view.strides, view.offset, f);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    if s.len() % 2 != 0 {
        return Err("odd number of hex digits".into());
    }
    (0..s.len()).step_by(2).map(|i| Ok(u8::from_str_radix(&s[i..i + 2], 16)?)).collect()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => {
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("peer: {e}");
            ExitCode::FAILURE
        }
    }
}
