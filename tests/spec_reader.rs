//! The independent reader of format-spec/ (Python, written from the spec alone)
//! must decode the v1 and v2 fixtures as the engine does, and apply the recovery rules
//! (durable marks of version-2 segments, the refined version-1 rule) as the spec states them.

use std::process::Command;

mod pyenv;

#[test]
fn the_spec_alone_decodes_a_real_store() {
    // Packed documents (format 7) need zstd: installed here when the Python lacks it.
    let python = pyenv::python_with(&["zstandard"], &[pyenv::ZSTANDARD]);
    let out = Command::new(python)
        .arg("tests/spec_reader/test_reader.py")
        .output()
        .expect("python3 is needed for this test (see .ci/run)");
    assert!(
        out.status.success(),
        "the spec reader disagrees:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
