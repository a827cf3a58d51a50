//! Host lane: the runtime driven by its real clients, podman 4.3 (through conmon) and
//! containerd 1.6 + ctr (through the runc shim v2), as issue #13's "Proof" asks.
//!
//! The runtime is `$SANDBOX_TEST_RUNTIME` (default: this package's `sandbox`); running
//! with `SANDBOX_TEST_RUNTIME=/usr/sbin/runc` checks the tests themselves. Each test has
//! its own client store, state, runtime root and cgroups (see tests/common/clients.rs),
//! so they may run in parallel. The clients come from Debian packages that
//! `cargo xtask test` installs; a missing client fails the test, saying so.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;
#[path = "common/clients.rs"]
mod harness;

use std::process::Stdio;
use std::time::Duration;

use harness::{
    CMD_TIMEOUT, Containerd, IMAGE, Podman, Pty, alive, assert_cpu_and_memory_limits, eventually,
    ok, output_within, stderr, stdout, wait_within,
};

/// What a user types at the terminal: proves the shell sees a tty and computes. The
/// shell stays a second after its answer: a client that learns of the exit before it
/// has copied the last output drops it (containerd's client cancels the copy on exit),
/// which is not what these tests are about.
const TYPED: &[u8] = b"test -t 0 && test -t 1 && echo tty-$((6*7)); sleep 1; exit\n";

// ---------------------------------------------------------------------------------------
// podman

#[test]
#[cfg_attr(vm_lane, ignore = "podman/containerd are host-lane clients")]
fn podman_run_rm_exit_codes() {
    let p = Podman::new();
    let o = p.container("run", &["--rm", IMAGE, "true"], None);
    assert_eq!(o.status.code(), Some(0), "true: {}", stderr(&o));
    let o = p.container(
        "run",
        &["--rm", IMAGE, "sh", "-c", "echo out; echo err >&2; exit 3"],
        None,
    );
    assert_eq!(o.status.code(), Some(3), "exit 3: {}", stderr(&o));
    assert_eq!(stdout(&o), "out\n");
    assert!(stderr(&o).contains("err"), "{}", stderr(&o));
    // A command missing from the image: 127, as a shell reports it, and a message
    // naming the command (which podman takes from the runtime's JSON log).
    let o = p.container("run", &["--rm", IMAGE, "no-such-command"], None);
    assert_eq!(
        o.status.code(),
        Some(127),
        "missing command: {}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("no-such-command"), "{}", stderr(&o));
    // --rm removed every container, and the runtime keeps no state for them.
    let ps = ok("podman ps -a", &p.run(&["ps", "-a", "-q"]));
    assert_eq!(ps.trim(), "", "podman ps -a after --rm runs");
    assert_runtime_root_empty(&p.runtime_root);
    let calls = p.s.runtime_calls();
    assert!(calls.iter().any(|c| c.contains(" create ")), "{calls:#?}");
    assert!(calls.iter().any(|c| c.contains("start ")), "{calls:#?}");
}

#[test]
#[cfg_attr(vm_lane, ignore = "podman/containerd are host-lane clients")]
fn podman_run_interactive_stdin_piped() {
    let p = Podman::new();
    let input = b"hi from the pipe\nline two\n";
    let o = p.container("run", &["--rm", "-i", IMAGE, "cat"], Some(input));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(o.stdout, input, "cat echoes its piped stdin");
    // stdin's end reaches the container: `wc -c` counts and exits.
    let o = p.container("run", &["--rm", "-i", IMAGE, "wc", "-c"], Some(input));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), input.len().to_string());
    // Without -i the container's stdin is empty, not the test's.
    let o = p.container("run", &["--rm", IMAGE, "wc", "-c"], Some(input));
    assert_eq!(stdout(&o).trim(), "0", "{}", stderr(&o));
}

