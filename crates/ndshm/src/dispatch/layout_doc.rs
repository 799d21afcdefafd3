//! docs/ENGINE.md's board tables against `layout`: every field's offset
//! and size, every constant's value, the areas in their order with their
//! sizes and defaults, the state word and the record padding. Every
//! constant `layout.rs` declares must have a row, so a field added without
//! a line in the docs fails here, as does a number changed on one side.

use super::layout::{
    self, header, job, record, state, task, worker, Geometry, Word, JOB_BYTES, JOB_HEAD, MAGIC, MAX_WORKERS, SLOT,
    VERSION,
};
use crate::doc_tables::{self, section, table_headed};
use crate::format::PAGE;
use std::collections::BTreeMap;
use std::mem::size_of;

const MIB: u64 = 1 << 20;

fn board_section() -> String {
    section(&doc_tables::read("ENGINE.md"), "The board").to_string()
}

/// The section's prose with every run of white space one space, so that
/// reflowing a paragraph changes nothing.
fn board_prose() -> String {
    board_section().split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Offset and size of a board field.
fn field<T>(w: Word<T>) -> (usize, usize) {
    (w.off, size_of::<T>())
}

macro_rules! fields {
    ($($area:ident :: $name:ident),* $(,)?) => {
        [$((concat!(stringify!($area), "::", stringify!($name)), field($area::$name))),*]
    };
}

/// The code's fields: name, offset and size.
fn code_fields() -> BTreeMap<&'static str, (usize, usize)> {
    let mut all: BTreeMap<_, _> = fields![
        header::MAGIC,
        header::VERSION,
        header::WORKERS,
        header::CAPACITY,
        header::JOBS,
        header::INPUT_LEN,
        header::OUTPUT_LEN,
        header::OWNER_PID,
        header::OWNER_START,
        header::SHUTDOWN,
        header::WORK_SEQ,
        header::WORK_SLEEPERS,
        header::DONE_SEQ,
        header::DONE_SLEEPERS,
        header::PUBLISHED,
        header::CLAIMED,
        header::COMPLETED,
        worker::PID,
        worker::SPACE_SEQ,
        worker::OUT_HEAD,
        worker::OUT_TAIL,
        worker::DONE,
        worker::SPACE_WAIT,
        task::WORD,
        task::JOB,
        task::TAG,
        task::IN_POS,
        task::IN_LEN,
        task::COUNT,
        task::OUT_POS,
        task::OUT_LEN,
        task::ELAPSED_NS,
        job::ID,
        job::LEN,
        job::CANCELLED,
        job::DONE,
    ]
    .into_iter()
    .collect();
    // A record's header is `[len u32, kind u32]`.
    all.insert("record::LEN", (record::LEN, size_of::<u32>()));
    all.insert("record::KIND", (record::KIND, size_of::<u32>()));
    all
}

/// The code's other constants and their values.
fn code_constants() -> BTreeMap<&'static str, u64> {
    BTreeMap::from([
        ("MAGIC", MAGIC),
        ("VERSION", VERSION.into()),
        ("SLOT", SLOT as u64),
        ("JOB_BYTES", JOB_BYTES as u64),
        ("JOB_HEAD", JOB_HEAD as u64),
        ("MAX_WORKERS", MAX_WORKERS.into()),
        ("record::HEAD", record::HEAD),
        ("record::LIVE", record::LIVE.into()),
        ("record::FREED", record::FREED.into()),
        ("record::PAD", record::PAD.into()),
        ("state::EMPTY", state::EMPTY.into()),
        ("state::READY", state::READY.into()),
        ("state::CLAIMED", state::CLAIMED.into()),
        ("state::DONE", state::DONE.into()),
        ("state::FAILED", state::FAILED.into()),
        ("state::SKIPPED", state::SKIPPED.into()),
        ("state::DIED", state::DIED.into()),
    ])
}

/// Every constant `layout.rs` declares, as `area::NAME` (or `NAME` at the
/// top), read from its source.
fn declared_constants() -> Vec<String> {
    let mut area: Option<String> = None;
    let mut names = Vec::new();
    for line in include_str!("layout.rs").lines() {
        if let Some(m) = line.strip_prefix("pub(crate) mod ").or_else(|| line.strip_prefix("pub mod ")) {
            area = Some(m.trim_end_matches('{').trim().to_string());
        } else if line == "}" {
            area = None;
        }
        let l = line.trim_start();
        let Some(rest) = l.strip_prefix("pub(crate) const ").or_else(|| l.strip_prefix("pub const ")) else {
            continue;
        };
        if rest.starts_with("fn ") {
            continue;
        }
        let name = rest.split(':').next().unwrap().trim();
        names.push(area.as_ref().map_or(name.to_string(), |a| format!("{a}::{name}")));
    }
    assert!(names.len() > 40, "too few constants found in layout.rs: {names:?}");
    names
}

