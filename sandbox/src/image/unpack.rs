//! The one path by which tar content reaches the disk: a layer (or an image-layout
//! tar) is read entry by entry and each entry is created by us, relative to the fd
//! of its parent directory, never through a path string and never through a
//! symlink.
//!
//! - Every directory on the way to an entry is opened component by component with
//!   `openat(O_NOFOLLOW | O_DIRECTORY)` from the layer directory's fd: a symlink or
//!   a non-directory there refuses the layer. `..` components refuse it too; a
//!   leading `/` is dropped (tar's own rule), so absolute names stay inside.
//! - Entries are made with mknodat/mkdirat/symlinkat/linkat/openat(`O_EXCL |
//!   O_NOFOLLOW`) in the parent fd; owner, mode and times are set on the entry's
//!   own fd (fchown, fchmod, futimens) or with `AT_SYMLINK_NOFOLLOW`.
//! - Hard links name a target inside the layer, resolved the same way; linkat is
//!   called without `AT_SYMLINK_FOLLOW`, so a link to a symlink is a second symlink.
//! - Whiteouts (`.wh.NAME`) become 0/0 character devices made by mknodat in the
//!   parent fd; `.wh..wh..opq` sets `trusted.overlay.opaque` with fsetxattr on the
//!   directory's fd. Layer xattrs other than `user.*` and `security.capability` are
//!   dropped (a layer may not write `trusted.overlay.*`).
//! - A later entry replaces an earlier one of the same name (tar semantics); a
//!   directory replaced by a non-directory is removed with the same fd-relative
//!   walk.
//! - Bounds: each extension header (PAX, GNU long name) at most 1 MiB, read by us
//!   rather than by the tar crate (which would read any size into memory); GNU
//!   sparse entries and PAX `size` overrides are refused; the decompressed stream,
//!   the entry count and the free space left on the store's filesystem are bounded
//!   by [`Limits`].

use std::cell::RefCell;
use std::ffi::{CString, OsStr, OsString};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, SFlag, UtimensatFlags, fstatat, futimens, mkdirat, mknodat, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fchownat, linkat, symlinkat, unlinkat};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";
/// Names of the aufs era (`.wh..wh.plnk`, ...) that carry no meaning for overlay.
const WHITEOUT_META_PREFIX: &str = ".wh..wh.";
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// The largest PAX or GNU long-name header (Go's archive/tar uses the same bound).
pub const MAX_HEADER_BYTES: u64 = 1 << 20;
/// How often (in bytes written / entries made) free space is checked.
const SPACE_CHECK_BYTES: u64 = 64 << 20;
const SPACE_CHECK_ENTRIES: u64 = 1024;

/// Bounds on what one import may write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes of one decompressed layer tar (default 64 GiB): a gzip bomb stops
    /// here.
    pub max_layer_bytes: u64,
    /// Most entries in one layer (default 2,000,000).
    pub max_entries: u64,
    /// Bytes the store's filesystem keeps free: the import stops before going below
    /// (default 1 GiB).
    pub min_free_bytes: u64,
    /// Inodes the store's filesystem keeps free (default 10,000).
    pub min_free_inodes: u64,
    /// Largest JSON blob (index, manifest, config; default 4 MiB, as containerd).
    pub max_json_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_layer_bytes: 64 << 30,
            max_entries: 2_000_000,
            min_free_bytes: 1 << 30,
            min_free_inodes: 10_000,
            max_json_bytes: 4 << 20,
        }
    }
}

/// A reader that counts and hashes what passes through it, and stops at a limit.
pub(crate) struct Tee<R> {
    pub inner: R,
    pub state: Rc<RefCell<Hashed>>,
}

/// What a [`Tee`] saw.
pub(crate) struct Hashed {
    pub sha: Sha256,
    pub bytes: u64,
    pub limit: u64,
}

impl Hashed {
    pub fn new(limit: u64) -> Rc<RefCell<Hashed>> {
        Rc::new(RefCell::new(Hashed {
            sha: Sha256::new(),
            bytes: 0,
            limit,
        }))
    }

