//! Running a query-mix case on a jobq snapshot the way the server answers it:
//! a count, or a list whose rows are rendered as JSON. Needs `queries`.

use jobq::query::Hit;
use jobq::{JobKey, Snapshot};

use super::queries::{Case, Kind};

/// What a case answered: the count, or the listed keys in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Count(u64),
    Keys(Vec<JobKey>),
}

/// Run one case; list rows are rendered into `buf` (cleared first).
pub fn run(snap: &Snapshot, c: &Case, buf: &mut Vec<u8>) -> Answer {
    match c.kind {
        Kind::Count => Answer::Count(snap.count(c.project, &c.filter).expect("count")),
        Kind::List | Kind::Page => {
            let hits: Vec<Hit> = snap.list(c.project, &c.filter, &c.paging).expect("list");
            buf.clear();
            snap.render_rows(c.project, &hits, None, buf).expect("render");
            Answer::Keys(hits.iter().map(|h| JobKey::from_local(c.project, h.local)).collect())
        }
    }
}
