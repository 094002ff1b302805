//! `jobq query`: request paths on stdin, one JSON line each on stdout, answered by
//! the same `jobq::api` code as the server (as an unrestricted caller, GET only).

use std::io::{self, BufRead, Write};

use super::data::open_read_only;
use super::QueryArgs;
use jobq::api::{self, Body, Caller, Request, Shape};

pub fn run(a: QueryArgs) -> Result<(), String> {
    let store = open_read_only(&a.data)?;
    let config = api::Config { max_count: a.max_count };
    let caller = Caller::unrestricted();
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut failed = 0u64;
    // Lines as bytes: a line that is not UTF-8 gets its error answer, and the
    // lines after it are answered as usual.
    for (i, line) in io::stdin().lock().split(b'\n').enumerate() {
        let line = line.map_err(|e| format!("reading stdin: {e}"))?;
        let answer = match std::str::from_utf8(&line).map(str::trim) {
            Ok("") => continue,
            Ok(target) => answer(&store, &caller, &config, target),
            Err(e) => {
                let e = api::error_line(&format!("the line is not UTF-8: {e}"));
                Err(String::from_utf8_lossy(&e).trim_end().to_string())
            }
        };
        let answer = match answer {
            Ok(text) => text,
            Err(text) => {
                failed += 1;
                let target = String::from_utf8_lossy(&line);
                note!("jobq query: line {}: {}: {}", i + 1, target.trim(), text.trim_end());
                text
            }
        };
        let written = out.write_all(answer.as_bytes()).and_then(|_| out.write_all(b"\n")).and_then(|_| out.flush());
        match written {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(format!("writing stdout: {e}")),
        }
    }
    if failed > 0 {
        return Err(format!("{failed} request(s) failed"));
    }
    Ok(())
}

fn answer(store: &jobq::Store, caller: &Caller, config: &api::Config, target: &str) -> Result<String, String> {
    one_line(api::handle(store, caller, config, &Request::get(target)))
}

/// One answer as one JSON line: a value (or `null`) or an array of the lines;
/// `Err` with the error object for a refused request.
fn one_line(resp: api::Response) -> Result<String, String> {
    let body = match resp.body {
        Body::Full(b) => b,
        Body::Stream(rows) => {
            rows.collect_bytes().map_err(|e| String::from_utf8_lossy(&api::error_line(&e.to_string())).into_owned())?
        }
    };
    let text = String::from_utf8_lossy(&body).into_owned();
    if resp.status != 200 {
        return Err(text.trim_end().to_string());
    }
    Ok(match resp.shape {
        Shape::Value if text.trim().is_empty() => "null".to_string(),
        Shape::Value => text.trim_end().to_string(),
        Shape::Lines => format!("[{}]", text.lines().collect::<Vec<_>>().join(",")),
    })
}
