//! Watching a cgroup's state changes: populated / frozen (v2 cgroup.events), memory
//! events such as OOM kills (v2 memory.events; v1 memory.oom_control through
//! cgroup.event_control), and fork failures (pids.events).
//!
//! The kernel notifies changes of these files through inotify (`IN_MODIFY`; v2 and
//! pids.events) and, on v1, through an eventfd registered in cgroup.event_control.
//! [`EventWatcher`] waits on both with one epoll set, rereads the files, and yields
//! one [`Event`] per value that changed. With the `tokio` feature,
//! [`AsyncEventWatcher`] does the same without blocking a runtime thread.
//!
//! # Examples
//! ```no_run
//! use cgroupkit::{Cgroup, CgroupPath, Hierarchy, events::Event};
//! let h = Hierarchy::detect()?;
//! let cg = Cgroup::load(&h, &CgroupPath::new("myapp")?)?;
//! for ev in cg.watch()? {
//!     match ev? {
//!         Event::Memory { kind, count } => println!("memory {kind:?}: {count}"),
//!         Event::Populated(false) => { println!("empty"); break }
//!         other => println!("{other:?}"),
//!     }
//! }
//! # Ok::<(), cgroupkit::Error>(())
//! ```

use std::collections::VecDeque;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::cgroup::{Cgroup, CgroupDir};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::hierarchy::{Controller, Version};
use crate::lifecycle::{CGROUP_EVENTS, CgroupEvents};
use crate::memory::{self, MemoryEvents};
use crate::pids::{self, PidsStat};
use crate::sys;

/// v1: register an eventfd for notifications on a control file.
pub const CGROUP_EVENT_CONTROL: &str = "cgroup.event_control";

/// A memory event counter (v2 memory.events keys; v1 OOM notifications).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum MemoryEventKind {
    /// Reclaimed below memory.low.
    Low,
    /// Throttled over memory.high.
    High,
    /// Usage hit memory.max.
    Max,
    /// The OOM killer was invoked (v1: an OOM notification).
    Oom,
    /// A process was OOM-killed.
    OomKill,
    /// The whole cgroup was OOM-killed (memory.oom.group).
    OomGroupKill,
}

/// One change of a cgroup's state.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Event {
    /// The cgroup (with descendants) became populated (`true`) or empty (`false`).
    Populated(bool),
    /// The cgroup became frozen or thawed.
    Frozen(bool),
    /// A memory event counter grew to `count`.
    Memory {
        /// Which counter.
        kind: MemoryEventKind,
        /// Its new value.
        count: u64,
    },
    /// A fork was refused by pids.max; the counter is now `count`.
    PidsMax {
        /// pids.events `max`.
        count: u64,
    },
    /// The cgroup was removed; no more events follow.
    Removed,
}

/// The last values seen, to turn notifications into changes.
#[derive(Default)]
struct Snapshot {
    cgroup: Option<CgroupEvents>,
    memory: Option<MemoryEvents>,
    v1_oom_notes: u64,
    pids_max: Option<u64>,
}

/// A blocking watcher of one cgroup's events; an `Iterator` of `Result<Event>`.
///
/// Made by [`Cgroup::watch`]. It ends after [`Event::Removed`].
#[derive(Debug)]
pub struct EventWatcher {
    epoll: OwnedFd,
    inotify: OwnedFd,
    /// v1 OOM notification: the eventfd, and memory.oom_control held open (the
    /// registration lasts as long as both are open).
    v1_oom: Option<(OwnedFd, File)>,
    /// cgroup.events of the v2 directory.
    events_file: Option<PathBuf>,
    memory: Option<CgroupDir>,
    pids: Option<CgroupDir>,
    pending: VecDeque<Event>,
    /// Reread on this interval too, for files without notifications (v1 pids.events).
    poll_every: Option<Duration>,
    last: SnapshotBox,
    done: bool,
}

/// Snapshot is private; Debug on the watcher shows only that it has one.
struct SnapshotBox(Snapshot);
impl std::fmt::Debug for SnapshotBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Snapshot")
    }
}

