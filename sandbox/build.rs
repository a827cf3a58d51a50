//! Link flags of the `sandbox` binary.
//!
//! The workspace links glibc static-pie binaries (`.cargo/config.toml`). At start-up a
//! static-pie applies its own relocations, reading the whole `.rela.dyn` table: 340 KB
//! for this binary, which stays mapped and counted in the peak RSS of every
//! `sandbox run`. `-z pack-relative-relocs` stores the relative relocations as DT_RELR
//! (a bitmap, a few KB), which glibc 2.36+ applies; GNU ld 2.38+ has the flag.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let gnu = std::env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|e| e == "gnu");
    let static_crt = std::env::var("CARGO_CFG_TARGET_FEATURE")
        .is_ok_and(|f| f.split(',').any(|f| f == "crt-static"));
    if gnu && static_crt {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
