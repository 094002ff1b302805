//! The SQLite side at run time: opening with production settings, the query
//! mix, and durable writes (WAL, synchronous=FULL, one transaction per write;
//! concurrent writers share one connection behind a mutex, which beats
//! separate connections contending on SQLite's busy handler).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, TransactionBehavior};

use crate::config::Config;
use crate::dataset::BIG_PROJECT;
use crate::jobq_side::push_line;
use crate::machine::vm_hwm_kb;
use crate::passes;
use crate::proto::{QueryOut, Rate, WriteOut};
use crate::queries::{groups, Case};
use crate::sqlite_load::{parse_line, DB_FILE};
use crate::sqlite_query;

/// Open with the settings a read-heavy service would use; the schema is read
/// before this returns.
pub fn open(dir: &Path) -> Connection {
    let conn = Connection::open(dir.join(DB_FILE)).expect("open sqlite");
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA cache_size=-262144;
         PRAGMA mmap_size=17179869184; PRAGMA temp_store=MEMORY; PRAGMA busy_timeout=10000;",
    )
    .expect("pragmas");
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get::<_, i64>(0)).expect("schema");
    conn
}

pub fn query(cfg: &Config, dir: &Path, cases: &[Case]) -> QueryOut {
    let t = Instant::now();
    let conn = open(dir);
    let open_ms = t.elapsed().as_secs_f64() * 1e3;
    conn.set_prepared_statement_cache_capacity(1024);
    // What an application keeps in memory: the number of jobs, for estimates.
    let total: i64 = conn.query_row("SELECT max(seq) FROM jobs", [], |r| r.get(0)).expect("total");
    let mut buf = Vec::with_capacity(1 << 16);
    let mut out = QueryOut { open_ms, ..QueryOut::default() };
    let gs = groups(cases);
    let plans: Vec<Option<String>> =
        gs.iter().map(|g| cfg.explain.then(|| sqlite_query::explain(&conn, &g[0], total))).collect();
    let answers: Vec<Vec<_>> =
        gs.iter().map(|g| g.iter().map(|c| sqlite_query::run(&conn, c, total, &mut buf)).collect()).collect();
    out.groups = passes::time_groups(&gs, cfg.query_passes, cfg.budget(), answers, plans, |c| {
        std::hint::black_box(sqlite_query::run(&conn, c, total, &mut buf));
    });
    out.vm_hwm_kb = vm_hwm_kb();
    out
}

/// A writer's job, prepared once (as jobq's push spec is).
struct Job {
    spider: String,
    tags: Vec<String>,
    tags_json: Option<String>,
    meta: String,
}

fn job_for(writer: usize) -> Job {
    // A push line has no key: give it one to reuse the import parser.
    let line = push_line(writer).replacen('{', r#"{"key":"1/1/1","state":"pending","pending_time":0,"#, 1);
    let r = parse_line(&line).expect("push line");
    Job { spider: r.spider_name, tags: r.tags, tags_json: r.tags_json, meta: r.meta }
}

/// One durable push: allocate the job id, insert the row and its postings.
fn push(conn: &mut Connection, tags: &HashMap<String, (i64, i64)>, job: &Job) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).expect("begin");
    {
        let p = i64::from(BIG_PROJECT);
        let mut st = tx
            .prepare_cached("UPDATE spiders SET next_job = next_job + 1 WHERE project = ?1 AND name = ?2 RETURNING id, next_job - 1")
            .expect("prepare");
        let (spider, id): (i64, i64) =
            st.query_row(params![p, job.spider], |r| Ok((r.get(0)?, r.get(1)?))).expect("spider");
        let hot = job.tags.iter().fold(0, |m, t| m | tags.get(t).map_or(0, |x| x.1));
        let mut st = tx
            .prepare_cached(
                "INSERT INTO jobs(project, spider, job, state, ts, priority, hot, pending_time, tags, meta)
                 VALUES (?1, ?2, ?3, 0, ?4, 2, ?5, ?4, ?6, ?7)",
            )
            .expect("prepare");
        st.execute(params![p, spider, id, now, hot, job.tags_json, job.meta]).expect("insert job");
        let seq = tx.last_insert_rowid();
        let mut st = tx.prepare_cached("INSERT INTO job_tags(project, tag, seq) VALUES (?1, ?2, ?3)").expect("prepare");
        for t in &job.tags {
            st.execute(params![p, tags[t].0, seq]).expect("insert posting");
        }
    }
    tx.commit().expect("commit");
}

fn pushes(conn: &Mutex<Connection>, tags: &HashMap<String, (i64, i64)>, writers: usize, cfg: &Config) -> Rate {
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let t = Instant::now();
    std::thread::scope(|s| {
        for w in 0..writers {
            let (stop, done) = (&stop, &done);
            s.spawn(move || {
                let job = job_for(w);
                while !stop.load(Ordering::Relaxed) {
                    push(&mut conn.lock().expect("connection"), tags, &job);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        std::thread::sleep(cfg.write_time());
        stop.store(true, Ordering::Relaxed);
    });
    Rate { writes: done.load(Ordering::Relaxed), secs: t.elapsed().as_secs_f64() }
}

pub fn write(cfg: &Config, dir: &Path, writers: usize) -> WriteOut {
    let conn = open(dir);
    let tags: HashMap<String, (i64, i64)> = {
        let mut st = conn.prepare("SELECT name, id, bit FROM tags").expect("tags");
        let rows = st
            .query_map([], |r| {
                let bit: Option<i64> = r.get(2)?;
                Ok((r.get::<_, String>(0)?, (r.get::<_, i64>(1)?, bit.map_or(0, |b| 1i64 << b))))
            })
            .expect("tags");
        rows.map(|r| r.expect("tag")).collect()
    };
    let conn = Mutex::new(conn);
    let rate = pushes(&conn, &tags, writers, cfg);
    WriteOut { rate, writers, vm_hwm_kb: vm_hwm_kb() }
}
