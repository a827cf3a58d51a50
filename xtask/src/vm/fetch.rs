//! Fetch and cache what the VM lane boots: QEMU, busybox and Debian kernels.
//!
//! Everything comes from the machine's apt sources with `apt-get download` and is unpacked
//! with `dpkg-deb` into `<cache>/vm/<name>`: nothing is installed on the host (installing
//! qemu-system-x86 would remove the image's newer qemu-utils, see PLATFORM.md). Each
//! directory is assembled under a temporary name and renamed into place when complete,
//! so an interrupted run leaves no half-filled cache entry and a complete one is reused.

use crate::util;
use anyhow::{Context, Result, bail};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;

/// The unpacked QEMU system emulator.
#[derive(Debug)]
pub struct Qemu {
    /// The root its packages were unpacked into.
    pub root: PathBuf,
}

impl Qemu {
    /// `qemu-system-x86_64` with its libraries and firmware set up, ready for arguments.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(self.root.join("usr/bin/qemu-system-x86_64"));
        // Some libraries (libnl) still ship in /lib rather than /usr/lib.
        let mut libs = self.root.join("usr/lib/x86_64-linux-gnu").into_os_string();
        libs.push(":");
        libs.push(self.root.join("lib/x86_64-linux-gnu"));
        cmd.env("LD_LIBRARY_PATH", libs);
        for dir in ["usr/share/seabios", "usr/share/qemu", "usr/lib/ipxe/qemu"] {
            cmd.arg("-L").arg(self.root.join(dir));
        }
        cmd
    }
}

/// A Debian kernel ready to boot: its image and the modules the lane loads (in load order).
#[derive(Debug)]
pub struct Kernel {
    /// The bzImage.
    pub vmlinuz: PathBuf,
    /// The Debian package it came from, e.g. `linux-image-6.1.0-56-amd64`.
    pub package: String,
    /// Modules to insmod, dependencies first (empty where the drivers are built in).
    pub modules: Vec<PathBuf>,
}

/// The cache folder of the VM lane.
pub fn vm_cache() -> PathBuf {
    util::cache_dir().join("vm")
}

