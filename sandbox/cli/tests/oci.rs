//! The OCI runtime through its command line, with bundles the tests write: the
//! lifecycle and its states, kill/delete semantics, config.json fields honoured or
//! refused by name, hooks in order, the console socket, exec, update, and nothing
//! left behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::{Env, err, out};
use serde_json::{Value, json};

/// A bundle in the test's folder: the busybox rootfs and a config.json from
/// `sandbox spec`, edited by the test.
struct Bundle {
    dir: PathBuf,
}

/// Runs `sandbox ARGS` with stdout and stderr in files, not pipes: a container
/// made by `create` inherits them and keeps them open after `create` exits, so a
/// reader waiting for EOF would wait for the container.
fn sandbox(env: &Env, args: &[&str]) -> Output {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (o, e) = (
        env.dir.path().join(format!("out-{n}")),
        env.dir.path().join(format!("err-{n}")),
    );
    let status = env
        .cmd()
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&o).unwrap())
        .stderr(std::fs::File::create(&e).unwrap())
        .status()
        .unwrap();
    Output {
        status,
        stdout: std::fs::read(&o).unwrap(),
        stderr: std::fs::read(&e).unwrap(),
    }
}

fn ok(env: &Env, args: &[&str]) -> String {
    let o = sandbox(env, args);
    assert!(o.status.success(), "sandbox {args:?}: {}", err(&o));
    out(&o)
}

