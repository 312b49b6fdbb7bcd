//! Every dialog file in `tests/dialogs/` against one server.

use mta_tests::{ALICE, ALICE_PASSWORD, TestMta, dialog};

/// The server the dialog files assume: alice, the alias sales@ → alice, and small limits
/// so that size and error budgets are quick to reach.
const DIALOG_CONFIG: &str = r#"
[limits]
max_message_size = 1048576
max_errors = 5

[aliases]
"sales@example.test" = ["alice@example.test"]
"#;

#[test]
fn dialog_files() {
    let mta = TestMta::start(DIALOG_CONFIG);
    mta.add_user(ALICE, ALICE_PASSWORD);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dialogs");
    dialog::run_dir(&dir, &mta);
}
