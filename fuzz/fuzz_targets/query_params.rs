//! The HTTP API without HTTP: `jobq::api::route::parse` (paths),
//! `parse_query_string` (query strings), `jobq::query::parse_query` (the JobQ
//! filter and paging parameters), and `jobq::api::handle` (routing, permission,
//! method, parameters, bodies, rendering) against a small store on `SimFs`.
//!
//! Checks: no panic; routes and query pairs survive a re-encode → parse round
//! trip; `parse_query` respects its limits; every answer has a known status (a
//! 500 on a healthy simulated disk is a bug), its body is JSON lines (each line
//! one JSON value, ending with `\n`, no blank line), a value answer is at most one
//! line, and an error answer is one `{"error": ...}` line; the scope of the caller
//! is enforced; afterwards the store's count and listing agree.

#![no_main]

use std::collections::HashMap;
use std::sync::Arc;

use arbitrary::{Arbitrary, Unstructured};
use jobq::api::{self, route, Body, Caller, Config, Method, Request, Route, Scope, Shape};
use jobq::fs::SimFs;
use jobq::model::{JobKey, JobState, ManualClock};
use jobq::query::{parse_query, Filter, Limits, Paging};
use jobq::{Options, Store};
use jobq_fuzz::gen::Word;
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The path of a route, every segment percent-encoded.
fn path_of(r: &Route) -> String {
    match r {
        Route::Count(p) => format!("/jobq/{p}/count"),
        Route::List(p) => format!("/jobq/{p}/list"),
        Route::Summary { project, spider, state } => {
            let mut s = format!("/jobq/{project}");
            if let Some(sid) = spider {
                s += &format!("/{sid}");
            }
            s += "/summary";
            if let Some(st) = state {
                s += &format!("/{}", enc(st.as_str()));
            }
            s
        }
        Route::JobSummary(p) => format!("/jobq/{p}/jobsummary"),
        Route::Changes(p) => format!("/jobq/{p}/changes"),
        Route::Push(p) => format!("/jobq/{p}/push"),
        Route::Update(p) => format!("/jobq/{p}/update"),
        Route::StartJob(p) => format!("/jobq/{p}/startjob"),
        Route::Cancel(p) => format!("/jobq/{p}/cancel"),
        Route::CancelJob(k) => format!("/jobq/{}/{}/{}/cancel", k.project, k.spider, k.job),
        Route::Job(k) => format!("/jobs/{}/{}/{}", k.project, k.spider, k.job),
        Route::JobField(k, f) => format!("/jobs/{}/{}/{}/{}", k.project, k.spider, k.job, enc(f)),
        Route::SpiderId { project, name } => format!("/ids/{project}/spider/{}", enc(name)),
        Route::ServerTime => "/system/ts".to_string(),
    }
}

#[derive(Debug, Arbitrary)]
enum PathSpec {
    Raw(String),
    /// A plausible endpoint: (kind, project, spider, job, field/name, state).
    Endpoint(u8, u8, u8, u8, Word, u8),
}

impl PathSpec {
    fn text(&self) -> String {
        match self {
            PathSpec::Raw(s) => s.clone(),
            PathSpec::Endpoint(kind, p, s, j, w, st) => {
                let (p, s, j) = (p % 3 + 1, s % 3 + 1, j % 6 + 1);
                let st = ["pending", "running", "finished", "deleted", "x"][usize::from(*st % 5)];
                let w = enc(&w.0);
                match kind % 17 {
                    0 => format!("/jobq/{p}/count"),
                    1 => format!("jobq/{p}/list/"),
                    2 => format!("/jobq/{p}/summary/{st}"),
                    3 => format!("/jobq/{p}/{s}/summary"),
                    4 => format!("/jobq/{p}/jobsummary"),
                    5 => format!("/jobq/{p}/push"),
                    6 => format!("/jobq/{p}/update"),
                    7 => format!("/jobq/{p}/startjob"),
                    8 => format!("/jobq/{p}/cancel"),
                    9 => format!("/jobq/{p}/{s}/{j}/cancel"),
                    10 => format!("/jobs/{p}/{s}/{j}"),
                    11 => format!("/jobs/{p}/{s}/{j}/{w}"),
                    12 => format!("/ids/{p}/spider/{w}"),
                    13 => "/system/ts".into(),
                    14 => format!("/jobq/{p}/{s}/summary/{st}"),
                    15 => format!("/jobq/{p}/changes"),
                    _ => format!("/jobs/{p}/{s}/{j}/tags"),
                }
            }
        }
    }
}

