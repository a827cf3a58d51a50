//! `sandbox image ...`, `sandbox commit` and `sandbox system df`.

use std::cell::RefCell;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use clap::Subcommand;
use sandbox::image::{Phase, Platform, Progress, PullOptions, RegistryOptions};
use sandbox::{Error, store};

use crate::printable;

#[derive(Subcommand, Debug)]
pub enum ImageCmd {
    /// Imports an OCI image layout (a directory or a tar).
    Import {
        /// The layout.
        path: PathBuf,
        /// NAME[:TAG] (default: the index's ref.name annotation).
        #[arg(long)]
        name: Option<String>,
    },
    /// Pulls an image from a registry ([REGISTRY/]NAME[:TAG][@sha256:...]); layers the
    /// store holds are not downloaded again.
    Pull(Box<PullArgs>),
    /// Writes an image as an OCI image layout: a folder, or FILE.tar.
    Export {
        /// NAME[:TAG].
        reference: String,
        /// A folder (new, empty or a layout) or FILE.tar.
        dest: PathBuf,
    },
    /// Pushes an image to a registry; blobs it has are not sent.
    Push {
        /// The local image, NAME[:TAG] (REGISTRY/NAME:TAG to push it there).
        reference: String,
        /// Where to push, REGISTRY/NAME:TAG (default: the image's name).
        dest: Option<String>,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Lists images: size, unique size (its layers no other image uses), shared size.
    Ls,
    /// Removes an image (refused while a container uses it).
    Rm {
        /// NAME[:TAG].
        name: String,
    },
    /// Removes the layers and blobs no image uses, and partial downloads.
    Prune,
}

#[derive(clap::Args, Debug)]
pub struct CommitArgs {
    /// The container (running, or exited and kept with `run --keep`).
    container: String,
    /// The new image, NAME[:TAG].
    name: String,
    /// A configuration change: ENV K=V, CMD ["a","b"], ENTRYPOINT [...], WORKDIR /dir,
    /// USER u[:g], LABEL k=v (repeatable).
    #[arg(long, short = 'c')]
    change: Vec<String>,
    /// Every entry's modification time, seconds since the epoch (default
    /// $SOURCE_DATE_EPOCH if set): the same changes then give the same layer.
    #[arg(long)]
    mtime: Option<i64>,
    /// A comment for the image's history.
    #[arg(long, short = 'm')]
    message: Option<String>,
}

/// Runs `sandbox commit`.
pub fn commit(
    state_root: &std::path::Path,
    store_root: &std::path::Path,
    a: CommitArgs,
) -> Result<i32, Error> {
    let s = store::Store::at(store_root);
    let (upper, image) = sandbox::image::container_upper(state_root, &a.container)?;
    let base = s.image_of_container(&image)?;
    let changes = a
        .change
        .iter()
        .map(|c| c.parse())
        .collect::<Result<Vec<sandbox::image::Change>, Error>>()?;
    let mtime = match a.mtime {
        Some(t) => Some(t),
        None => match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(v) => Some(v.trim().parse().map_err(|_| {
                Error::Config(format!(
                    "SOURCE_DATE_EPOCH={v:?} is not a number of seconds"
                ))
            })?),
            Err(_) => None,
        },
    };
    let opts = sandbox::image::CommitOptions {
        changes,
        mtime,
        message: a.message,
    };
    let img = s.commit(&upper, &base, &a.name, &opts)?;
    let mut out = std::io::stdout().lock();
    w(
        &mut out,
        &format!(
            "committed {}:{} ({}, layer {})",
            printable(&img.name),
            printable(&img.tag),
            img.manifest,
            img.layers.last().map(String::as_str).unwrap_or_default()
        ),
    )?;
    Ok(0)
}

#[derive(Subcommand, Debug)]
pub enum SystemCmd {
    /// Disk used by images and layers, with what sharing saves.
    Df,
}

#[derive(clap::Args, Debug)]
pub struct RegistryArgs {
    /// USER:PASSWORD for the registry.
    #[arg(long)]
    creds: Option<String>,
    /// A docker-style config.json / auth.json (default: $REGISTRY_AUTH_FILE,
    /// $XDG_RUNTIME_DIR/containers/auth.json, $DOCKER_CONFIG/config.json,
    /// ~/.docker/config.json).
    #[arg(long = "authfile")]
    auth_file: Option<PathBuf>,
    /// Plain HTTP to the registry named in the reference (HOST:PORT/NAME).
    #[arg(long)]
    insecure: bool,
}

