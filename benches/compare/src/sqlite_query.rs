//! JobQ queries as SQL, the way an application on SQLite would issue them:
//! names resolved to ids first (spider, tags, the `stop` key), then one
//! statement (prepared once, cached) with every filter in its WHERE clause.
//!
//! Tag filters: a tag with a bit in `jobs.hot` is tested on the bitmask inside
//! the covering index scan; a `has_tag` set that is rare overall (under 2% of
//! all jobs) is driven from the `job_tags` postings instead; other tags use
//! the postings (`seq IN (...)` for has, `NOT EXISTS` by `(seq, tag)` for lacks).
//!
//! `has_tag_all`: the hot tags' bits all set (`(j.hot & m) = m`), each other tag
//! by its postings. `close_reason` is a column with an index of its own
//! (`(project, close_reason, state, ts, ...)`): without it, a scan.
//! `startafter` and `stop` are the key's `(ts, seq)` bounds.
//!
//! A list over 2 or 3 states without a spider or postings to drive it walks the
//! `(project, ts, ...)` index in order (`INDEXED BY`): the planner's own choice
//! (each state's range, then a sort of all of them) is about 2x slower at 1M
//! jobs and grows with the project.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection, OptionalExtension};

use crate::queries::{Case, Kind};

/// A has_tag set below this share of all jobs is served from the postings.
const RARE: f64 = 0.02;
const STATES: [&str; 4] = ["pending", "running", "finished", "deleted"];
const TIME_FIELDS: [&str; 4] = ["pending_time", "running_time", "finished_time", "deleted_time"];

/// The statement for a case, or `None` when the answer is known to be empty.
pub struct Stmt {
    pub sql: String,
    pub params: Vec<Value>,
}

struct Where {
    terms: Vec<String>,
    params: Vec<Value>,
}

impl Where {
    fn term(&mut self, t: &str, vals: impl IntoIterator<Item = Value>) {
        self.terms.push(t.to_string());
        self.params.extend(vals);
    }
}

fn qmarks(n: usize) -> String {
    vec!["?"; n].join(",")
}

/// (id, bit mask, jobs) of a tag, if known.
fn tag(conn: &Connection, name: &str) -> Option<(i64, i64, i64)> {
    let mut st = conn.prepare_cached("SELECT id, bit, jobs FROM tags WHERE name = ?1").expect("prepare tag");
    st.query_row([name], |r| {
        let bit: Option<i64> = r.get(1)?;
        Ok((r.get(0)?, bit.map_or(0, |b| 1i64 << b), r.get(2)?))
    })
    .optional()
    .expect("tag lookup")
}

fn postings(project: u32, ids: &[i64], w: &mut Where) -> String {
    w.params.push(Value::from(i64::from(project)));
    w.params.extend(ids.iter().map(|&i| Value::from(i)));
    format!("j.seq IN (SELECT seq FROM job_tags WHERE project = ? AND tag IN ({}))", qmarks(ids.len()))
}