#[derive(Debug, Arbitrary)]
enum QuerySpec {
    Raw(String),
    Pairs(Vec<(u8, Word)>),
}

const PARAMS: [&str; 19] = [
    "spider", "state", "startts", "endts", "has_tag", "lacks_tag", "count", "start", "stop", "key", "jobmeta", "create",
    "x", "", "has_tag_all", "close_reason", "startafter", "since", "wait",
];
const VALUES: [&str; 12] =
    ["s1", "finished", "pending,running", "1", "0", "1/1/1", "2/1/1", "a", "-1", "18446744073709551616", "tags,state", " 3 "];

impl QuerySpec {
    fn text(&self) -> String {
        match self {
            QuerySpec::Raw(s) => s.clone(),
            QuerySpec::Pairs(ps) => ps
                .iter()
                .take(8)
                .map(|(k, w)| {
                    let name = PARAMS[usize::from(*k) % PARAMS.len()];
                    let v = if k & 0x80 != 0 { enc(&w.0) } else { enc(VALUES[w.0.len() % VALUES.len()]) };
                    format!("{name}={v}")
                })
                .collect::<Vec<_>>()
                .join("&"),
        }
    }
}

#[derive(Debug, Arbitrary)]
enum BodySpec {
    Raw(Vec<u8>),
    Lines(Vec<(u8, Word)>),
}

