//! The devices controller: which device nodes a cgroup's processes may create
//! (mknod) and open (read, write).
//!
//! Rules are applied in order as the v1 kernel applies writes to devices.allow and
//! devices.deny, starting from "everything allowed" (the root's state): a rule of
//! type `a` switches the default and forgets earlier exceptions; any other rule adds
//! an exception to the default (or removes one that says the opposite). The
//! resulting default and exceptions are enforced:
//!
//! - v1 (and hybrid hosts, where `devices` is a v1 hierarchy): `a` written to
//!   devices.deny (or devices.allow), then each exception to the other file;
//! - v2: a `BPF_PROG_TYPE_CGROUP_DEVICE` program generated from them (raw eBPF
//!   instructions, as runc's `devicefilter` does) and attached to the cgroup with
//!   `BPF_F_ALLOW_MULTI` (kernel 4.15+); it lives as long as the cgroup.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use crate::cgroup::{Cgroup, CgroupDir};
use crate::error::{Error, Result};
use crate::hierarchy::{Controller, Version};
use crate::resources::Writer;

/// v1: write a rule here to allow it.
pub const DEVICES_ALLOW: &str = "devices.allow";
/// v1: write a rule here to deny it.
pub const DEVICES_DENY: &str = "devices.deny";
/// v1: the rules in force (`a *:* rwm` when everything is allowed).
pub const DEVICES_LIST: &str = "devices.list";

/// Which device nodes a rule concerns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum DeviceKind {
    /// Every device (`a`); such a rule sets the default.
    All,
    /// Character devices (`c`).
    Char,
    /// Block devices (`b`).
    Block,
}

impl DeviceKind {
    fn letter(self) -> char {
        match self {
            DeviceKind::All => 'a',
            DeviceKind::Char => 'c',
            DeviceKind::Block => 'b',
        }
    }
}

/// What a rule allows or denies: `r`, `w`, `m` (mknod) in any combination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct DeviceAccess(u8);

impl DeviceAccess {
    /// mknod(2) (`BPF_DEVCG_ACC_MKNOD`).
    pub const MKNOD: DeviceAccess = DeviceAccess(1);
    /// Open for reading (`BPF_DEVCG_ACC_READ`).
    pub const READ: DeviceAccess = DeviceAccess(2);
    /// Open for writing (`BPF_DEVCG_ACC_WRITE`).
    pub const WRITE: DeviceAccess = DeviceAccess(4);
    /// `rwm`.
    pub const ALL: DeviceAccess = DeviceAccess(7);

    /// Parses `r`, `w`, `m` letters (`rwm`, `m`, ...).
    pub fn parse(s: &str) -> Result<DeviceAccess> {
        let mut a = 0;
        for c in s.chars() {
            a |= match c {
                'r' => 2,
                'w' => 4,
                'm' => 1,
                _ => {
                    return Err(Error::InvalidResource {
                        what: "device access",
                        reason: format!("{s:?}: use the letters r, w and m"),
                    });
                }
            };
        }
        Ok(DeviceAccess(a))
    }

    /// The kernel's bits (mknod 1, read 2, write 4).
    pub fn bits(self) -> u8 {
        self.0
    }

    fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl std::ops::BitOr for DeviceAccess {
    type Output = DeviceAccess;
    fn bitor(self, o: DeviceAccess) -> DeviceAccess {
        DeviceAccess(self.0 | o.0)
    }
}

impl fmt::Display for DeviceAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (bit, c) in [(2, 'r'), (4, 'w'), (1, 'm')] {
            if self.0 & bit != 0 {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// One rule: allow or deny `access` to devices of `kind` with this major and minor
/// (`None` is the wildcard `*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct DeviceRule {
    /// Allow (devices.allow) or deny (devices.deny).
    pub allow: bool,
    /// Device type.
    pub kind: DeviceKind,
    /// Major number, `None` for any.
    pub major: Option<u32>,
    /// Minor number, `None` for any.
    pub minor: Option<u32>,
    /// Access concerned.
    pub access: DeviceAccess,
}

impl DeviceRule {
    /// Allows `access` to char device `major:minor` (`None` = `*`).
    pub fn allow_char(major: Option<u32>, minor: Option<u32>, access: DeviceAccess) -> Self {
        DeviceRule {
            allow: true,
            kind: DeviceKind::Char,
            major,
            minor,
            access,
        }
    }

