//! A writer of the cpio "newc" format that the kernel unpacks as an initramfs
//! (Documentation/driver-api/early-userspace/buffer-format.rst). Uncompressed: the kernel
//! takes it as is, and compressing ~100 MB of test binaries would cost more time than
//! the unpacking saves.

use anyhow::{Context, Result, bail};
use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// Streams entries into a newc archive; parent directories are added as needed.
#[derive(Debug)]
pub struct Writer<W: Write> {
    out: W,
    ino: u32,
    written: u64,
    dirs: BTreeSet<String>,
}

impl Writer<BufWriter<File>> {
    /// Create the archive file at `path`.
    pub fn create(path: &Path) -> Result<Self> {
        let file = File::create(path).with_context(|| format!("create {}", path.display()))?;
        Ok(Self::new(BufWriter::new(file)))
    }
}

impl<W: Write> Writer<W> {
    /// A writer over `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            ino: 0,
            written: 0,
            dirs: BTreeSet::new(),
        }
    }

    /// A directory (and its parents), mode 0755.
    pub fn dir(&mut self, path: &str) -> io::Result<()> {
        let path = path.trim_matches('/');
        if path.is_empty() || self.dirs.contains(path) {
            return Ok(());
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent)?;
        }
        self.dirs.insert(path.to_owned());
        self.header(path, S_IFDIR | 0o755, 0, 0)?;
        self.pad()
    }

    /// A regular file with `data`.
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        self.parent(path)?;
        self.header(path, S_IFREG | mode, data.len() as u64, 0)?;
        self.data(data)
    }

    /// A regular file copied from the host file `from`, keeping its permission bits.
    pub fn copy(&mut self, path: &str, from: &Path) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let mut src = File::open(from).with_context(|| format!("open {}", from.display()))?;
        let meta = src
            .metadata()
            .with_context(|| format!("stat {}", from.display()))?;
        if !meta.is_file() {
            bail!("{} is not a regular file", from.display());
        }
        self.parent(path)?;
        self.header(
            path,
            S_IFREG | (meta.permissions().mode() & 0o7777),
            meta.len(),
            0,
        )?;
        let n = io::copy(&mut src, &mut self.out)
            .with_context(|| format!("copy {}", from.display()))?;
        if n != meta.len() {
            bail!("{} changed size while being copied", from.display());
        }
        self.written += n;
        self.pad().context("write archive")
    }

    /// A symbolic link at `path` pointing to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        self.parent(path)?;
        self.header(path, S_IFLNK | 0o777, target.len() as u64, 0)?;
        self.data(target.as_bytes())
    }

    /// A character device node.
    pub fn char_dev(&mut self, path: &str, mode: u32, major: u32, minor: u32) -> io::Result<()> {
        self.parent(path)?;
        self.header(
            path,
            S_IFCHR | mode,
            0,
            (u64::from(major) << 32) | u64::from(minor),
        )?;
        self.pad()
    }

    /// Write the trailer and flush; returns the archive's size in bytes.
    pub fn finish(mut self) -> io::Result<u64> {
        self.header("TRAILER!!!", 0, 0, 0)?;
        self.pad()?;
        self.out.flush()?;
        Ok(self.written)
    }

    fn parent(&mut self, path: &str) -> io::Result<()> {
        match path.trim_matches('/').rsplit_once('/') {
            Some((parent, _)) => self.dir(parent),
            None => Ok(()),
        }
    }

    /// `rdev` packs major in the high 32 bits and minor in the low ones.
    fn header(&mut self, path: &str, mode: u32, size: u64, rdev: u64) -> io::Result<()> {
        let name = path.trim_start_matches('/');
        let size = u32::try_from(size)
            .map_err(|_| io::Error::other(format!("{name}: newc cannot hold files of 4 GiB")))?;
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            if mode & S_IFDIR == S_IFDIR { 2 } else { 1 },
            0, // mtime
            size,
            0, // dev major
            0, // dev minor
            (rdev >> 32) as u32,
            rdev as u32,
            u32::try_from(name.len() + 1).map_err(|_| io::Error::other("name too long"))?,
            0, // check
        ];
        let mut header = String::with_capacity(110);
        header.push_str("070701");
        for f in fields {
            header.push_str(&format!("{f:08X}"));
        }
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.written += (header.len() + name.len() + 1) as u64;
        self.pad()
    }

    fn data(&mut self, data: &[u8]) -> io::Result<()> {
        self.out.write_all(data)?;
        self.written += data.len() as u64;
        self.pad()
    }

    /// Pad to the next multiple of 4 bytes, as newc wants after headers and data.
    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - self.written % 4) % 4;
        self.out.write_all(&[0u8; 3][..n as usize])?;
        self.written += n;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)] // a failed expectation is the test failing
mod tests {
    use super::*;

    #[test]
    fn newc_layout() {
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf);
        w.file("a/b", 0o644, b"hello").expect("write");
        let len = w.finish().expect("finish");
        assert_eq!(len as usize, buf.len());
        assert_eq!(buf.len() % 4, 0);
        // Directory "a" first, then "a/b" with its data.
        assert!(buf.starts_with(b"070701"));
        let text = String::from_utf8_lossy(&buf);
        let a = text.find("a\0").expect("dir entry");
        let b = text.find("a/b\0").expect("file entry");
        assert!(a < b);
        assert!(text.contains("hello"));
        assert!(text.contains("TRAILER!!!\0"));
    }
}
