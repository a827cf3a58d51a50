//! `cargo xtask test`: every test lane, one summary line each.
//!
//! - lint: `cargo fmt --check` and `cargo clippy -D warnings`
//! - unit: library/binary unit tests and doc tests (fixtures of kernel file formats)
//! - host: integration tests as root on this machine's kernel (hybrid cgroups here)
//! - vm:   the integration tests in Debian kernels under QEMU with pure cgroup v2

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::{util, vm};

/// Options of `cargo xtask test`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Skip the VM lane (it needs a few minutes under software emulation).
    #[arg(long)]
    no_vm: bool,
    /// Skip the lint lane.
    #[arg(long)]
    no_lint: bool,
    /// Options of the VM lane.
    #[command(flatten)]
    vm: vm::Args,
}

/// The outcome of one lane.
struct Lane {
    name: String,
    passed: u64,
    failed: u64,
    ok: bool,
    note: String,
}

/// Runs `cmd`, streaming its stdout, and counts libtest's `test result:` lines.
fn cargo_test_lane(name: &str, cmd: &mut Command) -> Result<Lane> {
    eprintln!("xtask: lane {name}: {cmd:?}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let (mut passed, mut failed) = (0, 0);
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line?;
            println!("{line}");
            if let Some((p, f)) = parse_result_line(&line) {
                passed += p;
                failed += f;
            }
        }
    }
    let status = child.wait()?;
    Ok(Lane {
        name: name.into(),
        passed,
        failed,
        ok: status.success(),
        note: if status.success() {
            String::new()
        } else {
            format!("({status})")
        },
    })
}

/// `test result: ok. 21 passed; 0 failed; 0 ignored; ...` -> (21, 0).
pub fn parse_result_line(line: &str) -> Option<(u64, u64)> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let num_before = |word: &str| -> Option<u64> {
        rest.split(';')
            .find_map(|part| {
                part.trim()
                    .strip_suffix(word)
                    .map(|n| n.trim().rsplit(' ').next().unwrap_or(""))
            })
            .and_then(|n| n.trim().parse().ok())
    };
    Some((num_before("passed")?, num_before("failed")?))
}

fn lint() -> Result<Lane> {
    let fmt = util::cargo()
        .args(["fmt", "--all", "--", "--check"])
        .status()?;
    let clippy = util::cargo()
        .args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--quiet",
            "--",
            "-D",
            "warnings",
        ])
        .status()?;
    Ok(Lane {
        name: "lint".into(),
        passed: u64::from(fmt.success()) + u64::from(clippy.success()),
        failed: u64::from(!fmt.success()) + u64::from(!clippy.success()),
        ok: fmt.success() && clippy.success(),
        note: "(rustfmt, clippy)".into(),
    })
}