fn unquote(cell: &str) -> &str {
    cell.trim_matches('`')
}

fn number(cell: &str) -> u64 {
    cell.parse().unwrap_or_else(|_| panic!("not a number: {cell:?}"))
}

/// The areas a field table row may name, their prefix and their size.
fn area_of(name: &str) -> (&'static str, usize) {
    match name {
        "header" => ("header::", PAGE),
        "worker slot" => ("worker::", SLOT),
        "task slot" => ("task::", SLOT),
        "job entry" => ("job::", JOB_HEAD),
        "ring record" => ("record::", record::HEAD as usize),
        other => panic!("a field of an unknown area: {other:?}"),
    }
}

#[test]
fn every_field_is_documented_where_it_lies() {
    let doc = board_section();
    let rows = table_headed(&doc, &["area", "field", "offset", "size", "what"]);
    let code = code_fields();
    let mut by_area: BTreeMap<&str, Vec<(String, usize, usize)>> = BTreeMap::new();
    for r in &rows {
        let name = unquote(&r[1]);
        let (prefix, _) = area_of(&r[0]);
        assert!(name.starts_with(prefix), "{name} is listed under the area {:?}", r[0]);
        let &(off, size) =
            code.get(name).unwrap_or_else(|| panic!("ENGINE.md lists {name}, the code has no such field"));
        let documented = (number(&r[2]) as usize, number(&r[3]) as usize);
        assert_eq!(
            documented,
            (off, size),
            "{name}: ENGINE.md says (offset, size) {documented:?}, the code {:?}",
            (off, size)
        );
        by_area.entry(r[0].as_str()).or_default().push((name.to_string(), off, size));
    }
    for name in code.keys() {
        assert!(rows.iter().any(|r| unquote(&r[1]) == *name), "{name} has no row in ENGINE.md's field table");
    }
    for (area, mut fields) in by_area {
        let (_, area_len) = area_of(area);
        fields.sort_by_key(|&(_, off, _)| off);
        for w in fields.windows(2) {
            assert!(w[0].1 + w[0].2 <= w[1].1, "{} and {} overlap", w[0].0, w[1].0);
        }
        let (last, off, size) = &fields[fields.len() - 1];
        assert!(off + size <= area_len, "{last} leaves its area");
    }
    // A record's fields fill its header exactly.
    assert_eq!(record::LEN + 4, record::KIND);
    assert_eq!(record::KIND as u64 + 4, record::HEAD);
}

#[test]
fn every_constant_is_documented_with_its_value() {
    let doc = board_section();
    let rows = table_headed(&doc, &["constant", "value", "what"]);
    let code = code_constants();
    for r in &rows {
        let name = unquote(&r[0]);
        let &value = code.get(name).unwrap_or_else(|| panic!("ENGINE.md lists {name}, the code has no such constant"));
        let documented = match name {
            "MAGIC" => u64::from_le_bytes(unquote(&r[1]).as_bytes().try_into().expect("an 8-byte magic")),
            _ => number(&r[1]),
        };
        assert_eq!(documented, value, "{name}: ENGINE.md says {}, the code {value}", r[1]);
    }
    // The magic, where the field table shows it too.
    let fields = table_headed(&doc, &["area", "field", "offset", "size", "what"]);
    let magic = fields.iter().find(|r| r[1] == "`header::MAGIC`").expect("a row for header::MAGIC");
    assert_eq!(magic[4].as_bytes(), format!("`{}`", std::str::from_utf8(&MAGIC.to_le_bytes()).unwrap()).as_bytes());

    // Every constant layout.rs declares is in one table or the other, once.
    let documented: Vec<String> = rows
        .iter()
        .map(|r| unquote(&r[0]).to_string())
        .chain(fields.iter().map(|r| unquote(&r[1]).to_string()))
        .collect();
    let declared = declared_constants();
    for name in &declared {
        let n = documented.iter().filter(|d| *d == name).count();
        assert_eq!(n, 1, "{name} is declared in layout.rs and listed {n} times in ENGINE.md's board tables");
    }
    for name in &documented {
        assert!(declared.contains(name), "ENGINE.md lists {name}, which layout.rs does not declare");
    }
    assert_eq!(code.len() + code_fields().len(), declared.len(), "a constant this test has no value for");
}

