//! The report's JSON fields are documented once, by example, in
//! `docs/REPORT.md`. This holds the example and `DiffReport` to the same
//! fields: the example parses as a report (a field the type lacks fails
//! where the type refuses unknown fields), and the report serialized again
//! is the example (a field the type has and the example lacks, or a shape
//! that differs, fails).

#![allow(clippy::unwrap_used)]

use mend_core::report::DiffReport;

const DOC: &str = include_str!("../../../docs/REPORT.md");

/// The first ```json block of the document.
fn example() -> &'static str {
    let start = DOC.find("```json\n").expect("a json block") + "```json\n".len();
    let len = DOC[start..].find("```").expect("the block's end");
    &DOC[start..start + len]
}

#[test]
fn the_documented_example_is_a_report_field_for_field() {
    let doc: serde_json::Value = serde_json::from_str(example()).unwrap();
    let report: DiffReport = serde_json::from_value(doc.clone()).unwrap();
    let again = serde_json::to_value(&report).unwrap();
    assert_eq!(again, doc);
}

#[test]
fn a_field_the_report_lacks_is_refused() {
    let mut doc: serde_json::Value = serde_json::from_str(example()).unwrap();
    doc["seq_missing"] = 3.into();
    let e = serde_json::from_value::<DiffReport>(doc).unwrap_err();
    assert!(e.to_string().contains("seq_missing"), "{e}");
}
