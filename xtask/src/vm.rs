//! `cargo xtask vm-test`: run the integration tests inside Debian kernels under QEMU, on
//! a machine with pure cgroup v2 (the host is hybrid, see PLATFORM.md).
//!
//! One build (static musl binaries), one initramfs (busybox, the test binaries, the
//! binaries they run, xtask/vm/init.sh as /init), then one VM per kernel. Inside, init
//! runs each test binary in turn; their output comes back over the console (ttyS0) and
//! streams to our stdout as `[vm <kernel>] ...`; the exit code of each binary comes back
//! over a second serial port (ttyS1) that only init writes to. Everything fetched is
//! cached in `<cache>/vm`; per-run files live in `<cache>/vm/run-<pid>` and are removed.

mod cpio;
mod fetch;

use crate::util;
use anyhow::{Context, Result, bail};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The workspace's target (static musl binaries), as the initramfs needs them.
const TARGET: &str = util::HOST_TARGET;
const INIT: &str = include_str!("../vm/init.sh");
/// Size of the NVMe scratch disk given to the tests (io.max needs a real block device).
const SCRATCH_BYTES: u64 = 64 << 20;
/// Files under a crate's tests/ copied into the VM (fixtures), at most this many bytes.
const FIXTURE_BUDGET: u64 = 32 << 20;

/// Options of `cargo xtask vm-test`.
#[derive(clap::Args, Debug, Clone)]
// Flattened into `cargo xtask test`, whose own struct is also named Args: the
// implicit argument group would clash.
#[group(skip)]
pub struct Args {
    /// Which kernel to boot: 6.12 (Debian cloud), 6.1 (Debian generic) or all.
    #[arg(long, value_enum, default_value_t = KernelChoice::All)]
    pub kernel: KernelChoice,
    /// Give up on a kernel's whole run (boot and all tests) after this many seconds.
    #[arg(long, default_value_t = 1500)]
    pub timeout: u64,
    /// Arguments for every test binary, after `--`: a filter, --exact, --nocapture, ...
    /// (`--test-threads=1` is added unless given: the tests measure CPU shares).
    #[arg(last = true)]
    pub test_args: Vec<String>,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            kernel: KernelChoice::All,
            timeout: 1500,
            test_args: Vec::new(),
        }
    }
}

/// The kernels of the lane.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelChoice {
    /// linux-image-6.12-cloud-amd64.
    #[value(name = "6.12")]
    V6_12,
    /// The newest linux-image-6.1.0-*-amd64.
    #[value(name = "6.1")]
    V6_1,
    /// Both, one after the other.
    All,
}

impl KernelChoice {
    fn lanes(self) -> &'static [&'static str] {
        match self {
            Self::V6_12 => &["6.12"],
            Self::V6_1 => &["6.1"],
            Self::All => &["6.12", "6.1"],
        }
    }
}

/// What one kernel's run came to.
#[derive(Debug, Clone)]
pub struct LaneSummary {
    /// `vm-6.12`, `vm-6.1`.
    pub name: String,
    /// Tests passed, from libtest's `test result:` lines.
    pub passed: u64,
    /// Tests failed, from libtest's `test result:` lines.
    pub failed: u64,
    /// Every binary ran and exited 0, and the VM reported the end of the run in time.
    pub ok: bool,
    /// The guest stopped before the end with no test failing until then: a crash of
    /// the emulated machine rather than a test failure (worth one more boot).
    pub vm_died: bool,
}

/// Entry point: run the lanes, print one line per kernel, fail if any lane failed.
pub fn run(args: Args) -> Result<()> {
    let summaries = run_lanes(&args)?;
    for s in &summaries {
        println!(
            "{}: {} ({} passed, {} failed)",
            s.name,
            if s.ok { "ok" } else { "FAILED" },
            s.passed,
            s.failed
        );
    }
    let failed: Vec<&str> = summaries
        .iter()
        .filter(|s| !s.ok)
        .map(|s| s.name.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("VM lane failed on {}", failed.join(", "));
    }
    Ok(())
}

