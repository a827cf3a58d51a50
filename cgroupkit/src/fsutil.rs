//! File access with the error context this crate promises (operation + path).
//!
//! Writes never create files (`create(false)`): a cgroup file that does not exist
//! fails as it would on the real cgroupfs, instead of leaving a stray regular file.
//! Opens refuse symlinks (`O_NOFOLLOW`): cgroupfs has none, so one is an attack.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{Error, Result};

/// Reads a whole (small) file: open, read(2) until a read returns 0, close (the one
/// loop, [`crate::reader::read_to_end`]: a short read of a seq_file is not its end).
///
/// Not `std::fs::read_to_string`: on cgroupfs and procfs (files of size 0) std adds
/// an fstat and an lseek per file for a size hint that is always 0, and then reads
/// in growing steps from 32 bytes (v1 memory.stat took 7 read calls). Here a typical
/// file costs four syscalls: openat, read, read (EOF), close.
pub(crate) fn read_to_string(path: &Path) -> Result<String> {
    crate::reader::read_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `value` to an existing file in a single write(2), as cgroupfs expects.
pub(crate) fn write(path: &Path, value: &str) -> Result<()> {
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(false)
            .truncate(false)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)?;
        // One write call: cgroupfs parses each write(2) as a whole value.
        let n = f.write(value.as_bytes())?;
        if n != value.len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!("short write: {n} of {} bytes", value.len()),
            ));
        }
        Ok(())
    };
    write().map_err(|source| Error::Write {
        path: path.to_path_buf(),
        value: value.to_owned(),
        source,
    })
}

/// Makes a parse error for line `line` (1-based) of `path`.
pub(crate) fn parse_error(path: &Path, line: usize, text: &str) -> Error {
    let mut t = text.to_owned();
    if t.len() > 200 {
        let mut cut = 200;
        while !t.is_char_boundary(cut) {
            cut -= 1;
        }
        t.truncate(cut);
    }
    Error::Parse {
        path: path.to_path_buf(),
        line,
        text: t,
    }
}

/// Parses flat-keyed files such as cpu.stat: one `key value` pair a line.
///
/// Returns `(key, value)` pairs borrowing the keys from `text` (no allocation per
/// line); a line that is not `key <u64>` is an error.
pub(crate) fn parse_flat_keyed<'t>(path: &Path, text: &'t str) -> Result<Vec<(&'t str, u64)>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut it = line.split_whitespace();
        let (Some(k), Some(v), None) = (it.next(), it.next(), it.next()) else {
            return Err(parse_error(path, i + 1, line));
        };
        let v: u64 = v.parse().map_err(|_| parse_error(path, i + 1, line))?;
        out.push((k, v));
    }
    Ok(out)
}

/// Reads a file holding one unsigned number.
pub(crate) fn read_u64(path: &Path) -> Result<u64> {
    let t = read_to_string(path)?;
    t.trim()
        .parse()
        .map_err(|_| parse_error(path, 1, t.trim_end()))
}

/// Like [`read_u64`], for a file that older kernels lack (memory.peak, pids.peak):
/// `None` when it does not exist. One open instead of a stat and an open.
pub(crate) fn read_u64_if_exists(path: &Path) -> Result<Option<u64>> {
    match read_u64(path) {
        Err(e) if e.io_kind() == Some(std::io::ErrorKind::NotFound) => Ok(None),
        r => r.map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_files_and_missing_optional_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("pids.peak");
        std::fs::write(&f, "42\n").unwrap();
        assert_eq!(read_u64_if_exists(&f).unwrap(), Some(42));
        assert_eq!(read_u64_if_exists(&tmp.path().join("no")).unwrap(), None);
        std::fs::write(&f, "x\n").unwrap();
        assert!(matches!(read_u64_if_exists(&f), Err(Error::Parse { .. })));
        // Symlinks are refused (O_NOFOLLOW), not followed.
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        assert!(read_to_string(&link).is_err());
    }
}
