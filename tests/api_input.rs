//! What clients send, through the API's one entry point (`jobq::api::handle`, the
//! server's and `jobq query`'s code path) on a real store: the `unique` rule on
//! every path that reopens a job, one validation per field, the limits on objects,
//! parameters and `jobmeta`, and the time big requests take.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jobq::api::{handle, Body, Caller, Config, Method, Request, Scope};
use jobq::fs::RealFs;
use jobq::model::ManualClock;
use jobq::{Options, Store};
use serde_json::{json, Value};

struct Api {
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    store: Option<Store>,
}

/// One answer: status and lines.
struct Answer {
    status: u16,
    text: String,
}

impl Answer {
    fn lines(&self) -> Vec<Value> {
        self.text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    fn error(&self) -> String {
        self.lines()[0]["error"].as_str().unwrap_or_default().to_string()
    }

    /// A 400 whose message holds `what`.
    fn refused(&self, what: &str) {
        assert_eq!(self.status, 400, "{}", self.text);
        assert!(self.error().contains(what), "{:?} lacks {what:?}", self.error());
    }
}

impl Api {
    fn new() -> Api {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let mut api = Api { dir, clock, store: None };
        api.store = Some(Store::open(api.dir.path(), api.options()).unwrap());
        api
    }

    fn options(&self) -> Options {
        Options { background: false, clock: self.clock.clone(), ..Options::default() }
    }

    fn store(&self) -> &Store {
        self.store.as_ref().unwrap()
    }

    fn call(&self, method: Method, target: &str, body: &str) -> Answer {
        let mut req = Request::get(target);
        (req.method, req.body) = (method, body.as_bytes());
        // A named key: its name goes into `*_by` fields.
        let caller = Caller { actor: Some("alice".into()), scope: Scope::All };
        let r = handle(self.store(), &caller, &Config::default(), &req);
        let bytes = match r.body {
            Body::Full(b) => b,
            Body::Stream(rows) => rows.collect_bytes().unwrap(),
        };
        self.clock.advance(1);
        Answer { status: r.status, text: String::from_utf8(bytes).unwrap() }
    }

    fn get(&self, target: &str) -> Answer {
        self.call(Method::Get, target, "")
    }

    fn post(&self, target: &str, body: &str) -> Answer {
        self.call(Method::Post, target, body)
    }

    fn ok(&self, target: &str, body: &str) -> Vec<Value> {
        let a = self.post(target, body);
        assert_eq!(a.status, 200, "{target}: {}", a.text);
        a.lines()
    }

    fn state(&self, key: &str) -> Value {
        let parts: Vec<&str> = key.split('/').collect();
        self.get(&format!("jobs/{}/{}/{}/state", parts[0], parts[1], parts[2])).lines()[0].clone()
    }

