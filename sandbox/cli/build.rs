//! Link flags of the `sandbox` binary (this package's only target).
//!
//! The workspace links static-pie binaries (`.cargo/config.toml`). At start-up a
//! static-pie applies its own relocations, reading the whole `.rela.dyn` table: 300 KB
//! for this binary, which stays mapped and counted in the peak RSS of every
//! `sandbox run`. `-z pack-relative-relocs` stores the relative relocations as DT_RELR
//! (a bitmap, a few KB), which musl 1.2.4+ and glibc 2.36+ apply; GNU ld 2.38+ has the
//! flag.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    // Cargo leaves crt-static out of CARGO_CFG_TARGET_FEATURE when it is the target's
    // default (musl); it is there when a glibc build asks for it.
    let static_crt = env == "musl"
        || std::env::var("CARGO_CFG_TARGET_FEATURE")
            .is_ok_and(|f| f.split(',').any(|f| f == "crt-static"));
    if static_crt {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