    /// Denies every access to every device (`a *:* rwm` in devices.deny).
    pub fn deny_all() -> Self {
        DeviceRule {
            allow: false,
            kind: DeviceKind::All,
            major: None,
            minor: None,
            access: DeviceAccess::ALL,
        }
    }
}

impl fmt::Display for DeviceRule {
    /// The v1 file syntax: `c 1:3 rwm`, `b *:* m`, `a`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = |v: Option<u32>| v.map_or("*".to_string(), |v| v.to_string());
        if self.kind == DeviceKind::All {
            return f.write_str("a");
        }
        write!(
            f,
            "{} {}:{} {}",
            self.kind.letter(),
            n(self.major),
            n(self.minor),
            self.access
        )
    }
}

/// Device rules of a cgroup, applied in order (see the module docs).
///
/// # Examples
/// Docker's default: deny everything, then allow the usual nodes.
/// ```
/// use cgroupkit::{DeviceAccess, DeviceRule, Devices};
/// let d = Devices::new(vec![
///     DeviceRule::deny_all(),
///     DeviceRule::allow_char(Some(1), Some(3), DeviceAccess::ALL), // /dev/null
/// ]);
/// assert!(d.allows_char(1, 3, DeviceAccess::WRITE));
/// assert!(!d.allows_char(1, 11, DeviceAccess::WRITE)); // /dev/kmsg
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Devices {
    /// The rules, in order.
    pub rules: Vec<DeviceRule>,
}

/// The effect of a rule list: a default and the exceptions to it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Effective {
    default_allow: bool,
    exceptions: Vec<DeviceRule>,
}

impl Devices {
    /// Rules from a list.
    pub fn new(rules: Vec<DeviceRule>) -> Devices {
        Devices { rules }
    }

    /// Emulates the kernel's v1 handling of the rules, from "allow all".
    fn effective(&self) -> Effective {
        let mut e = Effective {
            default_allow: true,
            exceptions: Vec::new(),
        };
        for r in &self.rules {
            if r.kind == DeviceKind::All {
                e.default_allow = r.allow;
                e.exceptions.clear();
                continue;
            }
            let same =
                |x: &DeviceRule| x.kind == r.kind && x.major == r.major && x.minor == r.minor;
            if r.allow != e.default_allow {
                // An exception to the default: add (merging access).
                match e.exceptions.iter_mut().find(|x| same(x)) {
                    Some(x) => x.access = x.access | r.access,
                    None => e.exceptions.push(DeviceRule {
                        allow: r.allow,
                        ..*r
                    }),
                }
            } else {
                // Agrees with the default: take that access out of an exception.
                for x in e.exceptions.iter_mut().filter(|x| same(x)) {
                    x.access = DeviceAccess(x.access.0 & !r.access.0);
                }
                e.exceptions.retain(|x| !x.access.is_empty());
            }
        }
        e
    }

    fn allows(&self, kind: DeviceKind, major: u32, minor: u32, access: DeviceAccess) -> bool {
        let e = self.effective();
        let hit = e.exceptions.iter().any(|x| {
            x.kind == kind
                && x.major.is_none_or(|m| m == major)
                && x.minor.is_none_or(|m| m == minor)
                && if e.default_allow {
                    x.access.0 & access.0 != 0
                } else {
                    x.access.0 & access.0 == access.0
                }
        });
        e.default_allow != hit
    }

    /// Whether `access` to char device `major:minor` is allowed by these rules (what
    /// the kernel will answer once they are applied).
    pub fn allows_char(&self, major: u32, minor: u32, access: DeviceAccess) -> bool {
        self.allows(DeviceKind::Char, major, minor, access)
    }

    /// Whether `access` to block device `major:minor` is allowed by these rules.
    pub fn allows_block(&self, major: u32, minor: u32, access: DeviceAccess) -> bool {
        self.allows(DeviceKind::Block, major, minor, access)
    }