    pub fn hex(&self) -> String {
        super::reference::hex(&self.sha.clone().finalize())
    }
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut s = self.state.borrow_mut();
        s.bytes += n as u64;
        if s.bytes > s.limit {
            return Err(std::io::Error::other(LimitExceeded(s.limit)));
        }
        s.sha.update(&buf[..n]);
        Ok(n)
    }
}

/// The error a [`Tee`] returns past its limit.
#[derive(Debug)]
pub(crate) struct LimitExceeded(pub u64);

impl std::fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "more than {} bytes", self.0)
    }
}

impl std::error::Error for LimitExceeded {}

/// One tar member with its extension headers applied.
pub(crate) struct Member {
    pub path: Vec<u8>,
    pub link: Option<Vec<u8>>,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// Permission bits (with setuid, setgid, sticky).
    pub mode: u32,
    /// Device major and minor numbers (character and block devices).
    pub dev: (u32, u32),
    /// The data size its header gives.
    pub size: u64,
}

/// Iterates a tar's members in raw mode, applying GNU long names and PAX records
/// ourselves so that their size is bounded.
pub(crate) struct Members<'a, R: Read> {
    entries: tar::Entries<'a, R>,
    what: String,
}

fn pax_str(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

impl<'a, R: Read> Members<'a, R> {
    pub fn new(ar: &'a mut tar::Archive<R>, what: &str) -> Result<Members<'a, R>> {
        let entries = ar
            .entries()
            .map_err(|e| Error::Image(format!("{what}: reading the tar: {e}")))?
            .raw(true);
        Ok(Members {
            entries,
            what: what.to_string(),
        })
    }

    fn err(&self, m: impl std::fmt::Display) -> Error {
        Error::Image(format!("{}: {m}", self.what))
    }

    /// The next member, or None at the end of the archive.
    #[allow(clippy::type_complexity)]
    pub fn next_member(&mut self) -> Result<Option<(Member, tar::Entry<'a, R>)>> {
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pax: Option<Vec<u8>> = None;
        loop {
            let Some(e) = self.entries.next() else {
                if long_name.is_some() || long_link.is_some() || pax.is_some() {
                    return Err(self.err("an extension header describes no member (truncated tar)"));
                }
                return Ok(None);
            };
            let mut e = e.map_err(|e| self.err(format_args!("reading the tar: {e}")))?;
            let t = e.header().entry_type();
            let size = e
                .header()
                .entry_size()
                .map_err(|e| self.err(format_args!("entry size: {e}")))?;
            let is_ext = t.is_gnu_longname()
                || t.is_gnu_longlink()
                || t.is_pax_local_extensions()
                || t.is_pax_global_extensions();
            if is_ext {
                if size > MAX_HEADER_BYTES {
                    return Err(self.err(format_args!(
                        "an extension header (type {:?}) of {size} bytes: more than the \
                         {MAX_HEADER_BYTES} allowed",
                        t.as_byte() as char
                    )));
                }
                let mut data = Vec::with_capacity(size as usize);
                e.read_to_end(&mut data)
                    .map_err(|e| self.err(format_args!("reading an extension header: {e}")))?;
                let slot = if t.is_gnu_longname() {
                    &mut long_name
                } else if t.is_gnu_longlink() {
                    &mut long_link
                } else if t.is_pax_local_extensions() {
                    &mut pax
                } else {
                    continue; // PAX global headers carry nothing we use
                };
                if slot.is_some() {
                    return Err(self.err("two extension headers of one kind describe one member"));
                }
                *slot = Some(data);
                continue;
            }
            if t.is_gnu_sparse() {
                return Err(self.err("GNU sparse entries are not supported"));
            }
            let h = e.header();
            let strip_nul = |mut v: Vec<u8>| {
                while v.last() == Some(&0) {
                    v.pop();
                }
                v
            };
            let mut m = Member {
                path: long_name
                    .take()
                    .map(strip_nul)
                    .unwrap_or_else(|| h.path_bytes().into_owned()),
                link: long_link
                    .take()
                    .map(strip_nul)
                    .or_else(|| h.link_name_bytes().map(|c| c.into_owned())),
                uid: h.uid().map_err(|e| self.err(format_args!("uid: {e}")))?,
                gid: h.gid().map_err(|e| self.err(format_args!("gid: {e}")))?,
                mtime: h
                    .mtime()
                    .map(|t| i64::try_from(t).unwrap_or(0))
                    .unwrap_or(0),
                xattrs: Vec::new(),
                mode: h.mode().map_err(|e| self.err(format_args!("mode: {e}")))?,
                size,
                dev: (
                    h.device_major().ok().flatten().unwrap_or(0),
                    h.device_minor().ok().flatten().unwrap_or(0),
                ),
            };
            if let Some(p) = pax.take() {
                for rec in tar::PaxExtensions::new(&p) {
                    let rec = rec.map_err(|e| self.err(format_args!("PAX record: {e}")))?;
                    let (k, v) = (rec.key_bytes(), rec.value_bytes());
                    match k {
                        b"path" => m.path = v.to_vec(),
                        b"linkpath" => m.link = Some(v.to_vec()),
                        b"uid" => m.uid = pax_str(v).ok_or_else(|| self.err("PAX uid"))?,
                        b"gid" => m.gid = pax_str(v).ok_or_else(|| self.err("PAX gid"))?,
                        b"mtime" => {
                            let s = std::str::from_utf8(v).unwrap_or("0");
                            m.mtime = s
                                .split('.')
                                .next()
                                .and_then(|s| s.parse().ok())
                                .unwrap_or(0);
                        }
                        b"size" => {
                            // The tar crate in raw mode positions by the header's size:
                            // a different PAX size would make two readers disagree.
                            if pax_str(v) != Some(size) {
                                return Err(self.err(format_args!(
                                    "a PAX size ({}) that differs from the header's ({size})",
                                    String::from_utf8_lossy(v)
                                )));
                            }
                        }
                        _ => {
                            if let Some(name) = k.strip_prefix(b"SCHILY.xattr.")
                                && let Ok(name) = std::str::from_utf8(name)
                            {
                                m.xattrs.push((name.to_string(), v.to_vec()));
                            }
                        }
                    }
                }
            }
            return Ok(Some((m, e)));
        }
    }
}

/// A layer path split into components: leading `/` and `.` dropped, `..` refused.
pub(crate) fn components(p: &[u8]) -> std::result::Result<Vec<OsString>, String> {
    let mut out = Vec::new();
    for c in p.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("a `..` component (it would leave the layer)".into()),
            c if c.contains(&0) => return Err("a NUL byte".into()),
            c => out.push(OsStr::from_bytes(c).to_owned()),
        }
    }
    Ok(out)
}