/// How often v1 pids.events, which has no notifications, is reread.
pub const V1_PIDS_POLL: Duration = Duration::from_millis(250);

const TOKEN_INOTIFY: u64 = 1;
const TOKEN_V1_OOM: u64 = 2;

impl Cgroup {
    /// Starts watching this cgroup's events. What can be watched depends on the
    /// hierarchies it spans: populated/frozen need a v2 directory (on hybrid hosts
    /// cgroups made by [`Cgroup::create`] have one), memory events the memory
    /// controller, fork failures the pids controller. With none of them, the error
    /// says why.
    pub fn watch(&self) -> Result<EventWatcher> {
        let io = |path: PathBuf| move |source| Error::Read { path, source };
        let epoll = sys::epoll_create().map_err(io("epoll_create1".into()))?;
        let inotify = sys::inotify_init().map_err(io("inotify_init1".into()))?;
        sys::epoll_add(&epoll, &inotify, TOKEN_INOTIFY).map_err(io("epoll_ctl".into()))?;

        let v2 = self.dirs().iter().find(|d| d.version == Version::V2);
        let mut events_file = None;
        if let Some(d) = v2 {
            let f = d.file(CGROUP_EVENTS);
            if f.exists() {
                sys::inotify_watch_modify(&inotify, &f).map_err(io(f.clone()))?;
                events_file = Some(f);
            }
        }
        let mut memory = None;
        let mut v1_oom = None;
        // On v2 the memory controller may not be enabled for this cgroup (the
        // parent's subtree_control lacks it): then it has no memory.events.
        if let Ok(d) = self.dir_for(Controller::Memory)
            && (d.version == Version::V1 || d.file(memory::MEMORY_EVENTS).exists())
        {
            match d.version {
                Version::V2 => {
                    let f = d.file(memory::MEMORY_EVENTS);
                    sys::inotify_watch_modify(&inotify, &f).map_err(io(f.clone()))?;
                }
                Version::V1 => {
                    let efd = sys::eventfd().map_err(io("eventfd".into()))?;
                    let oom_path = d.file(memory::OOM_CONTROL);
                    let oom = File::open(&oom_path).map_err(io(oom_path.clone()))?;
                    let reg = format!("{} {}", efd.as_raw_fd(), oom.as_raw_fd());
                    fsutil::write(&d.file(CGROUP_EVENT_CONTROL), &reg)?;
                    sys::epoll_add(&epoll, &efd, TOKEN_V1_OOM).map_err(io("epoll_ctl".into()))?;
                    v1_oom = Some((efd, oom));
                }
            }
            memory = Some(d.clone());
        }
        let mut pids_dir = None;
        let mut poll_every = None;
        if let Ok(d) = self.dir_for(Controller::Pids) {
            let f = d.file(pids::PIDS_EVENTS);
            if f.exists() {
                sys::inotify_watch_modify(&inotify, &f).map_err(io(f.clone()))?;
                if d.version == Version::V1 {
                    // v1's pids.events raises no notification: reread it on a timer.
                    poll_every = Some(V1_PIDS_POLL);
                }
                pids_dir = Some(d.clone());
            }
        }
        // Neither kernfs files nor the cgroup directory itself raise an inotify event
        // when the cgroup is removed, but the parent directory sees IN_DELETE: that
        // wakes us to find the files gone and report Removed.
        for d in self.dirs() {
            if let Some(parent) = d.path.parent() {
                sys::inotify_watch(&inotify, parent, libc::IN_DELETE | libc::IN_ONLYDIR)
                    .map_err(io(parent.to_path_buf()))?;
            }
        }
        if events_file.is_none() && memory.is_none() && pids_dir.is_none() {
            return Err(Error::Unsupported {
                controller: Controller::Memory,
                what: "events",
                layout: self.hierarchy().layout(),
                reason: format!(
                    "cgroup {} has no v2 directory (cgroup.events) and is not in the memory or \
                     pids hierarchy: nothing to watch",
                    self.path()
                ),
            });
        }
        let mut w = EventWatcher {
            epoll,
            inotify,
            v1_oom,
            events_file,
            memory,
            pids: pids_dir,
            pending: VecDeque::new(),
            poll_every,
            last: SnapshotBox(Snapshot::default()),
            done: false,
        };
        // The starting values: changes are reported relative to them.
        let mut first = Vec::new();
        w.refresh(&mut first)?;
        Ok(w)
    }
}

