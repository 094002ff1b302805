//! The SQLite side's schema and bulk load.
//!
//! Schema (designed for the JobQ filters; every listing is `ORDER BY ts DESC,
//! seq DESC` where `seq`, the rowid, is the write order that breaks `ts` ties):
//! - `jobs`: one row per job: key parts, state, `ts` (time of the current state),
//!   priority, the four `*_time` columns, `tags` (the JSON array, for rows),
//!   `meta` (the other fields as a JSON object), and `hot`: a bitmask of the job's
//!   tags among the 63 most frequent ones (bit numbers in `tags.bit`), so that
//!   tag filters on common tags are evaluated inside a covering index scan.
//! - Covering indexes, one per access path: `(project, state, ts, seq, spider,
//!   hot)` for state filters, `(project, spider, state, ts, seq, hot)` for a
//!   spider, `(project, ts, seq, state, spider, hot)` for several or all states
//!   in `ts` order; `(project, spider, job)` unique for keys.
//! - `close_reason`: the job's close_reason as jobq indexes it (a string's text,
//!   another value's JSON text), with an index of its own, `(project,
//!   close_reason, state, ts, seq, spider, hot)`: a field filter in SQLite needs
//!   an index per field (or a scan of the project).
//! - `job_tags(project, tag, seq)`, a WITHOUT ROWID postings table for every
//!   tag (rare tags are served from it), with `(seq, tag)` for `lacks_tag`.
//! - `tags(id, name, bit, jobs)` and `spiders(project, id, name, next_job)`.
//!
//! The load is what one would do in production for a bulk import: journal off
//! and synchronous off during the load, one transaction, tables filled in key
//! order, secondary indexes built after the rows, ANALYZE, then WAL.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::Instant;

use rusqlite::{params, Connection};
use serde_json::{Map, Value};

use crate::machine::vm_hwm_kb;
use crate::proto::LoadOut;

pub const DB_FILE: &str = "jobs.db";
/// Tags with a bit in `jobs.hot`.
pub const HOT_TAGS: usize = 63;
const STATES: [&str; 4] = ["pending", "running", "finished", "deleted"];
const TIME_FIELDS: [&str; 4] = ["pending_time", "running_time", "finished_time", "deleted_time"];

pub const TABLES: &str = "
CREATE TABLE spiders(
  project INTEGER NOT NULL, id INTEGER NOT NULL, name TEXT NOT NULL,
  next_job INTEGER NOT NULL,
  PRIMARY KEY(project, id)) WITHOUT ROWID;
CREATE UNIQUE INDEX spiders_name ON spiders(project, name);
CREATE TABLE tags(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, bit INTEGER, jobs INTEGER NOT NULL);
CREATE TABLE jobs(
  seq INTEGER PRIMARY KEY,
  project INTEGER NOT NULL, spider INTEGER NOT NULL, job INTEGER NOT NULL,
  state INTEGER NOT NULL, ts INTEGER NOT NULL, priority INTEGER NOT NULL,
  hot INTEGER NOT NULL,
  pending_time INTEGER, running_time INTEGER, finished_time INTEGER, deleted_time INTEGER,
  tags TEXT, meta TEXT NOT NULL, close_reason TEXT);
CREATE TABLE job_tags(
  project INTEGER NOT NULL, tag INTEGER NOT NULL, seq INTEGER NOT NULL,
  PRIMARY KEY(project, tag, seq)) WITHOUT ROWID;
";

pub const INDEXES: &str = "
CREATE UNIQUE INDEX jobs_key ON jobs(project, spider, job);
CREATE INDEX jobs_state_ts ON jobs(project, state, ts, seq, spider, hot);
CREATE INDEX jobs_spider_ts ON jobs(project, spider, state, ts, seq, hot);
CREATE INDEX jobs_ts ON jobs(project, ts, seq, state, spider, hot);
CREATE INDEX jobs_reason_ts ON jobs(project, close_reason, state, ts, seq, spider, hot);
CREATE INDEX job_tags_seq ON job_tags(seq, tag);
";

/// One import line, taken apart.
pub struct Row {
    pub project: u32,
    pub spider: u32,
    pub job: u32,
    pub spider_name: String,
    pub state: usize,
    pub priority: i64,
    pub times: [Option<i64>; 4],
    pub tags: Vec<String>,
    pub tags_json: Option<String>,
    pub meta: String,
    pub close_reason: Option<String>,
}

fn parse_key(k: &str) -> Option<(u32, u32, u32)> {
    let mut it = k.split('/').map(|p| p.parse::<u32>().ok());
    let key = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(key)
}

pub fn parse_line(line: &str) -> Result<Row, String> {
    let mut m: Map<String, Value> = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let key = m.remove("key").and_then(|k| k.as_str().and_then(parse_key)).ok_or("bad key")?;
    let spider_name = m.remove("spider").and_then(|s| s.as_str().map(String::from)).ok_or("bad spider")?;
    let state =
        m.remove("state").and_then(|s| STATES.iter().position(|x| Some(*x) == s.as_str())).ok_or("bad state")?;
    let priority = m.remove("priority").and_then(|p| p.as_i64()).unwrap_or(2);
    let mut times = [None; 4];
    for (i, f) in TIME_FIELDS.iter().enumerate() {
        times[i] = m.remove(*f).and_then(|t| t.as_i64());
    }
    let (tags, tags_json) = match m.remove("tags") {
        Some(v) => {
            let t = v.as_array().ok_or("bad tags")?.iter().filter_map(|t| t.as_str().map(String::from)).collect();
            (t, Some(v.to_string()))
        }
        None => (Vec::new(), None),
    };
    m.remove("project");
    let close_reason = m.get("close_reason").map(|v| match v {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    });
    let meta = Value::Object(m).to_string();
    let (project, spider, job) = key;
    Ok(Row { project, spider, job, spider_name, state, priority, times, tags, tags_json, meta, close_reason })
}

