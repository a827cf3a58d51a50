//! `cargo xtask build-ebpf`: installs the Rust eBPF toolchain where it is missing
//! (idempotently) and builds probes/ebpf for `bpfel-unknown-none`.
//!
//! The recipe (shared/PLATFORM.md): nightly with rust-src, whose LLVM major must
//! equal bpf-linker's; bpf-linker built against Debian's llvm-22.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util;

/// LLVM major of the nightly toolchain and of bpf-linker; they must match.
const LLVM_MAJOR: &str = "22";
/// bpf-linker release known to build here against llvm-22.
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Where the object lands, relative to the workspace root.
pub const OBJECT: &str = "target/bpfel-unknown-none/release/probes-ebpf";

/// Options of `cargo xtask build-ebpf`.
#[derive(clap::Args, Debug, Default)]
pub struct Args {
    /// Only install the toolchain; do not build.
    #[arg(long)]
    install_only: bool,
}

fn cargo_bin(name: &str) -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"));
    home.join("bin").join(name)
}

/// Checks nightly's LLVM and installs rust-src, LLVM dev files and bpf-linker where
/// missing.
pub fn install() -> Result<()> {
    let vv = util::output(Command::new("rustc").args(["+nightly", "-vV"]))
        .context("the eBPF build needs the `nightly` toolchain (rustup toolchain list)")?;
    let llvm = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .unwrap_or("?");
    if llvm.split('.').next() != Some(LLVM_MAJOR) {
        bail!(
            "rustc +nightly uses LLVM {llvm}, but bpf-linker is built against LLVM {LLVM_MAJOR}: \
             the two must match. Use a nightly with LLVM {LLVM_MAJOR} (see shared/PLATFORM.md)"
        );
    }
    let comps = util::output(Command::new("rustup").args([
        "+nightly",
        "component",
        "list",
        "--installed",
    ]))?;
    if !comps.lines().any(|l| l.starts_with("rust-src")) {
        util::run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    util::apt_install(&[
        &format!("llvm-{LLVM_MAJOR}-dev"),
        &format!("libpolly-{LLVM_MAJOR}-dev"),
        "libzstd-dev",
    ])?;
    let linker = cargo_bin("bpf-linker");
    let have = Command::new(&linker)
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION));
    if !have {
        eprintln!(
            "xtask: building bpf-linker {BPF_LINKER_VERSION} against llvm-{LLVM_MAJOR} (a few minutes, once)"
        );
        util::run(
            Command::new("cargo")
                .args([
                    "install",
                    "--locked",
                    "bpf-linker",
                    "--version",
                    BPF_LINKER_VERSION,
                    "--no-default-features",
                    "--features",
                    &format!("llvm-{LLVM_MAJOR}"),
                ])
                .env("LLVM_PREFIX", format!("/usr/lib/llvm-{LLVM_MAJOR}")),
        )?;
    }
    Ok(())
}

/// Builds the eBPF object; returns its path.
pub fn build() -> Result<PathBuf> {
    install()?;
    let root = util::root();
    let target_dir = root.join("target");
    let mut path = std::env::var_os("PATH").unwrap_or_default();
    // bpf-linker is found on PATH by rustc.
    if let Some(bin) = cargo_bin("bpf-linker").parent() {
        let mut p = std::ffi::OsString::from(bin);
        p.push(":");
        p.push(&path);
        path = p;
    }
    util::run(
        Command::new("cargo")
            .current_dir(root.join("probes/ebpf"))
            .args([
                "+nightly",
                "build",
                "-Z",
                "build-std=core",
                "--target",
                "bpfel-unknown-none",
                "--release",
            ])
            .env("CARGO_TARGET_DIR", &target_dir)
            .env("PATH", path)
            .env(
                "CARGO_ENCODED_RUSTFLAGS",
                [
                    "--cfg=bpf_target_arch=\"x86_64\"",
                    "-C",
                    "debuginfo=2",
                    "-C",
                    "link-arg=--btf",
                ]
                .join("\x1f"),
            )
            // The workspace's host settings (static linking) are not for this target.
            .env_remove("RUSTFLAGS"),
    )?;
    let obj = root.join(OBJECT);
    if !obj.is_file() {
        bail!("the eBPF build finished but {} is missing", obj.display());
    }
    Ok(obj)
}

/// Entry point.
pub fn run(args: Args) -> Result<()> {
    if args.install_only {
        return install();
    }
    let obj = build()?;
    println!("{}", obj.display());
    Ok(())
}
