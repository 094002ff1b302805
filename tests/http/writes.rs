//! The write endpoints: push (with unique conflicts), update (one job, a whole
//! spider), startjob, cancel, and metadata posts and deletes.

use serde_json::{json, Value};

use crate::endpoints::{finish, push, ARGS, KEY};
use crate::harness::{tempdir, Server};

#[test]
fn push_states_and_unique_conflicts() {
    let dir = tempdir();
    let s = Server::start(dir.path(), ARGS);
    let lines = [
        json!({"spider": "s", "unique": "u1"}),
        json!({"spider": "s", "unique": "u1", "n": 2}),
        json!({"spider": "s", "state": "running"}),
        json!({"spider": "s", "unique": null}),
    ];
    let got = push(&s, 5, &lines);
    assert_eq!(got[0], json!({"key": "5/1/1", "auth": null}));
    assert_eq!(got[1], json!({"error": "Active job exists with key u1", "request": lines[1]}));
    assert_eq!(got[2]["key"], "5/1/2");
    assert!(got[2]["auth"].as_str().is_some_and(|t| t.len() >= 16), "a running job gets a token");
    assert_eq!(got[3], json!({"key": "5/1/3", "auth": null}));
    let later = push(&s, 5, &[json!({"spider": "s", "state": "finished", "unique": "u1"})]);
    assert_eq!(later[0]["error"], "Active job exists with key u1", "a held unique refuses jobs in any state");
    let running = s.get("/jobs/5/1/2", KEY).json();
    assert!(running.get("pending_time").is_none() && running["running_time"].is_u64());
    assert_eq!(running["started_by"], "alice");
    finish(&s, 5, &["5/1/1"]);
    assert_eq!(push(&s, 5, &[json!({"spider": "s", "unique": "u1"})])[0]["key"], "5/1/4");
}

#[test]
fn update_states_tags_and_whole_spiders() {
    let dir = tempdir();
    let s = Server::start(dir.path(), ARGS);
    push(&s, 6, &[json!({"spider": "a"}), json!({"spider": "a"}), json!({"spider": "b", "tags": ["keep"]})]);
    let r = s.post("/jobq/6/update", KEY, "{\"key\":\"6/1/1\",\"state\":\"running\",\"note\":\"n\",\"add_tag\":[\"t1\",\"t2\"]}\n\n{\"key\":\"6/9/9\",\"state\":\"finished\"}\n{\"key\":\"6/2/1\",\"remove_tag\":\"keep\"}");
    assert_eq!(
        r.lines(),
        [json!({"key": "6/1/1", "prevstate": "pending"}), json!({"key": "6/2/1", "prevstate": "pending"})]
    );
    let m = s.get("/jobs/6/1/1", KEY).json();
    assert_eq!(
        (m["state"].clone(), m["note"].clone(), m["tags"].clone()),
        (json!("running"), json!("n"), json!(["t1", "t2"]))
    );
    assert_eq!(s.get("/jobs/6/2/1/tags", KEY).json(), json!([]));
    let before = s.get("/jobs/6/1/1/running_time", KEY).json();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let same = s.post("/jobq/6/update", KEY, "{\"key\":\"6/1/1\",\"state\":\"running\"}");
    assert_eq!(same.json(), json!({"key": "6/1/1", "prevstate": "running"}));
    assert_eq!(s.get("/jobs/6/1/1/running_time", KEY).json(), before, "same-state update keeps the time");
    let r = s.post("/jobq/6/update", KEY, "{\"key\":\"6/1\",\"state\":\"deleted\"}");
    let mut got: Vec<Value> = r.lines();
    got.sort_by_key(|v| v["key"].as_str().unwrap().to_string());
    assert_eq!(got, [json!({"key": "6/1/1", "prevstate": "running"}), json!({"key": "6/1/2", "prevstate": "pending"})]);
    assert_eq!(s.get("/jobs/6/1/2/deleted_by", KEY).json(), "alice");
    assert_eq!(s.post("/jobq/6/update", KEY, "{\"key\":\"6/1\",\"state\":\"finished\"}").body.len(), 0);
    assert_eq!(s.post("/jobq/6/update", KEY, "").body.len(), 0, "an empty update changes nothing");
}

#[test]
fn startjob_takes_priority_then_age_once() {
    let dir = tempdir();
    let s = Server::start(dir.path(), ARGS);
    push(
        &s,
        8,
        &[json!({"spider": "s", "priority": 0}), json!({"spider": "s", "priority": 4}), json!({"spider": "s"})],
    );
    let first = s.post("/jobq/8/startjob", KEY, "{\"worker\":\"w1\"}").json();
    assert_eq!(first["key"], "8/1/2");
    assert_eq!((first["state"].clone(), first["worker"].clone()), (json!("running"), json!("w1")));
    assert!(first["auth"].is_string() && first["running_time"].is_u64());
    // Two at once never get the same job.
    let addr = s.addr.clone();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let a = addr.clone();
            std::thread::spawn(move || crate::harness::request(&a, "POST", "/jobq/8/startjob", Some(KEY), b"{}"))
        })
        .collect();
    let mut got: Vec<String> =
        threads.into_iter().map(|t| t.join().unwrap().json()["key"].as_str().unwrap().into()).collect();
    got.sort();
    assert_eq!(got, ["8/1/1", "8/1/3"]);
    let none = s.post("/jobq/8/startjob", KEY, "");
    assert_eq!((none.status, none.body.len()), (200, 0));
    s.post("/jobq/8/startjob", KEY, "{}\n{}").assert_error(400, "line 2");
}

