//! What cgctl writes to a terminal or a pipe: names chosen by others (cgroup names,
//! process comms) never reach the terminal raw, and a closed pipe ends cgctl quietly.

// Integration tests fail loudly: unwrap/expect are their assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{Proc, TestParent, cgctl, lane, run_cgctl};

/// A cgroup name holding an OSC title sequence, a bell, a colour code and a bidi
/// override: each would act on a terminal if printed raw.
const EVIL: &str = "ev\x1b]0;pwned\x07il\x1b[31m\u{202e}x";
/// How cgctl shows it.
const EVIL_SHOWN: &str = "ev\\x1b]0;pwned\\x07il\\x1b[31m\\u{202e}x";
/// A comm with a screen-clearing sequence (at most 15 bytes).
const COMM: &[u8] = b"c\x1b[2Jomm";
const COMM_SHOWN: &str = "c\\x1b[2Jomm";

/// Fails if `bytes` hold a control character other than newline (or a bidi override).
fn assert_clean(what: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let bad: Vec<char> = text
        .chars()
        .filter(|&c| (c.is_control() && c != '\n') || c == '\u{202e}')
        .collect();
    assert!(bad.is_empty(), "{what} printed raw {bad:?}:\n{text:?}");
}

fn checked(what: &str, out: &Output) -> String {
    assert_clean(&format!("{what} stdout"), &out.stdout);
    assert_clean(&format!("{what} stderr"), &out.stderr);
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// A shell that renames itself (its comm) to [`COMM`] and then waits.
fn renamed_process() -> Proc {
    let mut p = Proc(
        Command::new("sh")
            .arg("-c")
            .arg("printf 'c\\033[2Jomm' > /proc/$$/comm && echo ready && while :; do sleep 1; done")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(p.0.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    let comm = std::fs::read(format!("/proc/{}/comm", p.pid())).unwrap();
    assert_eq!(comm.strip_suffix(b"\n").unwrap(), COMM);
    p
}

#[test]
fn control_characters_in_names_and_comms_are_escaped_everywhere() {
    let parent = TestParent::new();
    let name = parent.child(EVIL);
    let shown_name = format!("{}/{EVIL_SHOWN}", parent.name);
    let proc = renamed_process();
    let pid = proc.pid().to_string();

    let outputs = [
        ("create", run_cgctl(&["create", &name, "--pids", "20"])),
        ("set", run_cgctl(&["set", &name, "--pids", "30"])),
        (
            "limit",
            run_cgctl(&["limit", "--pids", "25", "--pid", &pid, "--cgroup", &name]),
        ),
        ("move", run_cgctl(&["move", &name, "--pid", &pid])),
        ("ls", run_cgctl(&["ls", &parent.name])),
        ("stat", run_cgctl(&["stat", &name])),
        (
            "top",
            run_cgctl(&[
                "top",
                &parent.name,
                "--iterations",
                "1",
                "--interval",
                "10ms",
                "--sort",
                "pids",
            ]),
        ),
        ("rm (populated)", run_cgctl(&["rm", &name])),
        ("freeze", run_cgctl(&["freeze", &name])),
        ("thaw", run_cgctl(&["thaw", &name])),
    ];
    let mut all = String::new();
    for (what, out) in &outputs {
        let text = checked(what, out);
        eprintln!("[{}] {what}: {text}", lane());
        all.push_str(&text);
        if *what == "rm (populated)" {
            assert_eq!(out.status.code(), Some(1), "{text}");
            assert!(text.contains("still holds processes"), "{text}");
        } else {
            assert!(out.status.success(), "{what}: {text}");
        }
        if *what != "ls" {
            assert!(text.contains(EVIL_SHOWN), "{what} names the cgroup: {text}");
        }
    }
    let ls = checked("ls", &outputs[4].1);
    assert!(ls.contains(&format!("─{EVIL_SHOWN}")), "{ls}");
    assert!(ls.contains(&format!("{pid} {COMM_SHOWN}")), "{ls}");
    let limit = checked("limit", &outputs[2].1);
    assert!(
        limit.contains(&format!("pid {pid} ({COMM_SHOWN})")),
        "{limit}"
    );
    assert!(all.contains(&shown_name), "{all}");

    // events: one line per change, the name escaped.
    let watcher = cgctl()
        .args(["events", &name, "--count", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    drop(proc); // killed: populated 1 -> 0
    let out = watcher.wait_with_output().unwrap();
    let text = checked("events", &out);
    assert!(out.status.success(), "{text}");
    assert!(text.starts_with(&shown_name), "{text}");

    // An error naming the cgroup, and --json (escaped by JSON, not by cgctl).
    let out = run_cgctl(&["set", &format!("{name}/nope"), "--pids", "5"]);
    assert_eq!(out.status.code(), Some(1));
    checked("error", &out);
    let out = run_cgctl(&["stat", &name, "--json"]);
    checked("stat --json", &out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["cgroup"], name.as_str());
    checked("rm", &run_cgctl(&["rm", &name]));
}

/// cgctl writing into a pipe whose reader is gone: killed by SIGPIPE (as `ls` and
/// `cat` are) or done, but never a panic or an error message.
fn assert_quiet_on_closed_pipe(args: &[&str]) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = cgctl()
        .args(args)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.is_empty(),
        "cgctl {args:?} wrote to stderr:\n{stderr}"
    );
    assert!(
        out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
        "cgctl {args:?} on a closed pipe: {}",
        out.status
    );
}

#[test]
fn a_closed_pipe_ends_cgctl_quietly() {
    let parent = TestParent::new();
    let name = parent.child("piped");
    assert!(
        run_cgctl(&["create", &name, "--pids", "20"])
            .status
            .success()
    );
    for args in [
        &["ls"][..],
        &["ls", &parent.name],
        &["stat", &name],
        &["stat", &name, "--json"],
        &["top", "--iterations", "2", "--interval", "10ms"],
        &["set", &name, "--pids", "21"],
        &["--help"],
    ] {
        assert_quiet_on_closed_pipe(args);
    }

    // Through a shell pipeline, as a person types it: `cgctl ls | head -1` and
    // `| head -0`, with the status of cgctl itself (POSIX sh: the VM lane has no bash).
    for head in ["head -1", "head -0"] {
        let script = format!("{{ \"$0\" ls; echo \"status $?\" >&2; }} | {head} >/dev/null");
        let mut child = Command::new("sh")
            .args(["-c", &script, env!("CARGO_BIN_EXE_cgctl")])
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert!(child.wait().unwrap().success());
        // 0, or 141 = 128 + SIGPIPE: what coreutils' ls does in the same place.
        assert!(
            stderr == "status 0\n" || stderr == "status 141\n",
            "cgctl ls | {head}: {stderr:?}"
        );
    }
}
