//! seccomp: an OCI `linux.seccomp` profile compiled to one classic-BPF program for
//! x86_64, and Docker's default profile as such a profile.
//!
//! The program, built in the parent before the clone:
//!
//! 1. the architecture must be `AUDIT_ARCH_X86_64`, else the process is killed
//!    (i386 through `int 0x80`, or any other ABI);
//! 2. a syscall number with the x32 bit (`nr >= 0x40000000`) kills the process;
//! 3. a number above the highest the profile names answers `ENOSYS` (unless the
//!    default action is to allow), so that libcs fall back from syscalls newer than
//!    the profile as they do on older kernels;
//! 4. a binary search over ranges of syscall numbers that share an outcome; a
//!    syscall with argument conditions jumps to its rules, checked in the profile's
//!    order (rules with conditions before a rule without), the first match wins;
//! 5. the profile's default action for everything else.
//!
//! Our own emitter rather than seccompiler: seccompiler cannot express the ENOSYS
//! range of step 3, nor several actions in one filter (Docker's profile answers
//! ERRNO(EPERM) by default, ERRNO(ENOSYS) for clone3 and allows the rest), nor
//! OCI's `valueTwo` of `SCMP_CMP_MASKED_EQ`; and a filter per action would run every
//! filter on every syscall.
//!
//! [`Program::install`] is async-signal-safe (one raw syscall).

mod table;

use std::collections::BTreeMap;
use std::io;

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};

use crate::error::{Error, Result};

pub use table::SYSCALLS;

/// `AUDIT_ARCH_X86_64` (`EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`).
pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// The x32 ABI's bit in the syscall number (`__X32_SYSCALL_BIT`).
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

// Return values of a filter (`include/uapi/linux/seccomp.h`).
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_KILL_THREAD: u32 = 0;
const RET_TRAP: u32 = 0x0003_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_TRACE: u32 = 0x7ff0_0000;
const RET_LOG: u32 = 0x7ffc_0000;
const RET_ALLOW: u32 = 0x7fff_0000;

// Filter flags of seccomp(SECCOMP_SET_MODE_FILTER).
const FLAG_TSYNC: u32 = 1;
const FLAG_LOG: u32 = 2;
const FLAG_SPEC_ALLOW: u32 = 4;

// Offsets in `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARGS: u32 = 16;

// Classic BPF opcodes (`include/uapi/linux/bpf_common.h`).
const LD_W_ABS: u16 = 0x20; // BPF_LD (0) | BPF_W (0) | BPF_ABS (0x20)
const ALU_AND_K: u16 = 0x04 | 0x50; // BPF_ALU | BPF_AND | BPF_K
const JMP_JA: u16 = 0x05; // BPF_JMP | BPF_JA
const JMP_JEQ_K: u16 = 0x05 | 0x10; // BPF_JMP | BPF_JEQ | BPF_K
const JMP_JGT_K: u16 = 0x05 | 0x20;
const JMP_JGE_K: u16 = 0x05 | 0x30;
const RET_K: u16 = 0x06; // BPF_RET | BPF_K
/// The kernel's limit on a classic BPF program (`BPF_MAXINSNS`).
const MAX_INSNS: usize = 4096;

/// What a filter answers for a syscall.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// Kill the whole process (SIGSYS, as if uncaught).
    KillProcess,
    /// Kill the calling thread.
    KillThread,
    /// Send SIGSYS to the thread (with this value in `si_errno`).
    Trap(u16),
    /// Fail with this errno.
    Errno(u16),
    /// Notify a ptrace tracer (ENOSYS without one).
    Trace(u16),
    /// Allow and log.
    Log,
    /// Allow.
    Allow,
}

impl Action {
    fn ret(self) -> u32 {
        match self {
            Action::KillProcess => RET_KILL_PROCESS,
            Action::KillThread => RET_KILL_THREAD,
            Action::Trap(d) => RET_TRAP | u32::from(d),
            Action::Errno(e) => RET_ERRNO | u32::from(e),
            Action::Trace(d) => RET_TRACE | u32::from(d),
            Action::Log => RET_LOG,
            Action::Allow => RET_ALLOW,
        }
    }