#[test]
#[cfg_attr(vm_lane, ignore = "podman/containerd are host-lane clients")]
fn podman_run_it_through_a_pty() {
    let p = Podman::new();
    let mut pty = Pty::open();
    let mut cmd = p.cmd();
    cmd.arg("run")
        .args(p.opts())
        .args(["--rm", "-it", IMAGE, "sh"]);
    let mut child = pty.spawn(&mut cmd);
    pty.write(TYPED);
    pty.read_until("tty-42", Duration::from_secs(30));
    let status = wait_within(&mut child, CMD_TIMEOUT).expect("podman run -it exits after `exit`");
    assert_eq!(status.code(), Some(0), "terminal showed:\n{}", pty.seen());
    // The terminal size the test set (80x24) reached the container's pty. conmon
    // sets it on the pty's master when podman attaches, which can come after the
    // program starts (busybox `stty size` fails on a 0x0 terminal): the container
    // asks until it is there, for up to 10 s.
    let mut pty = Pty::open();
    let mut cmd = p.cmd();
    cmd.arg("run").args(p.opts()).args([
        "--rm",
        "-it",
        IMAGE,
        "sh",
        "-c",
        "i=0; while [ $i -lt 100 ]; do s=$(stty size 2>/dev/null) && [ \"$s\" != '0 0' ] \
         && break; i=$((i+1)); sleep 0.1; done; echo \"$s\"; sleep 1",
    ]);
    let mut child = pty.spawn(&mut cmd);
    pty.read_until("24 80", Duration::from_secs(30));
    let status = wait_within(&mut child, CMD_TIMEOUT).expect("podman run -it stty exits");
    assert_eq!(status.code(), Some(0), "terminal showed:\n{}", pty.seen());
    // exec -it into a running container: a pty of its own (exec --tty --console-socket).
    let n = format!("it-{}", std::process::id());
    ok(
        "podman run -d",
        &p.container("run", &["-d", "--name", &n, IMAGE, "sleep", "1000"], None),
    );
    let mut pty = Pty::open();
    let mut cmd = p.cmd();
    cmd.args(["exec", "-it", &n, "sh"]);
    let mut child = pty.spawn(&mut cmd);
    pty.write(TYPED);
    pty.read_until("tty-42", Duration::from_secs(30));
    let status = wait_within(&mut child, CMD_TIMEOUT).expect("podman exec -it exits after `exit`");
    assert_eq!(status.code(), Some(0), "terminal showed:\n{}", pty.seen());
    ok(
        "podman rm -f",
        &p.run(&["rm", "--force", "--time", "0", &n]),
    );
    let calls = p.s.runtime_calls();
    assert!(
        calls
            .iter()
            .any(|c| c.contains(" exec ") && c.contains("--tty")),
        "{calls:#?}"
    );
}