impl Bundle {
    fn new(env: &Env, name: &str, script: &str) -> Bundle {
        let dir = env.dir.path().join(format!("bundle-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let rootfs = env.rootfs();
        std::os::unix::fs::symlink(&rootfs, dir.join("rootfs")).unwrap();
        ok(env, &["spec", "--bundle", dir.to_str().unwrap()]);
        let b = Bundle { dir };
        b.edit(|c| {
            c["process"]["terminal"] = json!(false);
            c["process"]["args"] = json!(["sh", "-c", script]);
        });
        b
    }

    fn path(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    fn edit(&self, f: impl FnOnce(&mut Value)) {
        let p = self.dir.join("config.json");
        let mut c: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        f(&mut c);
        std::fs::write(&p, serde_json::to_vec_pretty(&c).unwrap()).unwrap();
    }
}

/// `create` then `start` of bundle `b` as container `id`.
fn create_and_start(env: &Env, b: &Bundle, id: &str) {
    ok(env, &["create", "--bundle", b.path(), id]);
    ok(env, &["start", id]);
}

fn state(env: &Env, id: &str) -> Value {
    serde_json::from_str(&ok(env, &["state", id])).unwrap()
}

fn wait_status(env: &Env, id: &str, want: &str) {
    let start = Instant::now();
    loop {
        let s = state(env, id);
        if s["status"] == want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{id} never became {want}: {s}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `run --bundle`: the exit status and output of the container's process.
fn run_bundle(env: &Env, b: &Bundle, id: &str) -> Output {
    env.cmd()
        .args(["run", "--bundle", b.path(), id])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// A change to a config.json.
type Edit = Box<dyn Fn(&mut Value)>;

/// Deletes (--force) every container left in the test's state root when the test
/// ends, failed assertions included: no process or cgroup outlives a test.
struct Cleanup<'a>(&'a Env);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for e in std::fs::read_dir(&self.0.state)
            .into_iter()
            .flatten()
            .flatten()
        {
            let id = e.file_name().to_string_lossy().into_owned();
            if !id.starts_with('.') {
                let _ = self
                    .0
                    .cmd()
                    .args(["delete", "--force", &id])
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
    }
}

fn id(tag: &str) -> String {
    common::name(&format!("oci-{tag}"))
}

/// The cgroup folders named `name` under any hierarchy's `sandbox/` parent.
fn oci_cgroups(name: &str) -> Vec<PathBuf> {
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        roots.extend(rd.flatten().map(|e| e.path()));
    }
    roots
        .into_iter()
        .map(|r| r.join("sandbox").join(name))
        .filter(|p| p.exists())
        .collect()
}

#[test]
fn oci_create_start_state_delete_with_the_spec_states() {
    let env = Env::new();
    let _cleanup = Cleanup(&env);
    let marker = env.dir.path().join("ran");
    let id = id("life");
    let b = Bundle::new(&env, "life", "echo ran > /data/ran; sleep 0.3; exit 3");
    b.edit(|c| {
        c["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/data", "type": "bind",
            "source": env.dir.path(), "options": ["rbind", "rw"]
        }));
    });
    let pid_file = env.dir.path().join("pid");
    let o = sandbox(
        &env,
        &[
            "create",
            "--bundle",
            b.path(),
            "--pid-file",
            pid_file.to_str().unwrap(),
            &id,
        ],
    );
    assert!(o.status.success(), "{}", err(&o));
    // create has returned; the process waits, created, and has not run the program.
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    let s = state(&env, &id);
    assert_eq!(s["status"], "created", "{s}");
    assert_eq!(s["pid"], pid);
    assert_eq!(s["ociVersion"], "1.2.0");
    assert_eq!(s["bundle"], b.path());
    assert!(!marker.exists(), "the program ran before start");
    assert!(!oci_cgroups(&id).is_empty(), "no cgroup for {id}");
    // No runtime process stays behind: the container's parent is not ours.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let ppid: i32 = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let parent_exe = std::fs::read_link(format!("/proc/{ppid}/exe")).unwrap_or_default();
    assert!(
        !parent_exe.to_string_lossy().contains("sandbox"),
        "a sandbox process ({ppid}) still holds the container"
    );
    // A second start of a created container is the start; a second start is refused.
    ok(&env, &["start", &id]);
    let o = sandbox(&env, &["start", &id]);
    assert!(!o.status.success());
    assert!(err(&o).contains("only a created one"), "{}", err(&o));
    wait_status(&env, &id, "stopped");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "ran\n");
    assert_eq!(state(&env, &id)["pid"], 0);
    ok(&env, &["delete", &id]);
    let o = sandbox(&env, &["state", &id]);
    assert!(!o.status.success());
    assert!(err(&o).contains("does not exist"), "{}", err(&o));
    // The containerd shim deletes twice: with --force a missing one is fine.
    ok(&env, &["delete", "--force", &id]);
    let o = sandbox(&env, &["delete", &id]);
    assert!(
        !o.status.success(),
        "deleting a missing container without --force"
    );
    assert!(
        oci_cgroups(&id).is_empty(),
        "cgroup left: {:?}",
        oci_cgroups(&id)
    );
    env.assert_clean();
}

#[test]
fn oci_run_reports_the_exit_status_and_a_missing_program() {
    let env = Env::new();
    let _cleanup = Cleanup(&env);
    let b = Bundle::new(&env, "exit", "echo out; echo err >&2; exit 7");
    let o = run_bundle(&env, &b, &id("exit"));
    assert_eq!(o.status.code(), Some(7), "{}", err(&o));
    assert_eq!(out(&o), "out\n");
    assert_eq!(err(&o), "err\n");
    b.edit(|c| c["process"]["args"] = json!(["/bin/no-such-program"]));
    let o = run_bundle(&env, &b, &id("missing"));
    assert_eq!(o.status.code(), Some(127), "{}", err(&o));
    assert!(err(&o).contains("no-such-program"), "{}", err(&o));
    // A failed create leaves nothing: no state, no cgroup.
    assert!(oci_cgroups(&id("missing")).is_empty());
    env.assert_clean();
}

#[test]
fn oci_kill_and_delete_semantics() {
    let env = Env::new();
    let _cleanup = Cleanup(&env);
    let b = Bundle::new(
        &env,
        "kill",
        "trap 'exit 42' TERM; while :; do sleep 0.05; done",
    );
    // A created container is deleted without --force: its process is killed.
    let c = id("created");
    ok(&env, &["create", "--bundle", b.path(), &c]);
    let pid = state(&env, &c)["pid"].as_i64().unwrap();
    ok(&env, &["delete", &c]);
    let start = Instant::now();
    while Path::new(&format!("/proc/{pid}/exe")).exists() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the created process lives on"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // A running one needs --force.
    let r = id("running");
    create_and_start(&env, &b, &r);
    let o = sandbox(&env, &["delete", &r]);
    assert!(!o.status.success());
    assert!(err(&o).contains("running"), "{}", err(&o));
    // kill ID (default TERM) reaches the process's trap, once the shell has set it:
    // as the pid namespace's init it ignores a TERM it has no handler for yet. The
    // trap comes before the loop, so a `sleep` child means it is set.
    let start = Instant::now();
    while !ok(&env, &["ps", "--format", "json", &r]).contains(',') {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the loop never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    ok(&env, &["kill", &r]);
    wait_status(&env, &r, "stopped");
    let o = sandbox(&env, &["kill", &r, "KILL"]);
    assert!(!o.status.success(), "killing a stopped container");
    assert!(err(&o).contains("not running"), "{}", err(&o));
    ok(&env, &["delete", &r]);
    // kill --all reaches every process of the cgroup; delete --force ends a running one.
    let a = id("all");
    let b2 = Bundle::new(&env, "all", "sleep 1000 & sleep 1000 & wait");
    create_and_start(&env, &b2, &a);
    let start = Instant::now();
    while ok(&env, &["ps", "--format", "json", &a])
        .matches(',')
        .count()
        < 2
    {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "children never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // TERM: the sleepers die of it; the shell (pid 1 of its namespace, which ignores
    // it) then returns from `wait` and exits.
    ok(&env, &["kill", "--all", &a, "TERM"]);
    wait_status(&env, &a, "stopped");
    assert_eq!(ok(&env, &["ps", "--format", "json", &a]).trim(), "[]");
    ok(&env, &["delete", &a]);
    let f = id("force");
    create_and_start(&env, &b2, &f);
    ok(&env, &["delete", "--force", &f]);
    assert!(oci_cgroups(&f).is_empty());
    env.assert_clean();
}

#[test]
fn oci_bad_configs_are_refused_by_field_and_leave_nothing() {
    let env = Env::new();
    let _cleanup = Cleanup(&env);
    let b = Bundle::new(&env, "bad", "true");
    let cases: Vec<(&str, Edit)> = vec![
        ("ociVersion", Box::new(|c| c["ociVersion"] = json!("2.0.0"))),
        (
            "linux.frobnicate",
            Box::new(|c| c["linux"]["frobnicate"] = json!(1)),
        ),
        (
            "process.terminal",
            Box::new(|c| c["process"]["terminal"] = json!(true)),
        ),
        (
            "linux.sysctl \"kernel.panic\"",
            Box::new(|c| c["linux"]["sysctl"] = json!({"kernel.panic": "1"})),
        ),
        (
            "linux.sysctl \"../../etc\"",
            Box::new(|c| c["linux"]["sysctl"] = json!({"../../etc": "1"})),
        ),
        (
            "linux.devices[0].path",
            Box::new(|c| {
                c["linux"]["devices"] =
                    json!([{"path": "/etc/x", "type": "c", "major": 1, "minor": 3}])
            }),
        ),
        (
            "linux.resources.blockIO.weightDevice",
            Box::new(|c| {
                c["linux"]["resources"]["blockIO"] =
                    json!({"weightDevice": [{"major": 8, "minor": 0, "weight": 100}]})
            }),
        ),
        (
            "linux.cgroupsPath",
            Box::new(|c| c["linux"]["cgroupsPath"] = json!("system.slice:docker:x")),
        ),
        (
            "process.apparmorProfile",
            Box::new(|c| c["process"]["apparmorProfile"] = json!("docker-default")),
        ),
        (
            "mounts[",
            Box::new(|c| {
                c["mounts"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"destination": "/x", "type": "nfs", "source": "h:/x"}))
            }),
        ),
    ];
    for (i, (field, f)) in cases.iter().enumerate() {
        let b = Bundle::new(&env, &format!("bad{i}"), "true");
        b.edit(f);
        let cid = id(&format!("bad{i}"));
        let o = sandbox(&env, &["create", "--bundle", b.path(), &cid]);
        assert!(!o.status.success(), "{field}: accepted");
        assert!(err(&o).contains(field), "{field}: {}", err(&o));
        assert!(oci_cgroups(&cid).is_empty(), "{field}: cgroup left");
        env.assert_clean();
    }
    // --systemd-cgroup is refused with what to do.
    let o = sandbox(
        &env,
        &[
            "--systemd-cgroup",
            "create",
            "--bundle",
            b.path(),
            &id("sd"),
        ],
    );
    assert!(!o.status.success());
    assert!(err(&o).contains("cgroupfs"), "{}", err(&o));
    // Errors go to --log as runc writes them (json: level, msg, time).
    let log = env.dir.path().join("log.json");
    let o = sandbox(
        &env,
        &[
            "--log",
            log.to_str().unwrap(),
            "--log-format",
            "json",
            "state",
            "nonexistent",
        ],
    );
    assert!(!o.status.success());
    let line: Value = serde_json::from_str(
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(line["level"], "error");
    assert!(
        line["msg"].as_str().unwrap().contains("does not exist"),
        "{line}"
    );
    assert!(line["time"].as_str().unwrap().ends_with('Z'));
    env.assert_clean();
}

#[test]
fn oci_process_fields_are_honoured() {
    let env = Env::new();
    let _cleanup = Cleanup(&env);
    let b = Bundle::new(
        &env,
        "proc",
        "id -u; id -g; id -G; umask; grep -E '^Cap(Eff|Prm|Bnd|Amb)' /proc/self/status; \
         grep 'Max open files' /proc/self/limits; cat /proc/self/oom_score_adj; hostname; \
         echo $FOO; pwd; cat /proc/self/status | grep NoNewPrivs",
    );
    b.edit(|c| {
        let p = &mut c["process"];
        p["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": [10, 20], "umask": 63});
        p["env"].as_array_mut().unwrap().push(json!("FOO=bar"));
        p["cwd"] = json!("/tmp");
        p["capabilities"] = json!({
            "bounding": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
            "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"],
            "inheritable": ["CAP_KILL"], "ambient": ["CAP_KILL"]
        });
        p["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 1024}]);
        p["oomScoreAdj"] = json!(500);
        p["noNewPrivileges"] = json!(true);
        c["hostname"] = json!("oci-host");
    });
    let o = run_bundle(&env, &b, &id("proc"));
    assert!(o.status.success(), "{}", err(&o));
    let text = out(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        &lines[..4],
        ["1000", "1000", "1000 10 20", "0077"],
        "{text}"
    );
    // CAP_KILL is bit 5: 0x20; the bounding set also holds NET_BIND_SERVICE (bit 10).
    assert!(text.contains("CapPrm:\t0000000000000020"), "{text}");
    assert!(text.contains("CapEff:\t0000000000000020"), "{text}");
    assert!(text.contains("CapBnd:\t0000000000000420"), "{text}");
    assert!(text.contains("CapAmb:\t0000000000000020"), "{text}");
    assert!(
        text.contains("Max open files            512                  1024"),
        "{text}"
    );
    assert!(text.contains("\n500\noci-host\nbar\n/tmp\n"), "{text}");
    assert!(text.contains("NoNewPrivs:\t1"), "{text}");
    env.assert_clean();
}

#[test]
fn oci_namespaces_joined_by_path_and_mounts() {
    let env = Env::new();
    let _cleanup = Cleanup(&env);
    // Container a holds a network namespace; b joins it by path.
    let a = id("netholder");
    let ba = Bundle::new(&env, "netholder", "sleep 1000");
    create_and_start(&env, &ba, &a);
    let apid = state(&env, &a)["pid"].as_i64().unwrap();
    let want = std::fs::read_link(format!("/proc/{apid}/ns/net")).unwrap();
    let bb = Bundle::new(
        &env,
        "joiner",
        "readlink /proc/self/ns/net; echo $$; grep -c . /proc/mounts >/dev/null; \
         mount | grep ' /scratch ' ; touch /ro/x 2>&1 | grep -o 'Read-only'; cat /proc/kcore | wc -c",
    );
    bb.edit(|c| {
        for ns in c["linux"]["namespaces"].as_array_mut().unwrap() {
            if ns["type"] == "network" {
                ns["path"] = json!(format!("/proc/{apid}/ns/net"));
            }
        }
        let m = c["mounts"].as_array_mut().unwrap();
        m.push(
            json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
                      "options": ["nosuid", "nodev", "size=1m", "mode=700"]}),
        );
        m.push(
            json!({"destination": "/ro", "type": "bind", "source": env.dir.path(),
                      "options": ["rbind", "ro", "rprivate"]}),
        );
    });
    let o = run_bundle(&env, &bb, &id("joiner"));
    assert!(o.status.success(), "{}", err(&o));
    let text = out(&o);
    let mut lines = text.lines();
    assert_eq!(lines.next().unwrap(), want.to_str().unwrap(), "{text}");
    assert_eq!(
        lines.next().unwrap(),
        "1",
        "not pid 1 in its own pid namespace: {text}"
    );
    assert!(
        text.contains("tmpfs on /scratch type tmpfs (rw,nosuid,nodev,relatime,size=1024k,mode=700"),
        "{text}"
    );
    assert!(text.contains("Read-only"), "{text}");
    // /proc/kcore is masked (a /dev/null bind): nothing to read.
    assert!(text.ends_with("0\n"), "{text}");
    ok(&env, &["delete", "--force", &a]);
    env.assert_clean();
}