/// QEMU, unpacked with the libraries this machine lacks (what a simulated
/// `apt-get install --no-install-recommends qemu-system-x86` would add).
pub fn qemu() -> Result<Qemu> {
    let root = vm_cache().join("qemu");
    if !root.join("usr/bin/qemu-system-x86_64").is_file() {
        ensure_apt_knows("qemu-system-x86")?;
        let sim = util::output(
            Command::new("apt-get")
                .args([
                    "install",
                    "-s",
                    "--no-install-recommends",
                    "qemu-system-x86",
                ])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
        let pkgs: Vec<&str> = sim
            .lines()
            .filter_map(|l| l.strip_prefix("Inst "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        if !pkgs.contains(&"qemu-system-x86") {
            bail!("a simulated install of qemu-system-x86 would not install it:\n{sim}");
        }
        eprintln!("xtask: fetching QEMU ({} packages)", pkgs.len());
        unpack_packages(&pkgs, &root)?;
    }
    let qemu = Qemu { root };
    util::output(qemu.command().arg("-version")).with_context(|| {
        format!(
            "the cached QEMU does not start; delete {} to fetch it again",
            qemu.root.display()
        )
    })?;
    Ok(qemu)
}

/// The static busybox that makes the initramfs userland.
pub fn busybox() -> Result<PathBuf> {
    let root = vm_cache().join("busybox");
    let bin = root.join("bin/busybox");
    if !bin.is_file() {
        ensure_apt_knows("busybox-static")?;
        eprintln!("xtask: fetching busybox-static");
        unpack_packages(&["busybox-static"], &root)?;
    }
    Ok(bin)
}

/// The Debian kernel of one lane, cached under `<cache>/vm/kernel-<lane>`.
///
/// `lane` "6.12" is `linux-image-6.12-cloud-amd64` (a metapackage: its `linux-image-*`
/// dependency holds the image); "6.1" is the newest `linux-image-6.1.0-N-amd64` in apt.
/// Once cached, a kernel is reused even when apt later offers a newer one: delete
/// `<cache>/vm/kernel-<lane>` to refresh it.
pub fn kernel(lane: &str) -> Result<Kernel> {
    let dir = vm_cache().join(format!("kernel-{lane}"));
    let package_file = dir.join("package");
    let layout_file = dir.join("layout");
    // A cache made for another module list (an older xtask) is made again.
    if package_file.is_file()
        && fs::read_to_string(&layout_file).ok().as_deref() != Some(CACHE_LAYOUT)
    {
        remove_dir_all(&dir)?;
    }
    if package_file.is_file() {
        let package = fs::read_to_string(&package_file)
            .with_context(|| format!("read {}", package_file.display()))?;
        let modules_list = dir.join("modules.order");
        let modules = fs::read_to_string(&modules_list)
            .with_context(|| format!("read {}", modules_list.display()))?
            .lines()
            .filter(|l| !l.is_empty())
            .map(|name| dir.join("modules").join(name))
            .collect();
        return Ok(Kernel {
            vmlinuz: dir.join("vmlinuz"),
            package: package.trim().to_owned(),
            modules,
        });
    }

    let package = match lane {
        "6.12" => image_package("linux-image-6.12-cloud-amd64")?,
        "6.1" => newest_6_1()?,
        other => bail!("no Debian kernel known for lane {other}"),
    };
    // Module decompression (Debian 6.12 ships .ko.xz).
    util::apt_install(&["xz-utils", "zstd"])?;
    eprintln!("xtask: fetching kernel {package}");
    let tmp = scratch_dir(&dir)?;
    let result = assemble_kernel(&package, &tmp.0);
    result.with_context(|| format!("unpack kernel {package}"))?;
    fs::rename(&tmp.0, &dir)
        .with_context(|| format!("rename {} to {}", tmp.0.display(), dir.display()))?;
    kernel(lane)
}

/// Modules the tests need that Debian builds as modules: the NVMe driver (the io.max
/// scratch disk; built in on the cloud kernel), overlayfs (sandbox root filesystems)
/// and FUSE (a test's own file system that never answers puts a process in D state).
const MODULE_ROOTS: &[&str] = &["nvme", "overlay", "fuse"];
/// Written into each cached kernel; bump it when MODULE_ROOTS changes.
const CACHE_LAYOUT: &str = "modules: nvme overlay fuse (decompressed)\n";

/// Fetch `package`, copy out its vmlinuz and the modules of MODULE_ROOTS with their
/// dependencies into `dir` (vmlinuz, modules/, modules.order, package, layout).
fn assemble_kernel(package: &str, dir: &Path) -> Result<()> {
    let dl = dir.join("download");
    fs::create_dir_all(&dl).with_context(|| format!("create {}", dl.display()))?;
    util::run(
        Command::new("apt-get")
            .args(["download", "-q", "-o", "APT::Sandbox::User=root", package])
            .current_dir(&dl),
    )?;
    let deb = only_file(&dl)?;
    // Uncompress the package's data once; the module walk below reads it several times.
    let tar = dl.join("data.tar");
    let tar_file = fs::File::create(&tar).with_context(|| format!("create {}", tar.display()))?;
    util::run(
        Command::new("dpkg-deb")
            .arg("--fsys-tarfile")
            .arg(&deb)
            .stdout(tar_file),
    )?;
    let listing = util::output(Command::new("tar").arg("-tf").arg(&tar))?;
    let vmlinuz = listing
        .lines()
        .find(|l| l.starts_with("./boot/vmlinuz-"))
        .with_context(|| format!("{package} holds no ./boot/vmlinuz-*"))?
        .to_owned();
    // Module name (as in modinfo `depends=`, with '-' as '_') -> path inside the package.
    // Debian's 6.12 kernels ship modules xz-compressed (`.ko.xz`), 6.1's plain.
    let ko: BTreeMap<String, String> = listing
        .lines()
        .filter_map(|l| {
            let file = Path::new(l).file_name()?.to_str()?;
            let stem = [".ko", ".ko.xz", ".ko.zst"]
                .iter()
                .find_map(|ext| file.strip_suffix(ext))?;
            Some((stem.replace('-', "_"), l.to_owned()))
        })
        .collect();

    let unpacked = dir.join("unpacked");
    fs::create_dir_all(&unpacked).with_context(|| format!("create {}", unpacked.display()))?;
    extract(&tar, &unpacked, &[vmlinuz.as_str()])?;
    fs::rename(unpacked.join(&vmlinuz), dir.join("vmlinuz"))
        .with_context(|| format!("move {vmlinuz} out of {}", unpacked.display()))?;

    // Walk `depends=` and `softdep=pre:` from each root module the kernel has as a
    // module (built-in ones are absent from the package), a layer at a time.
    let mut order: Vec<String> = Vec::new();
    let roots: Vec<&str> = MODULE_ROOTS
        .iter()
        .copied()
        .filter(|r| ko.contains_key(*r))
        .collect();
    if !roots.is_empty() {
        let mut deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut wanted: Vec<String> = roots.iter().map(|r| (*r).to_owned()).collect();
        while !wanted.is_empty() {
            let paths: Vec<&str> = wanted.iter().map(|n| ko[n].as_str()).collect();
            extract(&tar, &unpacked, &paths)?;
            let mut next = Vec::new();
            for name in wanted.drain(..) {
                let path = unpacked.join(&ko[&name]);
                let bytes = read_module(&path)?;
                let mine: Vec<String> = module_deps(&bytes)
                    .into_iter()
                    .filter_map(|d| {
                        // A softdep may name an algorithm alias ("crct10dif"): take its
                        // generic implementation.
                        [d.clone(), format!("{d}_generic")]
                            .into_iter()
                            .find(|n| ko.contains_key(n))
                    })
                    .collect();
                for d in &mine {
                    if !deps.contains_key(d) && !next.contains(d) {
                        next.push(d.clone());
                    }
                }
                deps.insert(name, mine);
            }
            next.retain(|n| !deps.contains_key(n));
            wanted = next;
        }
        let mut done = BTreeSet::new();
        for r in &roots {
            topo(r, &deps, &mut done, &mut order);
        }
        let modules = dir.join("modules");
        fs::create_dir_all(&modules).with_context(|| format!("create {}", modules.display()))?;
        for name in &order {
            let from = unpacked.join(&ko[name]);
            let to = modules.join(format!("{name}.ko"));
            // busybox insmod passes the file as is: store modules uncompressed.
            let bytes = read_module(&from)?;
            fs::write(&to, bytes).with_context(|| format!("write {}", to.display()))?;
        }
    }
    let order: Vec<String> = order.iter().map(|n| format!("{n}.ko\n")).collect();
    write(&dir.join("modules.order"), &order.concat())?;
    remove_dir_all(&unpacked)?;
    remove_dir_all(&dl)?;
    write(&dir.join("layout"), CACHE_LAYOUT)?;
    write(&dir.join("package"), package)
}

/// Module names from a .ko's `.modinfo` (`depends=a,b` and `softdep=pre: c d`), normalised
/// to '_'. Reading the NUL-separated strings directly avoids needing modinfo(8).
fn module_deps(ko: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    for field in ko.split(|&b| b == 0) {
        let Ok(field) = std::str::from_utf8(field) else {
            continue;
        };
        if let Some(list) = field.strip_prefix("depends=") {
            out.extend(list.split(',').filter(|s| !s.is_empty()).map(str::to_owned));
        } else if let Some(soft) = field.strip_prefix("softdep=") {
            let mut pre = false;
            for word in soft.split_whitespace() {
                match word {
                    "pre:" => pre = true,
                    "post:" => pre = false,
                    name if pre => out.push(name.to_owned()),
                    _ => {}
                }
            }
        }
    }
    out.iter().map(|n| n.replace('-', "_")).collect()
}

/// Post-order walk: every module after the modules it needs.
fn topo(
    name: &str,
    deps: &BTreeMap<String, Vec<String>>,
    done: &mut BTreeSet<String>,
    order: &mut Vec<String>,
) {
    if !done.insert(name.to_owned()) {
        return;
    }
    for d in deps.get(name).into_iter().flatten() {
        topo(d, deps, done, order);
    }
    order.push(name.to_owned());
}

/// The package that holds the image: follow `linux-image-*` dependencies of metapackages.
fn image_package(name: &str) -> Result<String> {
    ensure_apt_knows(name)?;
    let mut name = name.to_owned();
    for _ in 0..4 {
        let show =
            util::output(Command::new("apt-cache").args(["show", "--no-all-versions", &name]))?;
        let next = show
            .lines()
            .find_map(|l| l.strip_prefix("Depends:"))
            .into_iter()
            .flat_map(|deps| deps.split(','))
            .filter_map(|d| d.split_whitespace().next())
            .find(|d| d.starts_with("linux-image-"));
        match next {
            Some(next) => name = next.to_owned(),
            None => return Ok(name),
        }
    }
    bail!("linux-image dependencies of {name} do not end")
}

/// The newest `linux-image-6.1.0-N-amd64` apt knows.
fn newest_6_1() -> Result<String> {
    let search = || -> Result<Option<String>> {
        let out = util::output(Command::new("apt-cache").args([
            "search",
            "--names-only",
            r"^linux-image-6\.1\.0-[0-9]+-amd64$",
        ]))?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter_map(|p| {
                let abi = p
                    .strip_prefix("linux-image-6.1.0-")?
                    .strip_suffix("-amd64")?;
                Some((abi.parse::<u32>().ok()?, p.to_owned()))
            })
            .max()
            .map(|(_, p)| p))
    };
    if let Some(p) = search()? {
        return Ok(p);
    }
    apt_update()?;
    search()?.context("apt knows no linux-image-6.1.0-*-amd64 even after apt-get update")
}

/// `apt-get download` `pkgs` and unpack them into `dest`, which appears only once complete.
fn unpack_packages(pkgs: &[&str], dest: &Path) -> Result<()> {
    let tmp = scratch_dir(dest)?;
    let dl = tmp.0.join(".download");
    fs::create_dir_all(&dl).with_context(|| format!("create {}", dl.display()))?;
    util::run(
        Command::new("apt-get")
            .args(["download", "-q", "-o", "APT::Sandbox::User=root"])
            .args(pkgs)
            .current_dir(&dl),
    )?;
    for entry in fs::read_dir(&dl).with_context(|| format!("list {}", dl.display()))? {
        let deb = entry
            .with_context(|| format!("list {}", dl.display()))?
            .path();
        util::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp.0))?;
    }
    remove_dir_all(&dl)?;
    fs::rename(&tmp.0, dest)
        .with_context(|| format!("rename {} to {}", tmp.0.display(), dest.display()))
}