    /// The OCI action with its `errnoRet` (EPERM where absent, as runc does).
    fn from_oci(a: LinuxSeccompAction, errno: Option<u32>, field: &str) -> Result<Action> {
        let data = || -> Result<u16> {
            let e = errno.unwrap_or(libc::EPERM as u32);
            u16::try_from(e)
                .map_err(|_| bad(format!("{field}: errnoRet {e} is out of range (0..=65535)")))
        };
        Ok(match a {
            LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
                Action::KillThread
            }
            LinuxSeccompAction::ScmpActKillProcess => Action::KillProcess,
            LinuxSeccompAction::ScmpActTrap => Action::Trap(0),
            LinuxSeccompAction::ScmpActErrno => Action::Errno(data()?),
            LinuxSeccompAction::ScmpActTrace => Action::Trace(data()?),
            LinuxSeccompAction::ScmpActLog => Action::Log,
            LinuxSeccompAction::ScmpActAllow => Action::Allow,
            LinuxSeccompAction::ScmpActNotify => {
                return Err(bad(format!(
                    "{field}: SCMP_ACT_NOTIFY is not supported (no seccomp user \
                     notification listener); use SCMP_ACT_ERRNO or SCMP_ACT_ALLOW"
                )));
            }
        })
    }
}

/// A comparison of one 64-bit syscall argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `arg != v`.
    Ne(u64),
    /// `arg < v`.
    Lt(u64),
    /// `arg <= v`.
    Le(u64),
    /// `arg == v`.
    Eq(u64),
    /// `arg >= v`.
    Ge(u64),
    /// `arg > v`.
    Gt(u64),
    /// `arg & mask == v`.
    MaskedEq {
        /// The mask.
        mask: u64,
        /// The expected value after masking.
        value: u64,
    },
}

/// A condition on argument `index` (0..=5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cond {
    /// Which argument.
    pub index: u8,
    /// The comparison.
    pub op: Op,
}

/// Conditions (all must hold) and the action taken when they do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Conditions, ANDed; empty matches always.
    pub conds: Vec<Cond>,
    /// The action.
    pub action: Action,
}

/// A compiled-ready profile for x86_64.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// Action for syscalls without a rule.
    pub default: Action,
    /// Syscalls with an unconditional action, sorted by number, one each.
    pub plain: Vec<(u32, Action)>,
    /// Rules with argument conditions per syscall number, in the order they are
    /// checked (before the number's `plain` action, or the default).
    pub conditional: BTreeMap<u32, Vec<Rule>>,
    /// Numbers above this one answer ENOSYS.
    pub enosys_above: Option<u32>,
    /// seccomp(2) filter flags.
    pub flags: u32,
}

fn bad(msg: String) -> Error {
    Error::Config(format!("linux.seccomp.{msg}"))
}

/// The x86_64 number of a syscall name.
pub fn syscall_number(name: &str) -> Option<u32> {
    SYSCALLS
        .binary_search_by(|(n, _)| n.as_bytes().cmp(name.as_bytes()))
        .ok()
        .map(|i| SYSCALLS[i].1)
}