/// Entry point.
pub fn run(args: Args) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        bail!(
            "the host and VM lanes run the kernel's cgroups for real: run `cargo xtask test` as root"
        );
    }
    // Every lane builds sandbox-cli's dev-dependencies, among them k8s-cri (tests/cri.rs),
    // whose build script runs protoc: install it before the first build.
    util::apt_install(&["protobuf-compiler"])
        .context("install protoc (k8s-cri's build script, sandbox-cli CRI tests)")?;
    let mut lanes = Vec::new();
    if !args.no_lint {
        lanes.push(lint()?);
    }
    lanes.push(cargo_test_lane(
        "unit",
        util::cargo().args([
            "test",
            "--workspace",
            "--all-features",
            "--no-fail-fast",
            "--lib",
            "--bins",
        ]),
    )?);
    let doc = cargo_test_lane(
        "doc",
        util::cargo().args([
            "test",
            "--workspace",
            "--all-features",
            "--no-fail-fast",
            "--doc",
        ]),
    )?;
    lanes.push(doc);
    // Some host tests run the examples (cgroupkit's run_limited): build them first.
    util::run(util::cargo().args(["build", "--workspace", "--all-features", "--examples"]))?;
    // The probes tests load the eBPF object from target/: build it (and install its
    // toolchain where missing) before the host lane; the VM lane copies it in.
    crate::ebpf::build().context("cargo xtask build-ebpf (needed by the probes tests)")?;
    // The exporter tests lint a real scrape with `promtool check metrics` and
    // deploy/prometheus.yml with `promtool check config` (Debian package prometheus).
    util::apt_install(&["prometheus"]).context("install promtool (exporter tests)")?;
    // The sandbox tests build their busybox rootfs and OCI image from /bin/busybox.
    util::apt_install(&["busybox-static"]).context("install busybox-static (sandbox tests)")?;
    // nskit's unprivileged user-namespace test maps an id range through newuidmap.
    util::apt_install(&["uidmap"]).context("install newuidmap/newgidmap (nskit tests)")?;
    // The OCI tests tell pivot_root from --no-pivot's chroot by the system calls made.
    util::apt_install(&["strace"]).context("install strace (sandbox-cli OCI tests)")?;
    // sandbox-cli's tests/clients.rs drive the runtime through its real clients: podman
    // (with conmon) and containerd + ctr (with the runc shim v2). The tests never use a
    // system daemon (none starts here: no systemd, and policy-rc.d refuses): each runs
    // private instances with their own socket, root and state.
    util::apt_install(&["podman", "containerd"])
        .context("install podman and containerd (sandbox-cli client tests)")?;
    // sandbox-cli's tests/image_*.rs pull from and push to a registry on loopback
    // (distribution 2.8), seeded and read back with skopeo; htpasswd makes its
    // basic-auth password file.
    util::apt_install(&["docker-registry", "skopeo", "apache2-utils"])
        .context("install docker-registry, skopeo, htpasswd (sandbox-cli image tests)")?;
    // podman (cgroupfs manager) leaves empty `libpod_parent` trees behind the client
    // tests and never removes them: ours to remove after the lane, unless they were
    // there before it (then they are someone else's).
    let podman_cgroups_before = libpod_parents();
    lanes.push(cargo_test_lane(
        "host",
        util::cargo()
            .args([
                "test",
                "--workspace",
                "--all-features",
                // Every test binary runs even when one fails: the summary counts all.
                "--no-fail-fast",
                "--exclude",
                "xtask",
                "--test",
                "*",
            ])
            .env("CGROUPKIT_LANE", "host"),
    )?);
    if podman_cgroups_before.is_empty() {
        for d in libpod_parents() {
            remove_empty_tree(&d);
        }
    }
    if !args.no_vm {
        match vm::run_lanes(&args.vm) {
            Ok(v) => lanes.extend(v.into_iter().map(|l| Lane {
                name: l.name,
                passed: l.passed,
                failed: l.failed,
                ok: l.ok,
                note: String::new(),
            })),
            Err(e) => lanes.push(Lane {
                name: "vm".into(),
                passed: 0,
                failed: 1,
                ok: false,
                note: format!("({e:#})"),
            }),
        }
    }
    println!();
    println!("xtask test summary:");
    for l in &lanes {
        println!(
            "  lane {:<10} {:<4} {} passed, {} failed {}",
            l.name,
            if l.ok { "ok" } else { "FAIL" },
            l.passed,
            l.failed,
            l.note
        );
    }
    let passed: u64 = lanes.iter().map(|l| l.passed).sum();
    let failed: u64 = lanes.iter().map(|l| l.failed).sum();
    println!("{passed} passed, {failed} failed");
    if lanes.iter().any(|l| !l.ok) {
        bail!("some lanes failed");
    }
    Ok(())
}

/// The `libpod_parent` cgroup folders on this host's hierarchies.
pub(crate) fn libpod_parents() -> Vec<std::path::PathBuf> {
    let root = std::path::Path::new("/sys/fs/cgroup");
    let mut dirs = vec![root.to_path_buf()];
    if let Ok(rd) = std::fs::read_dir(root) {
        dirs.extend(rd.flatten().map(|e| e.path()));
    }
    dirs.into_iter()
        .map(|d| d.join("libpod_parent"))
        .filter(|d| d.is_dir())
        .collect()
}

/// rmdir of every folder of the cgroup tree `dir`, deepest first: a cgroup that still
/// holds a process (or a child that does) is refused by the kernel and stays.
pub(crate) fn remove_empty_tree(dir: &std::path::Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

#[cfg(test)]
mod tests {
    #[test]
    fn remove_empty_tree_keeps_what_is_not_empty() {
        let d = std::env::temp_dir().join(format!("xtask-tree-{}", std::process::id()));
        std::fs::create_dir_all(d.join("a/b/c")).unwrap();
        std::fs::create_dir_all(d.join("k/e")).unwrap();
        std::fs::write(d.join("k/file"), "x").unwrap();
        super::remove_empty_tree(&d.join("a"));
        super::remove_empty_tree(&d.join("k"));
        assert!(!d.join("a").exists());
        assert!(d.join("k/file").exists() && !d.join("k/e").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    use super::*;

    #[test]
    fn parses_libtest_summary() {
        assert_eq!(
            parse_result_line(
                "test result: ok. 21 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s"
            ),
            Some((21, 0))
        );
        assert_eq!(
            parse_result_line("test result: FAILED. 7 passed; 1 failed; 0 ignored; 0 measured"),
            Some((7, 1))
        );
        assert_eq!(parse_result_line("running 3 tests"), None);
    }
}