    /// `jobq check` on the closed store: clean.
    fn check_clean(&mut self) {
        self.store.take().unwrap().close().unwrap();
        let r = jobq::store::check(self.dir.path(), Arc::new(RealFs)).unwrap();
        assert!(r.is_clean(), "{:?}", r.findings);
        self.store = Some(Store::open(self.dir.path(), self.options()).unwrap());
    }
}

fn fields(n: usize) -> String {
    (0..n).map(|i| format!("\"f{i}\":{i}")).collect::<Vec<_>>().join(",")
}

#[test]
fn a_job_cannot_be_reopened_while_another_holds_its_unique() {
    let mut api = Api::new();
    let push_u = |api: &Api| api.ok("jobq/1/push", r#"{"spider":"s","unique":"U"}"#)[0].clone();
    assert_eq!(push_u(&api)["key"], "1/1/1");
    api.ok("jobq/1/update", r#"{"key":"1/1/1","state":"finished"}"#);
    assert_eq!(push_u(&api)["key"], "1/1/2");
    // Every way back to an active state is refused while 1/1/2 is pending.
    for (target, body) in [
        ("jobq/1/update", r#"{"key":"1/1/1","state":"pending"}"#),
        ("jobq/1/update", r#"{"key":"1/1/1","state":"running","x":1}"#),
        ("jobq/1/update", "{\"key\":\"1/1/3\",\"state\":\"finished\"}\n{\"key\":\"1/1\",\"state\":\"running\"}"),
    ] {
        api.post(target, body).refused("Active job exists with key U");
        assert_eq!(api.state("1/1/1"), "finished", "{body}: nothing of the request is stored");
        assert_eq!(api.get("jobq/1/count?state=finished").lines()[0], 1, "{body}");
    }
    // Lines count in order: releasing first, then taking, is one valid request.
    let r =
        api.ok("jobq/1/update", "{\"key\":\"1/1/2\",\"state\":\"deleted\"}\n{\"key\":\"1/1/1\",\"state\":\"pending\"}");
    assert_eq!(r.len(), 2);
    api.post("jobq/1/update", r#"{"key":"1/1/2","state":"running"}"#).refused("Active job exists with key U");
    api.ok("jobq/1/update", r#"{"key":"1/1/1","state":"finished"}"#);
    // The holder is exact again: the next push takes U, the one after conflicts.
    assert_eq!(push_u(&api)["key"], "1/1/3");
    assert_eq!(push_u(&api)["error"], "Active job exists with key U");
    api.check_clean();
    assert_eq!(push_u(&api)["error"], "Active job exists with key U", "after reopening the store");
}

#[test]
fn import_keeps_the_unique_rule() {
    let api = Api::new();
    api.ok("jobq/1/push", r#"{"spider":"s","unique":"U"}"#);
    let line = |job: u32, state: &str| {
        format!(r#"{{"key":"1/1/{job}","spider":"s","state":"{state}","{state}_time":5,"unique":"U"}}"#)
    };
    let refused = |text: String, line_no: u64| {
        let e = api.store().import(&mut text.as_bytes(), &mut |_| {}).unwrap_err().to_string();
        assert!(e.contains(&format!("line {line_no}")) && e.contains("Active job exists with key U"), "{e}");
    };
    refused(line(2, "pending"), 1);
    refused(format!("{}\n{}\n", line(1, "finished"), line(2, "pending")) + &line(3, "running"), 3);
    // A new version of the holder that lets go, then another job taking it: fine.
    let text = format!("{}\n{}\n", line(1, "finished"), line(2, "pending"));
    api.store().import(&mut text.as_bytes(), &mut |_| {}).unwrap();
    assert_eq!(
        api.post("jobq/1/push", r#"{"spider":"s","unique":"U"}"#).lines()[0]["error"],
        "Active job exists with key U"
    );
}

#[test]
fn every_path_checks_fields_the_same_way() {
    let api = Api::new();
    api.ok("jobq/1/push", r#"{"spider":"s"}"#);
    for bad in [
        (r#"{"spider":"s","priority":100}"#, "priority"),
        (r#"{"spider":"s","priority":-9223372036854775808}"#, "priority"),
        (r#"{"spider":"s","units":-3}"#, "units"),
        (r#"{"spider":"s","units":0}"#, "units"),
        (r#"{"spider":"s","units":"3"}"#, "units"),
        (r#"{"spider":"s","unique":5}"#, "unique"),
        (r#"{"spider":"s","tags":[""]}"#, "tags"),
    ] {
        api.post("jobq/1/push", bad.0).refused(bad.1);
    }
    for (target, body, field) in [
        ("jobs/1/1/1/units", "\"abc\"", "units"),
        ("jobs/1/1/1/units", "-1", "units"),
        ("jobs/1/1/1/priority", "7", "priority"),
        ("jobs/1/1/1", r#"{"units":{"x":1}}"#, "units"),
        ("jobs/1/1/1", r#"{"priority":5}"#, "priority"),
        ("jobq/1/update", r#"{"key":"1/1/1","units":{"x":1}}"#, "units"),
        ("jobq/1/update", r#"{"key":"1/1/1","priority":-1}"#, "priority"),
        ("jobq/1/startjob", r#"{"units":"2"}"#, "units"),
        ("jobq/1/startjob", r#"{"priority":99}"#, "priority"),
    ] {
        api.post(target, body).refused(field);
    }
    let job = api.get("jobs/1/1/1").lines()[0].clone();
    assert_eq!(
        (job["state"].clone(), job["units"].clone(), job["priority"].clone()),
        (json!("pending"), json!(1), json!(2))
    );
    api.ok("jobs/1/1/1/units", "3");
    api.ok("jobq/1/update", r#"{"key":"1/1/1","priority":4}"#);
    let e = api
        .store()
        .import(
            &mut &br#"{"key":"1/1/9","spider":"s","state":"finished","finished_time":5,"priority":100}"#[..],
            &mut |_| {},
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 1") && e.contains("priority"), "{e}");
}

#[test]
fn cancel_counts_each_job_once() {
    let api = Api::new();
    api.ok("jobq/1/push", "{\"spider\":\"s\",\"state\":\"running\"}\n{\"spider\":\"s\"}");
    let r = api.ok("jobq/1/cancel", r#"[{"key":"1/1/1"},{"key":"1/1/1"},{"key":"1/1/2"},{"key":"1/1/2"}]"#);
    assert_eq!(r[0], json!({"count": 2}));
}

#[test]
fn filter_values_are_checked() {
    let api = Api::new();
    api.ok("jobq/1/push", r#"{"spider":"s","state":"finished","tags":["a"]}"#);
    for (q, what) in [
        ("count=99999999999999999999", "too large"),
        ("start=99999999999999999999", "too large"),
        ("startts=99999999999999999999", "too large"),
        ("endts=99999999999999999999", "too large"),
        ("state=", "state"),
        ("has_tag=", "has_tag"),
        ("lacks_tag=", "lacks_tag"),
        ("spider=", "spider"),
    ] {
        api.get(&format!("jobq/1/list?{q}")).refused(what);
    }
    assert_eq!(api.get("jobq/1/count?state=").status, 400);
    let over = |name: &str, n: usize| (0..n).map(|i| format!("{name}=t{i}")).collect::<Vec<_>>().join("&");
    api.get(&format!("jobq/1/count?{}", over("has_tag", 101))).refused("at most 100");
    api.get(&format!("jobq/1/count?{}", over("lacks_tag", 101))).refused("at most 100");
    assert_eq!(api.get(&format!("jobq/1/count?{}&has_tag=a", over("has_tag", 99))).lines()[0], 1);
    let repeats = vec!["has_tag=a"; 6000].join("&");
    assert_eq!(api.get(&format!("jobq/1/count?{repeats}")).lines()[0], 1);
}

#[test]
fn jobsummary_and_key_lists_count_each_key_once() {
    let api = Api::new();
    api.ok("jobq/1/push", &format!(r#"{{"spider":"s","blob":"{}"}}"#, "x".repeat(1 << 20)));
    api.ok("jobq/1/push", r#"{"spider":"s"}"#);
    let repeats = ["key=1/1/2"].iter().chain(vec!["key=1/1/1"; 5000].iter()).copied().collect::<Vec<_>>().join("&");
    let r = api.get(&format!("jobq/1/jobsummary?{repeats}")).lines();
    let keys: Vec<&str> = r.iter().map(|l| l["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["1/1/2", "1/1/1"], "one line per distinct key, in the order first given");
    let many = (1..=1001).map(|j| format!("key=1/1/{j}")).collect::<Vec<_>>().join("&");
    api.get(&format!("jobq/1/jobsummary?{many}")).refused("at most 1000");
    api.get(&format!("jobq/1/list?{many}")).refused("at most 1000");
    api.get(&format!("jobq/1/count?{many}")).refused("at most 1000");
}

#[test]
fn jobmeta_names_count_once_up_to_a_limit() {
    let api = Api::new();
    let lines: String =
        (0..50).map(|_| format!("{{\"spider\":\"s\",\"state\":\"finished\",{}}}\n", fields(300))).collect();
    api.ok("jobq/1/push", &lines);
    let names = |n: usize| (0..n).map(|i| format!("jobmeta=f{i}")).collect::<Vec<_>>().join("&");
    api.get(&format!("jobq/1/list?{}", names(4000))).refused("at most 256");
    let started = Instant::now();
    let rows = api.get(&format!("jobq/1/list?{}&jobmeta=f0,spider,f1&jobmeta=state", names(254))).lines();
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert_eq!(rows.len(), 50);
    let got: Vec<&String> = rows[0].as_object().unwrap().keys().collect();
    assert_eq!(got.len(), 4 + 254 + 1, "{got:?}");
    assert_eq!((rows[0]["f253"].clone(), rows[0]["spider"].clone()), (json!(253), json!("s")));
    api.get(&format!("jobq/1/list?{}&jobmeta=spider,state,key", names(254))).refused("at most 256");
}

#[test]
fn big_objects_are_refused_or_handled_within_bounds() {
    let api = Api::new();
    let bound = Duration::from_secs(2);
    // 80,000 fields (about 1 MB) in a push, an edit, an update: refused, quickly.
    for (target, body) in [
        ("jobq/1/push", format!("{{\"spider\":\"s\",{}}}", fields(80_000))),
        ("jobs/1/1/1", format!("{{{}}}", fields(80_000))),
        ("jobq/1/update", format!("{{\"key\":\"1/1/1\",{}}}", fields(80_000))),
    ] {
        if target == "jobs/1/1/1" {
            api.ok("jobq/1/push", r#"{"spider":"s"}"#);
        }
        let started = Instant::now();
        api.post(target, &body).refused("at most 10100 fields");
        assert!(started.elapsed() < bound, "{target}: {:?}", started.elapsed());
    }
    // At the limit: a job of 10,000 fields, then every one of them edited, in one
    // object and in as many update lines.
    let started = Instant::now();
    api.ok("jobq/1/push", &format!("{{\"spider\":\"s\",{}}}", fields(9_999)));
    api.ok("jobs/1/1/2", &format!("{{{}}}", fields(9_999).replace(':', ":-")));
    let lines: String = (0..9_999).map(|i| format!("{{\"key\":\"1/1/2\",\"f{i}\":\"x\"}}\n")).collect();
    assert_eq!(api.ok("jobq/1/update", &lines).len(), 9_999);
    assert!(started.elapsed() < 2 * bound, "{:?}", started.elapsed());
    let job = api.get("jobs/1/1/2").lines()[0].clone();
    assert_eq!((job["f0"].clone(), job["f9998"].clone(), job["units"].clone()), (json!("x"), json!("x"), json!(1)));
    // One more field is over the job's limit, whichever path adds it.
    api.post("jobs/1/1/2", r#"{"one_more":1,"and_another":2}"#).refused("at most 10000 metadata fields");
    api.post("jobq/1/update", r#"{"key":"1/1/2","one_more":1,"and_another":2}"#).refused("at most 10000");
    // Fields the service writes are never refused (`scheduled_by` was already over,
    // the cancel marks go further), and edits that do not grow the metadata pass.
    assert_eq!(api.ok("jobq/1/cancel", r#"[{"key":"1/1/2"}]"#)[0], json!({"count": 1}));
    api.ok("jobs/1/1/2", r#"{"f0":"y","close_reason":"done"}"#);
    api.post("jobs/1/1/2", r#"{"one_more":1}"#).refused("at most 10000 metadata fields");
    api.call(Method::Delete, "jobs/1/1/2/f1", "");
    let job = api.get("jobs/1/1/2").lines()[0].clone();
    assert_eq!(
        (job["f0"].clone(), job["close_reason"].clone(), job["state"].clone()),
        (json!("y"), json!("done"), json!("finished"))
    );
    assert!(job["cancelled_by"].is_string() && job.get("f1").is_none() && job.get("one_more").is_none());
    // What the limits let a store hold exports and imports back.
    let mut out = Vec::new();
    api.store().export(None, &mut out).unwrap();
    assert_eq!(Api::new().store().import(&mut &out[..], &mut |_| {}).unwrap().jobs, 2);
}

#[test]
fn export_then_import_reproduces_the_catalog() {
    let api = Api::new();
    assert_eq!(api.get("ids/1/spider/early?create=1").lines()[0], 1);
    api.ok("jobq/1/push", "{\"spider\":\"s\"}\n{\"spider\":\"s\"}\n{\"spider\":\"s\"}");
    api.ok("jobq/1/update", r#"{"key":"1/2/3","state":"deleted"}"#);
    assert_eq!(api.get("ids/2/spider/alone?create=1").lines()[0], 1);
    let opts = api.options();
    drop(api.store);
    // Compaction drops the deleted job 1/2/3: only the catalog knows id 3 was taken.
    api.clock.advance(3_600_000);
    jobq::store::compact(api.dir.path(), opts.clone(), Some(Duration::from_secs(60)), &mut |_, _| {}).unwrap();
    let source = Store::open(api.dir.path(), opts).unwrap();
    let mut out = Vec::new();
    assert_eq!(source.export(None, &mut out).unwrap(), 2);
    let copy = Api::new();
    copy.store().import(&mut &out[..], &mut |_| {}).unwrap();
    let answers = |api: &Api| {
        let mut got = Vec::new();
        for target in ["ids/1/spider/early", "ids/1/spider/s", "ids/2/spider/alone", "ids/2/spider/none"] {
            got.push(api.get(target).lines()[0].clone());
        }
        got.push(api.ok("jobq/1/push", "{\"spider\":\"s\"}\n{\"spider\":\"early\"}\n{\"spider\":\"new\"}").into());
        got
    };
    let original = Api { dir: api.dir, clock: api.clock, store: Some(source) };
    let want = answers(&original);
    assert_eq!(want[..4], [json!(1), json!(2), json!(1), json!(null)]);
    assert_eq!(answers(&copy), want);
    // Old exports, without catalog lines, still import.
    let mut old = Vec::new();
    original.store().export(None, &mut old).unwrap();
    let old: String = String::from_utf8(old)
        .unwrap()
        .lines()
        .filter(|l| !l.contains("spider_catalog"))
        .map(|l| l.to_string() + "\n")
        .collect();
    let third = Api::new();
    assert_eq!(third.store().import(&mut old.as_bytes(), &mut |_| {}).unwrap().jobs, 5);
}

/// Ids are u32 and never given twice: a project whose spider ids, or a spider
/// whose job ids, are used up refuses the write (400, nothing written, not even
/// a new spider of the same push) instead of wrapping to 0 or giving the last
/// id again; the store stays sound and reopens to the same answers.
#[test]
fn used_up_ids_are_refused_never_wrapped_or_given_twice() {
    let mut api = Api::new();
    let lines = [
        r#"{"key":"9/4294967295/1","spider":"x","state":"finished","finished_time":5}"#,
        r#"{"key":"8/1/4294967295","spider":"s","state":"finished","finished_time":5,"orig":true}"#,
        r#"{"key":"8/2/4294967293","spider":"t","state":"finished","finished_time":5}"#,
    ]
    .join("\n");
    api.store().import(&mut lines.as_bytes(), &mut |_| {}).unwrap();
    for _ in 0..2 {
        api.post("jobq/9/push", r#"{"spider":"y"}"#).refused("project 9 has no spider id left");
        api.get("ids/9/spider/y?create=1").refused("project 9 has no spider id left");
        api.post("jobq/8/push", r#"{"spider":"s"}"#).refused("spider 1 of project 8 has no job id left");
        api.post("jobq/8/push", "{\"spider\":\"fresh\"}\n{\"spider\":\"s\"}").refused("no job id left");
        assert_eq!(api.get("ids/8/spider/fresh").lines()[0], Value::Null, "nothing written");
        assert_eq!(api.get("jobs/8/1/4294967295/orig").lines()[0], true);
        assert_eq!(api.get("jobq/9/count?state=pending").lines()[0], 0);
        api.check_clean();
    }
    // One id left for spider t: a push of two is refused whole, one fits, then none.
    api.post("jobq/8/push", "{\"spider\":\"t\"}\n{\"spider\":\"t\"}")
        .refused("spider 2 of project 8 has no job id left");
    assert_eq!(api.ok("jobq/8/push", r#"{"spider":"t"}"#)[0]["key"], "8/2/4294967294");
    api.post("jobq/8/push", r#"{"spider":"t"}"#).refused("no job id left");
    assert_eq!(api.ok("jobq/8/push", r#"{"spider":"fresh"}"#)[0]["key"], "8/3/1");
    api.check_clean();
    // An export of it imports back to the same refusals.
    let mut out = Vec::new();
    api.store().export(None, &mut out).unwrap();
    let mut copy = Api::new();
    copy.store().import(&mut &out[..], &mut |_| {}).unwrap();
    copy.post("jobq/8/push", r#"{"spider":"s"}"#).refused("no job id left");
    copy.post("jobq/8/push", r#"{"spider":"t"}"#).refused("no job id left");
    copy.post("jobq/9/push", r#"{"spider":"y"}"#).refused("no spider id left");
    assert_eq!(copy.ok("jobq/8/push", r#"{"spider":"fresh"}"#)[0]["key"], "8/3/2");
    copy.check_clean();
}

/// An import whose catalog lines reserve job ids ends with a catalog frame after
/// its commit. The index files written later must chain on from it: `check`
/// finds nothing set aside, with jobs imported and with catalog lines alone.
#[test]
fn an_import_that_reserves_ids_leaves_no_gap_in_the_index_chain() {
    let catalog = r#"{"spider_catalog":{"project":1,"id":1,"name":"s","next_job":10}}"#;
    let job = r#"{"key":"1/1/3","spider":"s","state":"finished","finished_time":5}"#;
    for text in [format!("{catalog}\n{job}\n"), format!("{catalog}\n")] {
        let mut api = Api::new();
        api.ok("jobq/2/push", r#"{"spider":"before"}"#);
        api.store().import(&mut text.as_bytes(), &mut |_| {}).unwrap();
        assert_eq!(api.ok("jobq/1/push", r#"{"spider":"s"}"#)[0]["key"], "1/1/10");
        api.check_clean();
        api.ok("jobq/1/push", r#"{"spider":"s"}"#);
        api.check_clean();
        assert!(api.store().report().discarded.is_empty(), "{:?}", api.store().report().discarded);
        assert_eq!(api.get("jobq/1/count?state=pending").lines()[0], 2);
    }
}

/// A pending job whose metadata is at its limits cannot take a runner's fields:
/// it stays pending and the next job starts, so it does not hold up the
/// project's queue. A start without fields still takes it; with only such jobs
/// left, the start is refused with the limit it hit.
#[test]
fn a_job_at_its_limits_does_not_hold_up_the_queue() {
    let api = Api::new();
    let full = api.ok("jobq/1/push", &format!("{{\"spider\":\"s\",\"priority\":4,{}}}", fields(9_999)));
    let full = full[0]["key"].as_str().unwrap().to_string();
    let next = api.ok("jobq/1/push", r#"{"spider":"s"}"#)[0]["key"].as_str().unwrap().to_string();
    let started = api.ok("jobq/1/startjob", r#"{"botgroup":"g1"}"#);
    assert_eq!(started[0]["key"], next.as_str(), "the job after it");
    assert_eq!(started[0]["botgroup"], "g1");
    assert_eq!(api.state(&full), "pending");
    api.post("jobq/1/startjob", r#"{"botgroup":"g1"}"#).refused("at most 10000 metadata fields");
    assert_eq!(api.state(&full), "pending");
    assert_eq!(api.ok("jobq/1/startjob", "{}")[0]["key"], full.as_str());
    assert_eq!(api.state(&full), "running");
}

/// Every file of the store, read whole.
fn store_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for e in walk(dir) {
        out.extend(std::fs::read(e).unwrap());
    }
    out
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_failed_import_leaves_nothing_of_its_input() {
    let mut api = Api::new();
    // Enough documents to train a dictionary on (the first import into a store without one).
    let mut text: String = (1..=2000)
        .map(|j| format!("{{\"key\":\"1/1/{j}\",\"spider\":\"s\",\"state\":\"pending\",\"pending_time\":5,\"secret\":\"TOPSECRET-hunter2-{j}\",\"units\":1}}\n"))
        .collect();
    text.push_str("{bad\n");
    let e = api.store().import(&mut text.as_bytes(), &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("line 2001"), "{e}");
    let leaked = |api: &Api| store_bytes(api.dir.path()).windows(9).any(|w| w == b"TOPSECRET");
    assert!(!leaked(&api), "the failed import's input is in the store");
    // Writes after it are packed with no dictionary made from that input.
    for _ in 0..3 {
        api.ok("jobq/1/push", r#"{"spider":"s","note":"after"}"#);
    }
    api.store.take().unwrap().close().unwrap();
    api.store = Some(Store::open(api.dir.path(), api.options()).unwrap());
    assert!(!leaked(&api), "the failed import's input is in the store after a reopen");
    assert_eq!(api.get("jobq/1/count?state=pending").text.trim(), "3");
}

#[test]
fn the_first_bad_line_of_an_import_is_the_one_reported() {
    let job = |key: &str, spider: &str| {
        format!(r#"{{"key":"{key}","spider":"{spider}","state":"pending","pending_time":5,"units":1}}"#)
    };
    let unique =
        |key: &str| format!(r#"{{"key":"{key}","spider":"s","state":"pending","pending_time":5,"unique":"U"}}"#);
    let catalog = r#"{"spider_catalog":{"project":1,"id":1,"name":"other","next_job":9}}"#;
    let cases: Vec<(String, u64, &str)> = vec![
        // A spider conflict, then a syntax error in the same chunk.
        (format!("{}\n{}\n{{bad\n", job("1/1/1", "s"), job("1/2/1", "s")), 2, "spider"),
        // A catalog line that renames a spider a job line before it named.
        (format!("{}\n{catalog}\n{}\n", job("1/1/1", "s"), job("1/1/2", "s")), 2, "spider"),
        // A unique conflict, then a syntax error.
        (format!("{}\n{}\n{{bad\n", unique("1/1/1"), unique("1/1/2")), 2, "Active job exists"),
        // A syntax error, then bytes that are not UTF-8.
        (
            format!("{}\n{{bad}}\n{}\n\u{1}\n", job("1/1/1", "s"), job("1/1/2", "s")).replace('\u{1}', "\u{fffd}"),
            2,
            "JSON",
        ),
        // Only JSON's whitespace makes a blank line.
        (format!("{}\n \t\r\n\u{c}\n", job("1/1/1", "s")), 3, "JSON"),
        (format!("{}\n\u{a0}\n", job("1/1/1", "s")), 2, "JSON"),
    ];
    for (text, line, what) in cases {
        let mut bytes = text.into_bytes();
        // Invalid UTF-8 where the test wrote U+FFFD.
        while let Some(at) = bytes.windows(3).position(|w| w == "\u{fffd}".as_bytes()) {
            bytes.splice(at..at + 3, [0xff, 0xfe]);
        }
        let api = Api::new();
        let e = api.store().import(&mut &bytes[..], &mut |_| {}).unwrap_err().to_string();
        assert!(
            e.contains(&format!("line {line}:")) && e.contains(what),
            "{e} for {:?}",
            String::from_utf8_lossy(&bytes)
        );
        assert_eq!(api.get("jobq/1/count?state=pending").text.trim(), "0");
    }
}

#[test]
fn an_overlong_line_is_refused_with_its_number() {
    // Lines in several chunks (some still in flight when the long one is read).
    let n = 60_000;
    let mut text: String = (1..=n)
        .map(|j| {
            format!(
                "{{\"key\":\"1/1/{j}\",\"spider\":\"s\",\"state\":\"pending\",\"pending_time\":5,\"pad\":\"{}\"}}\n",
                "x".repeat(40)
            )
        })
        .collect();
    text.push_str(&" ".repeat(jobq::store::request::MAX_IMPORT_LINE + 10));
    text.push_str("{}\n");
    let api = Api::new();
    let e = api.store().import(&mut text.as_bytes(), &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains(&format!("line {}:", n + 1)) && e.contains("longer than 64 MiB"), "{e}");
    assert_eq!(api.get("jobq/1/count?state=pending").text.trim(), "0");
}

#[test]
fn an_overlong_last_line_is_refused_with_its_number() {
    // The whole line is read before its end is found (no newline after it).
    let text = format!(
        "{}\n{}",
        r#"{"key":"1/1/1","spider":"s","state":"pending","pending_time":5}"#,
        " ".repeat(jobq::store::request::MAX_IMPORT_LINE + 1)
    );
    let api = Api::new();
    let e = api.store().import(&mut text.as_bytes(), &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("line 2:") && e.contains("longer than 64 MiB"), "{e}");
}

#[test]
fn an_import_counts_a_key_on_several_lines_once() {
    let api = Api::new();
    let line = |j: u32, state: &str| {
        format!("{{\"key\":\"1/1/{j}\",\"spider\":\"s\",\"state\":\"{state}\",\"{state}_time\":{}}}\n", 5 + j)
    };
    let text = [line(1, "pending"), line(2, "pending"), line(1, "running"), line(1, "finished")].concat();
    let report = api.store().import(&mut text.as_bytes(), &mut |_| {}).unwrap();
    assert_eq!((report.jobs, report.versions, report.lines), (2, 4, 4));
    assert_eq!(api.get("jobq/1/count?state=finished").text.trim(), "1");
}

/// A job always has `units` (1 unless given), whether pushed or imported: an
/// import line without it gets 1, as a push does, by both of import's parsers
/// (a line with an escaped name takes the general one).
#[test]
fn an_imported_job_without_units_has_one_unit() {
    let api = Api::new();
    let text = concat!(
        r#"{"key":"1/1/1","spider":"s","state":"pending","pending_time":5}"#,
        "\n",
        r#"{"key":"1/1/2","spider":"s","state":"pending","pending_time":6,"units":3,"m":1}"#,
        "\n",
        r#"{"key":"1/1/3","spider":"s","state":"pending","pending_time":7,"m\u0031":1}"#,
        "\n",
    );
    api.store().import(&mut text.as_bytes(), &mut |_| {}).unwrap();
    let units = |j: u32| api.get(&format!("jobs/1/1/{j}/units")).text.trim().to_string();
    assert_eq!([units(1), units(2), units(3)], ["1", "3", "1"]);
    let listed = api.get("jobq/1/list?state=pending&jobmeta=units");
    assert_eq!(listed.text.matches(r#""units":1"#).count(), 2, "{}", listed.text);
}

/// A value sent with line breaks between its tokens (pretty-printed, or a `\r`
/// inside a line) is stored without them, on every write path: every answer
/// stays one JSON value a line, and export then import round-trips.
#[test]
fn line_breaks_inside_values_never_reach_an_answer() {
    let mut api = Api::new();
    let want = json!({"x": {"y": 1}, "cfg": {"depth": 2}, "w": [1, 2]});
    let one_line = |a: Answer| {
        assert_eq!(a.status, 200, "{}", a.text);
        assert!(!a.text.contains('\r') && a.text.lines().count() == a.text.matches('\n').count(), "{:?}", a.text);
        a.lines()
    };
    api.ok("jobq/1/push", "{\"spider\":\"s\",\"x\":{\"y\":\r1},\"tags\":[\"t\"]}");
    api.ok("jobq/1/push", "{\"spider\":\"s\",\"unique\":\"u\"}");
    assert_eq!(api.post("jobs/1/1/1/cfg", "{\n  \"depth\": 2\n}").status, 200);
    api.ok("jobq/1/update", "{\"key\":\"1/1/1\",\"state\":\"finished\",\"w\":[1,\r2]}");
    api.ok("jobq/1/startjob", "{\"z\":{\"a\":\r3}}");
    // A whole post, pretty-printed (one object over several lines), and two objects.
    assert_eq!(api.post("jobs/1/1/2", "{\n  \"p\": [\n    1\n  ]\n}\n").status, 200);
    assert_eq!(one_line(api.get("jobs/1/1/2/p"))[0], json!([1]));
    api.post("jobs/1/1/2", "{\"a\":1}\n{\"b\":2}").refused("takes one JSON object, found another");
    let job = one_line(api.get("jobs/1/1/1")).remove(0);
    for (k, v) in want.as_object().unwrap() {
        assert_eq!(&job[k], v, "{job}");
    }
    assert_eq!(one_line(api.get("jobs/1/1/1/cfg"))[0], json!({"depth": 2}));
    let rows = one_line(api.get("jobq/1/list?jobmeta=cfg&jobmeta=x&jobmeta=w"));
    assert_eq!(rows.len(), 1);
    for (k, v) in want.as_object().unwrap() {
        assert_eq!(&rows[0][k], v, "{}", rows[0]);
    }
    let running = one_line(api.get("jobq/1/list?state=running&jobmeta=z"));
    assert_eq!(running.len(), 1);
    assert_eq!(running[0]["z"], json!({"a": 3}));
    api.check_clean();
    let mut out = Vec::new();
    assert_eq!(api.store().export(None, &mut out).unwrap(), 2);
    let text = String::from_utf8(out).unwrap();
    assert!(!text.contains('\r'), "{text}");
    let copy = Api::new();
    assert_eq!(copy.store().import(&mut text.as_bytes(), &mut |_| {}).unwrap().jobs, 2);
    assert_eq!(copy.get("jobs/1/1/1").lines()[0], job);
    // An imported line with a `\r` between tokens (the fast path's and the general one's).
    let lines = "{\"key\":\"1/1/9\",\"spider\":\"s\",\"state\":\"pending\",\"pending_time\":5,\"v\":[\r1]}\n\
                 {\"key\":\"1/1/8\",\"spider\":\"s\",\"state\":\"pending\",\"pending_time\":5,\"v\":[\r1],\"v\":[2,\r3]}\n";
    assert_eq!(copy.store().import(&mut lines.as_bytes(), &mut |_| {}).unwrap().jobs, 2);
    assert_eq!(one_line(copy.get("jobs/1/1/9/v"))[0], json!([1]));
    assert_eq!(one_line(copy.get("jobs/1/1/8/v"))[0], json!([2, 3]));
}

/// The data directory moved (or replaced) under an open store: the next write
/// (50 ms on) fails and the store is poisoned, before it makes a file in whatever now has
/// the directory's name (a server kept writing new segments and index files
/// into another store started there). What it acknowledged before is in the
/// moved directory, which opens clean.
#[test]
fn a_data_directory_moved_under_the_store_stops_its_writes() {
    let api = Api::new();
    api.ok("jobq/1/push", "{\"spider\":\"s\"}\n{\"spider\":\"s\"}");
    let moved = api.dir.path().with_extension("moved");
    std::fs::rename(api.dir.path(), &moved).unwrap();
    std::fs::create_dir(api.dir.path()).unwrap();
    // Syncs look at most every 50 ms (a stat at every one cost a fifth of 32 writers' rate).
    std::thread::sleep(Duration::from_millis(60));
    let a = api.post("jobq/1/push", "{\"spider\":\"s\"}");
    assert!(a.status >= 500, "{} {}", a.status, a.text);
    assert!(a.text.contains("moved or replaced"), "{}", a.text);
    assert_eq!(api.post("jobq/1/push", "{\"spider\":\"s\"}").status, 503);
    assert_eq!(std::fs::read_dir(api.dir.path()).unwrap().count(), 0, "nothing made in the new directory");
    let Api { store, .. } = api;
    drop(store);
    let r = jobq::store::check(&moved, Arc::new(RealFs)).unwrap();
    assert!(r.is_clean(), "{:?}", r.findings);
    let reopened = Store::open(&moved, Options { background: false, ..Options::default() }).unwrap();
    // The two acknowledged jobs; the refused write's bytes may be there too (its
    // client got an error, not an acknowledgement).
    let mut out = Vec::new();
    let jobs = reopened.export(None, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!((2..=3).contains(&jobs) && text.contains("\"1/1/1\"") && text.contains("\"1/1/2\""), "{text}");
    std::fs::remove_dir_all(&moved).unwrap();
}