impl Profile {
    /// Reads an OCI `linux.seccomp`; refuses what it cannot honour, naming the field.
    ///
    /// Syscall names unknown on x86_64 are skipped (profiles name every
    /// architecture's syscalls, as Docker's does; runc skips them too).
    /// `architectures` must include `SCMP_ARCH_X86_64` (or be empty); the i386 and
    /// x32 ABIs are always refused (the process is killed), even when listed.
    pub fn from_oci(s: &LinuxSeccomp) -> Result<Profile> {
        if let Some(p) = s.listener_path() {
            return Err(bad(format!(
                "listenerPath ({}): seccomp user notification is not supported; remove it",
                p.display()
            )));
        }
        if s.listener_metadata().is_some() {
            return Err(bad(
                "listenerMetadata: seccomp user notification is not supported; remove it".into(),
            ));
        }
        if let Some(archs) = s.architectures()
            && !archs.is_empty()
            && !archs
                .iter()
                .any(|a| matches!(a, Arch::ScmpArchX86_64 | Arch::ScmpArchNative))
        {
            return Err(bad(format!(
                "architectures {archs:?}: this runtime filters x86_64 only; add SCMP_ARCH_X86_64"
            )));
        }
        let mut flags = 0;
        for f in s.flags().iter().flatten() {
            flags |= match f {
                LinuxSeccompFilterFlag::SeccompFilterFlagLog => FLAG_LOG,
                LinuxSeccompFilterFlag::SeccompFilterFlagTsync => FLAG_TSYNC,
                LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => FLAG_SPEC_ALLOW,
            };
        }
        let default = Action::from_oci(s.default_action(), s.default_errno_ret(), "defaultAction")?;
        // Per number: conditional rules in order, then the first unconditional one.
        let mut cond: BTreeMap<u32, Vec<Rule>> = BTreeMap::new();
        // One allocation for the hundreds of plain entries (the cost of a start).
        let mut plain: Vec<(u32, Action)> = Vec::with_capacity(512);
        for (i, sc) in s.syscalls().iter().flatten().enumerate() {
            let field = format!("syscalls[{i}]");
            let action = Action::from_oci(sc.action(), sc.errno_ret(), &field)?;
            let mut conds = Vec::new();
            for (j, a) in sc.args().iter().flatten().enumerate() {
                let index = u8::try_from(a.index())
                    .ok()
                    .filter(|i| *i < 6)
                    .ok_or_else(|| {
                        bad(format!(
                            "{field}.args[{j}].index {}: a syscall has arguments 0 to 5",
                            a.index()
                        ))
                    })?;
                let v = a.value();
                let op = match a.op() {
                    LinuxSeccompOperator::ScmpCmpNe => Op::Ne(v),
                    LinuxSeccompOperator::ScmpCmpLt => Op::Lt(v),
                    LinuxSeccompOperator::ScmpCmpLe => Op::Le(v),
                    LinuxSeccompOperator::ScmpCmpEq => Op::Eq(v),
                    LinuxSeccompOperator::ScmpCmpGe => Op::Ge(v),
                    LinuxSeccompOperator::ScmpCmpGt => Op::Gt(v),
                    LinuxSeccompOperator::ScmpCmpMaskedEq => Op::MaskedEq {
                        mask: v,
                        value: a.value_two().unwrap_or(0),
                    },
                };
                conds.push(Cond { index, op });
            }
            if sc.names().is_empty() {
                return Err(bad(format!(
                    "{field}.names: empty; name at least one syscall"
                )));
            }
            for name in sc.names() {
                let Some(nr) = syscall_number(name) else {
                    continue;
                };
                if conds.is_empty() {
                    plain.push((nr, action));
                } else {
                    cond.entry(nr).or_default().push(Rule {
                        conds: conds.clone(),
                        action,
                    });
                }
            }
        }
        // The first unconditional rule of a number wins (a stable sort keeps order).
        plain.sort_by_key(|(nr, _)| *nr);
        plain.dedup_by_key(|(nr, _)| *nr);
        let enosys_above = match default {
            Action::Allow | Action::Log => None,
            _ => plain
                .last()
                .map(|(nr, _)| *nr)
                .max(cond.keys().next_back().copied()),
        };
        Ok(Profile {
            default,
            plain,
            conditional: cond,
            enosys_above,
            flags,
        })
    }

