//! Not a test: the body of `cargo xtask bench pod`, which runs it with `--ignored
//! --nocapture`. The seed's two-container hello-pod, from file to all containers
//! running and its removal: `sandbox pod run --detach` / `pod rm --force` against
//! `podman kube play` / `podman pod rm -f -t 0` (podman 4.3 with runc, conmon, its
//! own infra container), the same busybox image content for both, interleaved;
//! medians and ratios. Asserts only that every run succeeds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;
#[path = "common/clients.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::{IMAGE, Podman, stderr, stdout};

/// CPU time the whole machine has spent (user, nice, system, irq, softirq, steal;
/// /proc/stat), in USER_HZ ticks of 10 ms.
fn machine_cpu() -> Duration {
    let s = std::fs::read_to_string("/proc/stat").unwrap();
    let f: Vec<u64> = s
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy = f[0] + f[1] + f[2] + f[5] + f[6] + f[7];
    Duration::from_millis(busy * 10)
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

/// The seed's hello-pod with `image` for both containers (the harness's busybox has
/// no httpd: the second sleeps) and no grace period to wait out.
fn hello_pod(name: &str, image: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  shareProcessNamespace: true
  terminationGracePeriodSeconds: 0
  containers:
  - name: hello-busybox
    image: {image}
    stdin: true
    tty: true
  - name: hello-nginx
    image: {image}
    command: [sleep, '1000']
"
    )
}

#[test]
#[ignore = "a benchmark: `cargo xtask bench pod` runs it"]
fn bench_pod() {
    let runs: usize = std::env::var("SANDBOX_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let sandbox = std::env::var("SANDBOX_BENCH_BINARY")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_sandbox").to_string());
    // SAFETY: this benchmark runs alone (one test, no other threads yet); the harness
    // reads the variable while making the client.
    unsafe { std::env::set_var("SANDBOX_TEST_RUNTIME", "/usr/sbin/runc") };
    let podman = Podman::new();
    let env = common::Env::new();
    // The same image content for sandbox: the harness's oci-archive, imported.
    let archive = harness::busybox_oci_archive(env.dir.path(), "busybox.tar", IMAGE, &["sh"]);
    let sb = |args: &[&str]| {
        std::process::Command::new(&sandbox)
            .arg("--root")
            .arg(&env.state)
            .arg("--store")
            .arg(&env.store)
            .args(args)
            .output()
            .unwrap()
    };
    let o = sb(&[
        "image",
        "import",
        "--name",
        "busybox:bench",
        archive.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "import: {}", stderr(&o));
    let (mut up, mut down) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
    for i in 0..=runs {
        let name = format!("hello-pod-{i}");
        let f_sb = env.dir.path().join(format!("sb-{i}.yaml"));
        std::fs::write(&f_sb, hello_pod(&name, "busybox:bench")).unwrap();
        let f_pm = env.dir.path().join(format!("pm-{i}.yaml"));
        std::fs::write(&f_pm, hello_pod(&name, IMAGE)).unwrap();

        let t = Instant::now();
        let o = sb(&["pod", "run", "--detach", f_sb.to_str().unwrap()]);
        let u_sb = t.elapsed();
        assert!(o.status.success(), "sandbox pod run: {}", stderr(&o));
        let t = Instant::now();
        let o = sb(&["pod", "rm", "--force", &name]);
        let d_sb = t.elapsed();
        assert!(o.status.success(), "sandbox pod rm: {}", stderr(&o));

        let t = Instant::now();
        let o = podman.run(&["kube", "play", "--network", "none", f_pm.to_str().unwrap()]);
        let u_pm = t.elapsed();
        assert!(
            o.status.success(),
            "podman kube play: {}{}",
            stdout(&o),
            stderr(&o)
        );
        let t = Instant::now();
        let o = podman.run(&["pod", "rm", "-f", "-t", "0", &name]);
        let d_pm = t.elapsed();
        assert!(o.status.success(), "podman pod rm: {}", stderr(&o));
        // The first round warms caches and is not counted.
        if i > 0 {
            up[0].push(u_sb);
            up[1].push(u_pm);
            down[0].push(d_sb);
            down[1].push(d_pm);
        }
    }
    // An exec into a running container, `true`, as a probe runs it: the CPU the
    // whole machine spends (every process a client, conmon or runtime forks
    // included; /proc/stat), over blocks of 20, interleaved.
    let name = "hello-pod-exec";
    let f_sb = env.dir.path().join("sb-exec.yaml");
    std::fs::write(&f_sb, hello_pod(name, "busybox:bench")).unwrap();
    let f_pm = env.dir.path().join("pm-exec.yaml");
    std::fs::write(&f_pm, hello_pod(name, IMAGE)).unwrap();
    let o = sb(&["pod", "run", "--detach", f_sb.to_str().unwrap()]);
    assert!(o.status.success(), "sandbox pod run: {}", stderr(&o));
    let o = podman.run(&["kube", "play", "--network", "none", f_pm.to_str().unwrap()]);
    assert!(o.status.success(), "podman kube play: {}", stderr(&o));
    let pm_ctr = format!("{name}-hello-nginx");
    let (mut cpu_sb, mut cpu_pm) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let c0 = machine_cpu();
        for _ in 0..20 {
            let o = sb(&["pod", "exec", name, "-c", "hello-nginx", "--", "true"]);
            assert!(o.status.success(), "sandbox pod exec: {}", stderr(&o));
        }
        cpu_sb.push(machine_cpu() - c0);
        let c0 = machine_cpu();
        for _ in 0..20 {
            let o = podman.run(&["exec", &pm_ctr, "true"]);
            assert!(o.status.success(), "podman exec: {}", stderr(&o));
        }
        cpu_pm.push(machine_cpu() - c0);
    }
    let _ = sb(&["pod", "rm", "--force", name]);
    let _ = podman.run(&["pod", "rm", "-f", "-t", "0", name]);
    let (esb, epm) = (median(&mut cpu_sb) / 20, median(&mut cpu_pm) / 20);
    let [us, up_pm] = &mut up;
    let [ds, dp] = &mut down;
    let (us, upm, ds, dp) = (median(us), median(up_pm), median(ds), median(dp));
    println!("bench pod: the seed's two-container hello-pod, {runs} runs each, interleaved");
    for (what, s, p) in [("up (file to running)", us, upm), ("removal", ds, dp)] {
        println!(
            "  {what:<22} sandbox {:>8.1} ms   podman kube play + runc {:>8.1} ms   {:>5.1}x faster",
            s.as_secs_f64() * 1e3,
            p.as_secs_f64() * 1e3,
            p.as_secs_f64() / s.as_secs_f64()
        );
    }
    println!(
        "  exec of `true` (CPU of the whole machine per exec, median of 5 blocks of 20): \
         sandbox pod exec {:.2} ms, podman exec + runc {:.2} ms, {:.1}x less",
        esb.as_secs_f64() * 1e3,
        epm.as_secs_f64() * 1e3,
        epm.as_secs_f64() / esb.as_secs_f64()
    );
}
