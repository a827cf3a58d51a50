//! `process.terminal`: a pty made inside the container (its own devpts), the master
//! sent to the caller over `--console-socket` (SCM_RIGHTS, as runc sends it), the
//! slave made the process's controlling terminal and its stdio.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::error::{Error, Result};

/// The console of a container's process, prepared in the parent.
#[derive(Debug)]
pub struct Console {
    sock: OwnedFd,
    /// (rows, columns) from `process.consoleSize`.
    size: Option<(u16, u16)>,
}

/// The text sent with the fd (runc sends the terminal's name; clients ignore it).
const NAME: &[u8] = b"/dev/ptmx";

/// `process.consoleSize` as (rows, columns).
pub fn size_of(p: &oci_spec::runtime::Process) -> Option<(u16, u16)> {
    p.console_size().as_ref().map(|b| {
        (
            u16::try_from(b.height()).unwrap_or(u16::MAX),
            u16::try_from(b.width()).unwrap_or(u16::MAX),
        )
    })
}

impl Console {
    /// Connects to the caller's console socket.
    pub fn connect(path: &Path, size: Option<(u16, u16)>) -> Result<Console> {
        let s = UnixStream::connect(path).map_err(|e| Error::io("connect", path, e))?;
        Ok(Console {
            sock: OwnedFd::from(s),
            size,
        })
    }

    /// In the child, after its root and mounts are in place: opens a pty on the
    /// container's /dev/ptmx, sends the master, makes the slave the controlling
    /// terminal and fds 0-2. Async-signal-safe: raw syscalls, stack buffers.
    pub fn apply(&self) -> io::Result<()> {
        let err = io::Error::last_os_error;
        // SAFETY: raw syscalls on NUL-terminated literals, fds we own, and stack
        // structs sized as the kernel expects; nothing allocates.
        unsafe {
            let m = libc::open(
                c"/dev/ptmx".as_ptr(),
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            );
            if m < 0 {
                return Err(err());
            }
            let unlock: libc::c_int = 0;
            if libc::ioctl(m, libc::TIOCSPTLCK, &unlock) < 0 {
                return Err(err());
            }
            let s = libc::ioctl(
                m,
                libc::TIOCGPTPEER,
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            );
            if s < 0 {
                return Err(err());
            }
            if let Some((rows, cols)) = self.size {
                let ws = libc::winsize {
                    ws_row: rows,
                    ws_col: cols,
                    ws_xpixel: 0,
                    ws_ypixel: 0,
                };
                if libc::ioctl(m, libc::TIOCSWINSZ, &ws) < 0 {
                    return Err(err());
                }
            }
            send_fd(self.sock.as_raw_fd(), m)?;
            libc::close(m);
            libc::close(self.sock.as_raw_fd());
            if libc::setsid() < 0 {
                return Err(err());
            }
            if libc::ioctl(s, libc::TIOCSCTTY, 0) < 0 {
                return Err(err());
            }
            for fd in 0..3 {
                if libc::dup3(s, fd, 0) < 0 {
                    return Err(err());
                }
            }
            if s > 2 {
                libc::close(s);
            }
        }
        Ok(())
    }
}

/// sendmsg(2) of `fd` with [`NAME`] as data. Async-signal-safe.
///
/// # Safety
/// `sock` and `fd` are open fds.
unsafe fn send_fd(sock: libc::c_int, fd: libc::c_int) -> io::Result<()> {
    // SAFETY: as the caller promises.
    unsafe { send_fd_with(sock, NAME, fd) }
}

/// sendmsg(2) of `fd` (SCM_RIGHTS) with `data` (at least one byte) as data.
/// Async-signal-safe.
///
/// # Safety
/// `sock` and `fd` are open fds.
pub unsafe fn send_fd_with(sock: libc::c_int, data: &[u8], fd: libc::c_int) -> io::Result<()> {
    // Room for one cmsghdr and one int, aligned (CMSG_SPACE(4) is 24 on 64-bit).
    let mut buf = [0u64; 4];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: a zeroed msghdr is valid; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = buf.as_mut_ptr().cast();
    // SAFETY: CMSG_* only compute sizes and offsets within `buf`.
    unsafe {
        let space = libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32);
        msg.msg_controllen = space as _;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>(), fd);
        if libc::sendmsg(sock, &msg, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// One recvmsg(2) on `sock`: the data (up to `data.len()` bytes, the count
/// returned) and the fd sent with it (SCM_RIGHTS, received close-on-exec), if any.
pub fn recv_fd(sock: libc::c_int, data: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    use std::os::fd::FromRawFd;
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // Room for one fd's control message, aligned as cmsghdr wants.
    let mut cbuf = [0u64; 8];
    // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
    let n = loop {
        // SAFETY: msg points at live buffers of the sizes given.
        let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    // SAFETY: msg was filled by recvmsg; CMSG_FIRSTHDR and CMSG_DATA stay in cbuf.
    let fd = unsafe {
        let cm = libc::CMSG_FIRSTHDR(&msg);
        if cm.is_null()
            || (*cm).cmsg_level != libc::SOL_SOCKET
            || (*cm).cmsg_type != libc::SCM_RIGHTS
        {
            None
        } else {
            let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cm).cast::<libc::c_int>());
            Some(OwnedFd::from_raw_fd(fd))
        }
    };
    Ok((n, fd))
}
