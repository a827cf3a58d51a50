//! `cgroup_exporter`: serves per-cgroup metrics and eBPF throttle histograms to
//! Prometheus. Flags, the tokio runtime (one thread), HTTP (hyper 1) and SIGTERM live
//! here; reading and encoding are the `exporter` library's.
#![allow(clippy::print_stdout, clippy::print_stderr)] // a server logs to its operator

use std::cell::RefCell;
use std::convert::Infallible;
use std::error::Error as StdError;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use cgroupkit::{CgroupPath, Hierarchy};
use clap::Parser;
use exporter::{Collector, Config, Format, Pattern};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use probes::{Probe, Strategy};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

/// How long SIGTERM waits for scrapes in flight before exiting anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves per-cgroup CPU, memory, process and pressure metrics (named as cAdvisor
/// names them) and eBPF CPU-throttle histograms, read from the cgroup files at every
/// scrape.
#[derive(Parser, Debug)]
#[command(
    name = "cgroup_exporter",
    version,
    after_help = "Examples:\n  \
        cgroup_exporter                                   # every cgroup, 127.0.0.1:9753\n  \
        cgroup_exporter --listen 0.0.0.0:9753 --cgroup-root kubepods.slice --max-depth 3\n  \
        cgroup_exporter --exclude '/system.slice/*' --no-ebpf\n  \
        curl -s localhost:9753/metrics | grep throttled"
)]
struct Cli {
    /// Address to serve /metrics and /healthz on (port 0: any free port; the bound
    /// address is printed on stdout).
    #[arg(long, default_value = "127.0.0.1:9753")]
    listen: SocketAddr,
    /// The subtree to watch, relative to every hierarchy's root (`/`: everything).
    #[arg(long, default_value = "/", value_name = "PATH")]
    cgroup_root: String,
    /// Levels below --cgroup-root to export (0: only the root of the subtree).
    #[arg(long, value_name = "N")]
    max_depth: Option<usize>,
    /// Export only cgroups whose id (path) matches; `*` matches across `/`. Repeatable.
    #[arg(long, value_name = "GLOB")]
    include: Vec<Pattern>,
    /// Skip cgroups whose id matches; a GLOB ending in `*` (`/system.slice*`) skips the
    /// whole subtree without walking it. Repeatable.
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<Pattern>,
    /// Threads reading cgroup files during a scrape [default: the CPUs this process
    /// may use, at most 4].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: Option<u16>,
    /// Do not load the eBPF throttle probe.
    #[arg(long)]
    no_ebpf: bool,
    /// Attach the probe only with this strategy: fentry or sched_switch (default:
    /// fentry, else sched_switch).
    #[arg(long, value_name = "STRATEGY", conflicts_with = "no_ebpf")]
    ebpf_strategy: Option<Strategy>,
    /// The mountinfo file the cgroup hierarchies are found from.
    #[arg(long, default_value = cgroupkit::hierarchy::MOUNTINFO, value_name = "FILE")]
    mountinfo: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = format!("cgroup_exporter: error: {e}");
            let mut src = e.source();
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Box<dyn StdError>> {
    let root = cli.cgroup_root.trim_matches('/');
    let config = Config {
        cgroup_root: if root.is_empty() {
            CgroupPath::root()
        } else {
            CgroupPath::new(root)?
        },
        max_depth: cli.max_depth,
        include: cli.include,
        exclude: cli.exclude,
        threads: cli.threads.map(usize::from),
    };
    let h = Hierarchy::from_mountinfo(&cli.mountinfo)?;
    let mut collector = Collector::new(h, config)?;
    if cli.no_ebpf {
        eprintln!("cgroup_exporter: eBPF throttle probe off: --no-ebpf");
    } else {
        let mut b = Probe::builder().without_paths();
        if let Some(s) = cli.ebpf_strategy {
            b = b.strategy(s);
        }
        match b.load() {
            Ok(p) => {
                eprintln!("cgroup_exporter: eBPF throttle probe on: {}", p.strategy());
                collector.set_probe(p);
                // Loading parsed the kernel's BTF (megabytes, now freed): hand the
                // freed heap back so the long-running RSS stays small.
                #[cfg(target_env = "gnu")]
                // SAFETY: malloc_trim only releases free heap pages; no pointer is
                // invalidated.
                unsafe {
                    libc::malloc_trim(0);
                }
            }
            Err(e) => eprintln!(
                "cgroup_exporter: eBPF throttle probe off ({e}); serving the cgroup metrics without it"
            ),
        }
    }
    eprintln!(
        "cgroup_exporter: {} host, watching {}",
        collector.layout(),
        if root.is_empty() { "/" } else { root }
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, serve(cli.listen, collector))
}

async fn serve(addr: SocketAddr, collector: Collector) -> Result<(), Box<dyn StdError>> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "cgroup_exporter listening on http://{bound}/metrics")?;
        out.flush()?;
    }
    let collector = Rc::new(RefCell::new(collector));
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            r = listener.accept() => {
                let stream = match r {
                    Ok((s, _)) => s,
                    Err(e) => {
                        // EMFILE and friends: wait a moment instead of spinning.
                        eprintln!("cgroup_exporter: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let c = Rc::clone(&collector);
                let svc = service_fn(move |req| {
                    let resp = handle(&c, &req);
                    async move { Ok::<_, Infallible>(resp) }
                });
                let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
                let conn = graceful.watch(conn);
                tokio::task::spawn_local(async move {
                    // A client that goes away mid-response is not our error.
                    let _ = conn.await;
                });
            }
            _ = term.recv() => {
                eprintln!("cgroup_exporter: SIGTERM, shutting down");
                break;
            }
            _ = int.recv() => {
                eprintln!("cgroup_exporter: SIGINT, shutting down");
                break;
            }
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(DRAIN_TIMEOUT) => {
            eprintln!("cgroup_exporter: connections still open after {DRAIN_TIMEOUT:?}; exiting");
        }
    }
    Ok(())
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn handle(c: &RefCell<Collector>, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match req.uri().path() {
        "/metrics" => {
            let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
            let format = Format::negotiate(accept);
            let body = c.borrow_mut().collect(format);
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            );
            r
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/" => text(
            StatusCode::OK,
            "cgroup_exporter: metrics at /metrics, health at /healthz\n",
        ),
        _ => text(StatusCode::NOT_FOUND, "not found: try /metrics\n"),
    }
}