#[test]
#[cfg_attr(vm_lane, ignore = "podman/containerd are host-lane clients")]
fn podman_exec_stop_kill_rm_and_ps_states() {
    let p = Podman::new();
    let a = format!("a-{}", std::process::id());
    // SIGTERM ends it with 7 (trap), so `stop` is seen to deliver the signal.
    let o = p.container(
        "create",
        &[
            "--name",
            &a,
            IMAGE,
            "sh",
            "-c",
            "trap 'exit 7' TERM; sleep 1000 & wait",
        ],
        None,
    );
    ok("podman create", &o);
    assert_eq!(p.ps_state(&a).as_deref(), Some("created"));
    ok("podman start", &p.run(&["start", &a]));
    assert_eq!(p.ps_state(&a).as_deref(), Some("running"));
    let pid: u32 = p.inspect(&a, "{{.State.Pid}}").parse().unwrap();
    assert!(alive(pid), "container init {pid} runs");

    let o = p.run(&[
        "exec",
        &a,
        "sh",
        "-c",
        "echo in-exec $(cat /proc/1/comm); exit 4",
    ]);
    assert_eq!(o.status.code(), Some(4), "exec exit code: {}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "in-exec sh\n",
        "exec runs in the container's pid namespace"
    );
    let o = output_within(
        p.cmd().args(["exec", "-i", &a, "cat"]),
        Some(b"exec stdin\n"),
        CMD_TIMEOUT,
    );
    assert_eq!(stdout(&o), "exec stdin\n", "{}", stderr(&o));
    let o = p.run(&["exec", &a, "no-such-command"]);
    assert_eq!(
        o.status.code(),
        Some(127),
        "exec of a missing command: {}",
        stderr(&o)
    );

    ok("podman stop", &p.run(&["stop", "--time", "10", &a]));
    assert_eq!(p.ps_state(&a).as_deref(), Some("exited"));
    assert_eq!(
        p.inspect(&a, "{{.State.ExitCode}}"),
        "7",
        "SIGTERM reached the trap"
    );
    assert!(!alive(pid), "container init {pid} is gone after stop");
    ok("podman rm", &p.run(&["rm", &a]));
    assert_eq!(p.ps_state(&a), None, "rm removed it from podman ps -a");

    let b = format!("b-{}", std::process::id());
    let o = p.container("run", &["-d", "--name", &b, IMAGE, "sleep", "1000"], None);
    ok("podman run -d", &o);
    assert_eq!(p.ps_state(&b).as_deref(), Some("running"));
    let pid: u32 = p.inspect(&b, "{{.State.Pid}}").parse().unwrap();
    ok("podman kill", &p.run(&["kill", &b]));
    eventually(
        "podman ps shows the killed container exited",
        CMD_TIMEOUT,
        || (p.ps_state(&b).as_deref() == Some("exited")).then_some(()),
    );
    assert_eq!(
        p.inspect(&b, "{{.State.ExitCode}}"),
        "137",
        "SIGKILL: 128+9"
    );
    assert!(!alive(pid), "killed init {pid} is gone");
    ok("podman rm", &p.run(&["rm", &b]));
    assert_eq!(p.ps_state(&b), None);

    // rm --force of a running container.
    let c = format!("c-{}", std::process::id());
    ok(
        "podman run -d",
        &p.container("run", &["-d", "--name", &c, IMAGE, "sleep", "1000"], None),
    );
    let pid: u32 = p.inspect(&c, "{{.State.Pid}}").parse().unwrap();
    ok(
        "podman rm -f",
        &p.run(&["rm", "--force", "--time", "0", &c]),
    );
    assert_eq!(p.ps_state(&c), None);
    assert!(!alive(pid), "rm -f ended init {pid}");
    assert_runtime_root_empty(&p.runtime_root);
}

#[test]
#[cfg_attr(vm_lane, ignore = "podman/containerd are host-lane clients")]
fn podman_cpus_and_memory_land_in_the_cgroup() {
    let p = Podman::new();
    let n = format!("lim-{}", std::process::id());
    let o = p.container(
        "run",
        &[
            "-d", "--name", &n, "--cpus", "0.2", "--memory", "64m", IMAGE, "sleep", "1000",
        ],
        None,
    );
    ok("podman run -d --cpus 0.2 --memory 64m", &o);
    let pid: u32 = p.inspect(&n, "{{.State.Pid}}").parse().unwrap();
    assert_cpu_and_memory_limits(pid);
    let dirs = harness::cgroup_dirs_of(pid);
    // The container's cgroup is below the cgroup parent podman was given.
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        cg.lines()
            .filter(|l| !l.contains("name=systemd"))
            .all(|l| l.contains(&format!("{}/", p.cgroup_parent))),
        "cgroups of {pid} outside {}:\n{cg}",
        p.cgroup_parent
    );
    ok(
        "podman rm -f",
        &p.run(&["rm", "--force", "--time", "0", &n]),
    );
    assert!(!alive(pid));
    // On a v1 hierarchy the runtime does not use (sandbox joins only those its
    // limits and stats need), the process stays in conmon's cgroup: podman's own.
    for d in dirs.iter().filter(|d| !d.ends_with("conmon")) {
        assert!(
            !d.exists(),
            "the container's cgroup {} outlived rm",
            d.display()
        );
    }
}

fn assert_runtime_root_empty(root: &std::path::Path) {
    let left: Vec<_> = std::fs::read_dir(root)
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "runtime state left in {}: {left:?}",
        root.display()
    );
}