fn show(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

fn errno_of(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(0))
}

/// A directory being filled through fds.
pub(crate) struct Writer<'l> {
    root: OwnedFd,
    limits: &'l Limits,
    /// The parent directory of the previous entry (most entries share one).
    cache: Option<(Vec<OsString>, OwnedFd)>,
    /// Directories whose mtime is set at the end (making children changes it).
    dir_times: Vec<(Vec<OsString>, i64)>,
    written: u64,
    entries: u64,
    what: String,
}

impl<'l> Writer<'l> {
    /// Writes into the (new, empty, private) directory `root`.
    pub fn new(root: OwnedFd, limits: &'l Limits, what: &str) -> Writer<'l> {
        Writer {
            root,
            limits,
            cache: None,
            dir_times: Vec::new(),
            written: 0,
            entries: 0,
            what: what.to_string(),
        }
    }

    fn err(&self, path: &[u8], m: impl std::fmt::Display) -> Error {
        Error::Image(format!("{}: entry {:?}: {m}", self.what, show(path)))
    }

    /// Gives the entry `name` of `dir` (not following a symlink) its owner, then its
    /// access and modification times (`mtime`).
    fn own_and_date(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        (uid, gid): (u32, u32),
        mtime: i64,
        path: &[u8],
    ) -> Result<()> {
        let t = TimeSpec::new(mtime, 0);
        fchownat(
            dir,
            name,
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.err(path, format_args!("fchownat: {e}")))?;
        utimensat(dir, name, &t, &t, UtimensatFlags::NoFollowSymlink)
            .map_err(|e| self.err(path, format_args!("utimensat: {e}")))
    }

    /// Opens (creating when `create`) the directory `comps`, one component at a time
    /// with O_NOFOLLOW: a symlink or non-directory on the way is refused.
    fn enter(&mut self, comps: &[OsString], path: &[u8]) -> Result<()> {
        let hit = self
            .cache
            .as_ref()
            .is_some_and(|(c, _)| c.as_slice() == comps);
        if !hit {
            let fd = self.walk(comps, true, path)?;
            self.cache = Some((comps.to_vec(), fd));
        }
        Ok(())
    }

    /// The directory last [`enter`](Self::enter)ed.
    fn cur(&self) -> BorrowedFd<'_> {
        match &self.cache {
            Some((_, fd)) => fd.as_fd(),
            None => self.root.as_fd(),
        }
    }

