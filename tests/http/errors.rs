//! Every class of malformed input gets 400/404/405/413 with `{"error": ...}`
//! naming the problem, and a refused request stores nothing.

use serde_json::json;

use crate::endpoints::{push, ARGS, KEY};
use crate::harness::{raw, tempdir, Server};

fn count_all(s: &Server, project: u32) -> String {
    s.get(&format!("/jobq/{project}/count?state=pending&state=running&state=finished&state=deleted"), KEY).text()
}

#[test]
fn paths_and_methods() {
    let dir = tempdir();
    let s = Server::start(dir.path(), ARGS);
    for p in [
        "/",
        "/nope",
        "/jobq/53",
        "/jobq/53/nope",
        "/jobq/53/count/extra",
        "/jobs/53/1",
        "/jobs/53/1/1/a/b",
        "/ids/53/x",
    ] {
        s.get(p, KEY).assert_error(404, "no such endpoint");
    }
    s.get("/jobq/abc/count", KEY).assert_error(400, "project id");
    s.get("/jobq/0/count", KEY).assert_error(400, "project id");
    s.get("/jobq/99999999999/count", KEY).assert_error(400, "project id");
    s.get("/jobs/53/x/1", KEY).assert_error(400, "spider id");
    s.get("/jobs/53/1/-1", KEY).assert_error(400, "job id");
    s.get("/jobq/53/summary/done", KEY).assert_error(400, "unknown state");
    let r = s.post("/jobq/53/count", KEY, "");
    r.assert_error(405, "GET");
    assert_eq!(r.header("allow"), Some("GET"));
    assert_eq!(s.get("/jobq/53/push", KEY).header("allow"), Some("POST"));
    assert_eq!(s.req("PUT", "/jobs/53/1/1/x", Some(KEY), b"1").header("allow"), Some("GET, POST, DELETE"));
}

#[test]
fn query_parameters() {
    let dir = tempdir();
    let s = Server::start(dir.path(), ARGS);
    for (q, needle) in [
        ("state=done", "unknown state"),
        ("startts=yesterday", "startts"),
        ("endts=-1", "endts"),
        ("count=1.5", "count"),
        ("start=x", "start"),
        ("stop=53/1", "stop"),
        ("key=53/a/1", "key"),
        ("key=54/1/1", "project"),
        ("has_tag=%zz", "query parameter"),
    ] {
        s.get(&format!("/jobq/53/list?{q}"), KEY).assert_error(400, needle);
    }
    s.get("/jobq/53/count?state=bogus", KEY).assert_error(400, "unknown state");
    s.get("/jobq/53/jobsummary?key=54/1/1", KEY).assert_error(400, "project");
}

#[test]
fn bad_push_bodies_store_nothing() {
    let dir = tempdir();
    let s = Server::start(dir.path(), ARGS);
    let good = "{\"spider\":\"s\"}";
    for (second, needle) in [
        ("{\"spider\":\"s\"", "line 2"),
        ("{\"foo\":1}", "spider"),
        ("{\"spider\":\"s\",\"state\":\"bogus\"}", "unknown state"),
        ("{\"spider\":\"s\",\"priority\":1.5}", "priority"),
        ("{\"spider\":\"s\",\"priority\":\"2\"}", "integer"),
        ("[1,2]", "line 2"),
        ("{\"spider\":\"s\",\"tags\":[1]}", "tags"),
    ] {
        let r = s.post("/jobq/53/push", KEY, &format!("{good}\n{second}\n{good}"));
        r.assert_error(400, needle);
        assert!(r.json()["error"].as_str().unwrap().contains("line 2"), "{}", r.text());
    }
    let mut bad_utf8 = format!("{good}\n{good}\n").into_bytes();
    bad_utf8.extend_from_slice(b"{\"spider\":\"\xff\"}");
    s.req("POST", "/jobq/53/push", Some(KEY), &bad_utf8).assert_error(400, "line 3");
    s.post("/jobq/53/push", KEY, "\n \n").assert_error(400, "no job");
    assert_eq!(count_all(&s, 53), "0\n");
    assert_eq!(s.get("/ids/53/spider/s", KEY).text(), "null\n", "not even the spider was allocated");
}

#[test]
fn bad_update_and_cancel_bodies_change_nothing() {
    let dir = tempdir();
    let s = Server::start(dir.path(), ARGS);
    push(&s, 53, &[json!({"spider": "s"})]);
    let first = "{\"key\":\"53/1/1\",\"state\":\"finished\"}";
    for (second, needle) in [
        ("{\"key\":\"54/1/1\",\"state\":\"finished\"}", "project"),
        ("{\"key\":\"53/x/1\"}", "invalid job key"),
        ("{\"key\":\"53/1/1/1\"}", "invalid job key"),
        ("{\"state\":\"finished\"}", "key"),
        ("{\"key\":\"53/1/1\",\"state\":\"later\"}", "unknown state"),
        ("{\"key\":\"53/1/1\",\"priority\":\"high\"}", "priority"),
        ("not json", "line 2"),
    ] {
        s.post("/jobq/53/update", KEY, &format!("{first}\n{second}")).assert_error(400, needle);
    }
    assert_eq!(s.get("/jobs/53/1/1/state", KEY).json(), "pending");
    s.post("/jobq/53/cancel", KEY, "[{\"key\":\"53/1/1\"},{\"nokey\":1}]").assert_error(400, "key");
    s.post("/jobq/53/cancel", KEY, "{bad").assert_error(400, "JSON");
    s.post("/jobq/53/startjob", KEY, "{\"priority\":\"x\"}").assert_error(400, "priority");
    assert_eq!(s.get("/jobs/53/1/1/state", KEY).json(), "pending");
}

#[test]
fn body_limit_gives_413() {
    let dir = tempdir();
    let s = Server::start(dir.path(), &["--api-key", "KEY1", "--max-body", "1KiB"]);
    let line = json!({"spider": "s", "pad": "x".repeat(600)}).to_string();
    let r = s.post("/jobq/53/push", KEY, &format!("{line}\n{line}"));
    r.assert_error(413, "1024-byte limit");
    // Announced too large: refused before the body is read.
    let head = format!(
        "POST /jobq/53/push HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Length: 100000000\r\n\r\n",
        crate::harness::basic(KEY)
    );
    raw(&s.addr, head.as_bytes()).assert_error(413, "limit");
    // Chunked, no length: refused once it passes the limit.
    let chunk = "x".repeat(700);
    let chunked = format!(
        "POST /jobq/53/push HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{chunk}\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        crate::harness::basic(KEY),
        chunk.len(),
        chunk.len()
    );
    raw(&s.addr, chunked.as_bytes()).assert_error(413, "limit");
    assert_eq!(s.post("/jobq/53/push", KEY, &line).status, 200, "under the limit is fine");
    assert_eq!(count_all(&s, 53), "1\n");
}
