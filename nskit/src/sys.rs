//! The raw syscalls nix does not wrap (pidfd_*, openat2, the fd-based mount API,
//! mount_setattr), each once: a small safe function, errno as `i32`, fds as `OwnedFd`.
//! Kernel ABI constants that libc does not carry on every target are defined here.

use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Last errno as a plain integer.
pub(crate) fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn fd_result(ret: libc::c_long) -> Result<OwnedFd, i32> {
    if ret < 0 {
        return Err(errno());
    }
    // SAFETY: the kernel just returned this fd to us; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

fn unit_result(ret: libc::c_long) -> Result<(), i32> {
    if ret < 0 { Err(errno()) } else { Ok(()) }
}

// fsconfig(2) commands (include/uapi/linux/mount.h).
pub(crate) const FSCONFIG_SET_FLAG: u32 = 0;
pub(crate) const FSCONFIG_SET_STRING: u32 = 1;
pub(crate) const FSCONFIG_CMD_CREATE: u32 = 6;
pub(crate) const FSOPEN_CLOEXEC: u32 = 1;
pub(crate) const FSMOUNT_CLOEXEC: u32 = 1;
pub(crate) const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x4;
pub(crate) const OPEN_TREE_CLONE: u32 = 1;
pub(crate) const OPEN_TREE_CLOEXEC: u32 = libc::O_CLOEXEC as u32;
pub(crate) const AT_RECURSIVE: u32 = 0x8000;
pub(crate) const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub(crate) const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub(crate) const MOUNT_ATTR_NODEV: u64 = 0x4;
pub(crate) const MOUNT_ATTR_NOEXEC: u64 = 0x8;
/// The atime mode field: relatime is 0 in it.
pub(crate) const MOUNT_ATTR__ATIME: u64 = 0x70;
pub(crate) const MOUNT_ATTR_NOATIME: u64 = 0x10;
pub(crate) const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
pub(crate) const MOUNT_ATTR_NODIRATIME: u64 = 0x80;
pub(crate) const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
pub(crate) const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
pub(crate) const RESOLVE_IN_ROOT: u64 = 0x10;
/// NS_GET_NSTYPE ioctl on an nsfs fd (4.11): _IO(0xb7, 0x3).
pub(crate) const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct MountAttr {
    pub attr_set: u64,
    pub attr_clr: u64,
    pub propagation: u64,
    pub userns_fd: u64,
}

/// `struct open_how` of openat2(2).
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct OpenHow {
    pub flags: u64,
    pub mode: u64,
    pub resolve: u64,
}

/// pidfd_open(2), 5.3.
pub(crate) fn pidfd_open(pid: i32) -> Result<OwnedFd, i32> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    fd_result(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })
}

/// pidfd_send_signal(2), 5.1.
pub(crate) fn pidfd_send_signal(pidfd: BorrowedFd<'_>, sig: i32) -> Result<(), i32> {
    // SAFETY: the pidfd is live for the call; a NULL siginfo is allowed.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    })
}

/// Tries of an openat2 that answers EAGAIN before its error is returned.
const OPENAT2_TRIES: usize = 64;

/// openat2(2), 5.6: `path` resolved under `dirfd` with `resolve` flags.
///
/// With `RESOLVE_IN_ROOT` or `RESOLVE_BENEATH` the kernel answers EAGAIN to a path
/// with `..` when any rename or mount happened on the system during the lookup (it
/// cannot prove the walk stayed inside); the man page's remedy is to try again, which
/// this does a bounded number of times (seen under parallel tests that mount).
pub(crate) fn openat2(
    dirfd: BorrowedFd<'_>,
    path: &CStr,
    flags: i32,
    resolve: u64,
) -> Result<OwnedFd, i32> {
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve,
    };
    let mut tries = 0;
    loop {
        // SAFETY: dirfd is live, path is NUL-terminated, `how` is a valid open_how
        // whose size is passed; the kernel copies it before returning.
        let r = fd_result(unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dirfd.as_raw_fd(),
                path.as_ptr(),
                &raw const how,
                std::mem::size_of::<OpenHow>(),
            )
        });
        tries += 1;
        match r {
            Err(libc::EAGAIN) if tries < OPENAT2_TRIES => continue,
            r => return r,
        }
    }
}

/// fsopen(2), 5.2.
pub(crate) fn fsopen(fstype: &CStr) -> Result<OwnedFd, i32> {
    // SAFETY: fstype is NUL-terminated; returns a new fd or -1.
    fd_result(unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) })
}