#[test]
fn oci_hooks_run_in_order_with_the_state_on_stdin() {
    let env = Env::new();
    let _cleanup = Cleanup(&env);
    let log = env.dir.path().join("hooks.log");
    // Each hook appends its name, the status and pid it read, and (for the hooks
    // in the container's namespaces) its hostname, to `path`.
    let hook = |name: &str, path: &str| {
        json!({"path": "/bin/sh", "args": ["sh", "-c",
            format!("read s; st=$(echo \"$s\" | grep -o '\"status\":\"[a-z]*\"'); \
                     pid=$(echo \"$s\" | grep -o '\"pid\":[0-9]*'); \
                     echo \"{name} $st $pid $(hostname)\" >> {path}")]})
    };
    let host_log = log.to_str().unwrap();
    let b = Bundle::new(&env, "hooks", "true");
    b.edit(|c| {
        c["hostname"] = json!("in-the-box");
        c["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/hooklog", "type": "bind", "source": env.dir.path(), "options": ["rbind", "rw"]
        }));
        c["hooks"] = json!({
            "createRuntime": [hook("createRuntime", host_log)],
            "prestart": [hook("prestart", host_log)],
            "createContainer": [hook("createContainer", host_log)],
            "startContainer": [hook("startContainer", "/hooklog/hooks.log")],
            "poststart": [hook("poststart", host_log)],
            "poststop": [hook("poststop", host_log)],
        });
    });
    let i = id("hooks");
    ok(&env, &["create", "--bundle", b.path(), &i]);
    let pid = state(&env, &i)["pid"].as_i64().unwrap();
    ok(&env, &["start", &i]);
    wait_status(&env, &i, "stopped");
    ok(&env, &["delete", &i]);
    let text = std::fs::read_to_string(&log).unwrap();
    let host = common::hostname();
    let want = format!(
        "prestart \"status\":\"creating\" \"pid\":{pid} {host}\n\
         createRuntime \"status\":\"creating\" \"pid\":{pid} {host}\n\
         createContainer \"status\":\"creating\" \"pid\":{pid} in-the-box\n\
         startContainer \"status\":\"created\" \"pid\":{pid} in-the-box\n\
         poststart \"status\":\"running\" \"pid\":{pid} {host}\n\
         poststop \"status\":\"stopped\" \"pid\":0 {host}\n"
    );
    assert_eq!(text, want, "{text}");
    // A failing hook of each create-time kind fails create and leaves nothing.
    for kind in ["prestart", "createRuntime", "createContainer"] {
        b.edit(|c| c["hooks"] = json!({kind: [{"path": "/bin/false"}]}));
        let o = sandbox(&env, &["create", "--bundle", b.path(), &id("hookfail")]);
        assert!(!o.status.success(), "{kind}: a failing hook passed");
        assert!(
            err(&o).contains(kind) || err(&o).contains("pre_pivot"),
            "{kind}: {}",
            err(&o)
        );
        assert!(oci_cgroups(&id("hookfail")).is_empty());
        env.assert_clean();
    }
}

/// Receives one fd over a unix socket (the console master).
fn recv_fd(sock: &std::os::unix::net::UnixStream) -> OwnedFd {
    use std::os::fd::AsRawFd;
    let mut data = [0u8; 64];
    let mut cbuf = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: a zeroed msghdr pointing at live buffers; CMSG_* stay within cbuf.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
        assert!(libc::recvmsg(sock.as_raw_fd(), &mut msg, 0) > 0);
        let c = libc::CMSG_FIRSTHDR(&msg);
        assert!(!c.is_null());
        assert_eq!((*c).cmsg_type, libc::SCM_RIGHTS);
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
        OwnedFd::from_raw_fd(fd)
    }
}

