//! docs/FORMAT.md against the code: the page layout, the control page's
//! table and the handle table must say what the constants, the encoder and
//! the decoder do. Changing either side alone fails here.

use crate::doc_tables::{self, section, table};
use crate::format::{self, ctl, flags, Control, CONTROL_MAGIC, DATA_OFFSET, FORMAT_VERSION, MAX_NDIM, PAGE, READY};
use crate::handle::{flag, MAX_DESCR, MAX_NODE_NAME, WIRE_VERSION};
use crate::lock::{LockWords, LOCK_BYTES};
use std::sync::atomic::AtomicU32;

fn format_md() -> String {
    doc_tables::read("FORMAT.md")
}

fn row<'a>(rows: &'a [Vec<String>], field: &str) -> &'a [String] {
    rows.iter().find(|r| r.iter().any(|c| c == field)).unwrap_or_else(|| panic!("no row {field:?}"))
}

/// The bytes `Control::decode` reads for each field: found by setting one
/// byte at a time and seeing which field changes.
fn decoded_spans() -> Vec<(&'static str, usize, usize)> {
    fn fields(c: &Control) -> [(&'static str, u64); 9] {
        [
            ("version", c.version.into()),
            ("ready", c.ready.into()),
            ("flags", c.flags.into()),
            ("data_len", c.data_len),
            ("id", c.id),
            ("owner_pid", c.owner_pid.into()),
            ("owner_start", c.owner_start),
            ("created_ns", c.created_ns),
            ("header_hash", c.header_hash),
        ]
    }
    let mut page = Box::new([0u8; PAGE]);
    page[..CONTROL_MAGIC.len()].copy_from_slice(&CONTROL_MAGIC);
    let base = fields(&Control::decode(&page).unwrap());
    let mut bytes: Vec<(&'static str, Vec<usize>)> = base.iter().map(|&(n, _)| (n, vec![])).collect();
    for i in CONTROL_MAGIC.len()..PAGE {
        page[i] = 0xff;
        let now = fields(&Control::decode(&page).unwrap());
        page[i] = 0;
        for (k, (a, b)) in base.iter().zip(now.iter()).enumerate() {
            if a.1 != b.1 {
                bytes[k].1.push(i);
            }
        }
    }
    bytes
        .into_iter()
        .map(|(n, b)| {
            let (first, last) = (b[0], b[b.len() - 1]);
            assert_eq!(b.len(), last - first + 1, "{n} is not read from contiguous bytes");
            (n, first, b.len())
        })
        .collect()
}

#[test]
fn the_layout_matches() {
    let doc = format_md();
    // The lines of the layout drawing, each found by what it describes.
    let line = |what: &str| -> String {
        let l = doc.lines().find(|l| l.contains(what)).unwrap_or_else(|| panic!("no layout line for {what:?}"));
        l.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    assert_eq!(
        line(".npy header: magic"),
        format!("offset 0 .npy header: magic, version, dict, spaces, '\\n' (exactly {PAGE} bytes)")
    );
    assert!(line("array data: data_len bytes").starts_with(&format!("offset {DATA_OFFSET} array data")));
    assert_eq!(
        line("control page ("),
        format!("offset {DATA_OFFSET} + align_up(data_len) control page ({PAGE} bytes)")
    );
    assert_eq!(line("file size ="), format!("file size = {DATA_OFFSET} + align_up(data_len, {PAGE}) + {PAGE}"));
    for n in [0, 1, PAGE as u64, PAGE as u64 + 1] {
        assert_eq!(format::segment_len(n), PAGE as u64 + n.div_ceil(PAGE as u64) * PAGE as u64 + PAGE as u64);
        assert_eq!(format::control_offset(n), format::segment_len(n) - PAGE as u64);
    }
    assert!(doc.contains(&format!("# ndshm segment format, version {FORMAT_VERSION}\n")));
}

#[test]
fn the_control_page_table_matches() {
    let doc = format_md();
    let rows = table(section(&doc, "Control page"));
    // What the code reads and writes, in the order of the page.
    let mut code: Vec<(&str, usize, usize)> = decoded_spans();
    code.push(("magic", ctl::MAGIC, CONTROL_MAGIC.len()));
    code.push(("header_len", ctl::HEADER_LEN, size_of::<u32>()));
    code.push(("pending", ctl::PENDING, size_of::<AtomicU32>()));
    code.push(("lock", ctl::LOCK, size_of::<LockWords>()));
    code.sort_by_key(|&(_, off, _)| off);
    for (name, off, size) in &code {
        let named = match *name {
            "magic" => ctl::MAGIC,
            "version" => ctl::VERSION,
            "ready" => ctl::READY,
            "flags" => ctl::FLAGS,
            "header_len" => ctl::HEADER_LEN,
            "data_len" => ctl::DATA_LEN,
            "id" => ctl::ID,
            "owner_pid" => ctl::OWNER_PID,
            "owner_start" => ctl::OWNER_START,
            "created_ns" => ctl::CREATED_NS,
            "header_hash" => ctl::HEADER_HASH,
            "pending" => ctl::PENDING,
            "lock" => ctl::LOCK,
            other => panic!("a control page field without a ctl constant: {other}"),
        };
        assert_eq!(*off, named, "{name}: the decoder and the ctl constant disagree");
        assert!(off + size <= PAGE, "{name} leaves the page");
    }
    for w in code.windows(2) {
        assert!(w[0].1 + w[0].2 <= w[1].1, "{} and {} overlap", w[0].0, w[1].0);
    }
    let (last, last_off, last_size) = code[code.len() - 1];
    assert_eq!(last, "lock");
    assert_eq!(last_size, LOCK_BYTES);
    assert_eq!(ctl::LOCK_LEN, LOCK_BYTES);

    // The table: one row per field, then the reserved rest.
    let documented: Vec<(String, usize, usize)> = rows
        .iter()
        .filter(|r| r[2] != "reserved")
        .map(|r| (r[2].clone(), r[0].parse().unwrap(), r[1].parse().unwrap()))
        .collect();
    let expected: Vec<(String, usize, usize)> = code.iter().map(|&(n, o, s)| (n.to_string(), o, s)).collect();
    assert_eq!(documented, expected, "FORMAT.md's control page table (field, offset, size)");
    let reserved = row(&rows, "reserved");
    let from: usize = reserved[0].trim_end_matches('…').parse().unwrap();
    assert_eq!(from, last_off + last_size, "the reserved bytes start after the lock");
    let mut blank = Box::new([0u8; PAGE]);
    blank[..CONTROL_MAGIC.len()].copy_from_slice(&CONTROL_MAGIC);
    let page = Control::decode(&blank).unwrap().encode();
    assert!(page[from..].iter().all(|&b| b == 0), "the encoder writes into the reserved bytes");

    // The values the table gives.
    let magic = std::str::from_utf8(&CONTROL_MAGIC).unwrap();
    assert_eq!(row(&rows, "magic")[3], format!("`{magic}`"));
    assert_eq!(row(&rows, "version")[3], format!("`{FORMAT_VERSION}`"));
    assert!(row(&rows, "ready")[3].starts_with(&format!("`{READY:#x}` ")));
    assert!(flags::ANONYMOUS.is_power_of_two());
    assert!(row(&rows, "flags")[3].starts_with(&format!("bit {}: anonymous", flags::ANONYMOUS.trailing_zeros())));
    assert!(row(&rows, "header_len")[3].starts_with(&format!("`{DATA_OFFSET}`")));
    assert_eq!(u32::from_ne_bytes(page[ctl::HEADER_LEN..ctl::HEADER_LEN + 4].try_into().unwrap()), DATA_OFFSET as u32);
}

#[test]
fn the_handle_table_matches() {
    let doc = format_md();
    let rows = table(section(&doc, "Handles"));
    assert_eq!(row(&rows, "version")[2], WIRE_VERSION.to_string());
    let bits = &row(&rows, "flags")[2];
    let documented = [
        (flag::ANONYMOUS, "anonymous"),
        (flag::READONLY, "read-only"),
        (flag::DTYPE, "has dtype"),
        (flag::REF_ONLY, "reference only"),
    ];
    let mut all = 0;
    for (bit, what) in documented {
        assert!(bit.is_power_of_two() && bits.contains(&format!("bit {} {what}", bit.trailing_zeros())), "{what}");
        all |= bit;
    }
    assert_eq!(all, flag::ALL, "a flag the table does not list");
    assert_eq!(row(&rows, "name")[1], format!("text (≤ {} bytes)", crate::name::MAX_LEN));
    assert_eq!(row(&rows, "host name")[1], format!("text (≤ {MAX_NODE_NAME} bytes)"));
    assert_eq!(row(&rows, "ndim")[2], format!("at most {MAX_NDIM}"));
    assert_eq!(row(&rows, "dtype")[1], format!("text (≤ {MAX_DESCR} bytes)"));
    assert!(doc.contains(&format!("Names: 1 to {} characters", crate::name::MAX_LEN)));
}