/// Fetch what is missing, build the tests once, and boot each chosen kernel with them.
/// An error means the lane could not run; test failures are in the summaries.
pub fn run_lanes(args: &Args) -> Result<Vec<LaneSummary>> {
    let lanes = args.kernel.lanes();
    let qemu = fetch::qemu().context("fetch QEMU")?;
    let busybox = fetch::busybox().context("fetch busybox-static")?;
    let mut kernels = Vec::new();
    for lane in lanes {
        kernels.push(fetch::kernel(lane).with_context(|| format!("fetch the {lane} kernel"))?);
    }

    let build = build_tests()?;
    if build.tests.is_empty() {
        bail!("the workspace has no integration tests (<crate>/tests/*.rs) to run in the VM");
    }

    let run_dir = RunDir::create()?;
    let initramfs = run_dir.0.join("initramfs.cpio");
    let started = Instant::now();
    let size = write_initramfs(
        &initramfs,
        &busybox,
        &build,
        lanes,
        &kernels,
        &args.test_args,
    )?;
    eprintln!(
        "xtask: initramfs with {} test binaries, {} MiB, written in {:.1} s",
        build.tests.len(),
        size >> 20,
        started.elapsed().as_secs_f64()
    );

    let mut summaries = Vec::new();
    for (lane, kernel) in lanes.iter().zip(&kernels) {
        let boot = Boot {
            lane,
            kernel,
            qemu: &qemu,
            initramfs: &initramfs,
            run_dir: &run_dir.0,
            timeout: Duration::from_secs(args.timeout),
            build: &build,
        };
        let mut summary = boot.run()?;
        if summary.vm_died {
            // Seen once in many runs: the 6.12 guest faulting inside the kernel under
            // TCG with no test at fault. One more boot tells a flaky emulator from a
            // real failure; a second death fails the lane as usual.
            eprintln!(
                "xtask: {}: the guest died mid-run with no test failing; booting it once more",
                summary.name
            );
            summary = boot.run()?;
        }
        summaries.push(summary);
    }
    Ok(summaries)
}

/// The build's outputs that go into the VM.
#[derive(Debug)]
struct Build {
    /// Integration-test binaries and their crate's directory (their working directory).
    tests: Vec<TestBinary>,
    /// Every other binary (e.g. cgctl), found by tests at the path baked in at build time.
    bins: Vec<PathBuf>,
}

#[derive(Debug)]
struct TestBinary {
    path: PathBuf,
    crate_dir: PathBuf,
    /// e.g. `cgroupkit/tests/cpu`, for messages.
    label: String,
}