#[test]
fn oci_a_terminal_goes_to_the_console_socket() {
    let env = Env::new();
    let _cleanup = Cleanup(&env);
    let sock_path = env.dir.path().join("console.sock");
    let listener = UnixListener::bind(&sock_path).unwrap();
    let b = Bundle::new(&env, "tty", "");
    b.edit(|c| {
        c["process"]["terminal"] = json!(true);
        c["process"]["args"] = json!(["sh"]);
        c["process"]["consoleSize"] = json!({"height": 30, "width": 100});
    });
    let i = id("tty");
    let o = sandbox(
        &env,
        &[
            "create",
            "--bundle",
            b.path(),
            "--console-socket",
            sock_path.to_str().unwrap(),
            &i,
        ],
    );
    assert!(o.status.success(), "{}", err(&o));
    let (conn, _) = listener.accept().unwrap();
    let master = std::fs::File::from(recv_fd(&conn));
    ok(&env, &["start", &i]);
    let mut w = master.try_clone().unwrap();
    w.write_all(b"test -t 0 && test -t 1 && echo is-a-tty; stty size; echo $((6*7)); exit\n")
        .unwrap();
    let mut text = String::new();
    let mut r = master;
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    while !text.contains("\n42") && start.elapsed() < Duration::from_secs(10) {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    assert!(text.contains("\nis-a-tty"), "{text}");
    assert!(text.contains("30 100"), "{text}");
    assert!(text.contains("\n42"), "{text}");
    wait_status(&env, &i, "stopped");
    ok(&env, &["delete", &i]);
    env.assert_clean();
}

#[test]
fn oci_exec_pause_resume_update_and_events() {
    let env = Env::new();
    let _cleanup = Cleanup(&env);
    let b = Bundle::new(&env, "exec", "sleep 1000");
    b.edit(|c| c["linux"]["resources"] = json!({"cpu": {"quota": 50000, "period": 100000}}));
    let i = id("exec");
    create_and_start(&env, &b, &i);
    // exec with arguments: in the container's pid namespace, with its hostname.
    let text = ok(
        &env,
        &["exec", &i, "sh", "-c", "echo $$ $(hostname); exit 0"],
    );
    let (pid, host) = text.trim().split_once(' ').unwrap();
    assert_ne!(pid, "1");
    assert!(
        pid.parse::<i32>().unwrap() < 100,
        "not in the container's pid namespace: {text}"
    );
    assert_eq!(host, "sandbox");
    // exec --process JSON, detached, with a pid file.
    let pj = env.dir.path().join("process.json");
    let marker = "/tmp/exec-ran";
    std::fs::write(
        &pj,
        json!({"args": ["sh", "-c", format!("echo yes > {marker}")], "cwd": "/", "user": {"uid": 0, "gid": 0},
               "env": ["PATH=/bin"]}).to_string(),
    )
    .unwrap();
    let pf = env.dir.path().join("exec.pid");
    ok(
        &env,
        &[
            "exec",
            "--process",
            pj.to_str().unwrap(),
            "--detach",
            "--pid-file",
            pf.to_str().unwrap(),
            &i,
        ],
    );
    assert!(std::fs::read_to_string(&pf).unwrap().parse::<i32>().is_ok());
    let start = Instant::now();
    while ok(&env, &["exec", &i, "cat", marker]).trim() != "yes" {
        assert!(start.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(20));
    }
    // exit status of exec.
    let o = sandbox(&env, &["exec", &i, "sh", "-c", "exit 5"]);
    assert_eq!(o.status.code(), Some(5));
    // pause / resume.
    ok(&env, &["pause", &i]);
    assert_eq!(state(&env, &i)["status"], "paused");
    ok(&env, &["resume", &i]);
    assert_eq!(state(&env, &i)["status"], "running");
    // update: the cpu quota changes in place.
    let res = env.dir.path().join("res.json");
    std::fs::write(
        &res,
        json!({"cpu": {"quota": 20000, "period": 100000}}).to_string(),
    )
    .unwrap();
    ok(&env, &["update", "--resources", res.to_str().unwrap(), &i]);
    let cg = oci_cgroups(&i);
    let v1 = cg.iter().find(|p| p.join("cpu.cfs_quota_us").exists());
    let v2 = cg.iter().find(|p| p.join("cpu.max").exists());
    match (v1, v2) {
        (Some(p), _) => assert_eq!(
            std::fs::read_to_string(p.join("cpu.cfs_quota_us"))
                .unwrap()
                .trim(),
            "20000"
        ),
        (None, Some(p)) => assert_eq!(
            std::fs::read_to_string(p.join("cpu.max")).unwrap().trim(),
            "20000 100000"
        ),
        _ => panic!("no cpu controller for {i}: {cg:?}"),
    }
    // events --stats: one object with the cpu throttling counters.
    let ev: Value = serde_json::from_str(&ok(&env, &["events", "--stats", &i])).unwrap();
    assert_eq!(ev["type"], "stats");
    assert!(ev["data"]["cpu"]["throttling"]["periods"].is_u64(), "{ev}");
    assert!(ev["data"]["pids"]["current"].as_u64().unwrap() >= 1, "{ev}");
    ok(&env, &["delete", "--force", &i]);
    env.assert_clean();
}

#[test]
fn oci_fifty_concurrent_creates_all_succeed() {
    let env = Env::new();
    let _cleanup = Cleanup(&env);
    let b = Bundle::new(&env, "many", "true");
    let ids: Vec<String> = (0..50).map(|n| id(&format!("many{n}"))).collect();
    let children: Vec<_> = ids
        .iter()
        .map(|i| {
            env.cmd()
                .args(["create", "--bundle", b.path(), i])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, mut c) in ids.iter().zip(children) {
        assert!(c.wait().unwrap().success(), "create {i}");
    }
    let listed = ok(&env, &["list", "-q"]);
    for i in &ids {
        assert!(listed.lines().any(|l| l == i), "{i} not listed");
        assert_eq!(state(&env, i)["status"], "created");
    }
    for i in &ids {
        ok(&env, &["delete", i]);
    }
    env.assert_clean();
}

#[test]
fn oci_features_and_spec() {
    let env = Env::new();
    let _cleanup = Cleanup(&env);
    let f: Value = serde_json::from_str(&ok(&env, &["features"])).unwrap();
    assert_eq!(f["ociVersionMin"], "1.0.0");
    assert!(
        f["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .contains(&json!("pid"))
    );
    assert!(
        f["linux"]["capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!("CAP_KILL"))
    );
    assert_eq!(f["linux"]["cgroup"]["systemd"], false);
    assert_eq!(f["hooks"].as_array().unwrap().len(), 6, "{}", f["hooks"]);
    assert!(
        f["mountOptions"]
            .as_array()
            .unwrap()
            .contains(&json!("ridmap"))
    );
    assert_eq!(f["linux"]["mountExtensions"]["idmap"]["enabled"], true);
    let dir = env.dir.path().join("spec");
    std::fs::create_dir(&dir).unwrap();
    ok(&env, &["spec", "--bundle", dir.to_str().unwrap()]);
    let c: Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(c["root"]["path"], "rootfs");
    assert_eq!(c["process"]["terminal"], true);
    // It does not replace a config.json.
    let o = sandbox(&env, &["spec", "--bundle", dir.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(err(&o).contains("exists already"), "{}", err(&o));
}

/// Whether this host is pure cgroup v2 (the VM lane).
fn pure_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// cgroup v2: an absolute cgroupsPath, `unified` keys at create and on update, the
/// freezer, a memory limit below usage refused on update, and the device program.
/// On a host whose container cgroups are v1 (hybrid), `unified` is refused clearly.
#[test]
fn oci_cgroup_v2_unified_freezer_devices_and_update() {
    let env = Env::new();
    let _cleanup = Cleanup(&env);
    let parent = format!("oci-v2-{}", std::process::id());
    let b = Bundle::new(
        &env,
        "v2",
        "mknod /tmp/kmsg c 1 11 && (echo x > /tmp/kmsg) 2>&1; head -c 100000 /dev/zero > /dev/null; sleep 1000",
    );
    b.edit(|c| {
        c["linux"]["cgroupsPath"] = json!(format!("/{parent}/c"));
        c["linux"]["resources"]["unified"] = json!({"memory.high": "50000000", "pids.max": "20"});
    });
    let i = id("v2");
    if !pure_v2() {
        let o = sandbox(&env, &["create", "--bundle", b.path(), &i]);
        assert!(!o.status.success(), "unified accepted on v1 hierarchies");
        assert!(err(&o).contains("cgroup v2"), "{}", err(&o));
        // Nothing half-made: not even the parent the cgroupsPath named.
        let left: Vec<_> = std::fs::read_dir("/sys/fs/cgroup")
            .unwrap()
            .flatten()
            .map(|h| h.path().join(&parent))
            .filter(|p| p.exists())
            .collect();
        assert!(
            left.is_empty(),
            "cgroups left by a refused create: {left:?}"
        );
        env.assert_clean();
        return;
    }
    let cg = PathBuf::from("/sys/fs/cgroup").join(&parent).join("c");
    ok(&env, &["create", "--bundle", b.path(), &i]);
    assert_eq!(
        std::fs::read_to_string(cg.join("memory.high"))
            .unwrap()
            .trim(),
        "49999872"
    );
    assert_eq!(
        std::fs::read_to_string(cg.join("pids.max")).unwrap().trim(),
        "20"
    );
    ok(&env, &["start", &i]);
    // The device program refuses a node outside the allow-list, even after mknod.
    let start = Instant::now();
    while !ok(&env, &["exec", &i, "cat", "/proc/1/cmdline"]).contains("sleep") {
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = sandbox(&env, &["exec", &i, "sh", "-c", "echo x > /tmp/kmsg"]);
    assert!(
        !o.status.success(),
        "a write to a made /dev/kmsg node worked"
    );
    assert!(
        err(&o).contains("ermission denied") || err(&o).contains("ot permitted"),
        "{}",
        err(&o)
    );
    // pause/resume through cgroup.freeze.
    ok(&env, &["pause", &i]);
    assert!(
        std::fs::read_to_string(cg.join("cgroup.events"))
            .unwrap()
            .contains("frozen 1")
    );
    assert_eq!(state(&env, &i)["status"], "paused");
    ok(&env, &["resume", &i]);
    assert!(
        std::fs::read_to_string(cg.join("cgroup.events"))
            .unwrap()
            .contains("frozen 0")
    );
    // update: unified keys again; a memory limit below current usage is refused.
    let res = env.dir.path().join("res.json");
    std::fs::write(
        &res,
        json!({"unified": {"memory.high": "60000000"}}).to_string(),
    )
    .unwrap();
    ok(&env, &["update", "--resources", res.to_str().unwrap(), &i]);
    assert_eq!(
        std::fs::read_to_string(cg.join("memory.high"))
            .unwrap()
            .trim(),
        "59998208"
    );
    std::fs::write(&res, json!({"memory": {"limit": 4096}}).to_string()).unwrap();
    let o = sandbox(&env, &["update", "--resources", res.to_str().unwrap(), &i]);
    assert!(!o.status.success(), "a limit below usage was applied");
    assert!(
        err(&o).contains("below the container's current usage"),
        "{}",
        err(&o)
    );
    assert_eq!(
        state(&env, &i)["status"],
        "running",
        "the refused update killed it"
    );
    ok(&env, &["delete", "--force", &i]);
    assert!(!cg.exists());
    let _ = std::fs::remove_dir(PathBuf::from("/sys/fs/cgroup").join(&parent));
    env.assert_clean();
}

/// `linux.sysctl` lands in the container's own network and IPC namespaces (the
/// host's values unchanged); `linux.devices` nodes are made with their mode and owner.
#[test]
fn oci_sysctls_and_devices() {
    let env = Env::new();
    let _cleanup = Cleanup(&env);
    let host_port =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap();
    let host_shm = std::fs::read_to_string("/proc/sys/kernel/shmmni").unwrap();
    let b = Bundle::new(
        &env,
        "sysctl",
        "cat /proc/sys/net/ipv4/ip_unprivileged_port_start /proc/sys/kernel/shmmni; \
         stat -c '%a %u %g %t %T' /dev/my/null; echo hi > /dev/my/null && echo wrote",
    );
    b.edit(|c| {
        c["linux"]["sysctl"] =
            json!({"net.ipv4.ip_unprivileged_port_start": "1000", "kernel.shmmni": "1234"});
        c["linux"]["devices"] = json!([{"path": "/dev/my/null", "type": "c", "major": 1, "minor": 3,
                                        "fileMode": 432, "uid": 5, "gid": 6}]);
    });
    let o = run_bundle(&env, &b, &id("sysctl"));
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o), "1000\n1234\n660 5 6 1 3\nwrote\n", "{}", err(&o));
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap(),
        host_port
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/shmmni").unwrap(),
        host_shm
    );
    env.assert_clean();
}

/// Mount propagation (a `rslave` bind receives a mount made later on the host),
/// `linux.personality` and `linux.timeOffsets` in a time namespace.
#[test]
fn oci_propagation_personality_and_time_offsets() {
    let env = Env::new();
    let _cleanup = Cleanup(&env);
    // A shared mount of the test's own, so that propagation has a peer group.
    let src = env.dir.path().join("shared");
    std::fs::create_dir(&src).unwrap();
    let sh = |c: &str| {
        let o = std::process::Command::new("sh")
            .args(["-c", c])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{c}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    sh(&format!(
        "mount -t tmpfs sbx-src {0} && mount --make-shared {0} && mkdir {0}/sub",
        src.display()
    ));
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            // Submount first (busybox's umount has no -R).
            for p in [self.0.join("sub"), self.0.clone()] {
                let _ = std::process::Command::new("umount").arg(&p).status();
            }
        }
    }
    let u = Unmount(src.clone());
    let b = Bundle::new(
        &env,
        "prop",
        "uname -m; cut -d. -f1 /proc/uptime; \
         i=0; while [ $i -lt 100 ] && ! grep -q ' /data/sub ' /proc/mounts; do sleep 0.05; i=$((i+1)); done; \
         grep -c ' /data/sub ' /proc/mounts",
    );
    b.edit(|c| {
        c["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/data", "type": "bind", "source": src, "options": ["rbind", "rslave"]
        }));
        c["linux"]["personality"] = json!({"domain": "LINUX32"});
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "time"}));
        c["linux"]["timeOffsets"] = json!({"boottime": {"secs": 400_000_000, "nanosecs": 0}});
    });
    let child = env
        .cmd()
        .args(["run", "--bundle", b.path(), &id("prop")])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    sh(&format!("mount -t tmpfs sbx-sub {}/sub", src.display()));
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let text = out(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.first(), Some(&"i686"), "personality LINUX32: {text}");
    let uptime: u64 = lines.get(1).unwrap().parse().unwrap();
    assert!(uptime >= 400_000_000, "boottime offset not applied: {text}");
    assert_eq!(
        lines.get(2),
        Some(&"1"),
        "the host's later mount did not propagate: {text}"
    );
    drop(u);
    env.assert_clean();
}

