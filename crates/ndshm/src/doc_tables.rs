//! Reading the docs' markdown for the tests that check them against the
//! code (`format_doc`, `dispatch::layout_doc`): a file under `docs/`, one
//! of its sections, the tables in it.

/// The text of `docs/{file}`.
pub(crate) fn read(file: &str) -> String {
    let path = format!("{}/../../docs/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// The text of section `## title`, up to the next section.
pub(crate) fn section<'a>(doc: &'a str, title: &str) -> &'a str {
    let start = doc.find(&format!("\n## {title}\n")).unwrap_or_else(|| panic!("no section {title:?}"));
    let rest = &doc[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |e| e + 3);
    &rest[..end]
}

/// One markdown table: its header cells and its rows, each cell trimmed.
pub(crate) struct Table {
    pub(crate) head: Vec<String>,
    pub(crate) rows: Vec<Vec<String>>,
}

/// Every table in `text`, in order.
pub(crate) fn tables(text: &str) -> Vec<Table> {
    let cells =
        |l: &str| -> Vec<String> { l.trim().trim_matches('|').split('|').map(|c| c.trim().to_string()).collect() };
    let mut found = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(l) = lines.next() {
        if !l.starts_with('|') {
            continue;
        }
        let mut block = vec![cells(l)];
        while let Some(next) = lines.next_if(|l| l.starts_with('|')) {
            block.push(cells(next));
        }
        assert!(block.len() > 2, "a table without rows: {l}");
        let rows = block.split_off(2);
        found.push(Table { head: block.swap_remove(0), rows });
    }
    found
}

/// The rows of the first table in `text`.
pub(crate) fn table(text: &str) -> Vec<Vec<String>> {
    tables(text).into_iter().next().unwrap_or_else(|| panic!("no table in:\n{text}")).rows
}

/// The table in `text` whose header is `head`.
pub(crate) fn table_headed(text: &str, head: &[&str]) -> Vec<Vec<String>> {
    let t = tables(text).into_iter().find(|t| t.head == head).unwrap_or_else(|| panic!("no table headed {head:?}"));
    assert!(t.rows.iter().all(|r| r.len() == head.len()), "a row of the table {head:?} has the wrong number of cells");
    t.rows
}
