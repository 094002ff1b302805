//! Authentication: API keys (all projects or some), names in `*_by`, job tokens,
//! and the refusal to run open unless told to.

use std::process::Command;

use serde_json::json;

use crate::endpoints::push;
use crate::harness::{raw, tempdir, Server, BIN};

const ARGS: &[&str] = &["--api-key", "alice=KEY1", "--api-key", "SCOPED:53,54"];

#[test]
fn keys_and_scopes() {
    let dir = tempdir();
    let s = Server::start(dir.path(), ARGS);
    let r = s.req("GET", "/jobq/53/count", None, b"");
    r.assert_error(401, "authentication required");
    assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"jobq\""));
    s.get("/jobq/53/count", "WRONG:").assert_error(401, "unknown API key");
    s.get("/jobq/53/count", "KEY1x:").assert_error(401, "unknown API key");
    s.get("/jobq/53/count", "KEY:").assert_error(401, "unknown API key");
    let malformed = "GET /jobq/53/count HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer abc\r\nConnection: close\r\n\r\n";
    raw(&s.addr, malformed.as_bytes()).assert_error(401, "Basic");
    assert_eq!(s.get("/jobq/53/count", "SCOPED:").text(), "0\n");
    assert_eq!(s.get("/jobq/54/count", "SCOPED:").text(), "0\n");
    s.get("/jobq/55/count", "SCOPED:").assert_error(403, "project 55");
    s.post("/jobq/55/push", "SCOPED:", "{\"spider\":\"s\"}").assert_error(403, "project 55");
    s.get("/jobs/55/1/1", "SCOPED:").assert_error(403, "project 55");
    s.get("/ids/55/spider/s", "SCOPED:").assert_error(403, "project 55");
    assert_eq!(s.get("/jobq/55/count?state=pending", "KEY1:").text(), "0\n", "nothing was stored by the refusals");
    assert_eq!(s.get("/jobq/55/count", "KEY1:").status, 200);
    // `*_by` holds the key's name, or a fingerprint; never the key.
    let r = s.post("/jobq/53/push", "SCOPED:", "{\"spider\":\"s\"}");
    assert_eq!(r.json()["key"], "53/1/1");
    let by = s.get("/jobs/53/1/1/scheduled_by", "KEY1:").json();
    let by = by.as_str().unwrap();
    assert!(by.starts_with("key-") && by.len() == 12 && !by.contains("SCOPED"), "{by}");
    assert!(s.log().contains(by), "the start log names the keys by their fingerprints");
    assert!(!s.log().contains("SCOPED") && !s.log().contains("KEY1"), "keys never reach the log");
    s.post("/jobq/53/update", "KEY1:", "{\"key\":\"53/1/1\",\"state\":\"finished\"}");
    assert_eq!(s.get("/jobs/53/1/1/completed_by", "KEY1:").json(), "alice");
}

#[test]
fn job_tokens_reach_their_own_job_while_it_runs() {
    let dir = tempdir();
    let s = Server::start(dir.path(), ARGS);
    push(&s, 53, &[json!({"spider": "s"}), json!({"spider": "s"})]);
    let started = s.post("/jobq/53/startjob", "KEY1:", "{}").json();
    let (key, token) = (started["key"].as_str().unwrap(), started["auth"].as_str().unwrap());
    let cred = format!("{key}:{token}");
    assert_eq!(s.get(&format!("/jobs/{key}/state"), &cred).json(), "running");
    assert_eq!(s.post(&format!("/jobs/{key}/progress"), &cred, "50").status, 200);
    assert_eq!(s.get(&format!("/jobs/{key}"), &cred).json()["progress"], 50);
    let other = if key == "53/1/1" { "53/1/2" } else { "53/1/1" };
    s.get(&format!("/jobs/{other}"), &cred).assert_error(403, &format!("only its own job's endpoints (jobs/{key})"));
    s.get("/jobq/53/list", &cred).assert_error(403, "only its own job");
    s.get(&format!("/jobs/{key}"), &format!("{key}:wrong")).assert_error(401, "job token");
    s.get(&format!("/jobs/{other}"), &format!("{other}:{token}")).assert_error(401, "job token");
    s.post("/jobq/53/update", "KEY1:", &format!("{{\"key\":\"{key}\",\"state\":\"finished\"}}"));
    s.get(&format!("/jobs/{key}"), &cred).assert_error(401, "job token");
    // Running again: a new token; the first run's stays dead.
    s.post("/jobq/53/update", "KEY1:", &format!("{{\"key\":\"{key}\",\"state\":\"running\"}}"));
    s.get(&format!("/jobs/{key}"), &cred).assert_error(401, "job token");
    let second = s.get(&format!("/jobs/{key}/auth"), "KEY1:").json();
    let second = second.as_str().expect("a token");
    assert_ne!(second, token);
    assert_eq!(s.get(&format!("/jobs/{key}/state"), &format!("{key}:{second}")).json(), "running");
}

#[test]
fn refuses_to_run_open_unless_told() {
    let dir = tempdir();
    let out = Command::new(BIN).arg("serve").arg("--data").arg(dir.path()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to serve without authentication") && err.contains("--insecure-no-auth"), "{err}");
    let out = Command::new(BIN)
        .args(["serve", "--insecure-no-auth", "--api-key", "K", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("cannot be combined"));
    let out = Command::new(BIN).args(["serve", "--api-key", "a=b=c", "--data"]).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "a bad key spec is a usage error");
    let open = Server::start(dir.path(), &["--insecure-no-auth"]);
    assert!(open.log().contains("WITHOUT authentication"));
    let r = open.req("POST", "/jobq/1/push", None, b"{\"spider\":\"s\"}");
    assert_eq!(r.status, 200);
    let m = open.req("GET", "/jobs/1/1/1", None, b"").json();
    assert!(m.get("scheduled_by").is_none(), "no key, no name: {m}");
}

#[test]
fn key_file() {
    let dir = tempdir();
    let file = dir.path().join("keys");
    std::fs::write(&file, "# team keys\nbob=FILEKEY:7\n\n").unwrap();
    let data = dir.path().join("data");
    let s = Server::start(&data, &["--api-key-file", file.to_str().unwrap()]);
    assert_eq!(s.get("/jobq/7/count", "FILEKEY:").text(), "0\n");
    s.get("/jobq/8/count", "FILEKEY:").assert_error(403, "project 8");
    std::fs::write(&file, "bob=FILE KEY\n").unwrap();
    let out =
        Command::new(BIN).arg("serve").arg("--data").arg(&data).arg("--api-key-file").arg(&file).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1"), "{}", String::from_utf8_lossy(&out.stderr));
}
