//! `jobq import` and `jobq export`: bulk JSON lines in and out.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, IsTerminal, Write};

use indicatif::{ProgressBar, ProgressStyle};

use super::{ExportArgs, ImportArgs};
use jobq::{Error, Options, Store};

/// Open a store read-only (beside a server, maybe).
pub fn open_read_only(dir: &std::path::Path) -> Result<Store, String> {
    if !dir.is_dir() {
        return Err(format!("no store at {}: not a directory", dir.display()));
    }
    let opts = Options { read_only: true, create: false, ..Options::default() };
    Store::open(dir, opts).map_err(|e| format!("cannot open the store in {}: {e}", dir.display()))
}

fn progress_bar(total: Option<u64>) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    match total {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {bytes} read, {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    }
}

pub fn import(a: ImportArgs) -> Result<(), String> {
    let (mut input, total, source): (Box<dyn BufRead>, Option<u64>, String) = match &a.file {
        Some(path) => {
            let f = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            let len = f.metadata().ok().map(|m| m.len());
            (Box::new(BufReader::with_capacity(1 << 20, f)), len, path.display().to_string())
        }
        None => (Box::new(BufReader::with_capacity(1 << 20, io::stdin())), None, "stdin".to_string()),
    };
    let opts = Options { keep_free: a.keep_free.0, ..Options::default() };
    let store = Store::open(&a.data, opts).map_err(|e| match e {
        Error::Locked { .. } => format!("{e}; stop the server to import"),
        e => format!("cannot open the store in {}: {e}", a.data.display()),
    })?;
    let bar = progress_bar(total);
    let result = store.import(&mut input, &mut |bytes| bar.set_position(bytes));
    bar.finish_and_clear();
    let report = result.map_err(|e| match e.is_low_space() {
        // Its message says so already.
        true => format!("{source}: {e}"),
        false => format!("{source}: {e} (nothing of it was stored)"),
    })?;
    store.close().map_err(|e| format!("closing the store failed: {e}"))?;
    let versions = match report.versions == report.jobs {
        true => String::new(),
        false => format!(" ({} job lines: a key on several lines counts once)", report.versions),
    };
    note!(
        "imported {} jobs{versions} from {} lines ({} bytes) of {source} in {} ms",
        report.jobs,
        report.lines,
        report.bytes,
        report.millis
    );
    Ok(())
}

pub fn export(a: ExportArgs) -> Result<(), String> {
    let store = open_read_only(&a.data)?;
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 20, stdout.lock());
    let result = store.export(a.project, &mut out).and_then(|n| {
        out.flush().map_err(|e| Error::Io { op: "write", path: "export output".into(), source: e })?;
        Ok(n)
    });
    match result {
        Ok(n) => {
            if io::stderr().is_terminal() {
                note!("exported {n} jobs");
            }
            Ok(())
        }
        // A closed pipe (`jobq export | head`) is the reader's choice, not a failure.
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}
