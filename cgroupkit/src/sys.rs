//! The few raw syscalls this crate needs that std does not wrap, each once, nix-style:
//! a small safe function, errno turned into `io::Error`, fds returned as `OwnedFd`.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `inotify_init1(IN_NONBLOCK | IN_CLOEXEC)`; see inotify_init1(2).
pub(crate) fn inotify_init() -> io::Result<OwnedFd> {
    // SAFETY: inotify_init1 takes flags only and returns a new fd or -1.
    let fd = cvt(unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) })?;
    // SAFETY: fd was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `inotify_add_watch(fd, path, IN_MODIFY)`; returns the watch descriptor.
pub(crate) fn inotify_watch_modify(fd: impl AsFd, path: &std::path::Path) -> io::Result<i32> {
    inotify_watch(fd, path, libc::IN_MODIFY)
}

/// `inotify_add_watch(fd, path, mask)`; returns the watch descriptor.
pub(crate) fn inotify_watch(fd: impl AsFd, path: &std::path::Path, mask: u32) -> io::Result<i32> {
    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()))
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
    // SAFETY: the fd is a live inotify fd borrowed for the call; `c` is a valid
    // NUL-terminated string that outlives it.
    cvt(unsafe { libc::inotify_add_watch(fd.as_fd().as_raw_fd(), c.as_ptr(), mask) })
}

/// Reads and discards pending inotify events; returns the watch descriptors seen.
pub(crate) fn inotify_drain(fd: impl AsFd) -> io::Result<Vec<i32>> {
    let mut wds = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: buf is a writable buffer of buf.len() bytes for the whole call.
        let n = unsafe { libc::read(fd.as_fd().as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                return Ok(wds);
            }
            return Err(e);
        }
        let n = n as usize;
        let mut off = 0;
        let hdr = std::mem::size_of::<libc::inotify_event>();
        while off + hdr <= n {
            // SAFETY: the kernel wrote whole inotify_event records into buf[..n]; the
            // header is read unaligned, as the buffer is a byte array.
            let ev: libc::inotify_event =
                unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
            if !wds.contains(&ev.wd) {
                wds.push(ev.wd);
            }
            off += hdr + ev.len as usize;
        }
    }
}

/// `pidfd_open(pid, 0)` (kernel 5.3): an fd that names the process now holding
/// `pid`, and keeps naming it after it exits; see pidfd_open(2).
pub(crate) fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// `pidfd_send_signal(pidfd, sig, NULL, 0)` (kernel 5.1): signals the process the
/// pidfd names, never another one that reuses its pid; see pidfd_send_signal(2).
pub(crate) fn pidfd_send_signal(pidfd: impl AsFd, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: the pidfd is live for the call; a NULL siginfo is allowed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_fd().as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)`; see eventfd(2).
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes an initial value and flags and returns a new fd or -1.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
    // SAFETY: fd was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads an eventfd's counter (resetting it); `Ok(0)` when nothing was signalled.
pub(crate) fn eventfd_read(fd: impl AsFd) -> io::Result<u64> {
    let mut v = 0u64;
    // SAFETY: v is a valid, writable u64 for the 8-byte read eventfd(2) performs.
    let n = unsafe { libc::read(fd.as_fd().as_raw_fd(), (&raw mut v).cast(), 8) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::WouldBlock {
            Ok(0)
        } else {
            Err(e)
        };
    }
    Ok(v)
}

/// poll(2) on `fds` for `events`, up to `timeout` (`None`: forever). Returns the
/// revents of each fd, in order.
pub(crate) fn poll(
    fds: &[(std::os::fd::BorrowedFd<'_>, i16)],
    timeout: Option<Duration>,
) -> io::Result<Vec<i16>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|(fd, ev)| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: *ev,
            revents: 0,
        })
        .collect();
    let ms = match timeout {
        None => -1,
        Some(d) => i32::try_from(d.as_millis()).unwrap_or(i32::MAX),
    };
    loop {
        // SAFETY: pfds is a valid array of pfds.len() pollfd structs whose fds are
        // borrowed (kept open) for the duration of the call.
        let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(pfds.iter().map(|p| p.revents).collect());
    }
}

/// `epoll_create1(EPOLL_CLOEXEC)`; see epoll_create1(2).
pub(crate) fn epoll_create() -> io::Result<OwnedFd> {
    // SAFETY: epoll_create1 takes flags only and returns a new fd or -1.
    let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    // SAFETY: fd was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds `fd` to an epoll set for readability (and priority data).
pub(crate) fn epoll_add(epoll: impl AsFd, fd: impl AsFd, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLPRI) as u32,
        u64: token,
    };
    // SAFETY: both fds are live for the call; ev is a valid epoll_event the kernel
    // copies before returning.
    cvt(unsafe {
        libc::epoll_ctl(
            epoll.as_fd().as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            fd.as_fd().as_raw_fd(),
            &raw mut ev,
        )
    })?;
    Ok(())
}
