//! `cargo xtask vm` (being built).

use anyhow::{Result, bail};

/// Options of `cargo xtask vm`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Entry point.
pub fn run(_args: Args) -> Result<()> {
    bail!("cargo xtask vm is not built yet")
}