/// `delete --force` ends a container even when part of it sits frozen in a
/// sub-cgroup (runc cannot kill such a container; crun loops on EBUSY): bounded,
/// and nothing is left.
#[test]
fn oci_delete_force_ends_a_container_with_a_frozen_sub_cgroup() {
    let env = Env::new();
    let _cleanup = Cleanup(&env);
    let b = Bundle::new(&env, "frozen", "sleep 1000 & sleep 1000 & wait");
    let i = id("frozen");
    create_and_start(&env, &b, &i);
    let start = Instant::now();
    let pids: Vec<i64> = loop {
        let v: Vec<i64> = serde_json::from_str(&ok(&env, &["ps", "--format", "json", &i])).unwrap();
        if v.len() >= 3 {
            break v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "children never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    // A sub-cgroup holding one sleeper, frozen, on the hierarchy that freezes.
    let dirs = oci_cgroups(&i);
    let freezer = dirs
        .iter()
        .find(|d| d.join("freezer.state").exists() || d.join("cgroup.freeze").exists())
        .expect("a freezing hierarchy")
        .clone();
    let sub = freezer.join("stuck");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("cgroup.procs"), pids[1].to_string()).unwrap();
    if sub.join("cgroup.freeze").exists() {
        std::fs::write(sub.join("cgroup.freeze"), "1").unwrap();
    } else {
        std::fs::write(sub.join("freezer.state"), "FROZEN").unwrap();
    }
    let t = Instant::now();
    let o = sandbox(&env, &["delete", "--force", &i]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "delete took {:?}",
        t.elapsed()
    );
    for p in &pids {
        assert!(
            !Path::new(&format!("/proc/{p}/exe")).exists(),
            "pid {p} survived"
        );
    }
    assert!(!sub.exists() && oci_cgroups(&i).is_empty(), "cgroups left");
    env.assert_clean();
}

/// A cgroupsPath naming a cgroup that exists (here one of the test's own holding a
/// process) is refused, and neither the cgroup nor its process is touched.
#[test]
fn oci_an_existing_cgroup_is_never_taken_over() {
    let env = Env::new();
    let _cleanup = Cleanup(&env);
    let name = format!("oci-taken-{}", std::process::id());
    let h = cgroupkit::Hierarchy::detect().unwrap();
    let path = cgroupkit::CgroupPath::new(&name).unwrap();
    let cg = cgroupkit::Cgroup::create(&h, &path, &[cgroupkit::Controller::Pids]).unwrap();
    let mut other = std::process::Command::new("sleep")
        .arg("100")
        .spawn()
        .unwrap();
    cg.add_process(cgroupkit::Pid::new(i64::from(other.id())).unwrap())
        .unwrap();
    let b = Bundle::new(&env, "taken", "true");
    b.edit(|c| c["linux"]["cgroupsPath"] = json!(format!("/{name}")));
    let o = sandbox(&env, &["create", "--bundle", b.path(), &id("taken")]);
    assert!(!o.status.success(), "an existing cgroup was taken over");
    assert!(err(&o).contains("exists already"), "{}", err(&o));
    assert!(
        other.try_wait().unwrap().is_none(),
        "the cgroup's process was killed"
    );
    assert_eq!(cg.procs().unwrap().len(), 1, "the cgroup was changed");
    let _ = other.kill();
    let _ = other.wait();
    cg.delete().unwrap();
    env.assert_clean();
}

/// `blockIO` throttles land in the cgroup's files for a real disk of this host, and
/// `hugepageLimits` too where the host has the hugetlb controller (else the error
/// names it).
#[test]
fn oci_block_io_and_hugepage_limits() {
    let env = Env::new();
    let _cleanup = Cleanup(&env);
    // A whole disk of this host (not loop, ram or zram).
    let disk = std::fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !["loop", "ram", "zram"].iter().any(|p| n.starts_with(p)))
        .find_map(|n| std::fs::read_to_string(format!("/sys/block/{n}/dev")).ok())
        .expect("a block device")
        .trim()
        .to_string();
    let (maj, min) = disk.split_once(':').unwrap();
    let (maj, min): (i64, i64) = (maj.parse().unwrap(), min.parse().unwrap());
    let b = Bundle::new(&env, "blkio", "sleep 1000");
    b.edit(|c| {
        c["linux"]["resources"]["blockIO"] = json!({
            "throttleReadBpsDevice": [{"major": maj, "minor": min, "rate": 1048576}],
            "throttleWriteIOPSDevice": [{"major": maj, "minor": min, "rate": 100}]
        });
    });
    let i = id("blkio");
    ok(&env, &["create", "--bundle", b.path(), &i]);
    let dirs = oci_cgroups(&i);
    let v1 = dirs
        .iter()
        .find(|d| d.join("blkio.throttle.read_bps_device").exists());
    let v2 = dirs.iter().find(|d| d.join("io.max").exists());
    match (v1, v2) {
        (Some(d), _) => {
            let r = std::fs::read_to_string(d.join("blkio.throttle.read_bps_device")).unwrap();
            assert!(r.contains(&format!("{disk} 1048576")), "{r}");
            let w = std::fs::read_to_string(d.join("blkio.throttle.write_iops_device")).unwrap();
            assert!(w.contains(&format!("{disk} 100")), "{w}");
        }
        (None, Some(d)) => {
            let m = std::fs::read_to_string(d.join("io.max")).unwrap();
            assert!(
                m.contains(&format!("{disk} rbps=1048576")) && m.contains("wiops=100"),
                "{m}"
            );
        }
        _ => panic!("no io controller for {i}: {dirs:?}"),
    }
    ok(&env, &["delete", &i]);

    let hb = Bundle::new(&env, "huge", "true");
    hb.edit(|c| {
        c["linux"]["resources"]["hugepageLimits"] = json!([{"pageSize": "2MB", "limit": 4194304}]);
    });
    let hi = id("huge");
    let o = sandbox(&env, &["create", "--bundle", hb.path(), &hi]);
    if o.status.success() {
        let dirs = oci_cgroups(&hi);
        let v = dirs
            .iter()
            .find_map(|d| {
                std::fs::read_to_string(d.join("hugetlb.2MB.limit_in_bytes"))
                    .or_else(|_| std::fs::read_to_string(d.join("hugetlb.2MB.max")))
                    .ok()
            })
            .expect("a hugetlb file");
        assert_eq!(v.trim(), "4194304");
        ok(&env, &["delete", &hi]);
    } else {
        assert!(err(&o).contains("hugetlb"), "{}", err(&o));
    }
    env.assert_clean();
}

