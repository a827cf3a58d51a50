//! `sandbox pod`: the seed's Pods on the real kernel (namespaces, cgroups, mounts).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod pod_common;

use common::{Env, err, out};
use pod_common::*;

/// The seed's hello-pod (`examples/hello-pod.yaml`, built in: the VM lane has no
/// source tree) renamed for this test, with a short grace period: its interactive
/// shell ignores SIGTERM, and the test need not wait out the default 30 s.
fn hello_pod(env: &Env, unique: &str) -> std::path::PathBuf {
    let text = include_str!("../../../examples/hello-pod.yaml")
        .replace("name: hello-pod\n", &format!("name: {unique}\n"))
        .replace("spec:\n", "spec:\n  terminationGracePeriodSeconds: 2\n");
    pod_file(env, unique, &text)
}

/// `ps ax` in a container, again until `needle` shows (at most 5 s): `pod run`
/// returns once every container's process was let go, maybe before its exec (until
/// then it shows the runtime's command line).
fn ps_until(env: &Env, pod: &str, c: &str, needle: &str) -> String {
    let start = std::time::Instant::now();
    loop {
        let o = exec(env, pod, c, "ps ax");
        assert!(o.status.success(), "{}", err(&o));
        let ps = out(&o);
        if ps.contains(needle) || start.elapsed() > std::time::Duration::from_secs(5) {
            return ps;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn ns(env: &Env, pod: &str, c: &str, kind: &str) -> String {
    let o = exec(env, pod, c, &format!("readlink /proc/self/ns/{kind}"));
    assert!(o.status.success(), "exec: {}", err(&o));
    out(&o).trim().to_string()
}

#[test]
fn hello_pod_shares_namespaces_with_infra_as_pid_1() {
    let env = Env::new();
    seed_images(&env);
    let name = pod_name("hello-pod");
    let _g = guard(&env, &name);
    let file = hello_pod(&env, &name);
    run_detached(&env, &file);
    let st = status(&env, &name);
    assert_eq!(st["phase"], "Running", "{st:#}");
    // Containers' ps and gc leave the pods' folder alone.
    let o = env.cmd().arg("ps").output().unwrap();
    assert!(
        o.status.success() && !out(&o).contains(".pods"),
        "{}",
        out(&o)
    );
    let o = env.cmd().arg("gc").output().unwrap();
    assert!(
        o.status.success() && out(&o).is_empty(),
        "gc: {}{}",
        out(&o),
        err(&o)
    );
    assert_eq!(status(&env, &name)["phase"], "Running");
    // ps ax in the busybox container: /pause is PID 1, the other container's httpd shows.
    let ps = ps_until(&env, &name, "hello-busybox", "httpd");
    let first = ps.lines().nth(1).unwrap_or_default();
    assert!(
        first.split_whitespace().next() == Some("1") && first.contains("/pause"),
        "PID 1 is not the infra process:\n{ps}"
    );
    assert!(
        ps.contains("httpd -f -p 80"),
        "the nginx container's process is not seen:\n{ps}"
    );
    assert!(ps.lines().any(|l| l.trim_end().ends_with(" sh")), "{ps}");
    // The infra process: tiny (the seed's pause container is ~100 KB; ours is
    // under that, and its resident memory under 200 KB).
    let infra = st["infra_pid"].as_i64().unwrap();
    let rss_kb: u64 = std::fs::read_to_string(format!("/proc/{infra}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(rss_kb < 200, "infra RSS {rss_kb} kB");
    let exe = std::fs::metadata(format!("/proc/{infra}/exe"))
        .unwrap()
        .len();
    assert!(exe < 100 * 1024, "infra binary {exe} bytes");
    for kind in ["net", "ipc", "uts", "pid"] {
        assert_eq!(
            ns(&env, &name, "hello-busybox", kind),
            ns(&env, &name, "hello-nginx", kind),
            "{kind} namespace differs"
        );
    }
    assert_ne!(
        ns(&env, &name, "hello-busybox", "mnt"),
        ns(&env, &name, "hello-nginx", "mnt"),
        "the containers share a mount namespace"
    );
    assert_ne!(
        ns(&env, &name, "hello-busybox", "net"),
        std::fs::read_link("/proc/self/ns/net")
            .unwrap()
            .to_string_lossy()
    );
    for c in ["hello-busybox", "hello-nginx"] {
        let o = exec(&env, &name, c, "hostname");
        assert_eq!(out(&o).trim(), name, "{c}: {}", err(&o));
    }
    // One container reaches the other's server over the pod's loopback.
    let o = exec(
        &env,
        &name,
        "hello-busybox",
        "wget -q -O - http://127.0.0.1:80/",
    );
    assert_eq!(out(&o), "hello from nginx\n", "{}", err(&o));
    // `kubectl attach -i`: input to the busybox shell (on its terminal), its output back.
    let mut c = env.cmd();
    c.args(["pod", "attach", "-i", &name, "-c", "hello-busybox"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    {
        use std::io::Write;
        let mut i = child.stdin.take().unwrap();
        i.write_all(b"echo attached-$((6*7))\n").unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "attach: {}", err(&o));
    assert!(
        out(&o).contains("attached-42"),
        "attach output: {:?}",
        out(&o)
    );
    // Its terminal: a pty of the container's own devpts.
    let o = exec(
        &env,
        &name,
        "hello-busybox",
        "for p in /proc/[0-9]*; do readlink $p/fd/0; done",
    );
    assert!(out(&o).contains("/dev/pts/"), "{}{}", out(&o), err(&o));
    // The seed's `kubectl attach -it hello-pod -c hello-busybox`, then `ps ax`, on a
    // terminal: /pause is PID 1. Ctrl-P Ctrl-Q detaches (the shell keeps running).
    let (mut child, mut term) = Term::attach(&env, &name, "hello-busybox");
    term.write(b"ps ax\r");
    // What follows the echo of the command is its output.
    let echoed = term.read_until("ps ax\r\n", 10).len();
    let all = term.read_until("/pause", 10);
    let listing = &all[echoed..];
    assert!(
        listing
            .lines()
            .any(|l| l.trim_start().starts_with("1 ") && l.contains("/pause")),
        "{listing}"
    );
    // The window of the attaching terminal resized: the container's terminal
    // follows (the client passes SIGWINCH on through the master it was given).
    term.resize(33, 111);
    term.write(b"stty size\r");
    term.read_until("33 111", 10);
    term.write(&[0x10, 0x11]);
    assert!(child.wait().unwrap().success());
    assert_eq!(
        ctr(&status(&env, &name), "hello-busybox")["state"],
        "Running"
    );
    let o = pod(&env, &["stats", &name]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&o).contains("hello-nginx"), "{}", out(&o));
    rm_and_check(&env, &name);
}

#[test]
fn without_share_process_namespace_each_container_is_pid_1_of_its_own() {
    let env = Env::new();
    seed_images(&env);
    let name = pod_name("own-pid");
    let _g = guard(&env, &name);
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  \
         - name: a\n    image: busybox\n    command: [sleep, '1000']\n  \
         - name: b\n    image: nginx\n"
    );
    run_detached(&env, &pod_file(&env, &name, &yaml));
    let ps = ps_until(&env, &name, "a", "sleep 1000");
    let first = ps.lines().nth(1).unwrap_or_default();
    assert!(
        first.contains("sleep 1000") && first.split_whitespace().next() == Some("1"),
        "{ps}"
    );
    assert!(!ps.contains("pause") && !ps.contains("httpd"), "{ps}");
    let ps = ps_until(&env, &name, "b", "httpd");
    let first = ps.lines().nth(1).unwrap_or_default();
    assert!(
        first.contains("httpd") && first.split_whitespace().next() == Some("1"),
        "{ps}"
    );
    assert_ne!(ns(&env, &name, "a", "pid"), ns(&env, &name, "b", "pid"));
    assert_eq!(ns(&env, &name, "a", "net"), ns(&env, &name, "b", "net"));
    rm_and_check(&env, &name);
}

/// `--root` and `--store` given relative to the working directory: the paths
/// recorded in the pod's bundles are absolute, so the supervisor and `pod rm` run
/// from elsewhere still find them (a relative root once made every container's
/// `root.path` resolve under its own bundle).
#[test]
fn relative_state_and_store_roots() {
    let env = Env::new();
    seed_images(&env);
    let name = pod_name("relative");
    let _g = guard(&env, &name);
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  \
         - name: a\n    image: busybox\n    command: [sleep, '1000']\n"
    );
    let file = pod_file(&env, &name, &yaml);
    let relative = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_sandbox"))
            .current_dir(env.dir.path())
            .args(["--root", "state", "--store", "store", "pod"])
            .args(args)
            .output()
            .unwrap()
    };
    let o = relative(&["run", "--detach", file.to_str().unwrap()]);
    assert!(o.status.success(), "pod run: {}{}", out(&o), err(&o));
    assert_eq!(ctr(&status(&env, &name), "a")["state"], "Running");
    let o = relative(&["rm", "--force", &name]);
    assert!(o.status.success(), "pod rm: {}", err(&o));
    assert_nothing_left(&env, &name);
}