impl RegistryArgs {
    fn options(&self) -> RegistryOptions {
        RegistryOptions {
            creds: self.creds.clone(),
            auth_file: self.auth_file.clone(),
            insecure: self.insecure,
            ..RegistryOptions::default()
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct PullArgs {
    /// [REGISTRY/]NAME[:TAG][@sha256:...].
    reference: String,
    #[command(flatten)]
    registry: RegistryArgs,
    /// The platform to take from an image index.
    #[arg(long, default_value = "linux/amd64")]
    platform: String,
    /// Layers downloaded at once.
    #[arg(long, default_value_t = 3)]
    parallel: usize,
    /// Store the image under this NAME:TAG.
    #[arg(long)]
    name: Option<String>,
    /// No progress display.
    #[arg(long, short = 'q')]
    quiet: bool,
}

/// The pull's progress on stderr: a table redrawn in place on a terminal, one line
/// per layer event otherwise.
struct Display {
    tty: bool,
    quiet: bool,
    rows: RefCell<Vec<Row>>,
    drawn: RefCell<usize>,
    last: RefCell<Instant>,
}

struct Row {
    digest: String,
    size: u64,
    done: u64,
    phase: Phase,
    started: Instant,
}

fn human(n: u64) -> String {
    let f = n as f64;
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KB", f / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MB", f / 1_048_576.0),
        _ => format!("{:.2} GB", f / 1_073_741_824.0),
    }
}

fn short(d: &str) -> &str {
    let h = d.strip_prefix("sha256:").unwrap_or(d);
    &h[..h.len().min(12)]
}

impl Display {
    fn line(r: &Row) -> String {
        let what = match r.phase {
            Phase::Present => "already present".to_string(),
            Phase::Downloading => {
                let secs = r.started.elapsed().as_secs_f64().max(0.001);
                format!(
                    "{} / {}  {}/s",
                    human(r.done),
                    human(r.size),
                    human((r.done as f64 / secs) as u64)
                )
            }
            Phase::Downloaded => format!("downloaded {}", human(r.size)),
            Phase::Unpacked => format!("unpacked ({})", human(r.size)),
        };
        format!("{}  {what}", short(&r.digest))
    }

    fn draw(&self) {
        let rows = self.rows.borrow();
        let mut err = std::io::stderr().lock();
        let mut text = String::new();
        let drawn = *self.drawn.borrow();
        if drawn > 0 {
            text.push_str(&format!("\x1b[{drawn}A"));
        }
        for r in rows.iter() {
            text.push_str(&format!("\x1b[2K{}\n", Display::line(r)));
        }
        let _ = err.write_all(text.as_bytes());
        *self.drawn.borrow_mut() = rows.len();
        *self.last.borrow_mut() = Instant::now();
    }
}

impl Progress for Display {
    fn resolved(&self, reference: &str, manifest: &str, layers: usize) {
        if !self.quiet {
            let _ = writeln!(
                std::io::stderr(),
                "{}: manifest {manifest}, {layers} layers",
                printable(reference)
            );
        }
    }

