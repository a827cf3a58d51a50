//! `sandbox pod ...`: Kubernetes Pods on this node (sandbox::pod).

use std::io::{BufRead, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use sandbox::Error;
use sandbox::assembly::Paths;
use sandbox::pod::{self, Phase, manifest, ops, status};

#[derive(Subcommand, Debug)]
pub enum PodCmd {
    /// Runs a Kubernetes v1 Pod (YAML or JSON) from its file; without --detach,
    /// until it ends (exit 0 when it succeeded or was stopped, 1 when it failed).
    /// Restart back-off base: $SANDBOX_POD_BACKOFF_MS (default 10000).
    Run {
        /// The Pod file.
        file: PathBuf,
        /// Return once the app containers run (a supervisor process stays).
        #[arg(long, short = 'd')]
        detach: bool,
    },
    /// Lists pods.
    Ls {
        /// JSON (the pods' status).
        #[arg(long)]
        json: bool,
    },
    /// The containers of a pod: state, restarts, exit codes, readiness, OOM kills.
    Ps {
        /// Pod name.
        pod: String,
        /// JSON (the pod's status).
        #[arg(long)]
        json: bool,
    },
    /// A container's output (from its CRI log).
    Logs {
        /// Pod name.
        pod: String,
        /// Container (default: the first app container).
        #[arg(long, short = 'c')]
        container: Option<String>,
        /// Follow the log until the pod ends.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Runs a command in a container of a running pod.
    Exec {
        /// Pod name.
        pod: String,
        /// Container (default: the first app container).
        #[arg(long, short = 'c')]
        container: Option<String>,
        /// The command.
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Attaches to a running container's output (and with -i its stdin), as
    /// `kubectl attach -it POD -c CTR`; Ctrl-P Ctrl-Q detaches. With -i and a stdin
    /// that ends, leaves once the container is quiet for half a second.
    Attach {
        /// Pod name.
        pod: String,
        /// Container (default: the first app container).
        #[arg(long, short = 'c')]
        container: Option<String>,
        /// Pass this terminal's input to the container.
        #[arg(long, short = 'i')]
        stdin: bool,
        /// Put this terminal in raw mode (the container has a terminal of its own).
        #[arg(long, short = 't')]
        tty: bool,
    },
    /// The running containers' resource use (CPU, throttling, memory, tasks).
    Stats {
        /// Pod name.
        pod: String,
        /// JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stops a pod: SIGTERM, its grace period, SIGKILL; its status and logs stay.
    Stop {
        /// Pod name.
        pod: String,
    },
    /// Removes a stopped pod (with --force, a running one too).
    Rm {
        /// Pod name.
        pod: String,
        /// Stop it first if it runs.
        #[arg(long, short = 'f')]
        force: bool,
    },
}

/// The name of the CLI's output in errors.
const STDOUT: &str = "standard output";

fn w(r: std::io::Result<()>) -> Result<(), Error> {
    r.map_err(|e| Error::io("write", STDOUT, e))
}

/// Runs a `pod` subcommand; returns the exit status.
pub fn main(paths: &Paths, cmd: PodCmd) -> Result<i32, Error> {
    let mut out = std::io::stdout().lock();
    match cmd {
        PodCmd::Run { file, detach } => run(paths, &file, detach, &mut out),
        PodCmd::Ls { json } => {
            let list = ops::list(&paths.state)?;
            if json {
                let v: Vec<_> = list.iter().filter_map(|e| e.status.clone()).collect();
                w(writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&v).unwrap_or_default()
                ))?;
                return Ok(0);
            }
            w(writeln!(
                out,
                "{:<24} {:<12} {:<10} {:<6} {:<9} CREATED",
                "NAME", "NAMESPACE", "PHASE", "READY", "RESTARTS"
            ))?;
            for e in list {
                let Some(s) = e.status else { continue };
                let phase = if !e.supervised && !s.finished {
                    "Lost".to_string()
                } else {
                    format!("{:?}", s.phase)
                };
                let apps: Vec<_> = s
                    .containers
                    .iter()
                    .filter(|c| c.kind == status::Kind::App)
                    .collect();
                let ready = apps.iter().filter(|c| c.ready).count();
                let restarts: u32 = s.containers.iter().map(|c| c.restarts).sum();
                w(writeln!(
                    out,
                    "{:<24} {:<12} {:<10} {:<6} {:<9} {}",
                    s.name,
                    s.namespace,
                    phase,
                    format!("{ready}/{}", apps.len()),
                    restarts,
                    s.created
                ))?;
            }
            Ok(0)
        }
        PodCmd::Ps { pod, json } => {
            let (_, s) = ops::get(&paths.state, &pod)?;
            if json {
                w(writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&s).unwrap_or_default()
                ))?;
                return Ok(0);
            }
            w(writeln!(
                out,
                "{:<20} {:<8} {:<11} {:<6} {:<9} {:<5} {:<8} REASON",
                "CONTAINER", "KIND", "STATE", "READY", "RESTARTS", "EXIT", "PID"
            ))?;
            for c in &s.containers {
                w(writeln!(
                    out,
                    "{:<20} {:<8} {:<11} {:<6} {:<9} {:<5} {:<8} {}",
                    c.name,
                    format!("{:?}", c.kind),
                    format!("{:?}", c.state),
                    c.ready,
                    c.restarts,
                    c.exit_code
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "-".into()),
                    c.pid.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
                    c.reason.clone().unwrap_or_default()
                ))?;
            }
            Ok(0)
        }
        PodCmd::Logs {
            pod,
            container,
            follow,
        } => {
            let (dir, s) = ops::get(&paths.state, &pod)?;
            let c = ops::container(&s, container.as_deref())?;
            logs(&dir, &pod, &c.name, follow, &mut out)
        }
        PodCmd::Exec {
            pod,
            container,
            cmd,
        } => {
            drop(out);
            ops::exec(&paths.state, &pod, container.as_deref(), &cmd)
        }
        PodCmd::Attach {
            pod,
            container,
            stdin,
            tty,
        } => {
            let (dir, s) = ops::get(&paths.state, &pod)?;
            let c = ops::container(&s, container.as_deref())?;
            if c.state != status::State::Running || !sandbox::state::supervised(&dir)? {
                return Err(Error::Container {
                    name: pod,
                    what: format!("container {:?} is not running", c.name),
                });
            }
            let sock = dir
                .join(status::ATTACH_DIR)
                .join(format!("{}.sock", c.name));
            attach(&sock, stdin, tty, &mut out)
        }
        PodCmd::Stats { pod, json } => {
            let list = ops::stats(&paths.state, &pod)?;
            if json {
                w(writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&list).unwrap_or_default()
                ))?;
                return Ok(0);
            }
            let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
            w(writeln!(
                out,
                "{:<20} {:>12} {:>10} {:>14} {:>12} {:>5}",
                "CONTAINER", "CPU_USEC", "THROTTLED", "THROTTLED_USEC", "MEMORY", "PIDS"
            ))?;
            for c in list {
                w(writeln!(
                    out,
                    "{:<20} {:>12} {:>10} {:>14} {:>12} {:>5}",
                    c.name,
                    opt(c.cpu_usec),
                    opt(c.nr_throttled),
                    opt(c.throttled_usec),
                    opt(c.memory_bytes),
                    opt(c.pids)
                ))?;
            }
            Ok(0)
        }
        PodCmd::Stop { pod } => {
            ops::stop(&paths.state, &pod)?;
            Ok(0)
        }
        PodCmd::Rm { pod, force } => {
            ops::remove(
                &paths.state,
                &sandbox::store::Store::at(&paths.store),
                &pod,
                force,
            )?;
            Ok(0)
        }
    }
}

