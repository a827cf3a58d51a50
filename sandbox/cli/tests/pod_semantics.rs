//! `sandbox pod`: the kubelet's semantics on the real kernel: init containers,
//! volumes, limits, restarts, probes, sidecars, and what a killed supervisor leaves.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;
mod pod_common;

use std::time::{Duration, Instant};

use common::{Env, err, out};
use pod_common::*;

fn yaml(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 2\n{spec}"
    )
}

fn logs(env: &Env, name: &str, c: &str) -> String {
    let o = pod(env, &["logs", name, "-c", c]);
    assert!(o.status.success(), "pod logs: {}", err(&o));
    out(&o)
}

#[test]
fn sample_java_init_container_fills_the_empty_dir() {
    let env = Env::new();
    seed_images(&env);
    let name = pod_name("sample-java");
    let _g = guard(&env, &name);
    // Built in: the VM lane has no source tree.
    let text = include_str!("../../../examples/sample-java.yaml")
        .replace("name: sample-java\n", &format!("name: {name}\n"))
        // tomcat's `sleep` is PID 1 of its own pid namespace and ignores SIGTERM: the
        // test does not wait out the default 30 s.
        .replace("spec:\n", "spec:\n  terminationGracePeriodSeconds: 1\n");
    run_detached(&env, &pod_file(&env, &name, &text));
    let st = status(&env, &name);
    assert_eq!(ctr(&st, "war")["exit_code"], 0, "{st:#}");
    assert_eq!(ctr(&st, "war")["reason"], "Completed", "{st:#}");
    let start = Instant::now();
    loop {
        let l = logs(&env, &name, "tomcat");
        if l.contains("PK-sample-war") {
            assert!(l.starts_with("sample.war\n"), "{l}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "tomcat's log: {l:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    rm_and_check(&env, &name);
}

#[test]
fn failing_init_container_under_never_fails_the_pod_and_no_app_starts() {
    let env = Env::new();
    seed_images(&env);
    let name = pod_name("init-fails");
    let _g = guard(&env, &name);
    let file = pod_file(
        &env,
        &name,
        &yaml(
            &name,
            "  restartPolicy: Never
  initContainers:
  - name: first
    image: busybox
    command: [sh, -c, 'echo trying; exit 3']
  containers:
  - name: app
    image: busybox
    command: [sh, -c, 'echo app ran > /dev/stderr; sleep 100']
",
        ),
    );
    let o = pod(&env, &["run", "--detach", file.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        err(&o).contains("init container \"first\" failed (exit 3)"),
        "{}",
        err(&o)
    );
    let st = status(&env, &name);
    assert_eq!(st["phase"], "Failed", "{st:#}");
    assert_eq!(st["finished"], true);
    let app = ctr(&st, "app");
    assert_eq!(app["state"], "Waiting", "{st:#}");
    assert!(
        app["started_at"].is_null() && app["restarts"] == 0,
        "{st:#}"
    );
    assert_eq!(logs(&env, &name, "first"), "trying\n");
    assert_eq!(logs(&env, &name, "app"), "");
    // Foreground: the same pod file fails with status 1 (after rm of the first).
    let o = pod(&env, &["rm", &name]);
    assert!(o.status.success(), "{}", err(&o));
    let o = pod(&env, &["run", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}{}", out(&o), err(&o));
    assert!(out(&o).contains("Failed"), "{}", out(&o));
    rm_and_check(&env, &name);
}

#[test]
fn memory_empty_dir_size_limit_holds() {
    let env = Env::new();
    seed_images(&env);
    let name = pod_name("memvol");
    let _g = guard(&env, &name);
    let file = pod_file(
        &env,
        &name,
        &yaml(
            &name,
            "  containers:
  - name: app
    image: busybox
    command: [sleep, '1000']
    volumeMounts:
    - {name: scratch, mountPath: /scratch}
  volumes:
  - name: scratch
    emptyDir: {medium: Memory, sizeLimit: 1Mi}
",
        ),
    );
    run_detached(&env, &file);
    let o = exec(
        &env,
        &name,
        "app",
        "df -k /scratch | tail -1; mount | grep ' /scratch '",
    );
    let text = out(&o);
    assert!(
        text.contains("tmpfs") && text.contains(" 1024 "),
        "{text}{}",
        err(&o)
    );
    let o = exec(
        &env,
        &name,
        "app",
        "dd if=/dev/zero of=/scratch/f bs=1024 count=2048",
    );
    assert!(!o.status.success(), "2 MiB fit in a 1 MiB emptyDir");
    assert!(err(&o).contains("No space left"), "{}", err(&o));
    rm_and_check(&env, &name);
}

#[test]
fn cpu_limit_200m_throttles_near_20_percent() {
    let env = Env::new();
    seed_images(&env);
    let name = pod_name("cpu200m");
    let _g = guard(&env, &name);
    let file = pod_file(
        &env,
        &name,
        &yaml(
            &name,
            "  containers:
  - name: burn
    image: busybox
    command: [sh, -c, 'while :; do :; done']
    resources:
      limits: {cpu: 200m}
",
        ),
    );
    run_detached(&env, &file);
    let st = status(&env, &name);
    let h = cgroupkit::Hierarchy::detect().unwrap();
    let path = format!("{}/burn", st["cgroup"].as_str().unwrap());
    let cg = cgroupkit::Cgroup::load(&h, &cgroupkit::CgroupPath::new(&path).unwrap()).unwrap();
    assert_eq!(cg.cpu_quota().unwrap().cpus(), Some(0.2));
    // The burning process's CPU time (utime + stime, in clock ticks of 10 ms).
    let pid = ctr(&st, "burn")["pid"].as_i64().unwrap();
    let ticks = || {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    };
    let (a, ta) = (cg.cpu_stat().unwrap(), ticks());
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let (b, tb) = (cg.cpu_stat().unwrap(), ticks());
    let used = (tb - ta) as f64 / 100.0 / t0.elapsed().as_secs_f64();
    assert!((0.12..=0.25).contains(&used), "used {used:.3} of a CPU");
    assert!(
        b.nr_throttled > a.nr_throttled,
        "not throttled: {a:?} {b:?}"
    );
    // The exporter labels the pod's series as the kubelet's cAdvisor does, from the
    // state root: `rate(container_cpu_cfs_throttled_periods_total{pod=...}[1m])`.
    let mut collector = exporter::Collector::new(
        h.clone(),
        exporter::Config {
            cgroup_root: cgroupkit::CgroupPath::new(st["cgroup"].as_str().unwrap()).unwrap(),
            max_depth: Some(1),
            ..Default::default()
        },
    )
    .unwrap();
    collector.set_sandbox_root(env.state.clone());
    let text = collector.collect(exporter::Format::Text);
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("container_cpu_cfs_throttled_periods_total{")
                && l.contains(&format!("pod=\"{name}\""))
                && l.contains("container=\"burn\"")
        })
        .unwrap_or_else(|| panic!("no labelled throttling series for {name}:\n{text}"));
    assert!(line.contains("image=\"busybox\""), "{line}");
    let periods: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(periods > 0.0, "{line}");
    // The pod cgroup holds the sum of the limits.
    let pod_cg = cgroupkit::Cgroup::load(
        &h,
        &cgroupkit::CgroupPath::new(st["cgroup"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(pod_cg.cpu_quota().unwrap().cpus(), Some(0.2));
    rm_and_check(&env, &name);
}

#[test]
fn container_over_its_memory_limit_is_oom_killed_and_reported() {
    let env = Env::new();
    seed_images(&env);
    let name = pod_name("oom");
    let _g = guard(&env, &name);
    let file = pod_file(
        &env,
        &name,
        &yaml(
            &name,
            "  restartPolicy: Never
  containers:
  - name: hog
    image: busybox
    command: [sh, -c, 'x=$(head -c 100000000 /dev/zero | tr \"\\\\0\" a); echo survived']
    resources:
      limits: {memory: 16Mi}
",
        ),
    );
    run_detached(&env, &file);
    let st = wait_for(&env, &name, 30, "the OOM kill", |s| {
        ctr(s, "hog")["state"] == "Terminated"
    });
    let hog = ctr(&st, "hog");
    assert_eq!(hog["oom_killed"], true, "{st:#}");
    assert_eq!(hog["reason"], "OOMKilled", "{st:#}");
    assert_eq!(hog["exit_code"], 137, "{st:#}");
    let o = pod(&env, &["ps", &name]);
    assert!(out(&o).contains("OOMKilled"), "{}", out(&o));
    rm_and_check(&env, &name);
}

/// The CRI timestamps of the log's lines holding `text`, in seconds.
fn stamps(log: &std::path::Path, text: &str) -> Vec<f64> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.ends_with(text))
        .map(|l| {
            // 2026-12-05T21:50:00.123456789Z
            let t = l.split(' ').next().unwrap();
            let hms = &t[11..t.len() - 1];
            let mut it = hms.split(':');
            let h: f64 = it.next().unwrap().parse().unwrap();
            let m: f64 = it.next().unwrap().parse().unwrap();
            let s: f64 = it.next().unwrap().parse().unwrap();
            h * 3600.0 + m * 60.0 + s
        })
        .collect()
}

#[test]
fn always_restarts_a_crashing_container_with_growing_delays() {
    let env = Env::new();
    seed_images(&env);
    let name = pod_name("crash");
    let _g = guard(&env, &name);
    let file = pod_file(
        &env,
        &name,
        &yaml(
            &name,
            "  containers:
  - name: crash
    image: busybox
    command: [sh, -c, 'echo start; exit 1']
",
        ),
    );
    // Back-off base 200 ms (SANDBOX_POD_BACKOFF_MS, set by the helper): 0.2, 0.4, 0.8, 1.6 s.
    run_detached(&env, &file);
    let st = wait_for(&env, &name, 30, "four restarts", |s| {
        ctr(s, "crash")["restarts"].as_u64().unwrap() >= 4
    });
    assert_eq!(ctr(&st, "crash")["exit_code"], 1);
    let log = env.state.join(".pods").join(&name).join("logs/crash.log");
    let t = stamps(&log, "stdout F start");
    assert!(t.len() >= 5, "{t:?}");
    let gaps: Vec<f64> = t.windows(2).map(|w| w[1] - w[0]).collect();
    // Each gap is the back-off plus the container's start and run (slow in the VM
    // lane): the gaps grow, and the back-off doubles, so the fourth is well over
    // twice the first.
    for w in gaps.windows(2).take(3) {
        assert!(w[1] > w[0], "delays do not grow: {gaps:?}");
    }
    assert!(gaps[3] > 2.0 * gaps[0], "delays do not double: {gaps:?}");
    assert!(gaps[0] >= 0.2 && gaps[0] < 1.0, "{gaps:?}");
    rm_and_check(&env, &name);
}

#[test]
fn killed_supervisor_then_gc_leaves_nothing() {
    let env = Env::new();
    seed_images(&env);
    let name = pod_name("gc");
    let _g = guard(&env, &name);
    let file = pod_file(
        &env,
        &name,
        &yaml(
            &name,
            "  shareProcessNamespace: true
  containers:
  - name: a
    image: busybox
    command: [sleep, '1000']
    volumeMounts: [{name: m, mountPath: /m}]
  - name: b
    image: nginx
  volumes:
  - name: m
    emptyDir: {medium: Memory}
",
        ),
    );
    run_detached(&env, &file);
    let st = status(&env, &name);
    let sup = st["supervisor"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sup),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // Until the supervisor is gone (its lock released).
    let start = Instant::now();
    while std::path::Path::new(&format!("/proc/{sup}")).exists()
        && std::fs::read_to_string(format!("/proc/{sup}/stat")).is_ok_and(|s| !s.contains(") Z "))
    {
        assert!(start.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(10));
    }
    let o = pod(&env, &["ls"]);
    assert!(out(&o).contains("Lost"), "{}", out(&o));
    let o = env.cmd().arg("gc").output().unwrap();
    assert!(o.status.success(), "gc: {}", err(&o));
    assert!(
        out(&o).contains(&format!("removed pod {name}")),
        "{}",
        out(&o)
    );
    // The container processes went with the cgroup; give the kernel a moment to
    // reap them (their parent was the supervisor).
    let start = Instant::now();
    loop {
        let left = std::panic::catch_unwind(|| assert_nothing_left(&env, &name));
        if left.is_ok() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn bad_pod_files_give_one_clear_error_and_start_nothing() {
    let env = Env::new();
    seed_images(&env);
    let name = pod_name("bad");
    let _g = guard(&env, &name);
    let good = "  containers:
  - name: a
    image: busybox
    command: [sleep, '1000']
";
    let cases: Vec<(String, &str)> = vec![
        (
            yaml(&name, &good.replace("    command", "    comand")),
            "field spec.containers[0].comand is unknown",
        ),
        (
            yaml(&name, &format!("{good}  - name: a\n    image: busybox\n")),
            "two containers are named \"a\"",
        ),
        (
            yaml(
                &name,
                &format!("{good}    volumeMounts: [{{name: nope, mountPath: /x}}]\n"),
            ),
            "volume \"nope\" is not declared",
        ),
        (
            yaml(
                &name,
                &format!("{good}    resources: {{limits: {{cpu: -1}}}}\n"),
            ),
            "spec.containers[0].resources.limits.cpu",
        ),
        (
            format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}\nspec: [\n"),
            "malformed YAML",
        ),
        (
            yaml(
                &name,
                &format!("{good}    securityContext: {{privileged: true}}\n"),
            ),
            "privileged containers are refused",
        ),
        (
            yaml(&name, &format!("{good}  nodeName: elsewhere\n")),
            "field spec.nodeName is not supported",
        ),
        (
            yaml(&name, &good.replace("image: busybox", "image: missing:1")),
            "image \"missing:1\" is not in the store",
        ),
        (
            yaml(
                &name,
                &format!(
                    "{good}  volumes:\n  - name: h\n    hostPath: {{path: /nonexistent-{name}, type: Directory}}\n"
                ),
            ),
            "does not exist (type Directory)",
        ),
    ];
    for (text, want) in cases {
        let f = pod_file(&env, &name, &text);
        let o = pod(&env, &["run", "--detach", f.to_str().unwrap()]);
        assert!(!o.status.success(), "accepted:\n{text}");
        let e = err(&o);
        assert!(e.contains(want), "wanted {want:?} in {e:?}");
        assert_eq!(e.trim_end().lines().count(), 1, "{e}");
        assert_nothing_left(&env, &name);
    }
}

#[test]
fn liveness_failure_restarts_and_readiness_flips() {
    let env = Env::new();
    seed_images(&env);
    let name = pod_name("probes");
    let _g = guard(&env, &name);
    let file = pod_file(
        &env,
        &name,
        &yaml(
            &name,
            "  containers:
  - name: app
    image: busybox
    command: [sh, -c, 'touch /tmp/alive; exec sleep 1000']
    livenessProbe:
      exec: {command: [test, -f, /tmp/alive]}
      periodSeconds: 1
      failureThreshold: 2
    readinessProbe:
      exec: {command: [test, -f, /tmp/ready]}
      periodSeconds: 1
      failureThreshold: 1
  - name: web
    image: nginx
    readinessProbe:
      httpGet: {path: /index.html, port: 80}
      periodSeconds: 1
    livenessProbe:
      tcpSocket: {port: 80}
      periodSeconds: 1
",
        ),
    );
    run_detached(&env, &file);
    wait_for(&env, &name, 10, "web ready", |s| {
        ctr(s, "web")["ready"] == true
    });
    let st = wait_for(&env, &name, 10, "an exec probe's cost", |s| {
        ctr(s, "app")["exec_probe_cpu_usec"].is_u64()
    });
    assert_eq!(ctr(&st, "app")["ready"], false, "{st:#}");
    // What one exec probe costs (the supervisor's start of it plus the probe
    // process), measured: printed for the record, bounded loosely (debug build).
    let cost = ctr(&st, "app")["exec_probe_cpu_usec"].as_u64().unwrap();
    eprintln!("exec probe CPU: {cost} us");
    // The VM lane emulates the CPU (3-8x slower, more on syscalls).
    let bound = if cfg!(vm_lane) { 500_000 } else { 20_000 };
    assert!(cost < bound, "an exec probe took {cost} us of CPU");
    let o = exec(&env, &name, "app", "touch /tmp/ready");
    assert!(o.status.success(), "{}", err(&o));
    wait_for(&env, &name, 10, "app ready", |s| {
        ctr(s, "app")["ready"] == true
    });
    let o = pod(&env, &["ps", &name]);
    assert!(
        out(&o)
            .lines()
            .any(|l| l.starts_with("app ") && l.contains(" true ")),
        "{}",
        out(&o)
    );
    let o = exec(&env, &name, "app", "rm /tmp/ready");
    assert!(o.status.success(), "{}", err(&o));
    wait_for(&env, &name, 10, "app not ready", |s| {
        ctr(s, "app")["ready"] == false
    });
    // Liveness starts failing: the container is restarted (and alive again).
    let o = exec(&env, &name, "app", "rm /tmp/alive");
    assert!(o.status.success(), "{}", err(&o));
    let st = wait_for(&env, &name, 20, "the liveness restart", |s| {
        ctr(s, "app")["restarts"] == 1 && ctr(s, "app")["state"] == "Running"
    });
    assert_eq!(ctr(&st, "web")["restarts"], 0, "{st:#}");
    rm_and_check(&env, &name);
}

#[test]
fn native_sidecar_outlives_app_restarts_and_stops_last() {
    let env = Env::new();
    seed_images(&env);
    let name = pod_name("sidecar");
    let _g = guard(&env, &name);
    let file = pod_file(
        &env,
        &name,
        &yaml(
            &name,
            "  initContainers:
  - name: side
    image: busybox
    restartPolicy: Always
    command: [sh, -c, 'trap \"echo side-term; exit 0\" TERM; while :; do sleep 0.1; done']
  containers:
  - name: app
    image: busybox
    command: [sh, -c, 'sleep 0.3; exit 1']
",
        ),
    );
    run_detached(&env, &file);
    let first = status(&env, &name);
    let side_pid = ctr(&first, "side")["pid"].clone();
    assert!(side_pid.is_i64(), "{first:#}");
    let st = wait_for(&env, &name, 20, "app restarts", |s| {
        ctr(s, "app")["restarts"].as_u64().unwrap() >= 2
    });
    let side = ctr(&st, "side");
    assert_eq!(side["restarts"], 0, "{st:#}");
    assert_eq!(side["pid"], side_pid, "{st:#}");
    assert_eq!(side["state"], "Running", "{st:#}");
    let o = pod(&env, &["stop", &name]);
    assert!(o.status.success(), "{}", err(&o));
    let st = status(&env, &name);
    let (a, s) = (ctr(&st, "app"), ctr(&st, "side"));
    assert!(
        a["finished_at"].as_str().unwrap() <= s["finished_at"].as_str().unwrap(),
        "the sidecar stopped before the app: {st:#}"
    );
    assert_eq!(s["exit_code"], 0, "the sidecar got no SIGTERM: {st:#}");
    assert!(logs(&env, &name, "side").contains("side-term"));
    rm_and_check(&env, &name);
}

#[test]
fn container_fields_security_context_and_volumes() {
    let env = Env::new();
    seed_images(&env);
    let name = pod_name("fields");
    let _g = guard(&env, &name);
    let host = env.dir.path().join("host-vol");
    let file = pod_file(
        &env,
        &name,
        &yaml(
            &name,
            &format!(
                "  hostname: custom-host
  volumes:
  - name: data
    emptyDir: {{}}
  - name: host
    hostPath: {{path: {}, type: DirectoryOrCreate}}
  initContainers:
  - name: prep
    image: busybox
    command: [sh, -c, 'mkdir -p /data/sub && echo inner > /data/sub/f && ln -s /etc /data/escape']
    volumeMounts: [{{name: data, mountPath: /data}}]
  containers:
  - name: app
    image: busybox
    command: [sh, -c]
    args: ['exec sleep 1000']
    workingDir: /tmp
    env: [{{name: GREETING, value: hello}}]
    ports: [{{containerPort: 8080, name: web}}]
    securityContext:
      runAsUser: 1000
      runAsGroup: 1000
      runAsNonRoot: true
      readOnlyRootFilesystem: true
      allowPrivilegeEscalation: false
      capabilities: {{drop: [ALL]}}
    volumeMounts:
    - {{name: data, mountPath: /sub, subPath: sub, readOnly: true}}
    - {{name: host, mountPath: /host}}
  - name: caps
    image: busybox
    command: [sleep, '1000']
    securityContext:
      capabilities: {{drop: [ALL], add: [NET_ADMIN]}}
",
                host.display()
            ),
        ),
    );
    run_detached(&env, &file);
    assert!(host.is_dir(), "DirectoryOrCreate made no folder");
    std::fs::write(host.join("hello.txt"), "from the host\n").unwrap();
    let o = exec(
        &env,
        &name,
        "app",
        "id -u; id -g; pwd; echo $GREETING; hostname; cat /sub/f; cat /host/hello.txt; \
         grep -E '^(CapEff|NoNewPrivs)' /proc/self/status",
    );
    assert_eq!(
        out(&o),
        "1000\n1000\n/tmp\nhello\ncustom-host\ninner\nfrom the host\n\
         CapEff:\t0000000000000000\nNoNewPrivs:\t1\n",
        "{}",
        err(&o)
    );
    let o = exec(&env, &name, "app", "touch /sub/x");
    assert!(!o.status.success(), "a readOnly volumeMount took a write");
    let o = exec(&env, &name, "app", "touch /tmp/new-in-root");
    assert!(
        !o.status.success(),
        "the read-only root filesystem took a write"
    );
    assert!(err(&o).contains("Read-only file system"), "{}", err(&o));
    let o = exec(&env, &name, "caps", "grep CapEff /proc/self/status");
    assert_eq!(
        out(&o),
        "CapEff:\t0000000000001000\n",
        "NET_ADMIN only: {}",
        err(&o)
    );
    rm_and_check(&env, &name);
    // A subPath that is a symlink leading out of the volume is refused.
    let name = pod_name("subpath-escape");
    let _g = guard(&env, &name);
    let file = pod_file(
        &env,
        &name,
        &yaml(
            &name,
            "  volumes: [{name: data, emptyDir: {}}]
  initContainers:
  - name: prep
    image: busybox
    command: [ln, -s, /etc, /data/escape]
    volumeMounts: [{name: data, mountPath: /data}]
  containers:
  - name: esc
    image: busybox
    command: [sleep, '1000']
    volumeMounts: [{name: data, mountPath: /esc, subPath: escape}]
",
        ),
    );
    let o = pod(&env, &["run", "--detach", file.to_str().unwrap()]);
    assert!(!o.status.success(), "a subPath leading out was mounted");
    assert!(
        err(&o).contains("subPath \"escape\" cannot be resolved inside"),
        "{}",
        err(&o)
    );
    rm_and_check(&env, &name);
}

#[test]
fn host_network_on_failure_and_active_deadline() {
    let env = Env::new();
    seed_images(&env);
    // hostNetwork: the host's network and UTS namespaces. OnFailure: restarted until
    // it exits 0, then the pod succeeded (foreground run, exit 0).
    let name = pod_name("hostnet");
    let _g = guard(&env, &name);
    let file = pod_file(
        &env,
        &name,
        &yaml(
            &name,
            "  hostNetwork: true
  restartPolicy: OnFailure
  volumes: [{name: d, emptyDir: {}}]
  containers:
  - name: once
    image: busybox
    command: [sh, -c, 'readlink /proc/self/ns/net; hostname; test -f /d/again || { touch /d/again; exit 1; }']
    volumeMounts: [{name: d, mountPath: /d}]
",
        ),
    );
    let o = pod(&env, &["run", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
    assert!(out(&o).contains("Succeeded"), "{}", out(&o));
    let st = status(&env, &name);
    assert_eq!(ctr(&st, "once")["restarts"], 1, "{st:#}");
    assert_eq!(ctr(&st, "once")["exit_code"], 0, "{st:#}");
    let l = logs(&env, &name, "once");
    let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert!(
        l.starts_with(&format!("{}\n{}\n", host_net.display(), common::hostname())),
        "{l}"
    );
    rm_and_check(&env, &name);
    // activeDeadlineSeconds: the pod fails with DeadlineExceeded.
    let name = pod_name("deadline");
    let _g = guard(&env, &name);
    let file = pod_file(
        &env,
        &name,
        &yaml(
            &name,
            "  activeDeadlineSeconds: 2
  containers:
  - name: long
    image: busybox
    command: [sh, -c, 'trap \"exit 0\" TERM; while :; do sleep 0.1; done']
",
        ),
    );
    let t0 = Instant::now();
    let o = pod(&env, &["run", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}{}", out(&o), err(&o));
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    let st = status(&env, &name);
    assert_eq!(st["phase"], "Failed");
    assert_eq!(st["reason"], "DeadlineExceeded");
    rm_and_check(&env, &name);
}

#[test]
fn startup_probe_holds_readiness_back() {
    let env = Env::new();
    seed_images(&env);
    let name = pod_name("startup");
    let _g = guard(&env, &name);
    let file = pod_file(
        &env,
        &name,
        &yaml(
            &name,
            "  containers:
  - name: slow
    image: busybox
    command: [sleep, '1000']
    startupProbe:
      exec: {command: [test, -f, /tmp/started]}
      periodSeconds: 1
      failureThreshold: 30
    readinessProbe:
      exec: {command: ['true']}
      periodSeconds: 1
",
        ),
    );
    run_detached(&env, &file);
    // Three periods: readiness would have passed long since, but it is held back.
    std::thread::sleep(Duration::from_secs(3));
    let st = status(&env, &name);
    let c = ctr(&st, "slow");
    assert_eq!(c["started"], false, "{st:#}");
    assert_eq!(c["ready"], false, "{st:#}");
    let o = exec(&env, &name, "slow", "touch /tmp/started");
    assert!(o.status.success(), "{}", err(&o));
    let st = wait_for(&env, &name, 10, "started, then ready", |s| {
        ctr(s, "slow")["ready"] == true
    });
    assert_eq!(ctr(&st, "slow")["started"], true);
    assert_eq!(ctr(&st, "slow")["restarts"], 0);
    rm_and_check(&env, &name);
}

#[test]
fn a_restart_that_cannot_start_is_retried_not_fatal() {
    let env = Env::new();
    seed_images(&env);
    let name = pod_name("starterr");
    let _g = guard(&env, &name);
    let host = env.dir.path().join("comes-and-goes");
    std::fs::create_dir(&host).unwrap();
    let file = pod_file(
        &env,
        &name,
        &yaml(
            &name,
            &format!(
                "  volumes: [{{name: h, hostPath: {{path: {}, type: Directory}}}}]
  containers:
  - name: flaky
    image: busybox
    command: [sh, -c, 'sleep 0.5; exit 1']
    volumeMounts: [{{name: h, mountPath: /h}}]
",
                host.display()
            ),
        ),
    );
    run_detached(&env, &file);
    std::fs::remove_dir(&host).unwrap();
    let st = wait_for(&env, &name, 20, "a failed restart", |s| {
        ctr(s, "flaky")["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("StartError"))
    });
    assert_eq!(st["phase"], "Running", "{st:#}");
    let before = ctr(&st, "flaky")["restarts"].as_u64().unwrap();
    std::fs::create_dir(&host).unwrap();
    wait_for(&env, &name, 20, "a restart that starts again", |s| {
        ctr(s, "flaky")["restarts"].as_u64().unwrap() > before
    });
    rm_and_check(&env, &name);
}