impl BodySpec {
    fn bytes(&self) -> Vec<u8> {
        match self {
            BodySpec::Raw(b) => b.clone(),
            BodySpec::Lines(ls) => {
                let mut out = String::new();
                for (k, w) in ls.iter().take(6) {
                    let s = serde_json::to_string(&w.0).expect("a string serialises");
                    let line = match k % 10 {
                        0 => format!(r#"{{"spider":"s{}","tags":["a",{s}],"priority":{}}}"#, k % 3, k % 5),
                        1 => format!(r#"{{"spider":{s},"unique":"u{}","state":"running"}}"#, k % 2),
                        2 => format!(r#"{{"key":"1/1/{}","state":"finished","close_reason":{s}}}"#, k % 6 + 1),
                        3 => format!(r#"{{"key":"1/{}","add_tag":{s}}}"#, k % 3 + 1),
                        4 => format!(r#"[{{"key":"1/1/{}"}}]"#, k % 6 + 1),
                        5 => format!(r#"{{"key":"2/1/{}"}}"#, k % 6 + 1),
                        6 => format!(r#"{{"x":{s},"tags":{s},"priority":"{k}"}}"#),
                        7 => s,
                        8 => format!(r#"{{"f":{{"a":[{s},1e400,-0]}},"remove_tag":"a"}}"#),
                        _ => w.0.clone(),
                    };
                    out += &line;
                    out.push(if k & 0x40 != 0 { '\n' } else { ' ' });
                }
                out.into_bytes()
            }
        }
    }
}

#[derive(Debug, Arbitrary)]
struct Req {
    method: u8,
    path: PathSpec,
    query: QuerySpec,
    body: BodySpec,
}

/// Settings first, then requests until the bytes run out.
#[derive(Debug)]
struct Input {
    scope: u8,
    actor: bool,
    max_count: u16,
    /// `parse_query` on each request's pairs: project, default state, limits.
    project: u32,
    default_state: Option<u8>,
    limits: (u64, u64),
    reqs: Vec<Req>,
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let mut input = Input {
            scope: u.arbitrary()?,
            actor: u.arbitrary()?,
            max_count: u.arbitrary()?,
            project: u.arbitrary()?,
            default_state: u.arbitrary()?,
            limits: u.arbitrary()?,
            reqs: Vec::new(),
        };
        while !u.is_empty() && input.reqs.len() < 6 {
            input.reqs.push(u.arbitrary()?);
        }
        Ok(input)
    }
}

fn open_store() -> Store {
    let sim = SimFs::new();
    let opts = Options {
        fs: Arc::new(sim),
        clock: Arc::new(ManualClock::new(5000)),
        background: false,
        memtable_entries: 3,
        bulk_entries: 4,
        merge_fanout: 2,
        segment_bytes: 4096,
        ..Options::default()
    };
    let store = Store::open("/db", opts).expect("a store opens on an empty SimFs");
    let caller = Caller::unrestricted();
    let config = Config::default();
    for (path, body) in [
        ("/jobq/1/push", &b"{\"spider\":\"s1\",\"tags\":[\"a\"]}\n{\"spider\":\"s2\",\"unique\":\"u1\",\"priority\":4}\n{\"spider\":\"s1\",\"x\":[1,2]}\n{\"spider\":\"s1\"}\n"[..]),
        ("/jobq/2/push", b"{\"spider\":\"s1\",\"state\":\"running\"}"),
        ("/jobq/1/update", b"{\"key\":\"1/1/1\",\"state\":\"finished\",\"close_reason\":\"ok\"}"),
    ] {
        let r = api::handle(&store, &caller, &config, &Request { method: Method::Post, path, query: "", body, cancel: api::Cancel::new() });
        assert_eq!(r.status, 200, "seeding {path}");
    }
    store
}

fn body_bytes(b: Body) -> Vec<u8> {
    match b {
        Body::Full(v) => v,
        Body::Stream(rows) => rows.collect_bytes().unwrap_or_else(|e| panic!("a streamed answer failed: {e}")),
    }
}

fn check_answer(status: u16, shape: Shape, body: &[u8], what: &str) {
    assert!(matches!(status, 200 | 400 | 403 | 404 | 405 | 503), "status {status} for {what}: {}", String::from_utf8_lossy(body));
    if body.is_empty() {
        return;
    }
    let text = std::str::from_utf8(body).unwrap_or_else(|_| panic!("answer is not UTF-8 for {what}"));
    assert!(text.ends_with('\n'), "answer does not end with a newline for {what}: {text:?}");
    let lines: Vec<&str> = text[..text.len() - 1].split('\n').collect();
    for l in &lines {
        assert!(!l.is_empty(), "blank line in the answer for {what}: {text:?}");
        // RawValue: JSON syntax without a range for numbers (values such as 1e400
        // are kept verbatim by design; serde_json::Value would refuse them).
        let _: &RawValue =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("answer line is not JSON ({e}) for {what}: {l:?}"));
        if status != 200 {
            let v: HashMap<String, &RawValue> =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("error answer is not an object ({e}) for {what}: {l:?}"));
            assert!(v.get("error").is_some_and(|e| e.get().starts_with('"')), "error answer without error for {what}: {l:?}");
        }
    }
    if shape == Shape::Value || status != 200 {
        assert_eq!(lines.len(), 1, "a value answer of several lines for {what}: {text:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(input) = Input::arbitrary(&mut u) else { return };

    // Parsers alone.
    for r in &input.reqs {
        let path = r.path.text();
        if let Ok(route) = route::parse(&path) {
            let canon = path_of(&route);
            match route::parse(&canon) {
                Ok(again) => assert_eq!(again, route, "route round trip through {canon:?}"),
                Err(e) => panic!("the canonical path {canon:?} of {route:?} does not parse: {e:?}"),
            }
            let _ = (route.project(), route.allow());
            assert!(!route.allows(Method::Other));
        }
        let query = r.query.text();
        if let Ok(pairs) = route::parse_query_string(&query) {
            let canon: Vec<String> = pairs.iter().map(|(n, v)| format!("{}={}", enc(n), enc(v))).collect();
            let again = route::parse_query_string(&canon.join("&")).expect("canonical query parses");
            assert_eq!(again, pairs, "query round trip");
            let limits = Limits { default_count: input.limits.0, max_count: input.limits.1 };
            let default = input.default_state.map(|s| JobState::ALL[usize::from(s % 4)]);
            if let Ok(q) = parse_query(&pairs, input.project, default, limits) {
                assert!(q.paging.count <= limits.max_count);
                if let Some(d) = default {
                    assert!(!q.filter.states.is_empty());
                    if !pairs.iter().any(|(n, v)| n == "state" && v.split(',').any(|s| !s.trim().is_empty())) {
                        assert_eq!(q.filter.states, vec![d]);
                    }
                }
                if let Some(keys) = &q.filter.keys {
                    assert!(keys.iter().all(|k| k.project == input.project));
                    assert!(keys.len() <= jobq::query::MAX_KEYS);
                }
                // Values named once each, within the limits; no empty tag or spider.
                for tags in [&q.filter.has_tags, &q.filter.has_tags_all, &q.filter.lacks_tags] {
                    assert!(tags.len() <= jobq::query::MAX_TAG_FILTERS && tags.iter().all(|t| !t.is_empty()));
                    assert!(tags.iter().enumerate().all(|(i, t)| !tags[..i].contains(t)), "{tags:?}");
                }
                let reasons = &q.filter.close_reasons;
                assert!(reasons.len() <= jobq::query::MAX_CLOSE_REASONS);
                assert!(reasons.iter().all(|r| r.len() <= jobq::model::MAX_CLOSE_REASON));
                assert!(reasons.iter().enumerate().all(|(i, r)| !reasons[..i].contains(r)), "{reasons:?}");
                assert!(q.jobmeta.as_ref().is_none_or(|m| m.len() <= jobq::query::MAX_JOBMETA));
                assert!(q.filter.spider.as_ref().is_none_or(|s| !s.is_empty()));
                if let Some(stop) = q.paging.stop {
                    assert_eq!(stop.project, input.project);
                }
                if let Some(after) = q.paging.startafter {
                    assert_eq!(after.project, input.project, "startafter of another project is refused");
                }
            }
        }
    }

    // Through the API, against a store.
    let store = open_store();
    let scope = match input.scope % 4 {
        0 | 1 => Scope::All,
        2 => Scope::Projects(vec![1]),
        _ => Scope::Job(JobKey::new(1, 1, 2)),
    };
    let caller = Caller { actor: input.actor.then(|| "fuzzer".to_string()), scope: scope.clone() };
    let config = Config { max_count: u64::from(input.max_count % 2000).max(1) };
    for r in &input.reqs {
        let path = r.path.text();
        let query = r.query.text();
        let body = r.body.bytes();
        let method = match r.method % 8 {
            0..=2 => Method::Get,
            3..=5 => Method::Post,
            6 => Method::Delete,
            _ => Method::Other,
        };
        let req = Request { method, path: &path, query: &query, body: &body, cancel: api::Cancel::new() };
        let resp = api::handle(&store, &caller, &config, &req);
        let (status, shape, allow) = (resp.status, resp.shape, resp.allow);
        let body = body_bytes(resp.body);
        let what = format!("{method:?} {path:?} ?{query:?} body {:?}", String::from_utf8_lossy(&req.body));
        check_answer(status, shape, &body, &what);
        if status == 405 {
            assert!(allow.is_some(), "405 without Allow for {what}");
        }
        if let Ok(route) = route::parse(&path) {
            let allowed = caller.may(&route);
            assert_eq!(status == 403, !allowed, "permission of {scope:?} for {what}: status {status}");
        }
    }
    // The store is still consistent with itself.
    let snap = store.snapshot();
    for p in 1..=3u32 {
        let all = Paging { count: 100_000, start: 0, stop: None, startafter: None };
        let n = snap.count(p, &Filter::default()).expect("count");
        let listed = snap.list(p, &Filter::default(), &all).expect("list");
        assert_eq!(n, listed.len() as u64, "count and list disagree in project {p}");
        for h in listed {
            let k = JobKey::from_local(p, h.local);
            assert!(snap.get(k).expect("get").is_some(), "listed job {k} missing");
        }
    }
});