/// Build the statement for `c`; `total` is the number of jobs in the store.
pub fn build(conn: &Connection, c: &Case, total: i64) -> Option<Stmt> {
    let f = &c.filter;
    let mut w = Where { terms: Vec::new(), params: Vec::new() };
    let mut by_postings = false;
    w.term("j.project = ?", [Value::from(i64::from(c.project))]);
    if let Some(name) = &f.spider {
        let mut st = conn.prepare_cached("SELECT id FROM spiders WHERE project = ?1 AND name = ?2").expect("prepare");
        let id: i64 = st.query_row((c.project, name), |r| r.get(0)).optional().expect("spider lookup")?;
        w.term("j.spider = ?", [Value::from(id)]);
    }
    let states: Vec<Value> = f.states.iter().map(|s| Value::from(*s as i64)).collect();
    match states.len() {
        0 | 4 => {}
        1 => w.term("j.state = ?", states),
        n => w.term(&format!("j.state IN ({})", qmarks(n)), states),
    }
    if let Some(t) = f.startts {
        w.term("j.ts >= ?", [Value::from(t as i64)]);
    }
    if let Some(t) = f.endts {
        w.term("j.ts < ?", [Value::from(t as i64)]);
    }
    if !f.has_tags.is_empty() {
        let known: Vec<_> = f.has_tags.iter().filter_map(|t| tag(conn, t)).collect();
        if known.is_empty() {
            return None;
        }
        let share = known.iter().map(|t| t.2).sum::<i64>() as f64 / total.max(1) as f64;
        let mask = known.iter().fold(0, |m, t| m | t.1);
        let cold: Vec<i64> = known.iter().filter(|t| t.1 == 0).map(|t| t.0).collect();
        if share < RARE || mask == 0 {
            by_postings = true;
            let ids: Vec<i64> = known.iter().map(|t| t.0).collect();
            let t = postings(c.project, &ids, &mut w);
            w.terms.push(t);
        } else if cold.is_empty() {
            w.term("(j.hot & ?) != 0", [Value::from(mask)]);
        } else {
            w.params.push(Value::from(mask));
            let t = postings(c.project, &cold, &mut w);
            w.terms.push(format!("((j.hot & ?) != 0 OR {t})"));
        }
    }
    if !f.lacks_tags.is_empty() {
        let known: Vec<_> = f.lacks_tags.iter().filter_map(|t| tag(conn, t)).collect();
        let mask = known.iter().fold(0, |m, t| m | t.1);
        let cold: Vec<Value> = known.iter().filter(|t| t.1 == 0).map(|t| Value::from(t.0)).collect();
        if mask != 0 {
            w.term("(j.hot & ?) = 0", [Value::from(mask)]);
        }
        if !cold.is_empty() {
            let t = format!(
                "NOT EXISTS (SELECT 1 FROM job_tags t WHERE t.seq = j.seq AND t.tag IN ({}))",
                qmarks(cold.len())
            );
            w.term(&t, cold);
        }
    }
    if !f.has_tags_all.is_empty() {
        let mut known = Vec::new();
        for t in &f.has_tags_all {
            known.push(tag(conn, t)?);
        }
        let mask = known.iter().fold(0, |m, t| m | t.1);
        if mask != 0 {
            w.term("(j.hot & ?) = ?", [Value::from(mask), Value::from(mask)]);
        }
        for cold in known.iter().filter(|t| t.1 == 0) {
            let t = postings(c.project, &[cold.0], &mut w);
            w.terms.push(t);
        }
    }
    if !f.close_reasons.is_empty() {
        let vals = f.close_reasons.iter().map(|r| Value::from(r.clone()));
        w.term(&format!("j.close_reason IN ({})", qmarks(f.close_reasons.len())), vals);
    }
    if let Some(keys) = &f.keys {
        let pairs = keys.iter().flat_map(|k| [Value::from(i64::from(k.spider)), Value::from(i64::from(k.job))]);
        w.term(&format!("(j.spider, j.job) IN (VALUES {})", vec!["(?,?)"; keys.len()].join(",")), pairs);
    }
    let place = |k: jobq::JobKey| -> Option<(i64, i64)> {
        let mut st = conn
            .prepare_cached("SELECT ts, seq FROM jobs WHERE project = ?1 AND spider = ?2 AND job = ?3")
            .expect("prepare");
        st.query_row((k.project, k.spider, k.job), |r| Ok((r.get(0)?, r.get(1)?))).optional().expect("place")
    };
    let (sql, mut params) = match c.kind {
        Kind::Count => (format!("SELECT count(*) FROM jobs j WHERE {}", w.terms.join(" AND ")), w.params),
        Kind::List | Kind::Page => {
            if let Some((ts, seq)) = c.paging.stop.and_then(place) {
                w.term("j.ts >= ? AND (j.ts > ? OR j.seq > ?)", [ts, ts, seq].map(Value::from));
            }
            if let Some(k) = c.paging.startafter {
                // jobq refuses a key of no job; the mix has none.
                let (ts, seq) = place(k).expect("startafter names a job");
                w.term("j.ts <= ? AND (j.ts < ? OR j.seq < ?)", [ts, ts, seq].map(Value::from));
            }
            let sql = format!(
                "SELECT j.spider, j.job, j.state, j.ts, j.pending_time, j.running_time, j.finished_time,
                 j.deleted_time, j.tags,
                 (SELECT name FROM spiders s WHERE s.project = j.project AND s.id = j.spider)
                 FROM jobs j {} WHERE {} ORDER BY j.ts DESC, j.seq DESC LIMIT ? OFFSET ?",
                if (2..4).contains(&f.states.len()) && f.spider.is_none() && !by_postings {
                    "INDEXED BY jobs_ts"
                } else {
                    ""
                },
                w.terms.join(" AND ")
            );
            (sql, w.params)
        }
    };
    if c.kind != Kind::Count {
        params.push(Value::from(c.paging.count as i64));
        params.push(Value::from(c.paging.start as i64));
    }
    Some(Stmt { sql, params })
}