impl EventWatcher {
    /// The current populated/frozen state (when watched), as of the last read.
    pub fn state(&self) -> Option<CgroupEvents> {
        self.last.0.cgroup
    }

    /// Rereads every watched file and appends one event per change to `out`.
    fn refresh(&mut self, out: &mut Vec<Event>) -> Result<()> {
        let gone = |e: &Error| e.io_kind() == Some(std::io::ErrorKind::NotFound);
        let last = &mut self.last.0;
        if let Some(f) = &self.events_file {
            match fsutil::read_to_string(f).and_then(|t| CgroupEvents::parse(&t, f)) {
                Ok(now) => {
                    if let Some(before) = last.cgroup {
                        if before.populated != now.populated {
                            out.push(Event::Populated(now.populated));
                        }
                        if before.frozen != now.frozen {
                            out.push(Event::Frozen(now.frozen));
                        }
                    }
                    last.cgroup = Some(now);
                }
                Err(e) if gone(&e) => {
                    out.push(Event::Removed);
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(d) = &self.memory {
            let now = match d.version {
                Version::V2 => {
                    let f = d.file(memory::MEMORY_EVENTS);
                    fsutil::read_to_string(&f).and_then(|t| MemoryEvents::parse_v2(&t, &f))
                }
                Version::V1 => {
                    let f = d.file(memory::OOM_CONTROL);
                    fsutil::read_to_string(&f)
                        .and_then(|t| MemoryEvents::parse_v1_oom_control(&t, &f))
                }
            };
            match now {
                Ok(now) => {
                    if let Some(before) = &last.memory {
                        let pairs = [
                            (MemoryEventKind::Low, before.low, now.low),
                            (MemoryEventKind::High, before.high, now.high),
                            (MemoryEventKind::Max, before.max, now.max),
                            (MemoryEventKind::Oom, before.oom, now.oom),
                            (MemoryEventKind::OomKill, before.oom_kill, now.oom_kill),
                            (
                                MemoryEventKind::OomGroupKill,
                                before.oom_group_kill,
                                now.oom_group_kill,
                            ),
                        ];
                        for (kind, b, n) in pairs {
                            if let (Some(b), Some(n)) = (b, n)
                                && n > b
                            {
                                out.push(Event::Memory { kind, count: n });
                            }
                        }
                    }
                    last.memory = Some(now);
                }
                Err(e) if gone(&e) => {
                    out.push(Event::Removed);
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        if let Some((efd, _)) = &self.v1_oom {
            let n = sys::eventfd_read(efd).map_err(|source| Error::Read {
                path: "eventfd".into(),
                source,
            })?;
            if n > 0 {
                last.v1_oom_notes += n;
                out.push(Event::Memory {
                    kind: MemoryEventKind::Oom,
                    count: last.v1_oom_notes,
                });
            }
        }
        if let Some(d) = &self.pids {
            let f = d.file(pids::PIDS_EVENTS);
            match fsutil::read_to_string(&f).and_then(|t| PidsStat::parse_events(&t, &f)) {
                Ok(now) => {
                    if last.pids_max.is_some_and(|b| now > b) {
                        out.push(Event::PidsMax { count: now });
                    }
                    last.pids_max = Some(now);
                }
                Err(e) if gone(&e) => {
                    out.push(Event::Removed);
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Handles whatever woke the epoll set.
    fn drain_and_refresh(&mut self) -> Result<()> {
        sys::inotify_drain(&self.inotify).map_err(|source| Error::Read {
            path: "inotify".into(),
            source,
        })?;
        let mut evs = Vec::new();
        self.refresh(&mut evs)?;
        // One Removed is enough, and nothing follows it.
        if let Some(i) = evs.iter().position(|e| *e == Event::Removed) {
            evs.truncate(i + 1);
        }
        self.pending.extend(evs);
        Ok(())
    }

    /// Waits up to `timeout` (`None`: forever) for the next event.
    pub fn next_timeout(&mut self, timeout: Option<Duration>) -> Result<Option<Event>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(ev) = self.pending.pop_front() {
                if ev == Event::Removed {
                    self.done = true;
                }
                return Ok(Some(ev));
            }
            if self.done {
                return Ok(None);
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Ok(None);
            }
            let wait = match (left, self.poll_every) {
                (Some(l), Some(p)) => Some(l.min(p)),
                (l, p) => l.or(p),
            };
            let ready =
                sys::poll(&[(self.epoll.as_fd(), libc::POLLIN)], wait).map_err(|source| {
                    Error::Read {
                        path: "epoll".into(),
                        source,
                    }
                })?;
            if ready[0] != 0 || self.poll_every.is_some() {
                self.drain_and_refresh()?;
            }
        }
    }
}

impl Iterator for EventWatcher {
    type Item = Result<Event>;
    fn next(&mut self) -> Option<Result<Event>> {
        self.next_timeout(None).transpose()
    }
}

impl AsFd for EventWatcher {
    /// The epoll fd: readable when an event may be pending (for use in an event loop).
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.epoll.as_fd()
    }
}

impl AsRawFd for EventWatcher {
    /// The epoll fd, for event loops that take raw fds (tokio's `AsyncFd`).
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.epoll.as_raw_fd()
    }
}

#[cfg(feature = "tokio")]
mod async_watch {
    use super::*;
    use tokio::io::Interest;
    use tokio::io::unix::AsyncFd;

    /// An [`EventWatcher`] for async code (feature `tokio`): waits on the runtime's
    /// reactor instead of blocking a thread.
    #[derive(Debug)]
    pub struct AsyncEventWatcher {
        inner: AsyncFd<EventWatcher>,
    }

    impl AsyncEventWatcher {
        /// Wraps a watcher; must be called inside a tokio runtime.
        pub fn new(w: EventWatcher) -> Result<AsyncEventWatcher> {
            // SAFETY: the watcher owns its epoll fd (an OwnedFd field) and never
            // replaces or closes it while it lives, which is as long as the AsyncFd.
            let inner = unsafe { AsyncFd::register_with_interest(w, Interest::READABLE) }.map_err(
                |source| Error::Read {
                    path: "epoll".into(),
                    source: source.into(),
                },
            )?;
            Ok(AsyncEventWatcher { inner })
        }

        /// The next event; `None` after [`Event::Removed`].
        pub async fn next(&mut self) -> Option<Result<Event>> {
            loop {
                match self.inner.get_mut().next_timeout(Some(Duration::ZERO)) {
                    Ok(Some(ev)) => return Some(Ok(ev)),
                    Ok(None) if self.inner.get_ref().done => return None,
                    Ok(None) => {}
                    Err(e) => return Some(Err(e)),
                }
                let every = self.inner.get_ref().poll_every;
                let readable = self.inner.readable_mut();
                let ready = match every {
                    Some(p) => tokio::time::timeout(p, readable).await.ok(),
                    None => Some(readable.await),
                };
                let mut guard = match ready {
                    // The interval passed: reread the files without notifications.
                    None => {
                        if let Err(e) = self.inner.get_mut().drain_and_refresh() {
                            return Some(Err(e));
                        }
                        continue;
                    }
                    Some(Ok(g)) => g,
                    Some(Err(source)) => {
                        return Some(Err(Error::Read {
                            path: "epoll".into(),
                            source,
                        }));
                    }
                };
                if let Err(e) = guard.get_inner_mut().drain_and_refresh() {
                    return Some(Err(e));
                }
                guard.clear_ready();
            }
        }
    }
}
#[cfg(feature = "tokio")]
pub use async_watch::AsyncEventWatcher;