    /// Compiles the profile into one classic-BPF program.
    pub fn compile(&self) -> Result<Program> {
        let mut a = Asm::default();
        // 1. architecture
        let arch_ok = a.label();
        a.stmt(LD_W_ABS, OFF_ARCH);
        a.jump(JMP_JEQ_K, AUDIT_ARCH_X86_64, Some(arch_ok), None);
        a.ret(RET_KILL_PROCESS);
        a.bind(arch_ok);
        // 2. x32
        let native = a.label();
        a.stmt(LD_W_ABS, OFF_NR);
        a.jump(JMP_JGE_K, X32_SYSCALL_BIT, None, Some(native));
        a.ret(RET_KILL_PROCESS);
        a.bind(native);
        // 3. newer than the profile
        if let Some(max) = self.enosys_above {
            let enosys = a.label();
            a.jump(JMP_JGT_K, max, Some(enosys), None);
            let body = a.label();
            a.ja(body);
            a.bind(enosys);
            a.ret(Action::Errno(libc::ENOSYS as u16).ret());
            a.bind(body);
        }
        // 4. ranges of numbers with one outcome
        let mut outcomes: Vec<(u32, Outcome)> = Vec::new();
        let mut bodies: Vec<(usize, &[Rule], Action)> = Vec::new();
        let mut next = 0u32;
        let mut numbers: Vec<u32> = self.plain.iter().map(|(nr, _)| *nr).collect();
        numbers.extend(self.conditional.keys());
        numbers.sort_unstable();
        numbers.dedup();
        for nr in numbers {
            if nr > next {
                push_range(&mut outcomes, next, Outcome::Ret(self.default.ret()));
            }
            let plain = self
                .plain
                .binary_search_by_key(&nr, |(n, _)| *n)
                .ok()
                .map(|i| self.plain[i].1);
            let o = match (self.conditional.get(&nr), plain) {
                (Some(rules), fallback) => {
                    let l = a.label();
                    bodies.push((l, rules, fallback.unwrap_or(self.default)));
                    Outcome::Body(l)
                }
                (None, Some(action)) => Outcome::Ret(action.ret()),
                (None, None) => Outcome::Ret(self.default.ret()),
            };
            push_range(&mut outcomes, nr, o);
            next = nr + 1;
        }
        push_range(&mut outcomes, next, Outcome::Ret(self.default.ret()));
        search(&mut a, &outcomes);
        // Rules of syscalls with argument conditions.
        for (l, rules, fallback) in bodies {
            a.bind(l);
            for r in rules {
                let fail = a.label();
                for c in &r.conds {
                    cond(&mut a, c, fail);
                }
                a.ret(r.action.ret());
                a.bind(fail);
            }
            a.ret(fallback.ret());
        }
        let insns = a.finish()?;
        Ok(Program {
            insns,
            flags: self.flags,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Ret(u32),
    Body(usize),
}

/// Appends `[start, ..)` with outcome `o`, merging with the previous range.
fn push_range(v: &mut Vec<(u32, Outcome)>, start: u32, o: Outcome) {
    if v.last().is_some_and(|(_, p)| *p == o) {
        return;
    }
    v.push((start, o));
}

/// A binary search on the syscall number (in A) over ranges starting at `r[i].0`.
fn search(a: &mut Asm, r: &[(u32, Outcome)]) {
    match r {
        [] => {}
        [(_, o)] => match o {
            Outcome::Ret(k) => a.ret(*k),
            Outcome::Body(l) => a.ja(*l),
        },
        _ => {
            let mid = r.len() / 2;
            // The left half may be longer than a conditional jump reaches: jump over
            // an unconditional `ja` instead.
            let (left, right) = (a.label(), a.label());
            a.jump(JMP_JGE_K, r[mid].0, None, Some(left));
            a.ja(right);
            a.bind(left);
            search(a, &r[..mid]);
            a.bind(right);
            search(a, &r[mid..]);
        }
    }
}

/// Emits a check of `c` that jumps to `fail` when it does not hold (A is clobbered).
fn cond(a: &mut Asm, c: &Cond, fail: usize) {
    let lo = OFF_ARGS + 8 * u32::from(c.index);
    let hi = lo + 4;
    let split = |v: u64| ((v >> 32) as u32, v as u32);
    match c.op {
        Op::Eq(v) => {
            let (vh, vl) = split(v);
            a.stmt(LD_W_ABS, hi);
            a.jump(JMP_JEQ_K, vh, None, Some(fail));
            a.stmt(LD_W_ABS, lo);
            a.jump(JMP_JEQ_K, vl, None, Some(fail));
        }
        Op::Ne(v) => {
            let (vh, vl) = split(v);
            let ok = a.label();
            a.stmt(LD_W_ABS, hi);
            a.jump(JMP_JEQ_K, vh, None, Some(ok));
            a.stmt(LD_W_ABS, lo);
            a.jump(JMP_JEQ_K, vl, Some(fail), None);
            a.bind(ok);
        }
        Op::MaskedEq { mask, value } => {
            let (mh, ml) = split(mask);
            let (vh, vl) = split(value);
            a.stmt(LD_W_ABS, hi);
            a.stmt(ALU_AND_K, mh);
            a.jump(JMP_JEQ_K, vh, None, Some(fail));
            a.stmt(LD_W_ABS, lo);
            a.stmt(ALU_AND_K, ml);
            a.jump(JMP_JEQ_K, vl, None, Some(fail));
        }
        Op::Gt(v) | Op::Ge(v) | Op::Lt(v) | Op::Le(v) => {
            // arg > v (or >=): hi > vh, or hi == vh and lo > vl (>=). Lt/Le are the
            // negations of Ge/Gt.
            let (vh, vl) = split(v);
            let (op_lo, negate) = match c.op {
                Op::Gt(_) => (JMP_JGT_K, false),
                Op::Ge(_) => (JMP_JGE_K, false),
                Op::Lt(_) => (JMP_JGE_K, true),
                _ => (JMP_JGT_K, true),
            };
            let (yes, no) = if negate {
                (fail, a.label())
            } else {
                (a.label(), fail)
            };
            a.stmt(LD_W_ABS, hi);
            a.jump(JMP_JGT_K, vh, Some(yes), None);
            a.jump(JMP_JEQ_K, vh, None, Some(no));
            a.stmt(LD_W_ABS, lo);
            a.jump(op_lo, vl, Some(yes), Some(no));
            a.bind(if negate { no } else { yes });
        }
    }
}

/// A compiled filter and its seccomp(2) flags.
#[derive(Clone, Debug)]
pub struct Program {
    insns: Vec<libc::sock_filter>,
    flags: u32,
}

impl Program {
    /// The instructions.
    pub fn insns(&self) -> &[libc::sock_filter] {
        &self.insns
    }

    /// Installs the filter on the calling thread: `seccomp(SECCOMP_SET_MODE_FILTER)`
    /// (needs no_new_privs or CAP_SYS_ADMIN). Async-signal-safe: one raw syscall.
    pub fn install(&self) -> io::Result<()> {
        const SECCOMP_SET_MODE_FILTER: libc::c_long = 1;
        let prog = libc::sock_fprog {
            len: self.insns.len() as libc::c_ushort,
            filter: self.insns.as_ptr().cast_mut(),
        };
        // SAFETY: prog points at the instruction array, which outlives the call; the
        // kernel copies it.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                SECCOMP_SET_MODE_FILTER,
                libc::c_long::from(self.flags),
                &raw const prog,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

/// A tiny assembler: jumps to labels, resolved at the end. Conditional jumps reach
/// 255 instructions; longer ones go through an unconditional `ja`.
#[derive(Default)]
struct Asm {
    code: Vec<Ins>,
    labels: Vec<Option<usize>>,
}

enum Ins {
    Stmt(u16, u32),
    Jump {
        code: u16,
        k: u32,
        jt: Option<usize>,
        jf: Option<usize>,
    },
    Ja(usize),
}

impl Asm {
    fn label(&mut self) -> usize {
        self.labels.push(None);
        self.labels.len() - 1
    }
    fn bind(&mut self, l: usize) {
        self.labels[l] = Some(self.code.len());
    }
    fn stmt(&mut self, code: u16, k: u32) {
        self.code.push(Ins::Stmt(code, k));
    }
    fn ret(&mut self, k: u32) {
        self.stmt(RET_K, k);
    }
    fn ja(&mut self, l: usize) {
        self.code.push(Ins::Ja(l));
    }
    /// A conditional jump; `None` falls through to the next instruction.
    fn jump(&mut self, code: u16, k: u32, jt: Option<usize>, jf: Option<usize>) {
        self.code.push(Ins::Jump { code, k, jt, jf });
    }

    fn finish(self) -> Result<Vec<libc::sock_filter>> {
        let too_big = |n: usize| {
            bad(format!(
                "syscalls: the filter would need {n} instructions, more than the kernel's \
                 {MAX_INSNS}; merge rules or use fewer argument conditions"
            ))
        };
        if self.code.len() > MAX_INSNS {
            return Err(too_big(self.code.len()));
        }
        let at = |l: usize| self.labels[l];
        let mut out = Vec::with_capacity(self.code.len());
        for (pc, ins) in self.code.iter().enumerate() {
            let rel = |l: Option<usize>| -> Result<u32> {
                let Some(l) = l else { return Ok(0) };
                let t = at(l).ok_or_else(|| bad("syscalls: internal label left unbound".into()))?;
                t.checked_sub(pc + 1)
                    .and_then(|d| u32::try_from(d).ok())
                    .ok_or_else(|| bad("syscalls: internal backward jump".into()))
            };
            let f = match ins {
                Ins::Stmt(code, k) => sock(*code, 0, 0, *k),
                Ins::Ja(l) => sock(JMP_JA, 0, 0, rel(Some(*l))?),
                Ins::Jump { code, k, jt, jf } => {
                    let (t, f) = (rel(*jt)?, rel(*jf)?);
                    let short = |d: u32| {
                        u8::try_from(d).map_err(|_| {
                            bad(format!(
                                "syscalls: a rule is too long for a conditional jump ({d} \
                                 instructions); split it"
                            ))
                        })
                    };
                    sock(*code, short(t)?, short(f)?, *k)
                }
            };
            out.push(f);
        }
        Ok(out)
    }
}

fn sock(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// Syscalls Docker's default profile (moby `profiles/seccomp/default.json`) allows
/// to every container, as named there (names of other architectures included;
/// they are skipped on x86_64). Left out: io_uring_setup/enter/register, which moby
/// removed from the list in 2023 (io_uring's operations bypass seccomp).
pub const DOCKER_ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_time64",
    "futex_waitv",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
    // Docker's conditional entries that hold for its default capabilities on amd64:
    // kernel 4.8+, the amd64 arch entries, CAP_SYS_CHROOT.
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "arch_prctl",
    "modify_ldt",
    "chroot",
];

/// The `CLONE_NEW*` flags clone(2) may not carry without CAP_SYS_ADMIN
/// (Docker's mask, 0x7E020000: NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID,
/// NEWNET).
pub const CLONE_NAMESPACE_MASK: u64 = 0x7E02_0000;
/// `AF_VSOCK`, refused to socket(2).
pub const AF_VSOCK: u64 = 40;
/// The personality(2) values Docker allows: PER_LINUX, PER_LINUX32,
/// UNAME26, PER_LINUX32|UNAME26, and 0xffffffff (query).
pub const PERSONALITIES: [u64; 5] = [0, 8, 0x20000, 0x20008, 0xffff_ffff];

fn oci<T, E: std::fmt::Display>(r: std::result::Result<T, E>) -> Result<T> {
    r.map_err(|e| Error::Config(format!("building the default seccomp profile: {e}")))
}

fn arg(
    index: usize,
    op: LinuxSeccompOperator,
    value: u64,
) -> Result<oci_spec::runtime::LinuxSeccompArg> {
    oci(LinuxSeccompArgBuilder::default()
        .index(index)
        .op(op)
        .value(value)
        .build())
}

fn syscall(
    names: Vec<String>,
    action: LinuxSeccompAction,
    errno: Option<u32>,
    args: Vec<oci_spec::runtime::LinuxSeccompArg>,
) -> Result<LinuxSyscall> {
    let mut b = LinuxSyscallBuilder::default().names(names).action(action);
    if let Some(e) = errno {
        b = b.errno_ret(e);
    }
    if !args.is_empty() {
        b = b.args(args);
    }
    oci(b.build())
}

/// Docker's default profile for a container with Docker's default capabilities on
/// x86_64, as an OCI `linux.seccomp`: default ERRNO(EPERM); [`DOCKER_ALLOWED`];
/// socket unless AF_VSOCK; personality with the [`PERSONALITIES`]; clone without
/// [`CLONE_NAMESPACE_MASK`] flags; clone3 ERRNO(ENOSYS) (its flags are behind a
/// pointer a filter cannot read, so libc falls back to clone).
pub fn docker_default() -> Result<LinuxSeccomp> {
    use LinuxSeccompAction::{ScmpActAllow, ScmpActErrno};
    use LinuxSeccompOperator::{ScmpCmpEq, ScmpCmpMaskedEq, ScmpCmpNe};
    let mut syscalls = vec![syscall(
        DOCKER_ALLOWED.iter().map(|s| s.to_string()).collect(),
        ScmpActAllow,
        None,
        Vec::new(),
    )?];
    syscalls.push(syscall(
        vec!["socket".into()],
        ScmpActAllow,
        None,
        vec![arg(0, ScmpCmpNe, AF_VSOCK)?],
    )?);
    for p in PERSONALITIES {
        syscalls.push(syscall(
            vec!["personality".into()],
            ScmpActAllow,
            None,
            vec![arg(0, ScmpCmpEq, p)?],
        )?);
    }
    syscalls.push(syscall(
        vec!["clone".into()],
        ScmpActAllow,
        None,
        vec![arg(0, ScmpCmpMaskedEq, CLONE_NAMESPACE_MASK)?],
    )?);
    syscalls.push(syscall(
        vec!["clone3".into()],
        ScmpActErrno,
        Some(libc::ENOSYS as u32),
        Vec::new(),
    )?);
    oci(LinuxSeccompBuilder::default()
        .default_action(ScmpActErrno)
        .default_errno_ret(libc::EPERM as u32)
        .architectures(vec![Arch::ScmpArchX86_64])
        .syscalls(syscalls)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a classic-BPF seccomp program on one `seccomp_data` (a test double of
    /// the kernel's interpreter, for the instructions this module emits).
    fn eval(p: &[libc::sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u32; 16];
        data[0] = nr;
        data[1] = arch;
        for (i, a) in args.iter().enumerate() {
            data[4 + 2 * i] = *a as u32;
            data[5 + 2 * i] = (*a >> 32) as u32;
        }
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = p[pc];
            pc += 1;
            match i.code {
                LD_W_ABS => acc = data[i.k as usize / 4],
                ALU_AND_K => acc &= i.k,
                JMP_JA => pc += i.k as usize,
                RET_K => return i.k,
                c => {
                    let t = match c {
                        JMP_JEQ_K => acc == i.k,
                        JMP_JGT_K => acc > i.k,
                        JMP_JGE_K => acc >= i.k,
                        _ => panic!("unexpected opcode {c:#x}"),
                    };
                    pc += usize::from(if t { i.jt } else { i.jf });
                }
            }
        }
    }

    fn default_prog() -> Program {
        Profile::from_oci(&docker_default().unwrap())
            .unwrap()
            .compile()
            .unwrap()
    }

    const X: u32 = AUDIT_ARCH_X86_64;
    const EPERM: u32 = RET_ERRNO | 1;
    const ENOSYS: u32 = RET_ERRNO | 38;

    #[test]
    fn docker_default_answers() {
        let p = default_prog();
        let p = p.insns();
        assert!(p.len() < 400, "{} instructions", p.len());
        let r = |nr: i64, a0: u64| eval(p, X, nr as u32, [a0, 0, 0, 0, 0, 0]);
        for nr in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_execve,
            libc::SYS_futex_waitv,
        ] {
            assert_eq!(r(nr, 0), RET_ALLOW, "{nr}");
        }
        for nr in [
            libc::SYS_mount,
            libc::SYS_setns,
            libc::SYS_unshare,
            libc::SYS_keyctl,
            libc::SYS_bpf,
            libc::SYS_io_uring_setup,
            libc::SYS_mbind,
        ] {
            assert_eq!(r(nr, 0), EPERM, "{nr}");
        }
        assert_eq!(r(libc::SYS_clone3, 0), ENOSYS);
        assert_eq!(r(452, 0), ENOSYS, "fchmodat2 is newer than the list");
        assert_eq!(r(100_000, 0), ENOSYS);
        assert_eq!(r(libc::SYS_clone, libc::SIGCHLD as u64), RET_ALLOW);
        assert_eq!(r(libc::SYS_clone, 0x3d0f00), RET_ALLOW, "threads");
        assert_eq!(r(libc::SYS_clone, libc::CLONE_NEWUSER as u64), EPERM);
        assert_eq!(r(libc::SYS_clone, libc::CLONE_NEWNS as u64 | 17), EPERM);
        assert_eq!(r(libc::SYS_socket, libc::AF_INET as u64), RET_ALLOW);
        assert_eq!(r(libc::SYS_socket, 40), EPERM);
        assert_eq!(
            r(libc::SYS_socket, 40 | (1 << 32)),
            RET_ALLOW,
            "64-bit compare"
        );
        assert_eq!(r(libc::SYS_personality, 8), RET_ALLOW);
        assert_eq!(r(libc::SYS_personality, 0xffff_ffff), RET_ALLOW);
        assert_eq!(
            r(libc::SYS_personality, 0x0040000),
            EPERM,
            "ADDR_NO_RANDOMIZE"
        );
        // ABI checks.
        assert_eq!(eval(p, 0x4000_0003, 20, [0; 6]), RET_KILL_PROCESS, "i386");
        assert_eq!(
            eval(p, X, X32_SYSCALL_BIT | 39, [0; 6]),
            RET_KILL_PROCESS,
            "x32"
        );
    }

    #[test]
    fn table_is_sorted_and_complete() {
        assert!(
            SYSCALLS
                .windows(2)
                .all(|w| w[0].0.as_bytes() < w[1].0.as_bytes())
        );
        assert_eq!(syscall_number("read"), Some(0));
        assert_eq!(syscall_number("clone3"), Some(435));
        assert_eq!(syscall_number("file_setattr"), Some(469));
        assert_eq!(syscall_number("chown32"), None);
        let mut nrs: Vec<u32> = SYSCALLS.iter().map(|(_, nr)| *nr).collect();
        nrs.sort_unstable();
        nrs.dedup();
        assert_eq!(nrs.len(), SYSCALLS.len(), "one name per number");
    }

    #[test]
    fn every_docker_name_on_x86_64_resolves() {
        // Names of other architectures are skipped; make sure the x86_64 ones all
        // resolve (a typo would silently deny a syscall).
        let others = [
            "chown32",
            "clock_adjtime64",
            "_llseek",
            "_newselect",
            "recv",
            "send",
            "sigreturn",
            "socketcall",
            "ugetrlimit",
            "waitpid",
            "mmap2",
            "ipc",
            "sigprocmask",
            "stat64",
            "lstat64",
            "fstat64",
            "fstatat64",
            "fstatfs64",
            "statfs64",
            "truncate64",
            "ftruncate64",
            "fadvise64_64",
            "fcntl64",
            "sendfile64",
        ];
        for n in DOCKER_ALLOWED {
            if syscall_number(n).is_none() {
                assert!(
                    others.contains(n) || n.ends_with("32") || n.ends_with("time64"),
                    "{n} does not resolve"
                );
            }
        }
    }

    fn profile(json: &str) -> Result<Profile> {
        let s: LinuxSeccomp = serde_json::from_str(json).unwrap();
        Profile::from_oci(&s)
    }

    #[test]
    fn oci_ops_and_order() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
              {"names":["getpid"],"action":"SCMP_ACT_ERRNO","errnoRet":99},
              {"names":["write"],"action":"SCMP_ACT_ERRNO","errnoRet":5,"args":[{"index":2,"value":10,"op":"SCMP_CMP_GT"}]},
              {"names":["write"],"action":"SCMP_ACT_ERRNO","errnoRet":6,"args":[{"index":2,"value":3,"op":"SCMP_CMP_LE"},{"index":0,"value":2,"op":"SCMP_CMP_EQ"}]},
              {"names":["read"],"action":"SCMP_ACT_KILL_PROCESS","args":[{"index":1,"value":255,"valueTwo":7,"op":"SCMP_CMP_MASKED_EQ"}]},
              {"names":["dup"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":5,"op":"SCMP_CMP_LT"}]},
              {"names":["dup2"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":5,"op":"SCMP_CMP_GE"}]},
              {"names":["no_such_syscall","arm_fadvise64_64"],"action":"SCMP_ACT_KILL"}
            ]}"#,
        )
        .unwrap();
        assert_eq!(p.enosys_above, None, "default allow: no ENOSYS range");
        let prog = p.compile().unwrap();
        let e = |nr: i64, a: [u64; 6]| eval(prog.insns(), X, nr as u32, a);
        assert_eq!(e(libc::SYS_getpid, [0; 6]), RET_ERRNO | 99);
        assert_eq!(e(libc::SYS_write, [1, 0, 11, 0, 0, 0]), RET_ERRNO | 5);
        assert_eq!(e(libc::SYS_write, [1, 0, 1 << 33, 0, 0, 0]), RET_ERRNO | 5);
        assert_eq!(e(libc::SYS_write, [1, 0, 10, 0, 0, 0]), RET_ALLOW);
        assert_eq!(e(libc::SYS_write, [2, 0, 3, 0, 0, 0]), RET_ERRNO | 6);
        assert_eq!(e(libc::SYS_write, [2, 0, 4, 0, 0, 0]), RET_ALLOW);
        assert_eq!(e(libc::SYS_read, [0, 0x107, 0, 0, 0, 0]), RET_KILL_PROCESS);
        assert_eq!(e(libc::SYS_read, [0, 0x106, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(e(libc::SYS_dup, [4, 0, 0, 0, 0, 0]), EPERM);
        assert_eq!(e(libc::SYS_dup, [5, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(e(libc::SYS_dup, [1 << 32, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(e(libc::SYS_dup2, [5, 0, 0, 0, 0, 0]), EPERM);
        assert_eq!(e(libc::SYS_dup2, [4, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(e(999, [0; 6]), RET_ALLOW);
    }

    #[test]
    fn refusals_name_the_field() {
        let e = profile(r#"{"defaultAction":"SCMP_ACT_ERRNO","listenerPath":"/run/l.sock"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("listenerPath"), "{e}");
        let e = profile(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("syscalls[0]") && e.contains("SCMP_ACT_NOTIFY"),
            "{e}"
        );
        let e =
            profile(r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_AARCH64"]}"#)
                .unwrap_err()
                .to_string();
        assert!(e.contains("architectures"), "{e}");
        let e = profile(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":6,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("syscalls[0].args[0].index"), "{e}");
        let e = profile(r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":70000}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("defaultAction"), "{e}");
    }

    #[test]
    fn docker_archs_are_accepted() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_X32"],"syscalls":[{"names":["read","close"],"action":"SCMP_ACT_ALLOW"}]}"#,
        )
        .unwrap()
        .compile()
        .unwrap();
        assert_eq!(eval(p.insns(), 0x4000_0003, 0, [0; 6]), RET_KILL_PROCESS);
        assert_eq!(eval(p.insns(), X, 0, [0; 6]), RET_ALLOW);
        assert_eq!(eval(p.insns(), X, 1, [0; 6]), EPERM);
        assert_eq!(eval(p.insns(), X, 3, [0; 6]), RET_ALLOW);
        assert_eq!(eval(p.insns(), X, 4, [0; 6]), ENOSYS);
    }
}