fn phase_code(p: Phase) -> i32 {
    match p {
        Phase::Failed => 1,
        _ => 0,
    }
}

fn run(
    paths: &Paths,
    file: &std::path::Path,
    detach: bool,
    out: &mut impl Write,
) -> Result<i32, Error> {
    let plan = manifest::load(file)?;
    pod::preflight(paths, &plan)?;
    let name = plan.name.clone();
    if !detach {
        let phase = pod::supervise(paths, plan, None)?;
        w(writeln!(out, "{name} {phase:?}"))?;
        return Ok(phase_code(phase));
    }
    let (r, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::io("pipe2", "supervisor report", e.into()))?;
    // SAFETY: the CLI is single-threaded here; the child only sets up its session
    // and stdio and runs the supervisor, then _exits.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            drop(r);
            let _ = nix::unistd::setsid();
            if let Ok(null) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                for fd in 0..3 {
                    // SAFETY: null is open; dup2 replaces our stdio with it.
                    unsafe { libc::dup2(null.as_raw_fd(), fd) };
                }
            }
            let code = match pod::supervise(paths, plan, Some(wr)) {
                Ok(p) => phase_code(p),
                Err(_) => 1,
            };
            // SAFETY: _exit ends the forked supervisor without the parent's atexit.
            unsafe { libc::_exit(code) }
        }
        Ok(nix::unistd::ForkResult::Parent { .. }) => {
            drop(wr);
            let mut line = String::new();
            let _ = std::io::BufReader::new(std::fs::File::from(r)).read_line(&mut line);
            let line = line.trim();
            if line == "ok" {
                w(writeln!(out, "{name}"))?;
                return Ok(0);
            }
            Err(Error::Container {
                name,
                what: line
                    .strip_prefix("failed: ")
                    .unwrap_or("its supervisor ended before the pod ran (see `sandbox pod ps`)")
                    .to_string(),
            })
        }
        Err(e) => Err(Error::io("fork", "pod supervisor", e.into())),
    }
}

