//! Names from the kernel as they may reach a terminal.
//!
//! A cgroup name, a path under it or a process's comm is chosen by whoever created it,
//! and may hold escape sequences (`\x1b]0;...`, `\x1b[2J`) or bidi overrides that
//! rewrite what the terminal shows, or bytes that are not UTF-8. Everything cgctl
//! prints of such names goes through [`shown`]; `--json` output is escaped by JSON.

use std::borrow::Cow;
use std::ffi::OsStr;
use std::fmt::Write;
use std::os::unix::ffi::OsStrExt;

/// `name` safe for a terminal: control characters (C0, DEL, C1) as `\n`, `\t`, `\r`
/// or `\xNN`, bidi controls as `\u{202e}`, and bytes that are not UTF-8 as `\xNN`.
/// Backslashes stay as they are (systemd's `\x2d` names read as they do elsewhere).
/// Borrows when there is nothing to escape, as for almost every name.
pub fn shown<S: AsRef<OsStr> + ?Sized>(name: &S) -> Cow<'_, str> {
    let bytes = name.as_ref().as_bytes();
    if let Ok(s) = std::str::from_utf8(bytes)
        && !s.chars().any(needs_escape)
    {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if needs_escape(c) && (c as u32) < 0x80 => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c if needs_escape(c) => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    Cow::Owned(out)
}

/// `json` (serde_json's output) with the characters [`shown`] escapes and JSON
/// leaves raw (DEL, C1 controls, bidi overrides) as `\uXXXX`: the same JSON value,
/// safe on a terminal. Such characters can only occur inside JSON strings (which
/// hold C0 controls only escaped); the layout's newlines stay.
pub fn json_shown(json: String) -> String {
    let raw = |c: char| needs_escape(c) && c >= '\u{7f}';
    if !json.chars().any(raw) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if raw(c) {
            // All are in the BMP (below U+10000): one \u escape each.
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

/// Control characters, and the bidi controls that reorder what follows them.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn plain_names_are_borrowed_and_unchanged() {
        assert!(matches!(shown("web/api"), Cow::Borrowed("web/api")));
        assert_eq!(
            shown("system-serial\\x2dgetty.slice"),
            "system-serial\\x2dgetty.slice"
        );
        assert_eq!(shown("café ☕"), "café ☕");
        assert_eq!(shown(Path::new("/sys/fs/cgroup/a b")), "/sys/fs/cgroup/a b");
    }

    #[test]
    fn controls_bidi_and_bad_bytes_are_escaped() {
        assert_eq!(shown("a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(shown("x\ny\tz\r"), "x\\ny\\tz\\r");
        assert_eq!(shown("\x07\x7f\u{9b}"), "\\x07\\x7f\\u{9b}");
        assert_eq!(shown("evil\u{202e}txt"), "evil\\u{202e}txt");
        assert_eq!(shown(OsStr::from_bytes(b"a\xffb\xc3")), "a\\xffb\\xc3");
        assert_eq!(shown("\0"), "\\x00");
    }

    #[test]
    fn json_keeps_its_value_and_loses_raw_controls() {
        let v = serde_json::json!({"cgroup": "a\x1b\u{7f}\u{9b}\u{202e}b"});
        let s = json_shown(serde_json::to_string_pretty(&v).unwrap());
        assert!(!s.chars().any(|c| needs_escape(c) && c != '\n'), "{s}");
        assert!(s.contains('\n'));
        assert_eq!(serde_json::from_str::<serde_json::Value>(&s).unwrap(), v);
        assert_eq!(json_shown("{\"a\":1}".into()), "{\"a\":1}");
    }
}