// ---------------------------------------------------------------------------------------
// containerd + ctr

#[test]
#[cfg_attr(vm_lane, ignore = "podman/containerd are host-lane clients")]
fn ctr_run_rm_exit_codes() {
    let c = Containerd::new();
    let o = c.run(&["--rm", IMAGE, "t-true", "true"]);
    assert_eq!(o.status.code(), Some(0), "true: {}", stderr(&o));
    let o = c.run(&[
        "--rm",
        IMAGE,
        "t-three",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3), "exit 3: {}", stderr(&o));
    assert_eq!(stdout(&o), "out\n");
    assert!(stderr(&o).contains("err"), "{}", stderr(&o));
    // A missing command fails `create`: ctr exits non-zero showing the runtime's message.
    let o = c.run(&["--rm", IMAGE, "t-missing", "no-such-command"]);
    assert!(!o.status.success(), "a missing command fails");
    assert!(stderr(&o).contains("no-such-command"), "{}", stderr(&o));
    assert!(c.containers().is_empty(), "--rm left {:?}", c.containers());
    assert!(c.tasks().is_empty(), "--rm left tasks {:?}", c.tasks());
    assert_runtime_root_empty(&c.runc_root.join(&c.ns));
    let calls = c.s.runtime_calls();
    assert!(calls.iter().any(|l| l.contains(" create ")), "{calls:#?}");
}

