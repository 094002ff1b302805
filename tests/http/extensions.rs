//! Beyond JobQ (issue 13) over plain HTTP: `close_reason` and `has_tag_all` on
//! count, list and summary; `startafter` paging on list, its errors, and what the
//! other endpoints make of it; the same through `jobq query`.

use serde_json::{json, Value};

use crate::endpoints::{push, ARGS, KEY};
use crate::harness::{tempdir, Server};

/// Eight jobs of 53 in one push (one `ts`, so the listing is the reverse push
/// order). Alpha: 53/1/1.. , beta: 53/2/1.. . 53/2/3 runs, the rest are finished.
fn seed(s: &Server) {
    let jobs = [
        ("alpha", json!(["a", "c"]), "finished", json!("finished")),
        ("alpha", json!(["b", "c"]), "finished", json!("failed")),
        ("beta", json!(["a", "c", "d"]), "finished", json!("failed")),
        ("beta", json!(["c"]), "finished", json!(404)),
        ("alpha", json!(["a"]), "finished", json!("404")),
        ("beta", json!(["b", "c"]), "running", json!("failed")),
        ("alpha", json!([]), "finished", Value::Null),
        ("beta", json!(["a", "b", "c"]), "finished", json!("cancelled")),
    ];
    let lines: Vec<Value> = jobs
        .iter()
        .map(|(spider, tags, state, reason)| {
            let mut j = json!({"spider": spider, "tags": tags, "state": state});
            if !reason.is_null() {
                j["close_reason"] = reason.clone();
            }
            j
        })
        .collect();
    push(s, 53, &lines);
}

fn keys(r: &crate::harness::Resp) -> Vec<String> {
    assert_eq!(r.status, 200, "{}", r.text());
    r.lines().iter().map(|l| l["key"].as_str().unwrap().to_string()).collect()
}

#[test]
fn close_reason_on_count_list_and_summary() {
    let dir = tempdir();
    let s = Server::start(dir.path(), ARGS);
    seed(&s);
    let list = |q: &str| keys(&s.get(&format!("/jobq/53/list?{q}"), KEY));
    let count = |q: &str| s.get(&format!("/jobq/53/count?{q}"), KEY).text().trim().parse::<u64>().unwrap();
    assert_eq!(list("close_reason=failed"), ["53/2/1", "53/1/2"]);
    assert_eq!(count("close_reason=failed"), 2);
    assert_eq!(count("close_reason=failed&state=running&state=finished"), 3, "every state is indexed");
    assert_eq!(list("close_reason=failed&close_reason=cancelled"), ["53/2/4", "53/2/1", "53/1/2"], "OR");
    assert_eq!(list("close_reason=404"), ["53/1/3", "53/2/2"], "the string \"404\" and the number 404");
    assert_eq!(list("close_reason=nope"), Vec::<String>::new());
    assert_eq!(count("close_reason=nope"), 0);
    assert_eq!(count("close_reason="), 0, "an empty value is a value");
    assert_eq!(list("close_reason=failed&spider=beta"), ["53/2/1"]);
    assert_eq!(list("close_reason=failed&lacks_tag=d"), ["53/1/2"]);
    assert_eq!(list("close_reason=failed&has_tag_all=b&has_tag_all=c&state=running"), ["53/2/3"]);
    assert_eq!(list("close_reason=f%61iled"), ["53/2/1", "53/1/2"], "percent-decoded");
    let summary = s.get("/jobq/53/summary?close_reason=failed", KEY).lines();
    let lines: Vec<(&str, i64, usize)> = summary
        .iter()
        .map(|l| (l["name"].as_str().unwrap(), l["count"].as_i64().unwrap(), l["summary"].as_array().unwrap().len()))
        .collect();
    assert_eq!(lines, [("pending", 0, 0), ("running", 1, 1), ("finished", 2, 2)]);
    let one = s.get("/jobq/53/2/summary/finished?close_reason=cancelled&close_reason=404", KEY).json();
    assert_eq!(one["count"], 2);
    s.get(&format!("/jobq/53/count?close_reason={}", "x".repeat(1025)), KEY).assert_error(400, "close_reason");
    let many: String = (0..101).map(|i| format!("close_reason=r{i}&")).collect();
    s.get(&format!("/jobq/53/list?{many}"), KEY).assert_error(400, "close_reason");
}

