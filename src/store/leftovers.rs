//! What a writable open clears away once it succeeded (a refused open changes
//! nothing): other generations, temp files, index files it set aside. A directory
//! in the place of one of those files (an operator's `mkdir`) is renamed aside
//! to `<name>.set-aside-<ms>`, a name nothing reads (format-spec/layout.md), so
//! that the file's name is free again for the file jobq publishes under it.

use std::io::ErrorKind;
use std::path::Path;

use super::layout;
use crate::error::{Error, Result};
use crate::fs::FileSystem;

fn io<'a>(op: &'static str, p: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |e| Error::io(op, p, e)
}

/// Remove the generations an interrupted compaction left beside the live one.
pub(crate) fn remove_other_generations(fs: &dyn FileSystem, dir: &Path, generation: u64) -> Result<()> {
    let mut removed = false;
    for name in fs.read_dir(dir).map_err(io("list", dir))? {
        if layout::parse_gen_name(&name).is_some_and(|g| g != generation) {
            let p = dir.join(&name);
            fs.remove_dir_all(&p).map_err(io("remove", &p))?;
            removed = true;
        }
    }
    if removed {
        fs.sync_dir(dir).map_err(io("fsync dir", dir))?;
    }
    Ok(())
}

/// Remove the temp files interrupted work left in the live generation; the
/// names of directories ending in `.tmp` (not jobq's: set aside once the open
/// succeeded).
pub(crate) fn remove_temp_files(fs: &dyn FileSystem, gen_dir: &Path) -> Result<Vec<String>> {
    let mut dirs = Vec::new();
    for name in fs.read_dir(gen_dir).map_err(io("list", gen_dir))? {
        if name.ends_with(".tmp") {
            let p = gen_dir.join(&name);
            match fs.remove_file(&p) {
                Err(e) if e.kind() == ErrorKind::IsADirectory => dirs.push(name),
                r => r.map_err(io("remove", &p))?,
            }
        }
    }
    Ok(dirs)
}

/// Remove the files `names` of the live generation (index files set aside);
/// rename each directory among them, and each of `dirs`, aside. The
/// generation directory is fsynced after a rename: a file published under
/// the freed name must not meet the directory again after a crash.
pub(crate) fn clear(fs: &dyn FileSystem, gen_dir: &Path, names: &[String], dirs: &[String], now_ms: u64) -> Result<()> {
    let mut aside = dirs.to_vec();
    for name in names {
        let p = gen_dir.join(name);
        match fs.remove_file(&p) {
            Err(e) if e.kind() == ErrorKind::IsADirectory => aside.push(name.clone()),
            r => r.map_err(io("remove", &p))?,
        }
    }
    for name in &aside {
        let from = gen_dir.join(name);
        let mut ms = now_ms;
        // Never onto an earlier one (a rename may replace an empty directory).
        let to = loop {
            let to = gen_dir.join(format!("{name}.set-aside-{ms}"));
            if !fs.exists(&to).map_err(io("stat", &to))? {
                break to;
            }
            ms += 1;
        };
        fs.rename(&from, &to).map_err(io("rename", &from))?;
    }
    if !aside.is_empty() {
        // IMPORTANT: fsync folder, so the freed names stay free.
        fs.sync_dir(gen_dir).map_err(io("fsync dir", gen_dir))?;
    }
    Ok(())
}