#[test]
fn cancel_lists_and_single_jobs() {
    let dir = tempdir();
    let s = Server::start(dir.path(), ARGS);
    push(
        &s,
        4,
        &[
            json!({"spider": "s"}),
            json!({"spider": "s", "state": "running"}),
            json!({"spider": "s", "state": "finished"}),
        ],
    );
    let r = s.post(
        "/jobq/4/cancel",
        KEY,
        "[{\"key\":\"4/1/1\"},{\"key\":\"4/1/2\"},{\"key\":\"4/1/3\"},{\"key\":\"4/1/9\"}]",
    );
    assert_eq!(r.json(), json!({"count": 2}));
    let pending = s.get("/jobs/4/1/1", KEY).json();
    assert_eq!((pending["state"].clone(), pending["close_reason"].clone()), (json!("finished"), json!("cancelled")));
    let running = s.get("/jobs/4/1/2", KEY).json();
    assert_eq!((running["state"].clone(), running["cancelled_by"].clone()), (json!("running"), json!("alice")));
    assert!(running["cancel_time"].is_u64());
    push(&s, 4, &[json!({"spider": "s"})]);
    assert_eq!(s.post("/jobq/4/1/4/cancel", KEY, "").json(), json!({"count": 1}));
    assert_eq!(s.post("/jobq/4/1/4/cancel", KEY, "").json(), json!({"count": 0}));
    assert_eq!(s.post("/jobq/4/cancel", KEY, "[]").json(), json!({"count": 0}));
    s.post("/jobq/4/cancel?count=10", KEY, "").assert_error(400, "count is not supported");
    s.post("/jobq/4/cancel", KEY, "[{\"key\":\"5/1/1\"}]").assert_error(400, "project");
}

#[test]
fn metadata_posts_and_deletes() {
    let dir = tempdir();
    let s = Server::start(dir.path(), ARGS);
    push(&s, 3, &[json!({"spider": "s", "keep": 1})]);
    // The clients post the whole metadata back: maintained fields are ignored.
    let whole = json!({"state": "finished", "spider": "other", "project": 99, "pending_time": 1, "keep": 2, "new": [1], "tags": ["a"], "priority": 1});
    let r = s.post("/jobs/3/1/1", KEY, &whole.to_string());
    assert_eq!((r.status, r.body.len()), (200, 0));
    let m = s.get("/jobs/3/1/1", KEY).json();
    assert_eq!(
        (m["state"].clone(), m["spider"].clone(), m["project"].clone()),
        (json!("pending"), json!("s"), json!(3))
    );
    assert_eq!(
        (m["keep"].clone(), m["new"].clone(), m["tags"].clone(), m["priority"].clone()),
        (json!(2), json!([1]), json!(["a"]), json!(1))
    );
    assert_eq!(s.post("/jobs/3/1/1/field", KEY, "{\"x\": \"é\"}").status, 200);
    assert_eq!(s.get("/jobs/3/1/1/field", KEY).json(), json!({"x": "é"}));
    assert_eq!(s.post("/jobs/3/1/1/tags", KEY, "[\"b\",\"c\"]").status, 200);
    assert_eq!(s.get("/jobs/3/1/1/tags", KEY).json(), json!(["b", "c"]));
    assert_eq!(s.get("/jobq/3/count?state=pending&has_tag=c", KEY).text(), "1\n", "tags set this way are indexed");
    assert_eq!(s.post("/jobs/3/1/1/priority", KEY, "4").status, 200);
    assert_eq!(s.get("/jobs/3/1/1/priority", KEY).json(), json!(4));
    assert_eq!(s.req("DELETE", "/jobs/3/1/1/field", Some(KEY), b"").status, 200);
    assert_eq!(s.get("/jobs/3/1/1/field", KEY).text(), "null\n");
    assert_eq!(s.req("DELETE", "/jobs/3/1/1/tags", Some(KEY), b"").status, 200);
    assert_eq!(s.get("/jobs/3/1/1/tags", KEY).json(), json!([]));
    assert_eq!(s.req("DELETE", "/jobs/3/1/1/absent", Some(KEY), b"").status, 200);
    s.post("/jobs/3/1/1/state", KEY, "\"finished\"").assert_error(400, "maintained");
    s.req("DELETE", "/jobs/3/1/1/priority", Some(KEY), b"").assert_error(400, "maintained");
    s.req("DELETE", "/jobs/3/1/1/units", Some(KEY), b"").assert_error(400, "maintained");
    assert_eq!(s.get("/jobs/3/1/1/units", KEY).json(), json!(1), "units keep their default");
    s.post("/jobs/3/1/1/priority", KEY, "\"high\"").assert_error(400, "integer");
    s.post("/jobs/3/1/1/field", KEY, "{oops").assert_error(400, "JSON");
    s.post("/jobs/3/1/1", KEY, "[1]").assert_error(400, "object");
    s.post("/jobs/3/1/9", KEY, "{\"a\":1}").assert_error(404, "3/1/9");
    s.post("/jobs/3/1/9/a", KEY, "1").assert_error(404, "3/1/9");
    assert_eq!(s.get("/jobs/3/1/1/state", KEY).json(), "pending");
}