#[test]
fn has_tag_all_with_has_tag_and_lacks_tag() {
    let dir = tempdir();
    let s = Server::start(dir.path(), ARGS);
    seed(&s);
    let list = |q: &str| keys(&s.get(&format!("/jobq/53/list?{q}"), KEY));
    assert_eq!(list("has_tag_all=c"), ["53/2/4", "53/2/2", "53/2/1", "53/1/2", "53/1/1"]);
    assert_eq!(list("has_tag_all=a&has_tag_all=c"), ["53/2/4", "53/2/1", "53/1/1"]);
    // (a or b) and c and not d
    let mixed = "has_tag=a&has_tag=b&has_tag_all=c&lacks_tag=d";
    assert_eq!(list(mixed), ["53/2/4", "53/1/2", "53/1/1"]);
    assert_eq!(s.get(&format!("/jobq/53/count?{mixed}"), KEY).text(), "3\n");
    assert_eq!(list("has_tag_all=c&has_tag_all=zz"), Vec::<String>::new());
    let sum = s.get("/jobq/53/summary/running?has_tag_all=b&has_tag_all=c", KEY).json();
    assert_eq!((sum["count"].as_i64(), sum["summary"][0]["key"].as_str()), (Some(1), Some("53/2/3")));
    s.get("/jobq/53/count?has_tag_all=", KEY).assert_error(400, "has_tag_all");
}

#[test]
fn startafter_pages_and_its_errors() {
    let dir = tempdir();
    let s = Server::start(dir.path(), ARGS);
    seed(&s);
    let list = |q: &str| keys(&s.get(&format!("/jobq/53/list?{q}"), KEY));
    let all = list("");
    assert_eq!(all.len(), 7);
    // Two at a time, each page after the last key of the one before: all, once.
    let (mut seen, mut after) = (Vec::new(), String::new());
    loop {
        let page = list(&format!("count=2{after}"));
        let Some(last) = page.last() else { break };
        after = format!("&startafter={last}");
        seen.extend(page);
    }
    assert_eq!(seen, all);
    // The running 53/2/3 stands between 53/1/4 and 53/1/3: a job that does not match still places.
    assert_eq!(list("startafter=53/2/3"), all[2..]);
    assert_eq!(list("startafter=53/1/4&start=1&count=2"), ["53/2/2", "53/2/1"], "start applies after it");
    assert_eq!(list("startafter=53/1/4&stop=53/1/2"), ["53/1/3", "53/2/2", "53/2/1"]);
    assert_eq!(list("startafter=53/2/4&close_reason=failed"), ["53/2/1", "53/1/2"]);
    assert_eq!(list("startafter=53/1/1"), Vec::<String>::new(), "after the oldest: an empty page, not an error");
    // A job that moved since the page that ended with it: the next page continues
    // below where it stood.
    let page = list("count=3");
    assert_eq!(page, all[..3]);
    for state in ["deleted", "finished"] {
        let r = s.post("/jobq/53/update", KEY, &json!({"key": "53/1/3", "state": state}).to_string());
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(list("startafter=53/1/3"), all[3..]);
    assert_eq!(list("")[0], "53/1/3", "it moved to the top");
    s.get("/jobq/53/list?startafter=53/9/9", KEY).assert_error(400, "53/9/9");
    s.get("/jobq/53/list?startafter=54/1/1", KEY).assert_error(400, "54/1/1");
    s.get("/jobq/53/list?startafter=nope", KEY).assert_error(400, "startafter");
    s.get("/jobq/53/list?startafter=", KEY).assert_error(400, "startafter");
    // Paging means nothing to a count or a summary: ignored, not checked.
    assert_eq!(s.get("/jobq/53/count?startafter=nope", KEY).text(), "7\n");
    assert_eq!(s.get("/jobq/53/summary/finished?startafter=53/9/9", KEY).json()["count"], 7);
}

#[test]
fn jobq_query_takes_the_same_parameters() {
    let dir = tempdir();
    let s = Server::start(dir.path(), ARGS);
    seed(&s);
    drop(s);
    let queries = "jobq/53/count?close_reason=failed&close_reason=cancelled\n\
                   jobq/53/list?has_tag=a&has_tag=b&has_tag_all=c&lacks_tag=d&jobmeta=close_reason\n\
                   jobq/53/list?count=2\n\
                   jobq/53/list?count=2&startafter=53/1/4\n\
                   jobq/53/summary/finished?close_reason=404&count=1\n\
                   jobq/53/list?startafter=53/9/9\n";
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jobq"))
        .args(["query", "--data"])
        .arg(dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(queries.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(!out.status.success(), "the unknown startafter key fails the run");
    let answers: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let keys = |v: &Value| v.as_array().unwrap().iter().map(|r| r["key"].clone()).collect::<Vec<_>>();
    assert_eq!(answers[0], json!(3));
    assert_eq!(keys(&answers[1]), ["53/2/4", "53/1/2", "53/1/1"]);
    assert_eq!(answers[1][1]["close_reason"], "failed");
    assert_eq!(keys(&answers[2]), ["53/2/4", "53/1/4"]);
    assert_eq!(keys(&answers[3]), ["53/1/3", "53/2/2"]);
    assert_eq!((answers[4][0]["count"].clone(), keys(&answers[4][0]["summary"])), (json!(2), vec![json!("53/1/3")]));
    assert!(answers[5]["error"].as_str().unwrap().contains("53/9/9"), "{}", answers[5]);
}