/// Extract some members of a tar archive into `dest`.
/// A kernel module's ELF bytes, decompressing `.ko.xz` / `.ko.zst` with xz / zstd.
fn read_module(path: &Path) -> Result<Vec<u8>> {
    let tool = match path.extension().and_then(|e| e.to_str()) {
        Some("xz") => Some("xz"),
        Some("zst") => Some("zstd"),
        _ => None,
    };
    match tool {
        None => fs::read(path).with_context(|| format!("read {}", path.display())),
        Some(tool) => {
            let out = Command::new(tool)
                .arg("-dc")
                .arg(path)
                .output()
                .with_context(|| format!("start {tool} to decompress {}", path.display()))?;
            if !out.status.success() {
                bail!("{tool} -dc {} failed: {}", path.display(), out.status);
            }
            Ok(out.stdout)
        }
    }
}

fn extract(tar: &Path, dest: &Path, members: &[&str]) -> Result<()> {
    util::run(
        Command::new("tar")
            .arg("-xf")
            .arg(tar)
            .arg("-C")
            .arg(dest)
            .arg("--")
            .args(members),
    )
    .with_context(|| format!("extract {members:?} from {}", tar.display()))
}

/// Make sure apt has package lists that know `pkg`, running `apt-get update` once if not.
fn ensure_apt_knows(pkg: &str) -> Result<()> {
    let known = |p: &str| {
        Command::new("apt-cache")
            .args(["show", "--no-all-versions", p])
            .output()
            .is_ok_and(|o| o.status.success() && !o.stdout.is_empty())
    };
    if known(pkg) {
        return Ok(());
    }
    apt_update()?;
    if !known(pkg) {
        bail!(
            "apt knows no package {pkg}, even after apt-get update; check /etc/apt/sources.list*"
        );
    }
    Ok(())
}

/// `apt-get update`, at most once per run.
fn apt_update() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        eprintln!("xtask: apt-get update");
        result = util::run(Command::new("apt-get").args(["update", "-qq"]));
    });
    result
}

/// A fresh sibling of `dest` to assemble it in; removed on drop unless renamed away.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn scratch_dir(dest: &Path) -> Result<ScratchDir> {
    let name = dest
        .file_name()
        .and_then(|n| n.to_str())
        .context("cache entry has no name")?;
    let tmp = dest.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    Ok(ScratchDir(tmp))
}

fn only_file(dir: &Path) -> Result<PathBuf> {
    let mut files = fs::read_dir(dir)
        .with_context(|| format!("list {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()
        .with_context(|| format!("list {}", dir.display()))?;
    if files.len() != 1 {
        bail!(
            "expected one download in {}, found {files:?}",
            dir.display()
        );
    }
    Ok(files.remove(0))
}

fn write(path: &Path, contents: &str) -> Result<()> {
    fs::write(path, contents).with_context(|| format!("write {}", path.display()))
}

fn remove_dir_all(path: &Path) -> Result<()> {
    fs::remove_dir_all(path).with_context(|| format!("remove {}", path.display()))
}