    fn walk(&self, comps: &[OsString], create: bool, path: &[u8]) -> Result<OwnedFd> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let mut cur =
            nix::unistd::dup(&self.root).map_err(|e| self.err(path, format_args!("dup: {e}")))?;
        for (i, c) in comps.iter().enumerate() {
            let at = || show(comps[..=i].join(OsStr::new("/")).as_bytes());
            let next = match openat(&cur, c.as_os_str(), flags, Mode::empty()) {
                Err(Errno::ENOENT) if create => {
                    match mkdirat(&cur, c.as_os_str(), Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(self.err(path, format_args!("mkdirat {}: {e}", at()))),
                    }
                    openat(&cur, c.as_os_str(), flags, Mode::empty())
                }
                r => r,
            };
            cur = match next {
                Ok(fd) => fd,
                Err(Errno::ELOOP | Errno::ENOTDIR) => {
                    return Err(self.err(
                        path,
                        format_args!(
                            "{} is a symlink or not a directory: a layer entry may not pass \
                             through it",
                            at()
                        ),
                    ));
                }
                Err(Errno::ENOENT) => {
                    return Err(self.err(
                        path,
                        format_args!(
                            "{} does not exist in this layer (a hard link's target must be \
                             an earlier entry of this layer)",
                            at()
                        ),
                    ));
                }
                Err(e) => return Err(self.err(path, format_args!("openat {}: {e}", at()))),
            };
        }
        Ok(cur)
    }

    fn check_space(&self, path: &[u8]) -> Result<()> {
        let st = nix::sys::statvfs::fstatvfs(&self.root)
            .map_err(|e| self.err(path, format_args!("fstatvfs: {e}")))?;
        let free = st.blocks_available() as u64 * st.fragment_size() as u64;
        // Filesystems without a size (ramfs) report 0 blocks in total.
        if st.blocks() > 0 && free < self.limits.min_free_bytes {
            return Err(self.err(
                path,
                format_args!(
                    "the store's filesystem is down to {free} free bytes (the import keeps \
                     {}): free space or import elsewhere (--store)",
                    self.limits.min_free_bytes
                ),
            ));
        }
        let inodes = st.files_available() as u64;
        // Filesystems without an inode count (btrfs) report 0 files in total.
        if st.files() > 0 && inodes < self.limits.min_free_inodes {
            return Err(self.err(
                path,
                format_args!("the store's filesystem is down to {inodes} free inodes"),
            ));
        }
        Ok(())
    }

    /// Makes room for `name` in `dir`: an existing non-directory is unlinked, an
    /// existing directory is removed (fd-relative) unless the new entry is one too.
    /// Returns whether a directory is already there.
    fn make_room(
        &mut self,
        comps: &[OsString],
        name: &OsStr,
        new_is_dir: bool,
        path: &[u8],
    ) -> Result<bool> {
        self.enter(comps, path)?;
        let dir = self.cur();
        let st = match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(false),
            Err(e) => return Err(self.err(path, format_args!("fstatat: {e}"))),
        };
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        if is_dir && new_is_dir {
            return Ok(true);
        }
        let r = if is_dir {
            remove_tree(dir, name)
        } else {
            unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)
        };
        r.map_err(|e| self.err(path, format_args!("removing the earlier entry: {e}")))?;
        // A cached fd may point into what was just removed.
        if is_dir {
            self.cache = None;
        }
        Ok(false)
    }

    /// Writes one member; `data` is its content for regular files. `whiteouts`
    /// turns `.wh.` names into overlay whiteouts (layers) or refuses nothing
    /// special (plain trees).
    pub fn member<R: Read>(
        &mut self,
        m: &Member,
        kind: tar::EntryType,
        data: &mut R,
        whiteouts: bool,
    ) -> Result<()> {
        let path = m.path.as_slice();
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(self.err(
                path,
                format_args!("more than {} entries", self.limits.max_entries),
            ));
        }
        if self.entries.is_multiple_of(SPACE_CHECK_ENTRIES) {
            self.check_space(path)?;
        }
        let mut comps = components(path).map_err(|m| self.err(path, m))?;
        let Some(name) = comps.pop() else {
            // The layer's root itself (`./`): nothing to create.
            return if kind.is_dir() {
                Ok(())
            } else {
                Err(self.err(path, "an entry with no name"))
            };
        };
        let uid = u32::try_from(m.uid).map_err(|_| self.err(path, "uid out of range"))?;
        let gid = u32::try_from(m.gid).map_err(|_| self.err(path, "gid out of range"))?;
        let n = name.as_bytes();
        if whiteouts && n.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            return self.whiteout(&comps, n, path);
        }
        let mode = |h: u32| Mode::from_bits_truncate(h & 0o7777);
        let times = |t: i64| TimeSpec::new(t, 0);
        if kind.is_dir() {
            let exists = self.make_room(&comps, &name, true, path)?;
            self.enter(&comps, path)?;
            let dir = self.cur();
            if !exists {
                mkdirat(dir, name.as_os_str(), Mode::from_bits_truncate(0o700))
                    .map_err(|e| self.err(path, format_args!("mkdirat: {e}")))?;
            }
            let fd = openat(
                dir,
                name.as_os_str(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| self.err(path, format_args!("openat: {e}")))?;
            self.own(&fd, uid, gid, mode(m.mode), path)?;
            self.xattrs(&fd, m, path)?;
            let mut full = comps.clone();
            full.push(name);
            self.dir_times.push((full, m.mtime));
            return Ok(());
        }
        self.make_room(&comps, &name, false, path)?;
        if kind.is_file() || kind == tar::EntryType::Continuous {
            self.enter(&comps, path)?;
            let dir = self.cur();
            let fd = openat(
                dir,
                name.as_os_str(),
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
            .map_err(|e| self.err(path, format_args!("openat (create): {e}")))?;
            let mut f = std::fs::File::from(fd);
            self.copy(data, &mut f, m.size, path)?;
            self.own(f.as_fd(), uid, gid, mode(m.mode), path)?;
            self.xattrs(f.as_fd(), m, path)?;
            futimens(&f, &times(m.mtime), &times(m.mtime))
                .map_err(|e| self.err(path, format_args!("futimens: {e}")))?;
            return Ok(());
        }
        if kind.is_symlink() {
            let target = m.link.as_deref().unwrap_or_default();
            if target.is_empty() || target.contains(&0) {
                return Err(self.err(path, "a symlink with an empty or NUL-holding target"));
            }
            self.enter(&comps, path)?;
            let dir = self.cur();
            symlinkat(OsStr::from_bytes(target), dir, name.as_os_str())
                .map_err(|e| self.err(path, format_args!("symlinkat: {e}")))?;
            return self.own_and_date(dir, name.as_os_str(), (uid, gid), m.mtime, path);
        }
        if kind.is_hard_link() {
            let target = m.link.as_deref().unwrap_or_default();
            let mut tcomps = components(target).map_err(|why| {
                self.err(
                    path,
                    format_args!("hard link target {:?}: {why}", show(target)),
                )
            })?;
            let Some(tname) = tcomps.pop() else {
                return Err(self.err(path, "a hard link with no target"));
            };
            let tdir = self.walk(&tcomps, false, path)?;
            self.enter(&comps, path)?;
            let dir = self.cur();
            return linkat(&tdir, tname.as_os_str(), dir, name.as_os_str(), AtFlags::empty()).map_err(|e| {
                self.err(
                    path,
                    format_args!(
                        "hard link to {:?}: {e} (its target must be an earlier entry of this layer)",
                        show(target)
                    ),
                )
            });
        }
        let (sflag, dev) = match kind {
            tar::EntryType::Char => (SFlag::S_IFCHR, libc::makedev(m.dev.0, m.dev.1)),
            tar::EntryType::Block => (SFlag::S_IFBLK, libc::makedev(m.dev.0, m.dev.1)),
            tar::EntryType::Fifo => (SFlag::S_IFIFO, 0),
            other => {
                return Err(self.err(
                    path,
                    format_args!("entry type {:?} is not supported", other.as_byte() as char),
                ));
            }
        };
        self.enter(&comps, path)?;
        let dir = self.cur();
        mknodat(
            dir,
            name.as_os_str(),
            sflag,
            Mode::from_bits_truncate(0o600),
            dev,
        )
        .map_err(|e| self.err(path, format_args!("mknodat: {e}")))?;
        let fd = openat(
            dir,
            name.as_os_str(),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.err(path, format_args!("openat (O_PATH): {e}")))?;
        // The owner first: chown clears the setuid/setgid bits that chmod then sets
        // (a chmod changes the ctime, not the mtime just set).
        self.own_and_date(dir, name.as_os_str(), (uid, gid), m.mtime, path)?;
        // fchmod refuses O_PATH fds; the fd's /proc link names exactly this inode.
        let proc = format!("/proc/self/fd/{}", fd.as_raw_fd());
        nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            proc.as_str(),
            mode(m.mode),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| self.err(path, format_args!("chmod {proc}: {e}")))
    }

    fn whiteout(&mut self, comps: &[OsString], n: &[u8], path: &[u8]) -> Result<()> {
        if n == OPAQUE.as_bytes() {
            self.enter(comps, path)?;
            let dir = self.cur();
            return fsetxattr(dir, OVERLAY_OPAQUE_XATTR, b"y").map_err(|e| {
                self.err(path, format_args!("fsetxattr {OVERLAY_OPAQUE_XATTR}: {e}"))
            });
        }
        if n.starts_with(WHITEOUT_META_PREFIX.as_bytes()) {
            return Ok(());
        }
        let hidden = &n[WHITEOUT_PREFIX.len()..];
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(self.err(path, "a whiteout that names no file"));
        }
        self.enter(comps, path)?;
        let dir = self.cur();
        match mknodat(
            dir,
            OsStr::from_bytes(hidden),
            SFlag::S_IFCHR,
            Mode::empty(),
            0,
        ) {
            // A file of this layer of the same name stays: a whiteout only hides the
            // layers below (image-spec), which the file hides as well.
            Ok(()) | Err(Errno::EEXIST) => Ok(()),
            Err(e) => Err(self.err(path, format_args!("mknodat (whiteout): {e}"))),
        }
    }

    fn own(&self, fd: impl AsFd, uid: u32, gid: u32, mode: Mode, path: &[u8]) -> Result<()> {
        // chown first: it clears setuid/setgid bits that fchmod then sets.
        fchown(
            fd.as_fd(),
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
        )
        .map_err(|e| self.err(path, format_args!("fchown: {e}")))?;
        nix::sys::stat::fchmod(fd.as_fd(), mode)
            .map_err(|e| self.err(path, format_args!("fchmod: {e}")))
    }

    fn xattrs(&self, fd: impl AsFd, m: &Member, path: &[u8]) -> Result<()> {
        for (k, v) in &m.xattrs {
            if !(k.starts_with("user.") || k == "security.capability") {
                continue;
            }
            match fsetxattr(fd.as_fd(), k, v) {
                // A filesystem without user xattrs: the layer works without them.
                Ok(()) | Err(Errno::ENOTSUP) => {}
                Err(e) => return Err(self.err(path, format_args!("fsetxattr {k}: {e}"))),
            }
        }
        Ok(())
    }

    fn copy<R: Read>(
        &mut self,
        data: &mut R,
        f: &mut std::fs::File,
        size: u64,
        path: &[u8],
    ) -> Result<()> {
        let mut buf = vec![0u8; 1 << 16];
        let mut since_check = 0u64;
        let mut copied = 0u64;
        loop {
            let n = match data.read(&mut buf) {
                Ok(0) if copied == size => return Ok(()),
                Ok(0) => {
                    return Err(self.err(
                        path,
                        format_args!(
                            "the archive ends inside it ({copied} of the {size} bytes its \
                             header gives)"
                        ),
                    ));
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(self.err(path, format_args!("reading its data: {}", io_chain(&e))));
                }
            };
            f.write_all(&buf[..n])
                .map_err(|e| self.err(path, format_args!("write: {e} ({})", errno_of(&e))))?;
            self.written += n as u64;
            copied += n as u64;
            since_check += n as u64;
            if since_check >= SPACE_CHECK_BYTES {
                since_check = 0;
                self.check_space(path)?;
            }
        }
    }

    /// Sets the directories' mtimes, last (creating children changed them).
    pub fn finish(mut self) -> Result<()> {
        let times = std::mem::take(&mut self.dir_times);
        for (comps, t) in times {
            if let Ok(fd) = self.walk(&comps, false, b"") {
                let ts = TimeSpec::new(t, 0);
                let _ = futimens(&fd, &ts, &ts);
            }
        }
        Ok(())
    }
}