/// `cargo test --no-run` for the musl target; the test and bin artifacts from its JSON.
fn build_tests() -> Result<Build> {
    util::ensure_rust_target()?;
    // sandbox-cli's dev-dependency k8s-cri runs protoc in its build script.
    util::apt_install(&["protobuf-compiler"])
        .context("install protoc (k8s-cri's build script, sandbox-cli CRI tests)")?;

    eprintln!("xtask: building integration tests and examples for {TARGET}");
    let mut stdout = String::new();
    // Tests, and the examples some tests run (cgroupkit's run_limited).
    for what in ["--tests", "--examples"] {
        let sub = if what == "--tests" { "test" } else { "build" };
        let mut cmd = util::cargo();
        // The initramfs lives in guest RAM: binaries without debug info keep it small
        // (16 MB -> 3 MB each). Only these musl artifacts are affected.
        // (Cargo strips debuginfo itself when debug is off; build scripts and proc
        // macros keep their own settings, so host builds are not invalidated.)
        cmd.env("CARGO_PROFILE_DEV_DEBUG", "false")
            .env("CARGO_PROFILE_TEST_DEBUG", "false")
            // `cfg(vm_lane)`: tests that cannot run from an initramfs mark themselves
            // ignored there. (With --target, RUSTFLAGS reaches only target crates.)
            .env("RUSTFLAGS", "--cfg vm_lane");
        cmd.args([
            sub,
            "--workspace",
            "--exclude",
            "xtask",
            what,
            "--all-features",
        ]);
        if sub == "test" {
            cmd.arg("--no-run");
        }
        let out = cmd
            .args([
                "--target",
                TARGET,
                "--message-format=json-render-diagnostics",
            ])
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("start cargo {sub} {what}"))?;
        if !out.status.success() {
            bail!(
                "building the {} for {TARGET} failed ({}); see the errors above",
                &what[2..],
                out.status
            );
        }
        stdout.push_str(&String::from_utf8_lossy(&out.stdout));
    }

    let root = util::root();
    let mut build = Build {
        tests: Vec::new(),
        bins: Vec::new(),
    };
    for line in stdout.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(exe) = msg["executable"].as_str() else {
            continue;
        };
        let kinds = &msg["target"]["kind"];
        let has_kind = |k: &str| kinds.as_array().is_some_and(|a| a.iter().any(|v| v == k));
        let is_test_profile = msg["profile"]["test"] == true;
        if has_kind("test") && is_test_profile {
            let src = PathBuf::from(msg["target"]["src_path"].as_str().unwrap_or_default());
            let manifest = msg["manifest_path"]
                .as_str()
                .context("artifact without manifest_path")?;
            let crate_dir = Path::new(manifest)
                .parent()
                .context("manifest_path has no parent")?
                .to_path_buf();
            let label = src
                .strip_prefix(&root)
                .unwrap_or(&src)
                .with_extension("")
                .display()
                .to_string();
            build.tests.push(TestBinary {
                path: exe.into(),
                crate_dir,
                label,
            });
        } else if (has_kind("bin") || has_kind("example")) && !is_test_profile {
            build.bins.push(exe.into());
        }
    }
    build.tests.sort_by(|a, b| a.label.cmp(&b.label));
    for t in &build.tests {
        check_path(&t.path)?;
        check_path(&t.crate_dir)?;
    }
    Ok(build)
}

/// init.sh reads the test list as `dir|binary` lines: refuse paths that would break that.
fn check_path(path: &Path) -> Result<()> {
    let s = path
        .to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))?;
    if !path.is_absolute() || s.contains(['|', '\n', '\'']) {
        bail!("path {s:?} cannot be passed to the VM's init");
    }
    Ok(())
}

