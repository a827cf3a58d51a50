//! Image references (`[DOMAIN/]PATH[:TAG]`), checked against the grammar of the
//! OCI distribution spec (the `reference` package of distribution/distribution).
//!
//! A reference may come from an image's own annotations, so it is untrusted input:
//! it never names a file. The store keys an image by the sha256 of `NAME:TAG`.

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The longest name the distribution grammar allows.
const NAME_MAX: usize = 255;
/// The longest tag (`[\w][\w.-]{0,127}`).
const TAG_MAX: usize = 128;

/// A checked image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// The repository name (`busybox`, `ghcr.io/org/app`).
    pub name: String,
    /// The tag (`latest` when none is given).
    pub tag: String,
}

impl Reference {
    /// Parses `NAME[:TAG]` (default tag `latest`).
    ///
    /// # Errors
    /// [`Error::Image`] naming what is wrong: a digest reference (`@sha256:...`), an
    /// empty or over-long part, or a character the grammar does not allow (path
    /// components are lower-case `[a-z0-9]` runs joined by `.`, `_`, `__` or `-`).
    pub fn parse(r: &str) -> Result<Reference> {
        let bad = |why: &str| {
            Error::Image(format!(
                "bad image reference {r:?}: {why} (expected [DOMAIN/]NAME[:TAG], e.g. \
                 busybox:1.36 or ghcr.io/org/app:v1)"
            ))
        };
        if r.contains('@') {
            return Err(bad("digest references (@sha256:...) are not supported"));
        }
        // The tag is after the last ':' that follows the last '/' (a ':' before a
        // '/' is a registry port).
        let last_slash = r.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match r[last_slash..].rfind(':') {
            Some(i) => (&r[..last_slash + i], &r[last_slash + i + 1..]),
            None => (r, "latest"),
        };
        check_name(name).map_err(|why| bad(&why))?;
        check_tag(tag).map_err(|why| bad(&why))?;
        Ok(Reference {
            name: name.to_string(),
            tag: tag.to_string(),
        })
    }

    /// The store key: the sha256 (hex) of `NAME:TAG`. Only hex digits reach a path.
    pub fn key(&self) -> String {
        key(&self.name, &self.tag)
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.name, self.tag)
    }
}

/// The store key of `name:tag`.
pub(crate) fn key(name: &str, tag: &str) -> String {
    hex(&Sha256::digest(format!("{name}:{tag}").as_bytes()))
}

/// Lower-case hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn check_tag(t: &str) -> Result<(), String> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let ok = !t.is_empty()
        && t.len() <= TAG_MAX
        && t.bytes().next().is_some_and(word)
        && t.bytes().all(|b| word(b) || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag {t:?} must be 1-{TAG_MAX} of A-Z a-z 0-9 _ . - not starting with . or -"
        ))
    }
}

/// `[DOMAIN/]path-component(/path-component)*`, at most 255 bytes.
pub(crate) fn check_name(n: &str) -> Result<(), String> {
    if n.is_empty() || n.len() > NAME_MAX {
        return Err(format!("name must be 1-{NAME_MAX} bytes"));
    }
    let mut parts: Vec<&str> = n.split('/').collect();
    // Docker's rule: the first of several components is a registry when it holds a
    // '.' or a ':' or is `localhost`.
    if parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost") {
        check_domain(parts.remove(0))?;
    }
    for p in parts {
        check_path_component(p)?;
    }
    Ok(())
}

fn check_domain(d: &str) -> Result<(), String> {
    let (host, port) = match d.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if !host.split('.').all(label_ok) {
        return Err(format!(
            "registry {d:?}: each dot-separated label is A-Z a-z 0-9 - (not at either end)"
        ));
    }
    if let Some(p) = port
        && (p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!("registry {d:?}: the port must be digits"));
    }
    Ok(())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn check_path_component(p: &str) -> Result<(), String> {
    let err = || {
        format!(
            "name component {p:?} must be lower-case letters and digits, joined by \
             one '.', '_', '__' or dashes"
        )
    };
    let b = p.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return Err(err());
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &p[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|c| c == b'-');
        if !ok {
            return Err(err());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(r: &str) -> (String, String) {
        let x = Reference::parse(r).unwrap();
        (x.name, x.tag)
    }

    #[test]
    fn accepts_the_grammar() {
        assert_eq!(ok("busybox"), ("busybox".into(), "latest".into()));
        assert_eq!(ok("a/b:1.0"), ("a/b".into(), "1.0".into()));
        assert_eq!(
            ok("localhost:5000/x_y/z--w:V_1.2-rc"),
            ("localhost:5000/x_y/z--w".into(), "V_1.2-rc".into())
        );
        assert_eq!(
            ok("ghcr.io/org/app"),
            ("ghcr.io/org/app".into(), "latest".into())
        );
    }

    #[test]
    fn refuses_what_could_name_a_path() {
        for r in [
            "",
            "../x",
            "x:y/../../../tmp/evil",
            "x/../y",
            "x:../../y",
            "x:.hidden",
            "x:-y",
            "x:",
            "/abs",
            "a//b",
            "a/./b",
            "Upper",
            "a b",
            "a\0b",
            "x@sha256:00",
            "x:y\n",
        ] {
            assert!(Reference::parse(r).is_err(), "{r:?} accepted");
        }
        assert!(Reference::parse(&"a".repeat(256)).is_err());
        assert!(Reference::parse(&format!("a:{}", "t".repeat(129))).is_err());
    }

    #[test]
    fn keys_are_hex() {
        let k = Reference::parse("x:y").unwrap().key();
        assert_eq!(k.len(), 64);
        assert!(k.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