/// Prints the text of a container's CRI log; with `follow`, goes on until the pod's
/// supervisor is gone.
fn logs(
    dir: &std::path::Path,
    pod: &str,
    ctr: &str,
    follow: bool,
    out: &mut impl Write,
) -> Result<i32, Error> {
    let path = ops::log_path(dir, ctr);
    let mut f = match std::fs::File::open(&path) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io("open", &path, e)),
    };
    let mut pending = String::new();
    loop {
        if f.is_none() {
            f = std::fs::File::open(&path).ok();
        }
        let mut chunk = String::new();
        if let Some(f) = f.as_mut() {
            f.read_to_string(&mut chunk)
                .map_err(|e| Error::io("read", &path, e))?;
        }
        pending.push_str(&chunk);
        while let Some(nl) = pending.find('\n') {
            let line: String = pending.drain(..=nl).collect();
            if let Some((_, partial, text)) = ops::parse_cri_line(line.trim_end_matches('\n')) {
                if partial {
                    w(write!(out, "{text}"))?;
                } else {
                    w(writeln!(out, "{text}"))?;
                }
            }
        }
        w(out.flush())?;
        if !follow {
            return Ok(0);
        }
        if !sandbox::state::supervised(dir).unwrap_or(false) {
            // One last read after the supervisor's end.
            if chunk.is_empty() {
                return Ok(0);
            }
            continue;
        }
        if let Some(f) = f.as_mut() {
            let _ = f.stream_position();
        }
        std::thread::sleep(Duration::from_millis(100));
        let _ = pod;
    }
}

/// Restores the terminal's mode when dropped.
struct RawMode(Option<nix::sys::termios::Termios>);

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
        }
    }
}

/// Gives the container's terminal (its `master`) our terminal's window size; the
/// kernel signals SIGWINCH to its foreground process group when it changed.
fn copy_window_size(master: &impl AsRawFd) {
    // SAFETY: an all-zero winsize is valid; both ioctls take a pointer to one.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
    }
}