fn write_initramfs(
    path: &Path,
    busybox: &Path,
    build: &Build,
    lanes: &[&str],
    kernels: &[fetch::Kernel],
    test_args: &[String],
) -> Result<u64> {
    let mut w = cpio::Writer::create(path)?;
    let ctx = || format!("write {}", path.display());
    w.copy("bin/busybox", busybox)?;
    w.symlink("bin/sh", "busybox").with_context(ctx)?;
    w.file("init", 0o755, INIT.as_bytes()).with_context(ctx)?;
    w.char_dev("dev/console", 0o600, 5, 1).with_context(ctx)?;
    for dir in [
        "proc", "sys", "tmp", "run", "root", "sbin", "usr/bin", "usr/sbin",
    ] {
        w.dir(dir).with_context(ctx)?;
    }
    w.file(
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .with_context(ctx)?;
    w.file(
        "etc/group",
        0o644,
        b"root:x:0:\ntty:x:5:\nnogroup:x:65534:\n",
    )
    .with_context(ctx)?;

    let mut list = String::new();
    for t in &build.tests {
        w.copy(&t.path.display().to_string(), &t.path)?;
        list.push_str(&format!("{}|{}\n", t.crate_dir.display(), t.path.display()));
    }
    w.file("vmtest/tests", 0o644, list.as_bytes())
        .with_context(ctx)?;
    for bin in &build.bins {
        w.copy(&bin.display().to_string(), bin)?;
    }
    // The probes tests load the eBPF object from its build path (cargo xtask build-ebpf).
    let ebpf_obj = util::root().join(crate::ebpf::OBJECT);
    if ebpf_obj.is_file() {
        w.copy(&ebpf_obj.display().to_string(), &ebpf_obj)?;
    }
    // Each crate's tests/ (fixtures the tests open relative to their crate).
    let crate_dirs: BTreeSet<&PathBuf> = build.tests.iter().map(|t| &t.crate_dir).collect();
    let mut budget = FIXTURE_BUDGET;
    for dir in crate_dirs {
        w.dir(&dir.display().to_string()).with_context(ctx)?;
        copy_tree(&mut w, &dir.join("tests"), &mut budget)?;
    }

    for (lane, kernel) in lanes.iter().zip(kernels) {
        let mut order = String::new();
        for m in &kernel.modules {
            let name = m
                .file_name()
                .and_then(|n| n.to_str())
                .context("module without a name")?;
            w.copy(&format!("vmtest/modules/{lane}/{name}"), m)?;
            order.push_str(name);
            order.push('\n');
        }
        w.file(
            &format!("vmtest/modules/{lane}/order"),
            0o644,
            order.as_bytes(),
        )
        .with_context(ctx)?;
    }

    w.file("vmtest/config", 0o644, config(test_args).as_bytes())
        .with_context(ctx)?;
    w.finish().with_context(ctx)
}

/// The shell function init.sh runs each test binary with.
fn config(test_args: &[String]) -> String {
    let mut args: Vec<String> = Vec::new();
    if !test_args.iter().any(|a| a.starts_with("--test-threads")) {
        args.push("--test-threads=1".to_owned());
    }
    args.extend(test_args.iter().cloned());
    let quoted: Vec<String> = args
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect();
    format!("vmtest_run() {{ \"$1\" {}; }}\n", quoted.join(" "))
}

/// Copy the regular files under `dir` into the archive at their host paths.
fn copy_tree(w: &mut cpio::Writer<impl Write>, dir: &Path, budget: &mut u64) -> Result<()> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    let mut entries: Vec<_> = entries
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("list {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let ty = e
            .file_type()
            .with_context(|| format!("stat {}", path.display()))?;
        if ty.is_dir() {
            copy_tree(w, &path, budget)?;
        } else if ty.is_file() {
            let len = e
                .metadata()
                .with_context(|| format!("stat {}", path.display()))?
                .len();
            if len > *budget {
                eprintln!(
                    "xtask: warning: {} not copied into the VM (fixture budget)",
                    path.display()
                );
                continue;
            }
            *budget -= len;
            w.copy(&path.display().to_string(), &path)?;
        }
    }
    Ok(())
}

/// `<cache>/vm/run-<pid>`: this run's initramfs and scratch disks, removed on drop.
/// Directories left by runs that were killed are removed when the next run starts.
struct RunDir(PathBuf);

