//! A Rust process that shares segments with Python (used by the test suite).
//!
//! ```text
//! peer create NAME ROWS COLS   a float64 ROWS×COLS array, a[i, j] = i*COLS + j
//! peer check NAME OFFSET       exit 0 iff a[i, j] == i*COLS + j + OFFSET
//! peer add NAME DELTA          adds DELTA to every element
//! peer incr NAME N             N times, under the array's lock: a[0] += 1
//! ```

use ndshm::{DType, Header, Segment};
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
        _ => return Err("usage: peer create NAME ROWS COLS | check NAME OFFSET | add NAME DELTA | incr NAME N".into()),
    }
    Ok(())
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
