//! What the README promises operators, checked against the code.

use drover_tests::events;

#[test]
fn the_readme_lists_every_log_event() {
    let readme = include_str!("../../README.md");
    let section = readme
        .split("## Log events")
        .nth(1)
        .expect("README has a Log events section");
    for name in events::ALL {
        assert!(
            section.contains(&format!("| `{name}` |")),
            "README's Log events table lacks {name}"
        );
    }
}

/// The README's reqwest test-fixture example is `rust,ignore` (the README's
/// doctests are the supervisor crate's, which has no reqwest): it must be
/// the code of worker/tests/fixture_reqwest.rs, which the suite runs, line
/// for line, so that the two cannot drift apart.
#[test]
fn the_readmes_reqwest_fixture_is_the_tested_file() {
    let readme = include_str!("../../README.md");
    let section = readme
        .split("## Running programmatically")
        .nth(1)
        .expect("README has a Running programmatically section");
    let shown = section
        .split("```rust,ignore\n")
        .nth(1)
        .and_then(|block| block.split("```\n").next())
        .expect("the section has a rust,ignore block");
    assert!(
        shown.contains("#[tokio::test]") && shown.contains("reqwest::Client"),
        "the section's rust,ignore block is not the reqwest fixture:\n{shown}"
    );
    let file = include_str!("../../worker/tests/fixture_reqwest.rs");
    // The file is its module doc (`//!` lines), a blank line, then the code.
    let code = file
        .split_once("\n\n")
        .filter(|(doc, _)| doc.lines().all(|line| line.starts_with("//!")))
        .map(|(_, code)| code)
        .expect("worker/tests/fixture_reqwest.rs: module doc, blank line, code");
    assert_eq!(
        shown, code,
        "README's reqwest fixture differs from worker/tests/fixture_reqwest.rs"
    );
}