    fn layer(&self, digest: &str, size: u64, done: u64, phase: Phase) {
        if self.quiet {
            return;
        }
        let changed = {
            let mut rows = self.rows.borrow_mut();
            match rows.iter_mut().find(|r| r.digest == digest) {
                Some(r) => {
                    let changed = r.phase != phase;
                    r.done = done;
                    r.phase = phase;
                    changed
                }
                None => {
                    rows.push(Row {
                        digest: digest.to_string(),
                        size,
                        done,
                        phase,
                        started: Instant::now(),
                    });
                    true
                }
            }
        };
        if self.tty {
            if changed || self.last.borrow().elapsed().as_millis() >= 200 {
                self.draw();
            }
        } else if changed && phase != Phase::Downloading {
            let rows = self.rows.borrow();
            if let Some(r) = rows.iter().find(|r| r.digest == digest) {
                let _ = writeln!(std::io::stderr(), "{}", Display::line(r));
            }
        }
    }
}

/// Sizes of the store's images and layers, for `image ls` and `system df`.
fn usage_table(s: &store::Store, out: &mut dyn Write) -> Result<(), Error> {
    let u = s.usage()?;
    w(
        out,
        &format!(
            "{:<40} {:<16} {:>6} {:>10} {:>10} {:>10}",
            "NAME", "TAG", "LAYERS", "SIZE", "UNIQUE", "SHARED"
        ),
    )?;
    for i in &u.images {
        w(
            out,
            &format!(
                "{:<40} {:<16} {:>6} {:>10} {:>10} {:>10}",
                printable(&i.image.name),
                printable(&i.image.tag),
                i.image.layers.len(),
                human(i.size),
                human(i.unique),
                human(i.shared)
            ),
        )?;
    }
    Ok(())
}

fn w(out: &mut dyn Write, line: &str) -> Result<(), Error> {
    writeln!(out, "{line}").map_err(|e| Error::io("write", std::path::Path::new(crate::STDOUT), e))
}

/// Where the system has no CA store, a plain-HTTP registry client still needs one
/// (oci-client builds a TLS client regardless): point `SSL_CERT_FILE` at a root that
/// signs nothing, kept in the store. Called before any thread exists.
fn plain_http_without_ca(s: &store::Store, insecure: bool) -> Result<(), Error> {
    use sandbox::image::pull::{PLAIN_HTTP_ROOT, tls_roots_available};
    if !insecure || tls_roots_available() {
        return Ok(());
    }
    s.prepare()?;
    let p = s.root().join("plain-http-root.pem");
    std::fs::write(&p, PLAIN_HTTP_ROOT).map_err(|e| Error::io("write", &p, e))?;
    // SAFETY: the process is single-threaded here: the async runtime (and every
    // thread the registry client uses) starts later, inside pull/push.
    unsafe { std::env::set_var("SSL_CERT_FILE", &p) };
    Ok(())
}

/// Runs `sandbox image CMD`.
pub fn image(store_root: &std::path::Path, cmd: ImageCmd) -> Result<i32, Error> {
    let s = store::Store::at(store_root);
    let mut out = std::io::stdout().lock();
    match cmd {
        ImageCmd::Import { path, name } => {
            for i in s.import(&path, name.as_deref())? {
                w(
                    &mut out,
                    &format!(
                        "imported {}:{} ({} layers, {})",
                        printable(&i.name),
                        printable(&i.tag),
                        i.layers.len(),
                        i.manifest
                    ),
                )?;
            }
        }
        ImageCmd::Pull(a) => {
            let opts = PullOptions {
                registry: a.registry.options(),
                platform: a.platform.parse::<Platform>()?,
                parallel: a.parallel,
                name: a.name.clone(),
            };
            let d = Display {
                tty: std::io::stderr().is_terminal(),
                quiet: a.quiet,
                rows: RefCell::new(Vec::new()),
                drawn: RefCell::new(0),
                last: RefCell::new(Instant::now()),
            };
            plain_http_without_ca(&s, a.registry.insecure)?;
            let p = s.pull(&a.reference, &opts, &d)?;
            if d.tty && !a.quiet {
                d.draw();
            }
            w(
                &mut out,
                &format!(
                    "pulled {}:{} ({}; {} layers: {} downloaded, {} already present; {})",
                    printable(&p.image.name),
                    printable(&p.image.tag),
                    p.image.manifest,
                    p.image.layers.len(),
                    p.downloaded.len(),
                    p.present.len(),
                    human(p.bytes)
                ),
            )?;
        }
        ImageCmd::Ls => usage_table(&s, &mut out)?,
        ImageCmd::Export { reference, dest } => {
            let i = s.export(&reference, &dest)?;
            w(
                &mut out,
                &format!(
                    "exported {}:{} to {}",
                    printable(&i.name),
                    printable(&i.tag),
                    dest.display()
                ),
            )?;
        }
        ImageCmd::Push {
            reference,
            dest,
            registry,
        } => {
            plain_http_without_ca(&s, registry.insecure)?;
            let p = s.push(&reference, dest.as_deref(), &registry.options())?;
            w(
                &mut out,
                &format!(
                    "pushed {} ({}): {} blobs uploaded, {} mounted, {} already there",
                    printable(dest.as_deref().unwrap_or(&reference)),
                    p.manifest,
                    p.uploaded.len(),
                    p.mounted.len(),
                    p.present.len()
                ),
            )?;
        }
        ImageCmd::Prune => {
            let p = s.prune()?;
            w(
                &mut out,
                &format!(
                    "removed {} layers and {} files, {} freed",
                    p.layers,
                    p.files,
                    human(p.bytes)
                ),
            )?;
        }
        ImageCmd::Rm { name } => {
            let i = s.remove(&name)?;
            w(
                &mut out,
                &format!("removed {}:{}", printable(&i.name), printable(&i.tag)),
            )?;
        }
    }
    Ok(0)
}

/// Runs `sandbox system CMD`.
pub fn system(store_root: &std::path::Path, cmd: SystemCmd) -> Result<i32, Error> {
    let s = store::Store::at(store_root);
    let mut out = std::io::stdout().lock();
    match cmd {
        SystemCmd::Df => {
            let u = s.usage()?;
            w(
                &mut out,
                &format!("{:<16} {:>6} {:>10}  NOTE", "TYPE", "COUNT", "SIZE"),
            )?;
            w(
                &mut out,
                &format!(
                    "{:<16} {:>6} {:>10}  {} without sharing",
                    "Images",
                    u.images.len(),
                    human(u.layers.1 - u.unused_layers.1),
                    human(u.unshared_total)
                ),
            )?;
            let rows = [
                ("Layers", u.layers, "unpacked, each once"),
                ("Unused layers", u.unused_layers, "image prune removes them"),
                ("Blobs", u.blobs, "compressed layers, configs, manifests"),
                ("Downloads", u.downloads, "partial: a pull resumes them"),
            ];
            for (what, (n, size), note) in rows {
                w(
                    &mut out,
                    &format!("{what:<16} {n:>6} {:>10}  {note}", human(size)),
                )?;
            }
            w(&mut out, "")?;
            usage_table(&s, &mut out)?;
        }
    }
    Ok(0)
}