/// memory.swappiness and disableOOMKiller: written on a v1 memory hierarchy, refused
/// naming the file on cgroup v2 (which has neither).
#[test]
fn oci_swappiness_and_oom_killer() {
    let env = Env::new();
    let _cleanup = Cleanup(&env);
    let b = Bundle::new(&env, "swap", "true");
    b.edit(|c| {
        c["linux"]["resources"]["memory"] = json!({"swappiness": 10, "disableOOMKiller": true});
    });
    let i = id("swap");
    let o = sandbox(&env, &["create", "--bundle", b.path(), &i]);
    if pure_v2() {
        assert!(!o.status.success(), "accepted on cgroup v2");
        assert!(err(&o).contains("swappiness"), "{}", err(&o));
    } else {
        assert!(o.status.success(), "{}", err(&o));
        let d = oci_cgroups(&i)
            .into_iter()
            .find(|d| d.join("memory.swappiness").exists())
            .expect("a v1 memory cgroup");
        assert_eq!(
            std::fs::read_to_string(d.join("memory.swappiness"))
                .unwrap()
                .trim(),
            "10"
        );
        let oc = std::fs::read_to_string(d.join("memory.oom_control")).unwrap();
        assert!(oc.contains("oom_kill_disable 1"), "{oc}");
        ok(&env, &["delete", &i]);
    }
    env.assert_clean();
}

/// `rro`: an rbind read-only all the way down (a submount of the source too).
#[test]
fn oci_rro_makes_submounts_read_only() {
    let env = Env::new();
    let _cleanup = Cleanup(&env);
    let src = env.dir.path().join("rro");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    let sh = |c: &str| {
        let o = std::process::Command::new("sh")
            .args(["-c", c])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{c}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    sh(&format!("mount -t tmpfs sbx-rro {}/sub", src.display()));
    let b = Bundle::new(
        &env,
        "rro",
        "touch /data/x 2>/dev/null && echo top-writable; touch /data/sub/x 2>/dev/null && echo sub-writable; echo done",
    );
    b.edit(|c| {
        c["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/data", "type": "bind", "source": src, "options": ["rbind", "rro"]
        }));
    });
    let o = run_bundle(&env, &b, &id("rro"));
    sh(&format!("umount {}/sub", src.display()));
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o), "done\n", "{}", err(&o));
    env.assert_clean();
}

/// Real-time CPU bandwidth: written on a v1 cpu hierarchy that has the files (with
/// runtime 0, which every parent can give), refused with the reason elsewhere.
#[test]
fn oci_realtime_cpu() {
    let env = Env::new();
    let _cleanup = Cleanup(&env);
    let b = Bundle::new(&env, "rt", "true");
    b.edit(|c| {
        c["linux"]["resources"]["cpu"] = json!({"realtimeRuntime": 0, "realtimePeriod": 500000});
    });
    let i = id("rt");
    let o = sandbox(&env, &["create", "--bundle", b.path(), &i]);
    let v1_rt = Path::new("/sys/fs/cgroup/cpu/cpu.rt_runtime_us").exists();
    if v1_rt {
        assert!(o.status.success(), "{}", err(&o));
        let d = oci_cgroups(&i)
            .into_iter()
            .find(|d| d.join("cpu.rt_period_us").exists())
            .expect("a v1 cpu cgroup");
        assert_eq!(
            std::fs::read_to_string(d.join("cpu.rt_period_us"))
                .unwrap()
                .trim(),
            "500000"
        );
        assert_eq!(
            std::fs::read_to_string(d.join("cpu.rt_runtime_us"))
                .unwrap()
                .trim(),
            "0"
        );
        ok(&env, &["delete", &i]);
    } else {
        assert!(
            !o.status.success(),
            "accepted without real-time group scheduling"
        );
        assert!(
            err(&o).contains("realtime") || err(&o).contains("rt_"),
            "{}",
            err(&o)
        );
    }
    env.assert_clean();
}

/// `exec`'s own flags: working directory, extra environment, user; and `list --format
/// json`.
#[test]
fn oci_exec_flags_and_list_json() {
    let env = Env::new();
    let _cleanup = Cleanup(&env);
    let b = Bundle::new(&env, "flags", "sleep 1000");
    let i = id("flags");
    create_and_start(&env, &b, &i);
    let text = ok(
        &env,
        &[
            "exec",
            "--cwd",
            "/tmp",
            "--env",
            "FOO=bar",
            "--user",
            "1000:1001",
            &i,
            "sh",
            "-c",
            "pwd; echo $FOO; id -u; id -g",
        ],
    );
    assert_eq!(text, "/tmp\nbar\n1000\n1001\n");
    let all: Vec<Value> = serde_json::from_str(&ok(&env, &["list", "--format", "json"])).unwrap();
    assert!(
        all.iter().any(|c| c["id"] == i && c["status"] == "running"),
        "{all:?}"
    );
    ok(&env, &["delete", "--force", &i]);
    env.assert_clean();
}

/// A FUSE file system of the test's own whose server answers INIT and GETATTR but
/// holds a LOOKUP of the name `hang` unanswered: the process that looks it up waits
/// in the kernel, and once SIGKILLed waits uninterruptibly (state D) until the
/// server answers or the connection goes, which dropping this does (the server
/// thread has stopped reading; closing the last /dev/fuse fd aborts the connection).
struct HangingFuse {
    dir: PathBuf,
    dev: Option<OwnedFd>,
    held: std::sync::mpsc::Receiver<()>,
}

