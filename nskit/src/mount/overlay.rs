//! [`Overlay`]: overlayfs with any number of lower layers.

use std::ffi::OsStr;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, open};
use nix::mount::MsFlags;
use nix::sys::stat::Mode;

use super::DetachedMount;
use crate::error::{self, Error, Result};

/// An overlay filesystem (overlayfs, 3.18): read-only `lower` layers (the first is the
/// top one), a writable `upper` directory and its `work` directory on the same
/// filesystem. Without an upper the overlay is read-only.
///
/// # Examples
///
/// ```no_run
/// # fn main() -> nskit::Result<()> {
/// nskit::Overlay::new()
///     .lower("/layers/app")
///     .lower("/layers/base")
///     .upper("/ctr/upper", "/ctr/work")
///     .mount("/ctr/rootfs")?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Overlay {
    lowers: Vec<PathBuf>,
    upper: Option<(PathBuf, PathBuf)>,
}

/// The option string limit of mount(2): one page.
const MOUNT_DATA_MAX: usize = 4095;

impl Overlay {
    /// An overlay with no layers yet.
    pub fn new() -> Overlay {
        Overlay::default()
    }

    /// Adds a lower layer below the ones already added.
    pub fn lower(&mut self, dir: impl AsRef<Path>) -> &mut Overlay {
        self.lowers.push(dir.as_ref().to_owned());
        self
    }

    /// The writable upper layer and its work directory.
    pub fn upper(&mut self, upper: impl AsRef<Path>, work: impl AsRef<Path>) -> &mut Overlay {
        self.upper = Some((upper.as_ref().to_owned(), work.as_ref().to_owned()));
        self
    }

    /// Mounts the overlay at `target`. Many layers never hit mount(2)'s one-page option
    /// limit: on 6.8+ each layer is its own `fsconfig(lowerdir+)` call; otherwise the
    /// classic option string is used, with the layers given as short
    /// `/proc/self/fd/N` paths of open fds when the full paths would not fit.
    pub fn mount(&self, target: impl AsRef<Path>) -> Result<()> {
        let target = target.as_ref();
        if self.lowers.is_empty() {
            return Err(Error::InvalidArgument(
                "an overlay needs at least one lower layer".into(),
            ));
        }
        for p in self
            .lowers
            .iter()
            .chain(self.upper.iter().flat_map(|(u, w)| [u, w]))
        {
            if p.as_os_str()
                .as_bytes()
                .iter()
                .any(|b| matches!(b, b',' | b':' | b'\n'))
            {
                return Err(Error::InvalidArgument(format!(
                    "overlay layer path {} holds ',' or ':', which overlayfs options cannot carry",
                    p.display()
                )));
            }
        }
        if crate::namespace::kernel_at_least(6, 8) {
            match self.mount_fsconfig(target) {
                Ok(()) => return Ok(()),
                Err(e) if e.is_unsupported() => {}
                Err(e) => return Err(e),
            }
        }
        // Paths go to the kernel as the bytes they are: a lossy display() would
        // mount another directory (or none) for a name that is not UTF-8.
        let full = self.options(|p| p.as_os_str().as_bytes().to_vec());
        if full.len() <= MOUNT_DATA_MAX {
            return self.mount_classic(target, &full);
        }
        let mut fds = Vec::new();
        for l in &self.lowers {
            fds.push(
                open(
                    l,
                    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| error::nix("open", l.display().to_string(), e))?,
            );
        }
        let mut i = 0;
        let short = self.options(|p| {
            if self.lowers.iter().any(|l| l == p) && i < fds.len() {
                let s = format!("/proc/self/fd/{}", fds[i].as_raw_fd());
                i += 1;
                s.into_bytes()
            } else {
                p.as_os_str().as_bytes().to_vec()
            }
        });
        if short.len() > MOUNT_DATA_MAX {
            return Err(Error::InvalidArgument(format!(
                "{} overlay layers do not fit mount(2)'s one-page option limit on this kernel (fsconfig lowerdir+ needs Linux 6.8)",
                self.lowers.len()
            )));
        }
        self.mount_classic(target, &short)
    }

    /// `lowerdir=L1:L2,upperdir=U,workdir=W`, each path as `name` gives it.
    fn options(&self, mut name: impl FnMut(&Path) -> Vec<u8>) -> Vec<u8> {
        let mut s = b"lowerdir=".to_vec();
        for (i, l) in self.lowers.iter().enumerate() {
            if i > 0 {
                s.push(b':');
            }
            s.extend(name(l));
        }
        if let Some((u, w)) = &self.upper {
            s.extend_from_slice(b",upperdir=");
            s.extend(name(u));
            s.extend_from_slice(b",workdir=");
            s.extend(name(w));
        }
        s
    }

    fn mount_classic(&self, target: &Path, data: &[u8]) -> Result<()> {
        nix::mount::mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(data),
        )
        .map_err(|e| {
            error::nix(
                "mount",
                format!(
                    "overlay on {} ({} lower layers)",
                    target.display(),
                    self.lowers.len()
                ),
                e,
            )
        })
    }

    fn mount_fsconfig(&self, target: &Path) -> Result<()> {
        let mut opts: Vec<(&str, Option<&OsStr>)> = Vec::new();
        for l in &self.lowers {
            opts.push(("lowerdir+", Some(l.as_os_str())));
        }
        if let Some((u, w)) = &self.upper {
            opts.push(("upperdir", Some(u.as_os_str())));
            opts.push(("workdir", Some(w.as_os_str())));
        }
        DetachedMount::new_fs_os("overlay", &opts)?.attach(target)
    }
}