/// Relays the container's output to ours and (with `stdin`) our input to it; on a
/// terminal, our window size changes too.
fn attach(
    sock: &std::path::Path,
    stdin: bool,
    tty: bool,
    out: &mut impl Write,
) -> Result<i32, Error> {
    use std::io::IsTerminal;
    let on_terminal = tty && std::io::stdin().is_terminal();
    // Window size changes (SIGWINCH) come through a signalfd, blocked before the
    // terminal's size is first copied so that none is missed.
    let winch = if on_terminal {
        let mut set = nix::sys::signal::SigSet::empty();
        set.add(nix::sys::signal::Signal::SIGWINCH);
        set.thread_block()
            .map_err(|e| Error::io("sigprocmask", "SIGWINCH", e.into()))?;
        Some(
            nix::sys::signalfd::SignalFd::with_flags(
                &set,
                nix::sys::signalfd::SfdFlags::SFD_CLOEXEC
                    | nix::sys::signalfd::SfdFlags::SFD_NONBLOCK,
            )
            .map_err(|e| Error::io("signalfd", "SIGWINCH", e.into()))?,
        )
    } else {
        None
    };
    let mut s =
        std::os::unix::net::UnixStream::connect(sock).map_err(|e| Error::io("connect", sock, e))?;
    // The supervisor's first byte: a terminal (with its master), or pipes.
    let mut first = [0u8; 1];
    let (n, master) = sandbox::oci::console::recv_fd(s.as_raw_fd(), &mut first)
        .map_err(|e| Error::io("recvmsg", sock, e))?;
    if n == 0 {
        return Ok(0);
    }
    let master = master.filter(|_| first[0] == status::ATTACH_TTY && winch.is_some());
    if let Some(m) = &master {
        copy_window_size(m);
    }
    let _raw = if on_terminal {
        let saved = nix::sys::termios::tcgetattr(std::io::stdin())
            .map_err(|e| Error::io("tcgetattr", "standard input", e.into()))?;
        let mut raw = saved.clone();
        nix::sys::termios::cfmakeraw(&mut raw);
        nix::sys::termios::tcsetattr(std::io::stdin(), nix::sys::termios::SetArg::TCSANOW, &raw)
            .map_err(|e| Error::io("tcsetattr", "standard input", e.into()))?;
        RawMode(Some(saved))
    } else {
        RawMode(None)
    };
    let mut reading = stdin;
    let mut last_ctrl_p = false;
    let mut buf = [0u8; 8192];
    loop {
        let mut fds = vec![libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if let Some(w) = &winch {
            fds.push(libc::pollfd {
                fd: w.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let stdin_at = fds.len();
        if reading {
            fds.push(libc::pollfd {
                fd: 0,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // With stdin done (or not asked for, and only then after input), leave once
        // the container has been quiet for half a second.
        let timeout = if reading || !stdin { -1 } else { 500 };
        // SAFETY: fds is a live array of fds.len() pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::io("poll", sock, e));
        }
        if n == 0 {
            return Ok(0);
        }
        if fds[0].revents != 0 {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return Ok(0),
                Ok(k) => {
                    w(out.write_all(&buf[..k]))?;
                    w(out.flush())?;
                }
            }
        }
        if let Some(w) = &winch
            && fds[1].revents != 0
        {
            while let Ok(Some(_)) = w.read_signal() {}
            if let Some(m) = &master {
                copy_window_size(m);
            }
        }
        if reading && fds[stdin_at].revents != 0 {
            // SAFETY: reading fd 0 into a live buffer.
            let k = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
            if k <= 0 {
                reading = false;
                continue;
            }
            let data = &buf[..k as usize];
            // Ctrl-P Ctrl-Q detaches, as docker and kubectl attach.
            for b in data {
                if last_ctrl_p && *b == 0x11 {
                    return Ok(0);
                }
                last_ctrl_p = *b == 0x10;
            }
            if s.write_all(data).is_err() {
                return Ok(0);
            }
        }
    }
}