impl HangingFuse {
    /// None where the kernel has no FUSE (the test then cannot make a D state).
    fn mount(dir: PathBuf) -> Option<HangingFuse> {
        let fs = std::fs::read_to_string("/proc/filesystems").unwrap();
        if !fs
            .lines()
            .any(|l| l.split_whitespace().last() == Some("fuse"))
        {
            return None;
        }
        std::fs::create_dir_all(&dir).unwrap();
        let dev: OwnedFd = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .expect("open /dev/fuse")
            .into();
        let opts = format!(
            "fd={},rootmode=40000,user_id=0,group_id=0",
            std::os::fd::AsRawFd::as_raw_fd(&dev)
        );
        nix::mount::mount(
            Some("sandbox-test-fuse"),
            &dir,
            Some("fuse"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            Some(opts.as_str()),
        )
        .expect("mount fuse");
        let raw = std::os::fd::AsRawFd::as_raw_fd(&dev);
        let (tx, held) = std::sync::mpsc::channel();
        std::thread::spawn(move || Self::serve(raw, tx));
        Some(HangingFuse {
            dir,
            dev: Some(dev),
            held,
        })
    }

    /// Answers requests until the LOOKUP of `hang`, which it never answers, then
    /// stops reading (so it holds no reference the abort would wait for).
    fn serve(fd: i32, held: std::sync::mpsc::Sender<()>) {
        const LOOKUP: u32 = 1;
        const FORGET: u32 = 2;
        const GETATTR: u32 = 3;
        const INIT: u32 = 26;
        const INTERRUPT: u32 = 36;
        const BATCH_FORGET: u32 = 42;
        let mut buf = vec![0u8; 1 << 18];
        let u32_at = |b: &[u8], o: usize| u32::from_ne_bytes(b[o..o + 4].try_into().unwrap());
        loop {
            // SAFETY: buf is a valid writable buffer of its length.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return;
            }
            let req = &buf[..n as usize];
            let opcode = u32_at(req, 4);
            let unique = u64::from_ne_bytes(req[8..16].try_into().unwrap());
            let body = &req[40..];
            let mut payload: Vec<u8> = Vec::new();
            let mut error: i32 = 0;
            match opcode {
                FORGET | BATCH_FORGET | INTERRUPT => continue,
                INIT => {
                    // fuse_init_out: major, minor, max_readahead, flags,
                    // max_background, congestion_threshold (u16s), max_write,
                    // time_gran, then zeros to 64 bytes.
                    for v in [7u32, 31, u32_at(body, 8), 0] {
                        payload.extend(v.to_ne_bytes());
                    }
                    payload.extend([0u8; 4]);
                    payload.extend(4096u32.to_ne_bytes());
                    payload.extend(1u32.to_ne_bytes());
                    payload.resize(64, 0);
                }
                GETATTR => {
                    // fuse_attr_out: attr_valid (u64), attr_valid_nsec, dummy, then
                    // fuse_attr: ino, size, blocks, atime, mtime, ctime (u64s),
                    // atimensec, mtimensec, ctimensec, mode, nlink, uid, gid, rdev,
                    // blksize, flags (u32s).
                    payload.extend(3600u64.to_ne_bytes());
                    payload.extend([0u8; 8]);
                    payload.extend(1u64.to_ne_bytes());
                    payload.extend([0u8; 40]);
                    payload.extend([0u8; 12]);
                    for v in [0o40755u32, 2, 0, 0, 0, 4096, 0] {
                        payload.extend(v.to_ne_bytes());
                    }
                }
                LOOKUP if body.starts_with(b"hang\0") => {
                    let _ = held.send(());
                    return;
                }
                LOOKUP => error = -libc::ENOENT,
                _ => error = -libc::ENOSYS,
            }
            let mut out = Vec::with_capacity(16 + payload.len());
            out.extend(((16 + payload.len()) as u32).to_ne_bytes());
            out.extend(error.to_ne_bytes());
            out.extend(unique.to_ne_bytes());
            out.extend(&payload);
            // SAFETY: out is a valid buffer of its length.
            unsafe { libc::write(fd, out.as_ptr().cast(), out.len()) };
        }
    }

    /// Aborts the connection: the held request fails and its process can die.
    fn release(&mut self) {
        self.dev.take();
    }
}

impl Drop for HangingFuse {
    fn drop(&mut self) {
        self.release();
        let _ = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn proc_state(pid: i64) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// A process stuck in D state (SIGKILLed while a FUSE request of the test's own
/// goes unanswered): `kill --all` and `delete --force` return within a bound, fail
/// naming the process and its state, and keep the container's state; once the
/// process can die, `delete --force` removes everything.
#[test]
fn oci_kill_and_delete_of_a_process_in_d_state_are_bounded_and_name_it() {
    let env = Env::new();
    let _cleanup = Cleanup(&env);
    let Some(mut fuse) = HangingFuse::mount(env.dir.path().join("fuse")) else {
        // No FUSE here: no way to make a process that SIGKILL cannot end. Say so
        // loudly rather than pass silently.
        panic!("this kernel has no FUSE (fuse in /proc/filesystems): cannot make a D state");
    };
    let b = Bundle::new(&env, "dstate", "exec cat /f/hang");
    let fuse_dir = fuse.dir.clone();
    b.edit(|c| {
        c["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/f", "type": "bind",
            "source": fuse_dir, "options": ["bind"]
        }));
    });
    let i = id("dstate");
    create_and_start(&env, &b, &i);
    fuse.held
        .recv_timeout(Duration::from_secs(10))
        .expect("the container never looked up /f/hang");
    let pid = state(&env, &i)["pid"].as_i64().unwrap();
    ok(&env, &["kill", &i, "KILL"]);
    let start = Instant::now();
    while proc_state(pid) != Some('D') {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "pid {pid} never reached D state: {:?}",
            proc_state(pid)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    for args in [
        vec!["kill", "--all", &i, "KILL"],
        vec!["delete", "--force", &i],
    ] {
        let t = Instant::now();
        let o = sandbox(&env, &args);
        assert!(
            !o.status.success(),
            "{args:?} succeeded with pid {pid} stuck"
        );
        let e = err(&o);
        assert!(
            e.contains(&format!("pid {pid} (")) && e.contains("in state D"),
            "{args:?}: the error does not name the stuck process: {e}"
        );
        // Bounded: the cgroupkit settle timeout (5 s), not forever.
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{args:?} took {:?}",
            t.elapsed()
        );
    }
    // The state is kept for a later delete.
    assert_eq!(state(&env, &i)["pid"], pid);
    assert!(!oci_cgroups(&i).is_empty());
    fuse.release();
    ok(&env, &["delete", "--force", &i]);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists() || proc_state(pid) == Some('Z'),
        "pid {pid} survived"
    );
    assert!(oci_cgroups(&i).is_empty(), "cgroups left");
    drop(fuse);
    env.assert_clean();
}

/// Each container joins a session keyring of its own, `_ses.ID` (keys are not
/// namespaced: sharing the runtime's would hand the host's keys to it), and so
/// does a process exec'd into it; `--no-new-keyring` keeps the caller's.
/// `--no-pivot` changes the root with MS_MOVE and chroot instead of pivot_root:
/// seen from inside both look alike, so strace tells which system calls ran.
#[test]
#[cfg_attr(vm_lane, ignore = "strace is a host-lane tool")]
fn oci_session_keyring_and_no_pivot() {
    let env = Env::new();
    let _cleanup = Cleanup(&env);
    let b = Bundle::new(&env, "keys", "grep -o '_ses\\.[a-z0-9-]*' /proc/keys; ls /");
    b.edit(|c| {
        let masked = c["linux"]["maskedPaths"].as_array_mut().unwrap();
        masked.retain(|p| p != "/proc/keys");
    });
    // `sandbox run --bundle ARGS ID` under strace: its output and the root-changing
    // system calls made.
    let run = |args: &[&str], id: &str| {
        let trace = env.dir.path().join(format!("trace-{id}"));
        let o = std::process::Command::new("strace")
            .args(["-f", "-qq", "-e", "trace=pivot_root,chroot", "-o"])
            .arg(&trace)
            .arg(env!("CARGO_BIN_EXE_sandbox"))
            .arg("--root")
            .arg(&env.state)
            .args(["run", "--bundle", b.path()])
            .args(args)
            .arg(id)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("strace (cargo xtask test installs it)");
        assert!(o.status.success(), "{args:?}: {}", err(&o));
        let calls = std::fs::read_to_string(&trace).unwrap();
        let names = |c: &str| {
            calls
                .lines()
                .filter(|l| l.contains(&format!("{c}(")))
                .count()
        };
        (out(&o), names("pivot_root"), names("chroot"))
    };
    let own = id("keys");
    let (text, pivots, chroots) = run(&[], &own);
    assert!(
        text.contains(&format!("_ses.{own}")),
        "no own keyring:\n{text}"
    );
    assert!(text.contains("bin"), "{text}");
    assert_eq!(
        (pivots, chroots),
        (1, 0),
        "the default changes the root with pivot_root"
    );
    let shared = id("keys-shared");
    let (text, pivots, chroots) = run(&["--no-new-keyring", "--no-pivot"], &shared);
    assert!(
        !text.contains(&format!("_ses.{shared}")),
        "a keyring was made:\n{text}"
    );
    assert!(
        text.contains("bin"),
        "the container's root is not shown:\n{text}"
    );
    assert_eq!((pivots, chroots), (0, 1), "--no-pivot used pivot_root");
    // exec joins the container's keyring too.
    let held = id("keys-exec");
    let b2 = Bundle::new(&env, "keys-exec", "sleep 1000");
    b2.edit(|c| {
        let masked = c["linux"]["maskedPaths"].as_array_mut().unwrap();
        masked.retain(|p| p != "/proc/keys");
    });
    create_and_start(&env, &b2, &held);
    let text = ok(&env, &["exec", &held, "cat", "/proc/keys"]);
    assert!(text.contains(&format!("_ses.{held}")), "exec: {text}");
    ok(&env, &["delete", "--force", &held]);
    env.assert_clean();
}

