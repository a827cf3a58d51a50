//! The HTTP side: accept loop, per-connection limits and the bounded scrape pool.
//!
//! What keeps slow or hostile clients from starving scrapers (issue #12 item 7):
//! - a header-read timeout (hyper's, on tokio's timer): a half-sent request is closed;
//! - an idle timeout: no byte moved either way while no scrape of the connection is
//!   being computed (a client that stops reading its response) closes it;
//! - a connection cap: at the cap a new connection evicts the oldest connection
//!   that is not being answered, so a flood of slow connections cannot lock out a
//!   scraper, and the process never runs out of fds (the cap is fitted to
//!   RLIMIT_NOFILE at start-up);
//! - scrapes run on a blocking pool, at most `max_scrapes` at once, so the accept
//!   loop and the timers never wait for a scrape, and concurrent scrapers are served
//!   concurrently.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::error::Error as StdError;
use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use exporter::{Collector, Format};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use crate::log;

/// How long SIGTERM waits for scrapes in flight before exiting anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Fds kept free for everything but client connections (listener, cgroup files
/// and directories of concurrent scrapes, the eBPF maps, stdio).
const RESERVED_FDS: u64 = 64;

/// The limits of the server; see the binary's flags.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_scrapes: usize,
}

/// Raises the soft RLIMIT_NOFILE to the hard one (as Go's runtime does for servers)
/// and returns the connection cap that fits under it.
pub fn fit_max_connections(wanted: usize) -> usize {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the rlimit we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return wanted;
    }
    let want_fds = (wanted as u64).saturating_add(RESERVED_FDS);
    if rl.rlim_cur < want_fds && rl.rlim_cur < rl.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: want_fds.min(rl.rlim_max),
            rlim_max: rl.rlim_max,
        };
        // SAFETY: setrlimit reads the rlimit we own; raising the soft limit up to
        // the hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            rl.rlim_cur = raised.rlim_cur;
        }
    }
    let fit = rl.rlim_cur.saturating_sub(RESERVED_FDS).max(1);
    if (wanted as u64) > fit {
        log!(
            "cgroup_exporter: --max-connections {wanted} lowered to {fit}: RLIMIT_NOFILE is {} \
             (raise it, e.g. LimitNOFILE= or ulimit -n, for more)",
            rl.rlim_cur
        );
        return fit as usize;
    }
    wanted
}

/// One open connection, as the accept loop sees it.
struct ConnState {
    /// A request of it is being answered (a scrape computed).
    busy: Rc<Cell<bool>>,
    /// Closes it at once (eviction).
    close: Rc<Notify>,
}

/// The open connections, oldest first (ids grow with time).
#[derive(Default)]
struct Conns {
    next: u64,
    open: BTreeMap<u64, ConnState>,
}

impl Conns {
    /// Closes the oldest connection that is not being answered; false if every
    /// connection is busy.
    fn evict_oldest_idle(&mut self) -> bool {
        let victim = self
            .open
            .iter()
            .find(|(_, c)| !c.busy.get())
            .map(|(id, _)| *id);
        match victim.and_then(|id| self.open.remove(&id)) {
            Some(c) => {
                c.close.notify_one();
                true
            }
            None => false,
        }
    }
}

/// A TcpStream that records when a byte last moved, for the idle timeout.
struct Tracked {
    inner: TcpStream,
    last: Rc<Cell<Instant>>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.last.set(Instant::now());
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.last.set(Instant::now());
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.last.set(Instant::now());
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Resolves once no byte has moved for `idle` while the connection is not busy.
async fn idle_expired(last: Rc<Cell<Instant>>, busy: Rc<Cell<bool>>, idle: Duration) {
    loop {
        let deadline = last.get() + idle;
        tokio::time::sleep_until(deadline).await;
        if !busy.get() && last.get() + idle <= Instant::now() {
            return;
        }
        if busy.get() {
            // A scrape is being computed: look again after another full window.
            last.set(Instant::now());
        }
    }
}

/// Serves until SIGTERM or SIGINT.
pub async fn serve(
    addr: SocketAddr,
    collector: Arc<Collector>,
    limits: Limits,
) -> Result<(), Box<dyn StdError>> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    {
        // A closed stdout (`cgroup_exporter | head -0`) is not a reason to stop
        // serving: the line is for whoever reads it.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "cgroup_exporter listening on http://{bound}/metrics");
        let _ = out.flush();
    }
    let scrapes = Arc::new(Semaphore::new(limits.max_scrapes));
    let conns: Rc<RefCell<Conns>> = Rc::default();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            r = listener.accept() => {
                let stream = match r {
                    Ok((s, _)) => s,
                    Err(e) => {
                        // EMFILE and friends: free a slot, wait a moment, go on.
                        log!("cgroup_exporter: accept: {e}");
                        conns.borrow_mut().evict_oldest_idle();
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let (id, busy, close) = {
                    let mut c = conns.borrow_mut();
                    if c.open.len() >= limits.max_connections && !c.evict_oldest_idle() {
                        // Every connection is being answered: refuse this one.
                        drop(stream);
                        continue;
                    }
                    let id = c.next;
                    c.next += 1;
                    let busy = Rc::new(Cell::new(false));
                    let close = Rc::new(Notify::new());
                    c.open.insert(id, ConnState { busy: Rc::clone(&busy), close: Rc::clone(&close) });
                    (id, busy, close)
                };
                let last = Rc::new(Cell::new(Instant::now()));
                let io = TokioIo::new(Tracked { inner: stream, last: Rc::clone(&last) });
                let (c, sem, b) = (Arc::clone(&collector), Arc::clone(&scrapes), Rc::clone(&busy));
                let svc = service_fn(move |req| {
                    let (c, sem, b) = (Arc::clone(&c), Arc::clone(&sem), Rc::clone(&b));
                    async move {
                        b.set(true);
                        let resp = handle(c, sem, req).await;
                        b.set(false);
                        Ok::<_, Infallible>(resp)
                    }
                });
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits.header_timeout)
                    .serve_connection(io, svc);
                let conn = graceful.watch(conn);
                let conns = Rc::clone(&conns);
                tokio::task::spawn_local(async move {
                    tokio::select! {
                        // A client that goes away mid-response is not our error.
                        _ = conn => {}
                        _ = close.notified() => {}
                        _ = idle_expired(last, busy, limits.idle_timeout) => {}
                    }
                    conns.borrow_mut().open.remove(&id);
                });
            }
            _ = term.recv() => {
                log!("cgroup_exporter: SIGTERM, shutting down");
                break;
            }
            _ = int.recv() => {
                log!("cgroup_exporter: SIGINT, shutting down");
                break;
            }
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(DRAIN_TIMEOUT) => {
            log!("cgroup_exporter: connections still open after {DRAIN_TIMEOUT:?}; exiting");
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

async fn handle(
    c: Arc<Collector>,
    scrapes: Arc<Semaphore>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
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
            // A slot of the bounded pool; the semaphore is never closed.
            let Ok(_permit) = scrapes.acquire_owned().await else {
                return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
            };
            let body = match tokio::task::spawn_blocking(move || c.collect(format)).await {
                Ok(b) => b,
                Err(_) => {
                    return text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the scrape failed; see the exporter's log\n",
                    );
                }
            };
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
