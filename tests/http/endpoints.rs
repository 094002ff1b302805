//! The read endpoints: count, list (every filter, paging, streaming), summary,
//! jobsummary, jobs GET, ids; and the seed document's curl session.

use serde_json::{json, Value};

use crate::harness::{tempdir, Server};

pub const KEY: &str = "KEY1:";
pub const ARGS: &[&str] = &["--api-key", "alice=KEY1"];

pub fn push(s: &Server, project: u32, lines: &[Value]) -> Vec<Value> {
    let body: Vec<String> = lines.iter().map(Value::to_string).collect();
    let r = s.post(&format!("/jobq/{project}/push"), KEY, &body.join("\n"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.lines()
}

pub fn finish(s: &Server, project: u32, keys: &[&str]) {
    let body: Vec<String> = keys.iter().map(|k| json!({"key": k, "state": "finished"}).to_string()).collect();
    let r = s.post(&format!("/jobq/{project}/update"), KEY, &body.join("\n"));
    assert_eq!(r.status, 200, "{}", r.text());
}

fn keys(r: &crate::harness::Resp) -> Vec<String> {
    r.lines().iter().map(|l| l["key"].as_str().unwrap().to_string()).collect()
}

/// Jobs a..f of 53: spiders alpha (1) and beta (2); e stays pending, the rest finish in order.
fn seed(s: &Server) {
    let specs = [("alpha", json!(["x"])), ("alpha", json!(["y"])), ("beta", json!(["x", "y"]))];
    let more = [("beta", json!([])), ("alpha", json!(["z"])), ("beta", json!(["x"]))];
    let lines: Vec<Value> = specs
        .iter()
        .chain(more.iter())
        .enumerate()
        .map(|(i, (sp, tags))| json!({"spider": sp, "tags": tags, "label": format!("{}", (b'a' + i as u8) as char)}))
        .collect();
    let got = push(s, 53, &lines);
    let want: Vec<&str> = vec!["53/1/1", "53/1/2", "53/2/1", "53/2/2", "53/1/3", "53/2/3"];
    assert_eq!(got.iter().map(|v| v["key"].as_str().unwrap()).collect::<Vec<_>>(), want);
    assert!(got.iter().all(|v| v["auth"].is_null()));
    for k in ["53/1/1", "53/1/2", "53/2/1", "53/2/2", "53/2/3"] {
        finish(s, 53, &[k]);
        std::thread::sleep(std::time::Duration::from_millis(3));
    }
}

#[test]
fn seed_curl_session_and_counts() {
    let dir = tempdir();
    let s = Server::start(dir.path(), ARGS);
    push(&s, 53, &[json!({"spider": "s", "tags": ["tagA"]}), json!({"spider": "s", "tags": ["tagB"]})]);
    finish(&s, 53, &["53/1/1", "53/1/2"]);
    assert_eq!(s.get("/jobq/53/count", KEY).text(), "2\n");
    assert_eq!(s.get("/jobq/53/count?has_tag=tagA&has_tag=tagB", KEY).text(), "2\n");
    assert_eq!(s.get("/jobq/53/count?lacks_tag=tagA&lacks_tag=tagB", KEY).text(), "0\n");
    let r = s.get("/jobq/53/count", KEY);
    assert_eq!(r.header("content-type"), Some("application/x-jsonlines"));
    // Paging parameters mean nothing to a count.
    assert_eq!(s.get("/jobq/53/count?count=1&start=1&stop=53/1/2", KEY).text(), "2\n");
    assert_eq!(s.get("/jobq/54/count", KEY).text(), "0\n");
}

#[test]
fn list_filters_and_paging() {
    let dir = tempdir();
    let s = Server::start(dir.path(), ARGS);
    seed(&s);
    let all = keys(&s.get("/jobq/53/list", KEY));
    assert_eq!(all, ["53/2/3", "53/2/2", "53/2/1", "53/1/2", "53/1/1"]);
    let row = &s.get("/jobq/53/list?count=1", KEY).lines()[0];
    for f in ["key", "state", "spider", "ts", "elapsed", "pending_time", "finished_time", "tags"] {
        assert!(row.get(f).is_some(), "{f} missing from {row}");
    }
    assert_eq!(row["ts"], row["finished_time"]);
    assert!(row["elapsed"].as_i64().unwrap() >= 0);
    let case = |q: &str| keys(&s.get(&format!("/jobq/53/list?{q}"), KEY));
    assert_eq!(case("state=pending"), ["53/1/3"]);
    assert_eq!(case("state=pending&state=finished").len(), 6);
    assert_eq!(case("spider=beta"), ["53/2/3", "53/2/2", "53/2/1"]);
    assert_eq!(case("spider=nobody"), Vec::<String>::new());
    assert_eq!(case("has_tag=x&has_tag=y"), ["53/2/3", "53/2/1", "53/1/2", "53/1/1"]);
    assert_eq!(case("lacks_tag=x&lacks_tag=y"), ["53/2/2"]);
    assert_eq!(case("has_tag=x&lacks_tag=y&spider=beta"), ["53/2/3"]);
    assert_eq!(case("count=2"), ["53/2/3", "53/2/2"]);
    assert_eq!(case("start=1&count=2"), ["53/2/2", "53/2/1"]);
    assert_eq!(case("stop=53/2/1"), ["53/2/3", "53/2/2"]);
    assert_eq!(case("stop=53/2/1&start=1"), ["53/2/2"]);
    assert_eq!(case("stop=53/1/3"), all, "a stop job that does not match still cuts at its place (older than all)");
    assert_eq!(case("stop=54/1/1"), all, "a key of another project is ignored");
    assert_eq!(case("key=53/1/1&key=53/2/1&key=53/1/3"), ["53/2/1", "53/1/1"]);
    let rows = s.get("/jobq/53/list", KEY).lines();
    let ts: Vec<i64> = rows.iter().map(|r| r["ts"].as_i64().unwrap()).collect();
    let (lo, hi) = (ts[3], ts[1]);
    let window = case(&format!("startts={lo}&endts={hi}"));
    let want: Vec<String> = rows
        .iter()
        .filter(|r| (lo..hi).contains(&r["ts"].as_i64().unwrap()))
        .map(|r| r["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(window, want);
    let r = s.get("/jobq/53/list?jobmeta=label&jobmeta=spider&spider=alpha", KEY);
    let first = r.text().lines().next().unwrap().to_string();
    assert!(first.starts_with("{\"key\":\"53/1/2\",\"state\":\"finished\",\"ts\":"), "{first}");
    let meta = r.lines();
    let mut fields: Vec<&String> = meta[0].as_object().unwrap().keys().collect();
    fields.sort();
    assert_eq!(fields, ["elapsed", "key", "label", "spider", "state", "ts"]);
    assert_eq!(meta.iter().map(|r| r["label"].as_str().unwrap()).collect::<Vec<_>>(), ["b", "a"]);
    let empty = s.get("/jobq/53/list?state=running", KEY);
    assert_eq!((empty.status, empty.body.len(), empty.header("content-length")), (200, 0, Some("0")));
}

#[test]
fn summary_jobsummary_and_ids() {
    let dir = tempdir();
    let s = Server::start(dir.path(), ARGS);
    seed(&s);
    let sum = s.get("/jobq/53/summary", KEY).lines();
    let names: Vec<(&str, i64, usize)> = sum
        .iter()
        .map(|l| (l["name"].as_str().unwrap(), l["count"].as_i64().unwrap(), l["summary"].as_array().unwrap().len()))
        .collect();
    assert_eq!(names, [("pending", 1, 1), ("running", 0, 0), ("finished", 5, 5)]);
    let one = s.get("/jobq/53/summary/finished?count=2&start=1&jobmeta=label", KEY).json();
    assert_eq!(one["summary"].as_array().unwrap().iter().map(|r| r["label"].clone()).collect::<Vec<_>>(), ["d", "c"]);
    let beta = s.get("/jobq/53/2/summary/finished", KEY).json();
    assert_eq!(beta["count"], 3);
    assert_eq!(s.get("/jobq/53/summary/finished?spider=alpha", KEY).json()["count"], 2);
    assert_eq!(s.get("/jobq/53/summary/finished?spider=nobody", KEY).json()["count"], 0);
    assert_eq!(s.get("/jobq/53/1/summary", KEY).lines().len(), 3);
    // Filters apply to every line of a summary.
    let tagged = s.get("/jobq/53/summary/finished?has_tag=y&lacks_tag=z", KEY).lines();
    assert_eq!(tagged[0]["count"], 2, "{tagged:?}");
    let keys: Vec<&str> = tagged[0]["summary"].as_array().unwrap().iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["53/2/1", "53/1/2"]);
    s.get("/jobq/53/summary?state=finished", KEY).assert_error(400, "state");
    let js = s.get("/jobq/53/jobsummary?key=53/2/1&key=53/9/9&key=53/1/3&jobmeta=label&jobmeta=state", KEY).lines();
    assert_eq!(
        js,
        [
            json!({"key": "53/2/1", "state": "finished", "ts": js[0]["ts"], "elapsed": js[0]["elapsed"], "label": "c"}),
            json!({"key": "53/1/3", "state": "pending", "ts": js[1]["ts"], "elapsed": js[1]["elapsed"], "label": "e"})
        ]
    );
    assert_eq!(s.get("/jobq/53/jobsummary", KEY).body.len(), 0);
    assert_eq!(s.get("/ids/53/spider/beta", KEY).text(), "2\n");
    assert_eq!(s.get("/ids/53/spider/nobody", KEY).text(), "null\n");
    assert_eq!(s.get("/ids/53/spider/new%20one?create=1", KEY).text(), "3\n");
    assert_eq!(s.get("/ids/53/spider/new%20one", KEY).text(), "3\n");
    s.get("/ids/53/spider/x?create=maybe", KEY).assert_error(400, "create");
    let now: u64 = s.req("GET", "/system/ts", None, b"").text().trim().parse().unwrap();
    assert!(now > 1_600_000_000_000);
}

#[test]
fn jobs_get_whole_and_fields() {
    let dir = tempdir();
    let s = Server::start(dir.path(), ARGS);
    push(
        &s,
        7,
        &[json!({"spider": "sp", "priority": 4, "tags": ["t"], "deep": {"a": [1, 2.5, "ü", null]}, "unique": "u"})],
    );
    let m = s.get("/jobs/7/1/1", KEY).json();
    assert_eq!(m["project"], 7);
    assert_eq!(m["spider"], "sp");
    assert_eq!(m["state"], "pending");
    assert_eq!(m["priority"], 4);
    assert_eq!(m["tags"], json!(["t"]));
    assert_eq!(m["deep"], json!({"a": [1, 2.5, "ü", null]}));
    assert_eq!(m["units"], 1);
    assert_eq!(m["scheduled_by"], "alice");
    assert!(m.get("key").is_none() && m["pending_time"].is_u64());
    assert_eq!(s.get("/jobs/7/1/1/deep", KEY).json(), json!({"a": [1, 2.5, "ü", null]}));
    assert_eq!(s.get("/jobs/7/1/1/state", KEY).text(), "\"pending\"\n");
    assert_eq!(s.get("/jobs/7/1/1/missing", KEY).text(), "null\n", "as the real service answers");
    assert_eq!(s.get("/jobs/7/1/2", KEY).body.len(), 0);
    assert_eq!(s.get("/jobs/7/1/2/state", KEY).body.len(), 0);
}

#[test]
fn long_listings_are_streamed() {
    let dir = tempdir();
    let s = Server::start(dir.path(), &["--api-key", "KEY1", "--max-count", "2500"]);
    let line = json!({"spider": "bulk", "state": "finished", "payload": "x".repeat(700)}).to_string();
    for _ in 0..3 {
        let body = vec![line.as_str(); 1000].join("\n");
        assert_eq!(s.post("/jobq/9/push", KEY, &body).status, 200);
    }
    // About 2 MB of rows with their payloads: chunks of about 256 KiB.
    let r = s.get("/jobq/9/list?count=2500&jobmeta=payload", KEY);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert!(r.chunks > 2, "{} chunks", r.chunks);
    assert_eq!(r.lines().len(), 2500);
    assert_eq!(s.get("/jobq/9/list", KEY).lines().len(), 1000, "the default count stays 1000");
    assert_eq!(s.get("/jobq/9/list?count=5000", KEY).lines().len(), 2500, "count is capped at --max-count");
    assert_eq!(s.get("/jobq/9/count", KEY).text(), "3000\n");
}

#[test]
fn head_is_answered_as_get_without_the_body() {
    let dir = tempdir();
    let s = Server::start(dir.path(), ARGS);
    seed(&s);
    let head = |path: &str, auth: Option<&str>| s.req("HEAD", path, auth, b"");
    for path in ["/jobq/53/count", "/jobs/53/1/1", "/jobs/53/1/1/label", "/jobs/53/1/99", "/ids/53/spider/alpha"] {
        let (g, h) = (s.get(path, KEY), head(path, Some(KEY)));
        assert_eq!((h.status, h.body.len()), (g.status, 0), "{path}");
        assert_eq!(h.header("content-length"), Some(g.body.len().to_string().as_str()), "{path}");
        assert_eq!(h.header("content-type"), g.header("content-type"), "{path}");
    }
    // A streamed answer: the status and headers, no body (its length is not known).
    let h = head("/jobq/53/list?state=finished&state=pending", Some(KEY));
    assert_eq!((h.status, h.body.len(), h.header("content-type")), (200, 0, Some("application/x-jsonlines")));
    // Refusals are GET's too.
    assert_eq!(head("/jobq/53/count", None).status, 401);
    assert_eq!(head("/nope", Some(KEY)).status, 404);
    let h = head("/jobq/53/push", Some(KEY));
    assert_eq!((h.status, h.header("allow")), (405, Some("POST")));
}