/// An idmapped bind mount (`uidMappings`/`gidMappings`): files of host uid/gid 1000
/// show as 0 inside, and a file the container's root makes lands as 1000 on the
/// host. Where the kernel or filesystem cannot (tmpfs before 6.3), the error names
/// the mount. Half-given mappings and idmapped non-bind mounts are refused by field,
/// leaving nothing.
#[test]
fn oci_idmapped_mounts() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::new();
    let _cleanup = Cleanup(&env);
    let src = env.dir.path().join("owned");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), "x").unwrap();
    for p in [&src, &src.join("f")] {
        std::os::unix::fs::chown(p, Some(1000), Some(1000)).unwrap();
    }
    let maps = json!([{"containerID": 0, "hostID": 1000, "size": 1}]);
    let b = Bundle::new(
        &env,
        "idmap",
        "stat -c %u:%g /m/f; touch /m/new && stat -c %u:%g /m/new",
    );
    let mount = json!({
        "destination": "/m", "type": "bind", "source": src,
        "options": ["bind", "idmap"], "uidMappings": maps, "gidMappings": maps
    });
    b.edit(|c| c["mounts"].as_array_mut().unwrap().push(mount.clone()));
    let index = {
        let c: Value =
            serde_json::from_slice(&std::fs::read(b.dir.join("config.json")).unwrap()).unwrap();
        c["mounts"].as_array().unwrap().len() - 1
    };
    let o = run_bundle(&env, &b, &id("idmap"));
    let fs = nix::sys::statfs::statfs(&src).unwrap();
    let release = nix::sys::utsname::uname().unwrap();
    let mut v = release
        .release()
        .to_str()
        .unwrap()
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
    let tmpfs_without =
        fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC && (major, minor) < (6, 3);
    if tmpfs_without {
        assert!(!o.status.success(), "idmapped tmpfs on {major}.{minor}");
        let e = err(&o);
        assert!(
            e.contains(&format!("mounts[{index}]")) && e.contains("idmap"),
            "{e}"
        );
    } else {
        assert!(o.status.success(), "{}", err(&o));
        assert_eq!(out(&o).lines().collect::<Vec<_>>(), ["0:0", "0:0"]);
        let md = std::fs::metadata(src.join("new")).unwrap();
        assert_eq!((md.uid(), md.gid()), (1000, 1000));
    }
    // ridmap: every mount of an rbind's tree is idmapped; idmap: only its top. The
    // submount is the test's own, undone by the guard even if an assertion fails.
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let other = env.dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("g"), "y").unwrap();
    for p in [&other, &other.join("g")] {
        std::os::unix::fs::chown(p, Some(1000), Some(1000)).unwrap();
    }
    std::fs::create_dir(src.join("sub")).unwrap();
    nix::mount::mount(
        Some(&other),
        &src.join("sub"),
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    let sub = Unmount(src.join("sub"));
    if !tmpfs_without {
        for (opts, want) in [
            (json!(["rbind", "ridmap"]), "0:0"),
            (json!(["rbind", "idmap"]), "1000:1000"),
        ] {
            let rb = Bundle::new(&env, "ridmap", "stat -c %u:%g /m/sub/g");
            let mut m = mount.clone();
            m["options"] = opts.clone();
            rb.edit(|c| c["mounts"].as_array_mut().unwrap().push(m));
            let o = run_bundle(&env, &rb, &id("ridmap"));
            assert!(o.status.success(), "{opts}: {}", err(&o));
            assert_eq!(out(&o).trim(), want, "{opts}");
            std::fs::remove_dir_all(&rb.dir).unwrap();
        }
    }
    drop(sub);
    // Refused by field: one map without the other; an idmapped tmpfs; idmap without maps.
    let cases: Vec<(&str, Edit)> = vec![
        (
            "uidMappings",
            Box::new(move |c| {
                let m = c["mounts"].as_array_mut().unwrap().last_mut().unwrap();
                m.as_object_mut().unwrap().remove("gidMappings");
            }),
        ),
        (
            "bind mounts only",
            Box::new(|c| {
                let m = c["mounts"].as_array_mut().unwrap().last_mut().unwrap();
                m["type"] = json!("tmpfs");
                m["options"] = json!(["idmap"]);
            }),
        ),
        (
            "without uidMappings",
            Box::new(|c| {
                let m = c["mounts"].as_array_mut().unwrap().last_mut().unwrap();
                let o = m.as_object_mut().unwrap();
                o.remove("uidMappings");
                o.remove("gidMappings");
            }),
        ),
    ];
    for (i, (want, edit)) in cases.into_iter().enumerate() {
        let bad = Bundle::new(&env, &format!("idmap-bad{i}"), "true");
        bad.edit(|c| {
            c["mounts"].as_array_mut().unwrap().push(mount.clone());
            edit(c);
        });
        let cid = id(&format!("idmap-bad{i}"));
        let o = sandbox(&env, &["create", "--bundle", bad.path(), &cid]);
        assert!(!o.status.success(), "{want}: accepted");
        let e = err(&o);
        assert!(
            e.contains(&format!("mounts[{index}]")) && e.contains(want),
            "{want}: {e}"
        );
        assert!(oci_cgroups(&cid).is_empty(), "{want}: a cgroup was left");
    }
    env.assert_clean();
}

/// `create` killed part-way (SIGKILL while its createRuntime hook runs, after the
/// state folder, the cgroup and the container's process exist): `state` says
/// stopped, and `delete` removes the cgroup and the state; the waiting process ends
/// with its creator and no mount is left (create's were in a namespace of its own).
#[test]
fn oci_delete_cleans_up_after_a_create_killed_part_way() {
    let env = Env::new();
    let _cleanup = Cleanup(&env);
    let hook_pid = env.dir.path().join("hook.pid");
    let b = Bundle::new(&env, "killed", "true");
    b.edit(|c| {
        c["hooks"] = json!({"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c",
            format!("echo $$ > {}; exec sleep 100", hook_pid.display())]}]});
    });
    let i = id("killed");
    let mut create = env
        .cmd()
        .args(["create", "--bundle", b.path(), &i])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let hook: i32 = loop {
        if let Ok(t) = std::fs::read_to_string(&hook_pid)
            && let Ok(p) = t.trim().parse()
        {
            break p;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the hook never ran"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let s = state(&env, &i);
    assert_eq!(s["status"], "creating", "{s}");
    let pid = s["pid"]
        .as_i64()
        .expect("the container's process exists while hooks run");
    assert!(!oci_cgroups(&i).is_empty());
    // Our own processes, by pid: the runtime, then its hook.
    create.kill().unwrap();
    create.wait().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(hook),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_status(&env, &i, "stopped");
    ok(&env, &["delete", &i]);
    assert!(oci_cgroups(&i).is_empty(), "cgroups left");
    let start = Instant::now();
    while proc_state(pid).is_some_and(|s| s != 'Z') {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "pid {pid} survived its creator"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    env.assert_clean();
}

/// `root.readonly`: the root is read-only, what is mounted on it (a tmpfs) is not.
#[test]
fn oci_a_readonly_root() {
    let env = Env::new();
    let _cleanup = Cleanup(&env);
    let b = Bundle::new(
        &env,
        "ro",
        "touch /x 2>&1; touch /dev/shm/y && echo shm-writable; \
         awk '$5==\"/\" {print \"root-opts\", $6}' /proc/self/mountinfo",
    );
    b.edit(|c| c["root"]["readonly"] = json!(true));
    let o = run_bundle(&env, &b, &id("ro"));
    assert!(o.status.success(), "{}", err(&o));
    let text = out(&o);
    assert!(text.contains("Read-only file system"), "{text}");
    assert!(text.contains("shm-writable"), "{text}");
    let root_opts = text
        .lines()
        .find_map(|l| l.strip_prefix("root-opts "))
        .unwrap_or_default()
        .to_string();
    assert!(root_opts.split(',').any(|o| o == "ro"), "{text}");
    env.assert_clean();
}
