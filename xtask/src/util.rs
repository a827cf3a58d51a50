//! Small helpers shared by the xtask subcommands.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (the parent of xtask/).
pub fn root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// Where downloads and unpacked tools are cached between runs (ignored by git).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("XTASK_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".cache"))
}

/// The cargo the xtask was started with.
pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    c
}

/// Run a command to completion; a non-zero exit is an error naming the command.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Run a command and return its stdout; a non-zero exit is an error with stderr.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `apt-get install` the Debian packages among `pkgs` that are not installed yet.
/// Idempotent: installed packages are skipped, and `apt-get update` runs only when
/// something is missing.
pub fn apt_install(pkgs: &[&str]) -> Result<()> {
    let missing: Vec<&str> = pkgs
        .iter()
        .copied()
        .filter(|p| {
            Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .map(|o| !String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(true)
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// The target triple that .cargo/config.toml builds the workspace for.
pub const HOST_TARGET: &str = "x86_64-unknown-linux-musl";

/// Installs the Rust standard library for [`HOST_TARGET`] where rustup lacks it (a
/// fresh machine has only its own target). Idempotent; without rustup on PATH it
/// leaves the answer to cargo.
pub fn ensure_rust_target() -> Result<()> {
    let Ok(installed) = output(Command::new("rustup").args(["target", "list", "--installed"]))
    else {
        return Ok(());
    };
    if !installed.lines().any(|l| l.trim() == HOST_TARGET) {
        eprintln!("xtask: installing the Rust standard library for {HOST_TARGET} (rustup)");
        run(Command::new("rustup").args(["target", "add", HOST_TARGET]))
            .with_context(|| format!("install the Rust standard library for {HOST_TARGET}"))?;
    }
    Ok(())
}

/// Path of a release binary of the workspace (built for [`HOST_TARGET`]).
pub fn release_bin(name: &str) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
        .join(HOST_TARGET)
        .join("release")
        .join(name)
}