impl RunDir {
    fn create() -> Result<Self> {
        let vm = fetch::vm_cache();
        if let Ok(entries) = fs::read_dir(&vm) {
            for e in entries.flatten() {
                let name = e.file_name();
                let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("run-")) else {
                    continue;
                };
                if !Path::new("/proc").join(pid).exists() {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = vm.join(format!("run-{}", std::process::id()));
        fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// QEMU, killed (by its PID, via `Child::kill`) and reaped if still running when dropped.
struct Vm(Child);

impl Drop for Vm {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// One kernel's run.
struct Boot<'a> {
    lane: &'a str,
    kernel: &'a fetch::Kernel,
    qemu: &'a fetch::Qemu,
    initramfs: &'a Path,
    run_dir: &'a Path,
    timeout: Duration,
    build: &'a Build,
}

impl Boot<'_> {
    fn run(&self) -> Result<LaneSummary> {
        let lane = self.lane;
        let name = format!("vm-{lane}");
        let results_path = self.run_dir.join(format!("results-{lane}"));
        let scratch = self.run_dir.join(format!("scratch-{lane}.img"));
        // A raw disk image is just a (sparse) file of the disk's size.
        fs::File::create(&scratch)
            .and_then(|f| f.set_len(SCRATCH_BYTES))
            .with_context(|| format!("create scratch disk {}", scratch.display()))?;

        let mut cmd = self.qemu.command();
        // One host thread for both vCPUs: with multi-threaded TCG the 6.12 guest hit
        // stale int3s from static-key patching (text_poke_bp) on the other vCPU and
        // panicked in the middle of runs; single-threaded TCG keeps code
        // modification coherent.
        cmd.args([
            "-accel",
            "tcg,thread=single",
            "-cpu",
            "max",
            "-nographic",
            "-nodefaults",
        ])
        .args(["-m", "2048", "-smp", "2", "-no-reboot"])
        .arg("-kernel")
        .arg(&self.kernel.vmlinuz)
        .arg("-initrd")
        .arg(self.initramfs)
        .arg("-append")
        .arg(format!(
            "console=ttyS0 quiet panic=-1 vmtest.lane={lane} vmtest.scratch=1"
        ))
        .args(["-serial", "stdio"])
        .arg("-serial")
        .arg(format!("file:{}", results_path.display()))
        .arg("-drive")
        .arg(format!(
            "if=none,id=scratch,file={},format=raw",
            scratch.display()
        ))
        .args(["-device", "nvme,serial=scratch,drive=scratch"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());

        eprintln!("xtask: booting {} ({lane} lane)", self.kernel.package);
        let started = Instant::now();
        let mut vm = Vm(cmd.spawn().context("start qemu-system-x86_64")?);
        let console = stream(vm.0.stdout.take(), format!("[vm {lane}] "));
        let qemu_err = stream(vm.0.stderr.take(), format!("[vm {lane} qemu] "));

        let deadline = started + self.timeout;
        let status = loop {
            if let Some(status) = vm.0.try_wait().context("wait for qemu")? {
                break Some(status);
            }
            if Instant::now() >= deadline {
                break None;
            }
            thread::sleep(Duration::from_millis(100));
        };
        drop(vm); // kills qemu if it is still running (timeout)
        let console = console.join().unwrap_or_default();
        let _ = qemu_err.join();
        let elapsed = started.elapsed();

        let results = fs::read_to_string(&results_path).unwrap_or_default();
        let mut problems = Vec::new();
        match status {
            None => problems.push(format!(
                "timed out after {} s (raise it with --timeout SECS)",
                self.timeout.as_secs()
            )),
            Some(s) if !s.success() => problems.push(format!("qemu exited with {s}")),
            Some(_) => {}
        }
        let report = Report::parse(&results, &console);
        let labels: BTreeMap<String, &str> = self
            .build
            .tests
            .iter()
            .map(|t| (t.path.display().to_string(), t.label.as_str()))
            .collect();
        let label = |p: &str| labels.get(p).copied().unwrap_or(p).to_owned();
        for t in &self.build.tests {
            let key = t.path.display().to_string();
            match report.exits.get(&key) {
                Some(0) => {}
                Some(rc) => problems.push(format!("{} exited with {rc}", t.label)),
                None if report.started.contains(&key) => {
                    problems.push(format!("{} did not finish", t.label))
                }
                None => problems.push(format!("{} did not run", t.label)),
            }
        }
        if !report.done && status.is_some() {
            let last = report.started.last().map(|p| label(p));
            problems.push(match last {
                Some(l) => format!("the VM stopped before reporting the end (last started: {l})"),
                None if report.booted.is_some() => "the VM stopped before running any test".into(),
                None => "the VM stopped before its init started (see the console above)".into(),
            });
        }

        let ok = problems.is_empty();
        let test_failed = report.failed > 0 || report.exits.values().any(|rc| *rc != 0);
        let vm_died = !report.done && status.is_some() && !test_failed;
        let scratch = report.scratch.as_deref().unwrap_or("not reported");
        eprintln!(
            "xtask: {name}: kernel {}, scratch disk {scratch}, {} passed, {} failed, {:.0} s{}",
            report.booted.as_deref().unwrap_or("?"),
            report.passed,
            report.failed,
            elapsed.as_secs_f64(),
            if ok { "" } else { ", FAILED:" }
        );
        for p in &problems {
            eprintln!("xtask: {name}:   {p}");
        }
        Ok(LaneSummary {
            name,
            passed: report.passed,
            failed: report.failed,
            ok,
            vm_died,
        })
    }
}

/// What the guest reported: results port events plus libtest totals from the console.
#[derive(Debug, Default)]
struct Report {
    booted: Option<String>,
    scratch: Option<String>,
    started: Vec<String>,
    exits: BTreeMap<String, i32>,
    done: bool,
    passed: u64,
    failed: u64,
}

impl Report {
    fn parse(results: &str, console: &[String]) -> Self {
        let mut r = Self::default();
        for line in results.lines() {
            let line = line.trim_end_matches('\r');
            let mut words = line.splitn(4, ' ');
            if words.next() != Some("VMTEST") {
                continue;
            }
            match (words.next(), words.next(), words.next()) {
                (Some("BOOT"), Some(release), _) => r.booted = Some(release.to_owned()),
                (Some("SCRATCH"), Some(dev), _) => r.scratch = Some(dev.to_owned()),
                (Some("START"), Some(bin), _) => r.started.push(bin.to_owned()),
                (Some("EXIT"), Some(rc), Some(bin)) => {
                    r.exits.insert(bin.to_owned(), rc.parse().unwrap_or(-1));
                }
                (Some("DONE"), _, _) => r.done = true,
                _ => {}
            }
        }
        for line in console {
            if let Some((passed, failed)) = parse_test_result(line) {
                r.passed += passed;
                r.failed += failed;
            }
        }
        r
    }
}

/// `test result: ok. 3 passed; 1 failed; 0 ignored; ...` -> (3, 1).
fn parse_test_result(line: &str) -> Option<(u64, u64)> {
    let rest = &line[line.find("test result: ")? + "test result: ".len()..];
    let (_, counts) = rest.split_once(". ")?;
    let mut passed = None;
    let mut failed = None;
    for part in counts.split(';') {
        let mut words = part.split_whitespace();
        let n = words.next().and_then(|w| w.parse::<u64>().ok());
        match words.next() {
            Some("passed") => passed = n,
            Some("failed") => failed = n,
            _ => {}
        }
    }
    Some((passed?, failed?))
}

/// Print each line from `from` to our stdout with `prefix` as it arrives; return the lines.
fn stream(
    from: Option<impl Read + Send + 'static>,
    prefix: String,
) -> thread::JoinHandle<Vec<String>> {
    thread::spawn(move || {
        let mut lines = Vec::new();
        let Some(from) = from else {
            return lines;
        };
        let mut reader = BufReader::new(from);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&buf);
            let line = printable(line.trim_end_matches(['\n', '\r']));
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{prefix}{line}");
            let _ = out.flush();
            lines.push(line);
        }
        lines
    })
}

/// `line` without terminal control sequences: the guest's firmware resets and clears the
/// terminal (`ESC c`, `ESC [2J`), which must not reach the user's terminal or the log.
fn printable(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                // CSI: ESC [ parameters... final byte in @..~; otherwise ESC + one char.
                if chars.next() == Some('[') {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
            }
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_result_lines() {
        assert_eq!(
            parse_test_result(
                "test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s"
            ),
            Some((3, 0))
        );
        assert_eq!(
            parse_test_result("test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured"),
            Some((2, 1))
        );
        assert_eq!(parse_test_result("running 3 tests"), None);
    }

    #[test]
    fn results_port() {
        let results = "VMTEST BOOT 6.1.0-56-amd64\r\nVMTEST SCRATCH 259:0\r\nVMTEST START /t/a\r\n\
                       VMTEST EXIT 0 /t/a\r\nVMTEST START /t/b\r\nVMTEST EXIT 101 /t/b\r\nVMTEST DONE\r\n";
        let r = Report::parse(results, &["test result: ok. 1 passed; 0 failed;".into()]);
        assert_eq!(r.booted.as_deref(), Some("6.1.0-56-amd64"));
        assert_eq!(r.scratch.as_deref(), Some("259:0"));
        assert_eq!(r.exits.get("/t/b"), Some(&101));
        assert!(r.done);
        assert_eq!((r.passed, r.failed), (1, 0));
    }

    #[test]
    fn control_sequences_are_dropped() {
        assert_eq!(
            printable("\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS\tok\x07"),
            "SeaBIOS\tok"
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(
            config(&["it's".into()]),
            "vmtest_run() { \"$1\" '--test-threads=1' 'it'\\''s'; }\n"
        );
    }
}
