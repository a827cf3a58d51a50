//! Builds `pause/` (the pod infra program, no_std, raw syscalls) with rustc directly:
//! static, non-PIE, no libc or start files, panic=abort, opt-level=z. The binary is
//! embedded in the library (`pod::infra::PAUSE`) and written into each pod's infra
//! root filesystem, so the pod never depends on a file found at run time.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let src = manifest.join("../pause/src/main.rs");
    println!("cargo:rerun-if-changed={}", src.display());
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default()).join("sandbox-pause");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let status = Command::new(rustc)
        .args([
            "--edition=2024",
            "--crate-name=sandbox_pause",
            "--target=x86_64-unknown-linux-musl",
            "-Cpanic=abort",
            "-Copt-level=z",
            "-Ccodegen-units=1",
            "-Crelocation-model=static",
            "-Clink-self-contained=no",
            "-Clink-arg=-nostartfiles",
            "-Clink-arg=-nostdlib",
            "-Clink-arg=-static",
            "-Clink-arg=-Wl,--build-id=none",
            "-Cstrip=symbols",
        ])
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "building pause/ with rustc failed ({s}); it needs the x86_64-unknown-linux-musl target's core"
        ),
        Err(e) => panic!("running rustc for pause/: {e}"),
    }
}
