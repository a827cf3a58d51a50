//! One way to show an error to a person: the error, then each error below it
//! ([`Error::source`]), joined by `: `.
//!
//! Our libraries follow one rule (CONVENTIONS.md): an error's message shows its own
//! context, and its cause is the `source`, never repeated in the message. So the
//! binary that reports an error walks the chain, and every binary should walk it the
//! same way: this crate. It has no dependencies, so any crate of the workspace may
//! use it without a new edge between our crates.
//!
//! A foreign error that does print its cause in its message too (some do) would
//! show it twice; a cause whose text is already in what was shown is skipped.
//!
//! ```
//! use std::io;
//! #[derive(Debug)]
//! struct ReadFailed(io::Error);
//! impl std::fmt::Display for ReadFailed {
//!     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
//!         f.write_str("cannot read /sys/fs/cgroup/web/cpu.max")
//!     }
//! }
//! impl std::error::Error for ReadFailed {
//!     fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
//!         Some(&self.0)
//!     }
//! }
//! let e = ReadFailed(io::Error::from_raw_os_error(2));
//! assert_eq!(
//!     errchain::chain(&e),
//!     "cannot read /sys/fs/cgroup/web/cpu.max: No such file or directory (os error 2)"
//! );
//! assert_eq!(format!("error: {}", errchain::Chain(&e)), format!("error: {}", errchain::chain(&e)));
//! ```
#![deny(missing_docs)]

use std::error::Error;
use std::fmt;

/// `e` and every cause below it, joined by `: `; a cause whose text the line already
/// holds is left out.
pub fn chain(e: &dyn Error) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

/// [`chain`] as a `Display` adapter, for `format!`/`eprintln!`:
/// `eprintln!("sandbox: {}", Chain(&e))`.
#[derive(Clone, Copy)]
pub struct Chain<'a>(pub &'a dyn Error);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&chain(self.0))
    }
}

impl fmt::Debug for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Chain").field(&chain(self.0)).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);
    impl fmt::Display for E {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }
    impl Error for E {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|e| e as &(dyn Error + 'static))
        }
    }

    #[test]
    fn joins_every_cause_once() {
        let e = E("a", Some(Box::new(E("b", Some(Box::new(E("c", None)))))));
        assert_eq!(chain(&e), "a: b: c");
        assert_eq!(chain(&E("alone", None)), "alone");
        assert_eq!(Chain(&e).to_string(), "a: b: c");
    }

    #[test]
    fn a_cause_already_shown_is_not_repeated() {
        // An error that prints its source in its own message as well.
        let e = E("load failed: bad map", Some(Box::new(E("bad map", None))));
        assert_eq!(chain(&e), "load failed: bad map");
        let e = E("x", Some(Box::new(E("", Some(Box::new(E("y", None)))))));
        assert_eq!(chain(&e), "x: y");
    }
}