/// Run `c`: the count, or the listed keys (rows rendered as JSON into `buf`).
pub fn run(conn: &Connection, c: &Case, total: i64, buf: &mut Vec<u8>) -> crate::proto::Answer {
    use crate::proto::Answer;
    let Some(s) = build(conn, c, total) else {
        return match c.kind {
            Kind::Count => Answer::Count(0),
            Kind::List | Kind::Page => Answer::Keys(Vec::new()),
        };
    };
    let mut st = conn.prepare_cached(&s.sql).expect("prepare query");
    if c.kind == Kind::Count {
        let n: i64 = st.query_row(params_from_iter(s.params.iter()), |r| r.get(0)).expect("count");
        return Answer::Count(n as u64);
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let mut rows = st.query(params_from_iter(s.params.iter())).expect("list");
    let mut keys = Vec::new();
    buf.clear();
    let mut line = String::with_capacity(256);
    while let Some(r) = rows.next().expect("row") {
        let (spider, job, state, ts): (i64, i64, i64, i64) =
            (r.get(0).expect("col"), r.get(1).expect("col"), r.get(2).expect("col"), r.get(3).expect("col"));
        let key = format!("{}/{spider}/{job}", c.project);
        line.clear();
        let name: String = r.get(9).expect("spider name");
        let _ = write!(
            line,
            r#"{{"key":"{key}","state":"{}","spider":{},"ts":{ts},"elapsed":{}"#,
            STATES[state as usize],
            serde_json::Value::from(name),
            now - ts
        );
        for (i, f) in TIME_FIELDS.iter().enumerate() {
            if let Some(t) = r.get::<_, Option<i64>>(4 + i).expect("time") {
                let _ = write!(line, r#","{f}":{t}"#);
            }
        }
        if let Some(tags) = r.get::<_, Option<String>>(8).expect("tags") {
            let _ = write!(line, r#","tags":{tags}"#);
        }
        line.push_str("}\n");
        buf.extend_from_slice(line.as_bytes());
        keys.push(key);
    }
    Answer::Keys(keys)
}

/// SQLite's plan for `c`, one step a line.
pub fn explain(conn: &Connection, c: &Case, total: i64) -> String {
    let Some(s) = build(conn, c, total) else {
        return "(empty: a name is unknown)".into();
    };
    let mut st = conn.prepare(&format!("EXPLAIN QUERY PLAN {}", s.sql)).expect("explain");
    let rows = st.query_map(params_from_iter(s.params.iter()), |r| r.get::<_, String>(3)).expect("explain rows");
    rows.map(|r| r.expect("plan row")).collect::<Vec<_>>().join("; ")
}
