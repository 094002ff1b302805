//! What a hostile operator can do to a data directory with the store's files
//! themselves (found by the hostile pass on on-disk state, `hostile/` scripts).

use jobq::store::request::parse_push;
use jobq::{Error, Options, Store};

fn push(store: &Store, spider: &str) -> String {
    match &store.push(5, &[parse_push(&format!(r#"{{"spider":"{spider}"}}"#)).unwrap()], None).unwrap()[0] {
        jobq::store::PushResult::Pushed { key, .. } => key.to_string(),
        other => panic!("{other:?}"),
    }
}

/// `LOCK` removed while a writer holds it (a cleanup of "stale lock files"): a
/// second writer must still be refused. It was not: it created a new `LOCK`,
/// locked that, and both appended to the same log, one overwriting the other's
/// acknowledged writes (two pushes answered with the same key, one lost).
#[test]
fn a_removed_lock_file_does_not_let_a_second_writer_in() {
    let dir = tempfile::tempdir().unwrap();
    let first = Store::open(dir.path(), Options::default()).unwrap();
    push(&first, "one");
    std::fs::remove_file(dir.path().join("LOCK")).unwrap();
    match Store::open(dir.path(), Options::default()) {
        Err(Error::Locked { .. }) => {}
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(second) => {
            let (a, b) = (push(&first, "one"), push(&second, "two"));
            panic!("a second writer opened the store: both pushed, as {a} and {b}");
        }
    }
    // The writer goes on; once it closed, the directory opens again.
    push(&first, "one");
    first.close().unwrap();
    let again = Store::open(dir.path(), Options::default()).unwrap();
    assert_eq!(push(&again, "one"), "5/1/3");
    again.close().unwrap();
}