#[test]
#[cfg_attr(vm_lane, ignore = "podman/containerd are host-lane clients")]
fn ctr_exec_kill_and_delete() {
    let c = Containerd::new();
    // Attached: `ctr run` returns the task's exit status once `task kill` ends it.
    let mut attached = c.run_cmd(&[
        IMAGE,
        "t-term",
        "sh",
        "-c",
        "trap 'exit 7' TERM; echo ready; sleep 1000 & wait",
    ]);
    attached
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut attached = attached.spawn().unwrap();
    let pid = eventually("task t-term runs", CMD_TIMEOUT, || {
        if let Some(st) = attached.try_wait().unwrap() {
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(attached.stderr.as_mut().unwrap(), &mut err);
            panic!("ctr run ended ({st}) before its task ran: {err}");
        }
        c.tasks()
            .into_iter()
            .find(|(id, _, st)| id == "t-term" && st == "RUNNING")
            .map(|(_, pid, _)| pid)
    });
    assert!(alive(pid));
    let o = c.exec(
        &["--exec-id", "e1"],
        &[
            "t-term",
            "sh",
            "-c",
            "echo in-exec $(cat /proc/1/comm); exit 5",
        ],
    );
    assert_eq!(o.status.code(), Some(5), "exec exit code: {}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "in-exec sh\n",
        "exec runs in the container's pid namespace"
    );
    let o = c.exec(&["--exec-id", "e2"], &["t-term", "no-such-command"]);
    assert!(!o.status.success(), "exec of a missing command fails");
    assert!(stderr(&o).contains("no-such-command"), "{}", stderr(&o));
    ok(
        "ctr task kill (SIGTERM)",
        &c.ctr(&["task", "kill"], &["t-term"]),
    );
    let status = wait_within(&mut attached, CMD_TIMEOUT).expect("ctr run returns after kill");
    let mut out = String::new();
    std::io::Read::read_to_string(attached.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert_eq!(
        status.code(),
        Some(7),
        "SIGTERM reached the trap; stdout {out:?}"
    );
    assert_eq!(out, "ready\n");
    assert!(!alive(pid));
    // `ctr run` without --rm deleted the task but keeps the container.
    assert_eq!(c.task_status("t-term"), None);
    ok(
        "ctr container delete",
        &c.ctr(&["container", "delete"], &["t-term"]),
    );

    // Detached: kill with SIGKILL (all processes), then task delete, container delete.
    let o = c.run(&["-d", IMAGE, "t-kill", "sleep", "1000"]);
    ok("ctr run -d", &o);
    assert_eq!(c.task_status("t-kill").as_deref(), Some("RUNNING"));
    let pid = c
        .tasks()
        .into_iter()
        .find(|(id, _, _)| id == "t-kill")
        .unwrap()
        .1;
    // A second process (a detached exec) that `kill --all` must end too.
    ok(
        "ctr task exec -d",
        &c.exec(&["-d", "--exec-id", "bg"], &["t-kill", "sleep", "999"]),
    );
    // `task delete` of a running task is refused.
    let o = c.ctr(&["task", "delete"], &["t-kill"]);
    assert!(!o.status.success(), "deleting a running task is refused");
    ok(
        "ctr task kill -a -s SIGKILL",
        &c.ctr(&["task", "kill", "-a", "-s", "SIGKILL"], &["t-kill"]),
    );
    eventually("task t-kill stops", CMD_TIMEOUT, || {
        (c.task_status("t-kill").as_deref() == Some("STOPPED")).then_some(())
    });
    assert!(!alive(pid));
    let cg = harness::cgroup_dirs(&format!("/{}/t-kill", c.ns));
    assert!(
        !cg.is_empty(),
        "ctr's cgroup /{}/t-kill exists while the task does",
        c.ns
    );
    let o = c.ctr(&["task", "delete"], &["t-kill"]);
    assert!(o.status.success(), "task delete: {}", stderr(&o));
    assert_eq!(c.task_status("t-kill"), None);
    ok(
        "ctr container delete",
        &c.ctr(&["container", "delete"], &["t-kill"]),
    );
    assert!(c.containers().is_empty(), "{:?}", c.containers());
    assert_runtime_root_empty(&c.runc_root.join(&c.ns));
    for d in cg {
        assert!(
            !d.exists(),
            "the runtime's delete left cgroup {}",
            d.display()
        );
    }
    let calls = c.s.runtime_calls();
    assert!(calls.iter().any(|l| l.contains(" exec ")), "{calls:#?}");
    assert!(
        calls.iter().any(|l| l.contains(" kill --all ")),
        "{calls:#?}"
    );
}

#[test]
#[cfg_attr(vm_lane, ignore = "podman/containerd are host-lane clients")]
fn ctr_tty_container_through_a_pty() {
    let c = Containerd::new();
    let mut pty = Pty::open();
    let mut cmd = c.run_cmd(&["--rm", "-t", IMAGE, "t-tty", "sh"]);
    let mut child = pty.spawn(&mut cmd);
    pty.write(TYPED);
    pty.read_until("tty-42", Duration::from_secs(30));
    let status = wait_within(&mut child, CMD_TIMEOUT).expect("ctr run -t exits after `exit`");
    assert_eq!(status.code(), Some(0), "terminal showed:\n{}", pty.seen());
    // An exec with its own tty into a running container.
    ok(
        "ctr run -d",
        &c.run(&["-d", IMAGE, "t-bg", "sleep", "1000"]),
    );
    let mut pty = Pty::open();
    let mut cmd = c.exec_cmd(&["-t", "--exec-id", "tty1", "t-bg", "sh"]);
    let mut child = pty.spawn(&mut cmd);
    pty.write(TYPED);
    pty.read_until("tty-42", Duration::from_secs(30));
    let status = wait_within(&mut child, CMD_TIMEOUT).expect("ctr task exec -t exits");
    assert_eq!(status.code(), Some(0), "terminal showed:\n{}", pty.seen());
    ok(
        "ctr task kill",
        &c.ctr(&["task", "kill", "-s", "SIGKILL"], &["t-bg"]),
    );
    eventually("task t-bg stops", CMD_TIMEOUT, || {
        (c.task_status("t-bg").as_deref() == Some("STOPPED")).then_some(())
    });
    ok("ctr task delete", &c.ctr(&["task", "delete"], &["t-bg"]));
    ok(
        "ctr container delete",
        &c.ctr(&["container", "delete"], &["t-bg"]),
    );
    let calls = c.s.runtime_calls();
    assert!(
        calls.iter().any(|l| l.contains("--console-socket")),
        "{calls:#?}"
    );
}