/// fsconfig(2), 5.2: `FSCONFIG_SET_STRING` / `SET_FLAG` / `CMD_CREATE`.
pub(crate) fn fsconfig(
    fs: BorrowedFd<'_>,
    cmd: u32,
    key: Option<&CStr>,
    value: Option<&CStr>,
) -> Result<(), i32> {
    let k = key.map_or(std::ptr::null(), CStr::as_ptr);
    let v = value.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: fs is live; key and value are NUL-terminated strings or NULL, as each
    // command requires.
    unit_result(unsafe { libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), cmd, k, v, 0) })
}

/// fsmount(2), 5.2: a detached mount from a configured filesystem context.
pub(crate) fn fsmount(fs: BorrowedFd<'_>, attr: u64) -> Result<OwnedFd, i32> {
    // SAFETY: fs is a live fs context fd; returns a new fd or -1.
    fd_result(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attr) })
}

/// move_mount(2), 5.2: attach the detached mount `from` at `to_dir`/`to_path`
/// (`to_path` empty with MOVE_MOUNT_T_EMPTY_PATH when `to_dir` is the target itself).
pub(crate) fn move_mount(
    from: BorrowedFd<'_>,
    to_dir: BorrowedFd<'_>,
    to_path: &CStr,
    flags: u32,
) -> Result<(), i32> {
    // SAFETY: both fds are live; the paths are NUL-terminated.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from.as_raw_fd(),
            c"".as_ptr(),
            to_dir.as_raw_fd(),
            to_path.as_ptr(),
            flags | MOVE_MOUNT_F_EMPTY_PATH,
        )
    })
}

/// open_tree(2), 5.2.
pub(crate) fn open_tree(dir: BorrowedFd<'_>, path: &CStr, flags: u32) -> Result<OwnedFd, i32> {
    // SAFETY: dir is live and path NUL-terminated; returns a new fd or -1.
    fd_result(unsafe { libc::syscall(libc::SYS_open_tree, dir.as_raw_fd(), path.as_ptr(), flags) })
}

/// mount_setattr(2), 5.12.
pub(crate) fn mount_setattr(
    dir: BorrowedFd<'_>,
    path: &CStr,
    flags: u32,
    attr: &MountAttr,
) -> Result<(), i32> {
    // SAFETY: dir is live, path NUL-terminated, attr a valid mount_attr whose size is
    // passed; the kernel copies it before returning.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dir.as_raw_fd(),
            path.as_ptr(),
            flags,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
}

/// The per-mount flags of mount(2): those a bind mount takes only from a second,
/// remount call (its first call ignores them).
pub(crate) const PER_MOUNT_FLAGS: libc::c_ulong = libc::MS_RDONLY
    | libc::MS_NOSUID
    | libc::MS_NODEV
    | libc::MS_NOEXEC
    | libc::MS_NOATIME
    | libc::MS_NODIRATIME
    | libc::MS_RELATIME
    | libc::MS_STRICTATIME;

/// The kernel's `struct statfs` (asm-generic/statfs.h, words of `long`): libc's
/// glibc flavour has no `f_flags` field, musl's has.
#[repr(C)]
#[derive(Default)]
struct KernelStatfs {
    /// f_type, f_bsize, f_blocks, f_bfree, f_bavail, f_files, f_ffree.
    counts: [libc::c_long; 7],
    f_fsid: [i32; 2],
    f_namelen: libc::c_long,
    f_frsize: libc::c_long,
    f_flags: libc::c_long,
    f_spare: [libc::c_long; 4],
}

