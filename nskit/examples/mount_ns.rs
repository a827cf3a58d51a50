//! The seed's mount namespace demonstration: a child in a new mount namespace mounts a
//! tmpfs on /tmp and sees an empty /tmp; the host's /tmp is unchanged.
//!
//! `cargo run -p nskit --example mount_ns` (as root).
#![allow(clippy::print_stdout)] // an example shows its result

use nskit::{MountSpec, Namespace, Spawn, Stdio};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Something in the host's /tmp, so "empty" means something.
    let marker = std::path::PathBuf::from(format!("/tmp/nskit-mount-ns-{}", std::process::id()));
    std::fs::write(&marker, "host")?;
    let host_before = count("/tmp")?;

    // clone3(CLONE_NEWNS); in the child: mount --make-rprivate /, mount -t tmpfs none /tmp,
    // then exec the shell, which lists /tmp and writes a file there.
    let mut child = Spawn::new("/bin/sh")
        .args(["-c", "echo \"child: /tmp has $(ls -A /tmp | wc -l) entries\"; echo hi > /tmp/made-in-child; ls -A /tmp"])
        .namespaces(Namespace::MOUNT)
        .mount(MountSpec::tmpfs("/tmp"))
        .stdout(Stdio::Piped)
        .spawn()?;
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        std::io::Read::read_to_string(&mut o, &mut out)?;
    }
    let status = child.wait()?;
    print!("{out}");
    println!("child exited: {status}");

    let host_after = count("/tmp")?;
    println!(
        "host: /tmp had {host_before} entries before and {host_after} after; made-in-child visible on the host: {}",
        std::path::Path::new("/tmp/made-in-child").exists()
    );
    std::fs::remove_file(&marker)?;
    Ok(())
}

fn count(dir: &str) -> std::io::Result<usize> {
    Ok(std::fs::read_dir(dir)?.count())
}
