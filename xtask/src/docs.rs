//! `cargo xtask completions` and `cargo xtask man`: shell completions (bash, zsh,
//! fish) and man pages for cgctl, generated from its clap definition
//! (`cgctl::command()`), so they never drift from the real flags.

use anyhow::{Context, Result};
use clap_complete::Shell;
use std::fs;
use std::path::{Path, PathBuf};

use crate::util;

/// Options of `cargo xtask completions`.
#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    /// Where to write cgctl.bash, _cgctl and cgctl.fish [default: target/completions].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Options of `cargo xtask man`.
#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// Where to write cgctl.1 and one cgctl-<command>.1 per subcommand
    /// [default: target/man].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

fn out_dir(given: Option<PathBuf>, default: &str) -> Result<PathBuf> {
    let dir = given.unwrap_or_else(|| util::root().join("target").join(default));
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

/// Writes the completion scripts for bash, zsh and fish.
pub fn completions(a: CompletionsArgs) -> Result<()> {
    let dir = out_dir(a.out, "completions")?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = cgctl::command();
        let path = clap_complete::generate_to(shell, &mut cmd, "cgctl", &dir)
            .with_context(|| format!("write the {shell} completions to {}", dir.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Writes cgctl.1 and a page per subcommand (cgctl-run.1, ...).
pub fn man(a: ManArgs) -> Result<()> {
    let dir = out_dir(a.out, "man")?;
    let cmd = cgctl::command();
    write_page(&dir, "cgctl", cmd.clone())?;
    for sub in cmd.get_subcommands() {
        write_page(&dir, &format!("cgctl-{}", sub.get_name()), sub.clone())?;
    }
    Ok(())
}

fn write_page(dir: &Path, title: &str, cmd: clap::Command) -> Result<()> {
    let file = format!("{title}.1");
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd)
        .title(title)
        .render(&mut buf)
        .with_context(|| format!("render {file}"))?;
    let path = dir.join(file);
    fs::write(&path, buf).with_context(|| format!("write {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}
