//! Validated cgroup paths that cannot escape the hierarchy root.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// A path relative to a hierarchy root, such as `myapp/worker`.
///
/// Construction refuses anything that could leave the root: absolute paths, `..`,
/// `.` components, empty components and NUL bytes. The empty path is the root cgroup
/// itself. Symlinks are refused when the path is used (cgroupfs has none, so one can
/// only be an attack).
#[derive(Clone, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct CgroupPath(String);

impl CgroupPath {
    /// The root cgroup.
    pub fn root() -> Self {
        CgroupPath(String::new())
    }

    /// Validates `path`.
    ///
    /// # Examples
    /// ```
    /// use cgroupkit::CgroupPath;
    /// assert!(CgroupPath::new("myapp/worker").is_ok());
    /// assert!(CgroupPath::new("../etc").is_err());
    /// assert!(CgroupPath::new("/sys/fs/cgroup/x").is_err());
    /// ```
    pub fn new(path: &str) -> Result<Self> {
        let bad = |reason| Error::InvalidPath {
            path: path.to_owned(),
            reason,
        };
        if path.contains('\0') {
            return Err(bad("it contains a NUL byte"));
        }
        if path.starts_with('/') {
            return Err(bad(
                "absolute paths are refused; give a path relative to the cgroup root",
            ));
        }
        let trimmed = path.trim_end_matches('/');
        if trimmed.is_empty() {
            return Err(bad("it is empty"));
        }
        for part in trimmed.split('/') {
            match part {
                "" => return Err(bad("it has an empty component (`//`)")),
                "." => return Err(bad("`.` components are refused")),
                ".." => return Err(bad("`..` would escape the cgroup root")),
                _ if part.len() > 255 => return Err(bad("a component is longer than 255 bytes")),
                _ => {}
            }
        }
        Ok(CgroupPath(trimmed.to_owned()))
    }

    /// Whether this is the root cgroup.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The path as text (empty for the root).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The parent cgroup, `None` for the root.
    pub fn parent(&self) -> Option<CgroupPath> {
        if self.is_root() {
            return None;
        }
        Some(match self.0.rfind('/') {
            Some(i) => CgroupPath(self.0[..i].to_owned()),
            None => CgroupPath::root(),
        })
    }

    /// A child of this cgroup; `name` must be one valid component.
    pub fn join(&self, name: &str) -> Result<CgroupPath> {
        if name.contains('/') {
            return Err(Error::InvalidPath {
                path: name.to_owned(),
                reason: "a child name cannot contain `/`",
            });
        }
        let child = CgroupPath::new(name)?;
        Ok(if self.is_root() {
            child
        } else {
            CgroupPath(format!("{}/{}", self.0, child.0))
        })
    }

    /// The ancestors from the root down to and including this cgroup.
    pub fn ancestors_and_self(&self) -> Vec<CgroupPath> {
        let mut out = vec![CgroupPath::root()];
        let mut acc = String::new();
        for part in self.0.split('/').filter(|p| !p.is_empty()) {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(part);
            out.push(CgroupPath(acc.clone()));
        }
        out
    }

    /// This path under a hierarchy's mount point.
    pub fn under(&self, mount: &Path) -> PathBuf {
        let mut p = mount.to_path_buf();
        for c in Path::new(&self.0).components() {
            if let Component::Normal(n) = c {
                p.push(n);
            }
        }
        p
    }
}

impl fmt::Display for CgroupPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_root() {
            f.write_str("/")
        } else {
            f.write_str(&self.0)
        }
    }
}

impl fmt::Debug for CgroupPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CgroupPath({:?})", self.0)
    }
}

impl std::str::FromStr for CgroupPath {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        CgroupPath::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_relative_paths() {
        assert_eq!(CgroupPath::new("a/b/c/").unwrap().as_str(), "a/b/c");
        assert_eq!(
            CgroupPath::new("cgctl/pid-398").unwrap().to_string(),
            "cgctl/pid-398"
        );
    }

    #[test]
    fn refuses_escapes() {
        for bad in [
            "", "/", "/abs", "..", "a/../b", "a/./b", "a//b", "a\0b", "./a",
        ] {
            let err = CgroupPath::new(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidPath { .. }), "{bad:?}: {err}");
        }
        assert!(CgroupPath::new(&"x".repeat(256)).is_err());
    }

    #[test]
    fn parents_and_ancestors() {
        let p = CgroupPath::new("a/b/c").unwrap();
        assert_eq!(p.parent().unwrap().as_str(), "a/b");
        assert_eq!(
            CgroupPath::new("a").unwrap().parent(),
            Some(CgroupPath::root())
        );
        assert_eq!(CgroupPath::root().parent(), None);
        let anc: Vec<String> = p
            .ancestors_and_self()
            .iter()
            .map(|a| a.as_str().to_owned())
            .collect();
        assert_eq!(anc, ["", "a", "a/b", "a/b/c"]);
        assert_eq!(
            p.under(Path::new("/sys/fs/cgroup")),
            Path::new("/sys/fs/cgroup/a/b/c")
        );
        assert_eq!(p.join("d").unwrap().as_str(), "a/b/c/d");
        assert!(p.join("d/e").is_err());
        assert!(p.join("..").is_err());
    }
}