#[test]
fn the_areas_lie_in_the_documented_order_and_sizes() {
    let doc = board_section();
    let rows = table_headed(&doc, &["area", "size", "default"]);
    let d = Geometry::for_workers(2);
    let expected = [
        ("header", format!("one page, {PAGE} B"), String::new()),
        ("worker slots", format!("workers × {SLOT} B, rounded up to a page"), format!("at most {MAX_WORKERS} workers")),
        (
            "task slots",
            format!("capacity × {SLOT} B, rounded up to a page"),
            format!("capacity {}; task n lives in slot n % capacity", d.capacity),
        ),
        ("job table", format!("jobs × {JOB_BYTES} B"), format!("{} entries", d.jobs)),
        ("input ring", "input_len".into(), format!("{} MiB, written by the parent", d.input_len / MIB)),
        ("output rings", "workers × output_len".into(), format!("{} MiB per worker", d.output_len / MIB)),
    ];
    assert_eq!(rows.len(), expected.len(), "ENGINE.md's area table has {} rows", rows.len());
    for (r, (area, size, default)) in rows.iter().zip(&expected) {
        assert_eq!((r[0].as_str(), &r[1]), (*area, size), "ENGINE.md's area table");
        assert!(r[2].starts_with(default.as_str()), "{area}: ENGINE.md says {:?}, expected {default:?}…", r[2]);
    }
    assert!(d.input_len % MIB == 0 && d.output_len % MIB == 0, "the default rings are no whole MiB");

    // What the table says, in bytes, for boards of many shapes.
    let round = |n: usize| n.next_multiple_of(PAGE);
    for workers in [1, 2, 63, 64, 65, MAX_WORKERS] {
        for (capacity, jobs) in [(2, 1), (1024, 16), (1 << 20, 1024)] {
            let g = Geometry { workers, capacity, jobs, ..Geometry::for_workers(workers) };
            g.check().unwrap();
            let w = workers as usize;
            let tasks_at = PAGE + round(w * SLOT);
            let jobs_at = tasks_at + round(capacity as usize * SLOT);
            let input_at = jobs_at + jobs as usize * JOB_BYTES;
            assert_eq!(
                (g.workers_at(), g.tasks_at(), g.jobs_at(), g.input_at()),
                (PAGE, tasks_at, jobs_at, input_at),
                "{g:?}"
            );
            for i in 0..=workers {
                assert_eq!(g.output_at(i), input_at + g.input_len as usize + i as usize * g.output_len as usize);
            }
            assert_eq!(g.bytes(), g.output_at(workers));
        }
    }
    assert!(Geometry { workers: MAX_WORKERS + 1, ..d }.check().is_err(), "more workers than MAX_WORKERS");

    // The size the text gives: about input ring + one output ring per worker.
    let about = format!("about `{} MiB + {} MiB per worker`", d.input_len / MIB, d.output_len / MIB);
    assert!(board_prose().contains(&about), "ENGINE.md should give the board's size as {about:?}");
    for workers in [1, 2, 8, 64, MAX_WORKERS] {
        let g = Geometry::for_workers(workers);
        let rings = g.input_len + u64::from(workers) * g.output_len;
        let bytes = g.bytes() as u64;
        assert!(bytes >= rings && bytes - rings < rings / 20, "{workers} workers: {bytes} B is not about {rings} B");
    }
}

/// The number that follows `before` in `text`.
fn number_after(text: &str, before: &str) -> u64 {
    let at = text.find(before).unwrap_or_else(|| panic!("ENGINE.md does not say {before:?}")) + before.len();
    let digits: String = text[at..].chars().take_while(char::is_ascii_digit).collect();
    number(&digits)
}

#[test]
fn the_state_word_and_the_records_are_as_documented() {
    let doc = board_prose();
    let task_shift = number_after(&doc, "packs `task number << ");
    let worker_shift = number_after(&doc, &format!("packs `task number << {task_shift} | worker << "));
    assert!(doc.contains(&format!("packs `task number << {task_shift} | worker << {worker_shift} | state`")));
    let worker_bits = task_shift - worker_shift;
    assert_eq!(u64::from(MAX_WORKERS), (1 << worker_bits) - 1, "MAX_WORKERS is what the worker's bits hold");
    assert_eq!(worker_shift, 8, "the state is the low byte");
    for (n, w, st) in [(0, 0, state::EMPTY), (1, 1, state::READY), (12345, MAX_WORKERS, state::DIED), (1 << 40, 7, 3)] {
        let word = layout::pack(n, w, st);
        assert_eq!(word, n << task_shift | u64::from(w) << worker_shift | u64::from(st));
        assert_eq!((layout::task_of(word), layout::worker_of(word), layout::state_of(word)), (n, w, st));
    }

    let pad = number_after(&doc, "A ring holds records `[len u32, kind u32, payload, pad to ");
    for payload in 0..64 {
        assert_eq!(record::len(payload), record::HEAD + payload.next_multiple_of(pad), "a record of {payload} bytes");
    }
    for kind in ["LIVE", "FREED", "PAD"] {
        assert!(doc.contains(&format!("`{kind}`")), "ENGINE.md's ring text should name {kind}");
    }
}