/// Tag name -> number of jobs carrying it (a first pass over the file).
fn tag_counts(data: &Path) -> HashMap<String, u64> {
    #[derive(serde::Deserialize)]
    struct Tags {
        #[serde(default)]
        tags: Vec<String>,
    }
    let mut counts: HashMap<String, u64> = HashMap::new();
    let f = BufReader::with_capacity(1 << 20, std::fs::File::open(data).expect("data file"));
    for line in f.lines() {
        let line = line.expect("read data");
        if line.trim().is_empty() {
            continue;
        }
        let t: Tags = serde_json::from_str(&line).expect("tags of a line");
        for tag in t.tags {
            *counts.entry(tag).or_default() += 1;
        }
    }
    counts
}

pub fn load(data: &Path, dir: &Path) -> LoadOut {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("sqlite dir");
    let t = Instant::now();
    let mut conn = Connection::open(dir.join(DB_FILE)).expect("open sqlite");
    conn.execute_batch(
        "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-1048576;
         PRAGMA temp_store=MEMORY; PRAGMA locking_mode=EXCLUSIVE;",
    )
    .expect("load pragmas");
    conn.execute_batch(TABLES).expect("create tables");

    // Tag ids by frequency, bits for the most frequent.
    let mut by_freq: Vec<(String, u64)> = tag_counts(data).into_iter().collect();
    by_freq.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let tag_ids: HashMap<String, (i64, i64)> = by_freq
        .iter()
        .enumerate()
        .map(|(i, (name, _))| (name.clone(), (i as i64 + 1, if i < HOT_TAGS { 1i64 << i } else { 0 })))
        .collect();

    let tx = conn.transaction().expect("begin");
    {
        let mut ins = tx.prepare("INSERT INTO tags(id, name, bit, jobs) VALUES (?1, ?2, ?3, ?4)").expect("prepare");
        for (i, (name, n)) in by_freq.iter().enumerate() {
            let bit = (i < HOT_TAGS).then_some(i as i64);
            ins.execute(params![i as i64 + 1, name, bit, *n as i64]).expect("insert tag");
        }
        let mut ins = tx
            .prepare(
                "INSERT INTO jobs(seq, project, spider, job, state, ts, priority, hot, pending_time,
                 running_time, finished_time, deleted_time, tags, meta, close_reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            )
            .expect("prepare");
        let mut spiders: HashMap<(u32, u32), (String, u32)> = HashMap::new();
        let mut postings: Vec<(u32, u32, u64)> = Vec::new();
        let f = BufReader::with_capacity(1 << 20, std::fs::File::open(data).expect("data file"));
        let mut seq = 0u64;
        for line in f.lines() {
            let line = line.expect("read data");
            if line.trim().is_empty() {
                continue;
            }
            seq += 1;
            let r = parse_line(&line).unwrap_or_else(|e| panic!("line {seq}: {e}"));
            let mut hot = 0i64;
            for tag in &r.tags {
                let (id, bit) = tag_ids[tag];
                hot |= bit;
                postings.push((r.project, id as u32, seq));
            }
            let ts = r.times[r.state].expect("time of the state");
            let t = r.times;
            ins.execute(params![
                seq as i64,
                r.project,
                r.spider,
                r.job,
                r.state as i64,
                ts,
                r.priority,
                hot,
                t[0],
                t[1],
                t[2],
                t[3],
                r.tags_json,
                r.meta,
                r.close_reason
            ])
            .expect("insert job");
            let s = spiders.entry((r.project, r.spider)).or_insert_with(|| (r.spider_name.clone(), 0));
            s.1 = s.1.max(r.job);
        }
        let mut ins =
            tx.prepare("INSERT INTO spiders(project, id, name, next_job) VALUES (?1, ?2, ?3, ?4)").expect("prepare");
        let mut sp: Vec<_> = spiders.into_iter().collect();
        sp.sort_unstable();
        for ((p, id), (name, max)) in sp {
            ins.execute(params![p, id, name, max + 1]).expect("insert spider");
        }
        postings.sort_unstable();
        let mut ins = tx.prepare("INSERT INTO job_tags(project, tag, seq) VALUES (?1, ?2, ?3)").expect("prepare");
        for (p, tag, seq) in postings {
            ins.execute(params![p, tag, seq as i64]).expect("insert posting");
        }
    }
    tx.commit().expect("commit");
    conn.execute_batch(INDEXES).expect("create indexes");
    conn.execute_batch("ANALYZE; PRAGMA locking_mode=NORMAL;").expect("analyze");
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).expect("wal");
    assert_eq!(mode, "wal");
    conn.close().map_err(|(_, e)| e).expect("close");
    // Loaded with synchronous=OFF: make it durable, as jobq's import is.
    std::fs::File::open(dir.join(DB_FILE)).and_then(|f| f.sync_all()).expect("fsync db");
    std::fs::File::open(dir).and_then(|f| f.sync_all()).expect("fsync dir");
    let millis = t.elapsed().as_secs_f64() * 1e3;
    let jobs = {
        let c = Connection::open(dir.join(DB_FILE)).expect("reopen");
        c.query_row("SELECT count(*) FROM jobs", [], |r| r.get::<_, i64>(0)).expect("count") as u64
    };
    LoadOut { jobs, millis, vm_hwm_kb: vm_hwm_kb() }
}