/// One tar error with its sources (a [`LimitExceeded`] below an io::Error).
pub(crate) fn io_chain(e: &std::io::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(x) = src {
        s.push_str(&format!(": {x}"));
        src = x.source();
    }
    s
}

/// Removes the directory `name` in `dir` and everything below it, fd-relative and
/// without following symlinks.
fn remove_tree(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<()> {
    let fd = openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut d = nix::dir::Dir::from_fd(nix::unistd::dup(&fd)?)?;
    let mut names: Vec<(CString, bool)> = Vec::new();
    for e in d.iter() {
        let e = e?;
        let n = e.file_name();
        if n.to_bytes() == b"." || n.to_bytes() == b".." {
            continue;
        }
        let is_dir = matches!(e.file_type(), Some(nix::dir::Type::Directory));
        names.push((n.to_owned(), is_dir));
    }
    for (n, is_dir) in names {
        let os = OsStr::from_bytes(n.to_bytes());
        if is_dir {
            remove_tree(fd.as_fd(), os)?;
        } else {
            unlinkat(&fd, os, UnlinkatFlags::NoRemoveDir)?;
        }
    }
    unlinkat(dir, name, UnlinkatFlags::RemoveDir)
}

/// fsetxattr(2) on an open fd.
fn fsetxattr(fd: BorrowedFd<'_>, name: &str, value: &[u8]) -> nix::Result<()> {
    let cn = CString::new(name).map_err(|_| Errno::EINVAL)?;
    // SAFETY: a live fd, a NUL-terminated name and a buffer of value.len() bytes.
    let r = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            cn.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    Errno::result(r).map(drop)
}