/// Gives the bind mount at `target` the per-mount flags in `flags` (MS_RDONLY,
/// MS_NOSUID, MS_NODEV, MS_NOEXEC, atime), adding to those it has:
/// mount_setattr(2) (5.12), with `AT_RECURSIVE` when `flags` holds `MS_REC` (an
/// rbind: every mount below gets them too); on an older kernel (ENOSYS) a bind
/// remount of the top mount only, keeping the flags it has (statfs), which a user
/// namespace may have locked.
///
/// Raw syscalls on the caller's buffers only, no allocation: async-signal-safe, for
/// a child between clone and exec too. `target` may be a `/proc/self/fd/N` path.
pub(crate) fn set_bind_flags(target: &CStr, flags: libc::c_ulong) -> Result<(), i32> {
    let mut attr = MountAttr::default();
    for (ms, at) in [
        (libc::MS_RDONLY, MOUNT_ATTR_RDONLY),
        (libc::MS_NOSUID, MOUNT_ATTR_NOSUID),
        (libc::MS_NODEV, MOUNT_ATTR_NODEV),
        (libc::MS_NOEXEC, MOUNT_ATTR_NOEXEC),
        (libc::MS_NODIRATIME, MOUNT_ATTR_NODIRATIME),
    ] {
        if flags & ms != 0 {
            attr.attr_set |= at;
        }
    }
    let atime = [
        (libc::MS_NOATIME, MOUNT_ATTR_NOATIME),
        (libc::MS_STRICTATIME, MOUNT_ATTR_STRICTATIME),
        (libc::MS_RELATIME, 0),
    ]
    .into_iter()
    .find(|(ms, _)| flags & ms != 0);
    if let Some((_, at)) = atime {
        // An atime mode replaces the one the mount has.
        attr.attr_clr |= MOUNT_ATTR__ATIME;
        attr.attr_set |= at;
    }
    let rec = if flags & libc::MS_REC != 0 {
        AT_RECURSIVE
    } else {
        0
    };
    // SAFETY: target is NUL-terminated, attr a valid mount_attr whose size is passed;
    // the kernel copies both before returning.
    let r = unit_result(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            target.as_ptr(),
            rec,
            &raw const attr,
            std::mem::size_of::<MountAttr>(),
        )
    });
    if r != Err(libc::ENOSYS) {
        return r;
    }
    let mut st = KernelStatfs::default();
    // SAFETY: NUL-terminated path and a writable buffer of the kernel's struct statfs.
    unit_result(unsafe { libc::syscall(libc::SYS_statfs, target.as_ptr(), &raw mut st) })?;
    let has = st.f_flags as libc::c_ulong;
    // ST_* and MS_* agree for these bits; ST_RELATIME (4096) is not MS_RELATIME.
    let mut keep = has
        & (libc::MS_RDONLY
            | libc::MS_NOSUID
            | libc::MS_NODEV
            | libc::MS_NOEXEC
            | libc::MS_NOATIME
            | libc::MS_NODIRATIME);
    if has & 4096 != 0 && atime.is_none() {
        keep |= libc::MS_RELATIME;
    }
    if atime.is_some() {
        keep &= !libc::MS_NOATIME;
    }
    // SAFETY: NUL-terminated target; NULL source, type and data as a remount takes.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_mount,
            std::ptr::null::<libc::c_char>(),
            target.as_ptr(),
            std::ptr::null::<libc::c_char>(),
            libc::MS_BIND | libc::MS_REMOUNT | keep | (flags & PER_MOUNT_FLAGS),
            std::ptr::null::<libc::c_void>(),
        )
    })
}

/// ioctl(NS_GET_NSTYPE), 4.11: the CLONE_NEW* flag of an nsfs fd.
pub(crate) fn ns_get_nstype(fd: BorrowedFd<'_>) -> Result<i32, i32> {
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd's inode.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE as _) };
    if r < 0 { Err(errno()) } else { Ok(r) }
}

/// `pipe2(O_CLOEXEC)`: (read end, write end).
pub(crate) fn pipe() -> Result<(OwnedFd, OwnedFd), i32> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is a writable array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(errno());
    }
    // SAFETY: both fds were just created by pipe2 and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Reads until `buf` is full or EOF; returns the bytes read (EINTR retried).
pub(crate) fn read_full(fd: impl AsFd, buf: &mut [u8]) -> Result<usize, i32> {
    let mut off = 0;
    while off < buf.len() {
        let rest = &mut buf[off..];
        // SAFETY: rest is a writable buffer of rest.len() bytes for the call.
        let n = unsafe { libc::read(fd.as_fd().as_raw_fd(), rest.as_mut_ptr().cast(), rest.len()) };
        if n < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        off += n as usize;
    }
    Ok(off)
}

/// Writes all of `buf` (EINTR retried).
pub(crate) fn write_all(fd: impl AsFd, buf: &[u8]) -> Result<(), i32> {
    let mut off = 0;
    while off < buf.len() {
        let rest = &buf[off..];
        // SAFETY: rest is a readable buffer of rest.len() bytes for the call.
        let n = unsafe { libc::write(fd.as_fd().as_raw_fd(), rest.as_ptr().cast(), rest.len()) };
        if n < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        off += n as usize;
    }
    Ok(())
}
