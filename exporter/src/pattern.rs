//! `--include` / `--exclude` patterns over cgroup ids.

use std::fmt;

use crate::Error;

/// A shell-style pattern matched against a cgroup's `id` (its path, `/` for the
/// root): `*` matches any run of characters, `/` included; `?` one character.
///
/// # Examples
/// ```
/// use exporter::Pattern;
/// let p: Pattern = "/kubepods*".parse()?;
/// assert!(p.matches("/kubepods.slice/pod1"));
/// assert!(!p.matches("/system.slice"));
/// # Ok::<(), exporter::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern(pub(crate) String);

impl std::str::FromStr for Pattern {
    type Err = Error;
    fn from_str(s: &str) -> Result<Pattern, Error> {
        if s.is_empty() {
            return Err(Error::Pattern {
                pattern: s.into(),
                reason: "empty; use `*` to match everything",
            });
        }
        Ok(Pattern(s.to_owned()))
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Pattern {
    /// Whether `id` matches the whole pattern.
    pub fn matches(&self, id: &str) -> bool {
        let (p, t): (Vec<char>, Vec<char>) = (self.0.chars().collect(), id.chars().collect());
        // Iterative wildcard match: remember the last `*` and retry from there.
        let (mut pi, mut ti) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
                pi += 1;
                ti += 1;
            } else if pi < p.len() && p[pi] == '*' {
                star = Some((pi, ti));
                pi += 1;
            } else if let Some((sp, st)) = star {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&c| c == '*')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let p = |s: &str| s.parse::<Pattern>().unwrap();
        assert!(p("*").matches("/"));
        assert!(p("/a/*/c").matches("/a/b/x/c"));
        assert!(!p("/a/*/c").matches("/a/c"));
        assert!(p("/a?").matches("/ab"));
        assert!(!p("/a?").matches("/a"));
        assert!(p("*test*").matches("/exporter-test-1-2"));
        assert!("".parse::<Pattern>().is_err());
    }
}