    /// The eBPF program (`BPF_PROG_TYPE_CGROUP_DEVICE`) enforcing these rules, as
    /// raw 8-byte instructions.
    pub fn bpf_program(&self) -> Vec<u64> {
        program(&self.effective())
    }
}

// eBPF encoding (`include/uapi/linux/bpf.h`).
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const MOV64_REG: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const MOV64_IMM: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const AND64_IMM: u8 = 0x57; // BPF_ALU64 | BPF_AND | BPF_K
const RSH64_IMM: u8 = 0x77; // BPF_ALU64 | BPF_RSH | BPF_K
const JNE_IMM: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JEQ_IMM: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT
/// `BPF_DEVCG_DEV_BLOCK` / `BPF_DEVCG_DEV_CHAR`.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | (u64::from(dst & 0xf) << 8)
        | (u64::from(src & 0xf) << 12)
        | (u64::from(off as u16) << 16)
        | (u64::from(imm as u32) << 32)
}

/// r2 = access, r3 = type, r4 = major, r5 = minor (from `struct bpf_cgroup_dev_ctx`
/// in r1: access_type = type | access << 16, major, minor); then per exception a
/// block that returns the exception's verdict on a match and jumps over the rest of
/// itself otherwise; last, the default.
fn program(e: &Effective) -> Vec<u64> {
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(MOV64_REG, 3, 2, 0, 0),
        insn(AND64_IMM, 3, 0, 0, 0xffff),
        insn(RSH64_IMM, 2, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0),
        insn(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for x in &e.exceptions {
        // Tests, each a jump to the end of the block when it fails.
        let mut tests: Vec<(u8, u8, i32)> = Vec::new(); // (code, reg, imm) after setup
        let mut setup = Vec::new();
        match x.kind {
            DeviceKind::Char => tests.push((JNE_IMM, 3, DEV_CHAR)),
            DeviceKind::Block => tests.push((JNE_IMM, 3, DEV_BLOCK)),
            DeviceKind::All => {}
        }
        let acc = i32::from(x.access.0);
        if e.default_allow {
            // A deny exception hits when any requested access is in it.
            setup.push(insn(MOV64_REG, 1, 2, 0, 0));
            setup.push(insn(AND64_IMM, 1, 0, 0, acc));
            tests.push((JEQ_IMM, 1, 0));
        } else if x.access != DeviceAccess::ALL {
            // An allow exception hits when every requested access is in it.
            setup.push(insn(MOV64_REG, 1, 2, 0, 0));
            setup.push(insn(AND64_IMM, 1, 0, 0, !acc));
            tests.push((JNE_IMM, 1, 0));
        }
        if let Some(m) = x.major {
            tests.push((JNE_IMM, 4, m as i32));
        }
        if let Some(m) = x.minor {
            tests.push((JNE_IMM, 5, m as i32));
        }
        // Layout: type test, setup, other tests, verdict (2).
        let mut block = Vec::new();
        let total = tests.len() + setup.len() + 2;
        let emit_test = |block: &mut Vec<u64>, (code, reg, imm): (u8, u8, i32)| {
            let skip = total - block.len() - 1;
            block.push(insn(code, reg, 0, skip as i16, imm));
        };
        let mut rest = tests.into_iter();
        if x.kind != DeviceKind::All
            && let Some(t) = rest.next()
        {
            emit_test(&mut block, t);
        }
        block.extend(setup);
        for t in rest {
            emit_test(&mut block, t);
        }
        block.push(insn(MOV64_IMM, 0, 0, 0, i32::from(!e.default_allow)));
        block.push(insn(EXIT, 0, 0, 0, 0));
        p.extend(block);
    }
    p.push(insn(MOV64_IMM, 0, 0, 0, i32::from(e.default_allow)));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

/// Applies `d`: on a v1 devices hierarchy through its files, else on the cgroup's
/// v2 directory with an eBPF program.
pub(crate) fn apply(cg: &Cgroup, d: &Devices, w: &mut Writer) -> Result<()> {
    if let Some(dir) = cg
        .dirs()
        .iter()
        .find(|x| x.version == Version::V1 && x.controllers.contains(&Controller::Devices))
    {
        return apply_v1(dir, d, w);
    }
    match cg.dirs().iter().find(|x| x.version == Version::V2) {
        Some(dir) => attach_bpf(&dir.path, &d.bpf_program()),
        None => Err(Error::ControllerUnavailable {
            controller: Controller::Devices,
            layout: cg.hierarchy().layout(),
        }),
    }
}

fn apply_v1(dir: &CgroupDir, d: &Devices, w: &mut Writer) -> Result<()> {
    let e = d.effective();
    let (base, other) = if e.default_allow {
        (DEVICES_ALLOW, DEVICES_DENY)
    } else {
        (DEVICES_DENY, DEVICES_ALLOW)
    };
    w.write(dir, base, "a")?;
    for x in &e.exceptions {
        w.write(dir, other, x.to_string())?;
    }
    Ok(())
}

// bpf(2) commands and constants.
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The `BPF_PROG_LOAD` part of `union bpf_attr`, up to expected_attach_type.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_PROG_ATTACH` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: attr is a valid, initialised bpf_attr prefix of size_of::<T>() bytes;
    // the kernel reads (and for some commands writes) only that many.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            std::mem::size_of::<T>(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn bpf_err(op: &'static str, path: &Path, source: io::Error) -> Error {
    Error::Bpf {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Loads `prog` as a device program and attaches it to the cgroup directory `dir`
/// (BPF_PROG_LOAD, then BPF_PROG_ATTACH with BPF_F_ALLOW_MULTI); both fds are closed
/// after, the attachment stays with the cgroup. A verifier refusal carries the
/// verifier's log.
fn attach_bpf(dir: &Path, prog: &[u64]) -> Result<()> {
    let license = c"MIT";
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        expected_attach_type: BPF_CGROUP_DEVICE,
        ..Default::default()
    };
    attr.prog_name[..7].copy_from_slice(b"devices");
    let fd = match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => fd,
        Err(e)
            if e.raw_os_error() == Some(libc::EACCES) || e.raw_os_error() == Some(libc::EINVAL) =>
        {
            // Load again with the verifier's log, for the error.
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            let _ = bpf(BPF_PROG_LOAD, &mut attr);
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]).into_owned();
            return Err(bpf_err(
                "BPF_PROG_LOAD (device program)",
                dir,
                io::Error::new(e.kind(), format!("{e}; verifier log: {text}")),
            ));
        }
        Err(e) => return Err(bpf_err("BPF_PROG_LOAD (device program)", dir, e)),
    };
    // SAFETY: the kernel returned a new program fd that nothing else owns.
    let prog_fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let c = CString::new(std::os::unix::ffi::OsStrExt::as_bytes(dir.as_os_str()))
        .map_err(|_| bpf_err("open", dir, io::Error::from(io::ErrorKind::InvalidInput)))?;
    // SAFETY: c is a NUL-terminated path; flags only.
    let dfd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if dfd < 0 {
        return Err(bpf_err("open", dir, io::Error::last_os_error()));
    }
    // SAFETY: open returned a new fd that nothing else owns.
    let dir_fd = unsafe { OwnedFd::from_raw_fd(dfd) };
    let mut at = ProgAttachAttr {
        target_fd: dir_fd.as_raw_fd() as u32,
        attach_bpf_fd: prog_fd.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    bpf(BPF_PROG_ATTACH, &mut at)
        .map_err(|e| bpf_err("BPF_PROG_ATTACH (BPF_CGROUP_DEVICE)", dir, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docker() -> Devices {
        let c = |ma, mi| DeviceRule::allow_char(ma, mi, DeviceAccess::ALL);
        Devices::new(vec![
            DeviceRule::deny_all(),
            DeviceRule::allow_char(None, None, DeviceAccess::MKNOD),
            DeviceRule {
                kind: DeviceKind::Block,
                ..DeviceRule::allow_char(None, None, DeviceAccess::MKNOD)
            },
            c(Some(1), Some(3)),
            c(Some(136), None),
        ])
    }

    #[test]
    fn emulates_v1() {
        let d = docker();
        assert!(d.allows_char(1, 3, DeviceAccess::READ | DeviceAccess::WRITE));
        assert!(d.allows_char(1, 11, DeviceAccess::MKNOD));
        assert!(!d.allows_char(1, 11, DeviceAccess::WRITE));
        assert!(d.allows_char(136, 7, DeviceAccess::READ));
        assert!(d.allows_block(8, 0, DeviceAccess::MKNOD));
        assert!(!d.allows_block(8, 0, DeviceAccess::READ));
        // A later deny of an allowed node takes it out again.
        let mut d2 = docker();
        d2.rules.push(DeviceRule {
            allow: false,
            access: DeviceAccess::WRITE,
            ..DeviceRule::allow_char(Some(1), Some(3), DeviceAccess::ALL)
        });
        assert!(d2.allows_char(1, 3, DeviceAccess::READ));
        assert!(!d2.allows_char(1, 3, DeviceAccess::WRITE));
        // `a` in devices.allow resets to allow-all.
        let mut d3 = docker();
        d3.rules.push(DeviceRule {
            allow: true,
            ..DeviceRule::deny_all()
        });
        assert!(d3.allows_char(1, 11, DeviceAccess::WRITE));
        assert!(Devices::default().allows_char(1, 11, DeviceAccess::ALL));
    }

    #[test]
    fn v1_syntax() {
        let r = DeviceRule::allow_char(Some(1), Some(3), DeviceAccess::ALL);
        assert_eq!(r.to_string(), "c 1:3 rwm");
        assert_eq!(
            DeviceRule::allow_char(Some(136), None, DeviceAccess::parse("rw").unwrap()).to_string(),
            "c 136:* rw"
        );
        assert_eq!(DeviceRule::deny_all().to_string(), "a");
        assert!(DeviceAccess::parse("rx").is_err());
    }

    /// Runs the generated program in a tiny interpreter of the instructions it uses.
    fn run(p: &[u64], typ: u32, access: u32, major: u32, minor: u32) -> u64 {
        let ctx = [typ | (access << 16), major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            pc += 1;
            let code = i as u8;
            let dst = ((i >> 8) & 0xf) as usize;
            let src = ((i >> 12) & 0xf) as usize;
            let off = (i >> 16) as u16 as i16;
            let imm = (i >> 32) as u32 as i32;
            match code {
                LDX_MEM_W => {
                    assert_eq!(src, 1);
                    r[dst] = u64::from(ctx[off as usize / 4]);
                }
                MOV64_REG => r[dst] = r[src],
                MOV64_IMM => r[dst] = imm as i64 as u64,
                AND64_IMM => r[dst] &= imm as i64 as u64,
                RSH64_IMM => r[dst] >>= imm,
                JNE_IMM | JEQ_IMM => {
                    let eq = r[dst] == imm as i64 as u64;
                    if eq == (code == JEQ_IMM) {
                        pc = (pc as isize + off as isize) as usize;
                    }
                }
                EXIT => return r[0],
                c => panic!("opcode {c:#x}"),
            }
        }
    }

    #[test]
    fn program_matches_the_emulation() {
        let mut lists = vec![docker()];
        let mut d2 = docker();
        d2.rules.push(DeviceRule {
            allow: true,
            ..DeviceRule::deny_all()
        });
        d2.rules.push(DeviceRule {
            allow: false,
            ..DeviceRule::allow_char(Some(1), Some(11), DeviceAccess::WRITE)
        });
        lists.push(d2);
        lists.push(Devices::default());
        for d in lists {
            let p = d.bpf_program();
            for (kind, typ) in [(DeviceKind::Char, DEV_CHAR), (DeviceKind::Block, DEV_BLOCK)] {
                for (ma, mi) in [(1, 3), (1, 11), (136, 0), (8, 0), (5, 2)] {
                    for acc in 1..8u8 {
                        let want = d.allows(kind, ma, mi, DeviceAccess(acc));
                        let got = run(&p, typ as u32, u32::from(acc), ma, mi);
                        assert_eq!(got == 1, want, "{kind:?} {ma}:{mi} {acc} in {d:?}");
                    }
                }
            }
        }
    }
}
