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
