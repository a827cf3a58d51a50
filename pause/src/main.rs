//! `sandbox-pause`: the infra process of a `sandbox pod`.
//!
//! It is started first in every pod and holds the pod's network, IPC and UTS
//! namespaces (and its PID namespace under `shareProcessNamespace`, where it is PID
//! 1), so that the app containers can join them by path and come and go. It does
//! nothing else: every signal is blocked and taken synchronously with
//! rt_sigtimedwait(2); SIGCHLD reaps every exited child (as PID 1 it inherits the
//! pod's orphans), SIGTERM and SIGINT end it with status 0. Blocked signals are
//! queued even for a namespace's PID 1, which would otherwise drop signals it has
//! no handler for.
//!
//! No libc, no allocator, no std: raw syscalls from a naked `_start`, built static and
//! non-PIE (nothing to relocate) with panic=abort and opt-level=z by sandbox's
//! build script, so the binary is a few KB and its RSS a few pages.
#![no_std]
#![no_main]

use core::arch::{asm, naked_asm};

const SYS_RT_SIGPROCMASK: usize = 14;
const SYS_WAIT4: usize = 61;
const SYS_RT_SIGTIMEDWAIT: usize = 128;
const SYS_EXIT_GROUP: usize = 231;
const SIG_BLOCK: usize = 0;
const WNOHANG: usize = 1;
const SIGINT: isize = 2;
const SIGTERM: isize = 15;
const SIGCHLD: isize = 17;
/// The kernel's sigset is 64 bits.
const SIGSET_SIZE: usize = 8;

/// syscall(2) with up to four arguments.
///
/// # Safety
/// The arguments must be valid for syscall `n`.
unsafe fn syscall4(n: usize, a: usize, b: usize, c: usize, d: usize) -> isize {
    let r: isize;
    // SAFETY: the caller passes arguments valid for syscall `n`; the syscall
    // instruction clobbers rcx and r11 only.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") n as isize => r,
            in("rdi") a, in("rsi") b, in("rdx") c, in("r10") d,
            lateout("rcx") _, lateout("r11") _,
            options(nostack),
        );
    }
    r
}

fn exit(code: usize) -> ! {
    loop {
        // SAFETY: exit_group takes a status and does not return.
        unsafe { syscall4(SYS_EXIT_GROUP, code, 0, 0, 0) };
    }
}

/// The entry point: the stack is aligned for a call, then [`pause_main`] runs.
#[unsafe(naked)]
#[unsafe(no_mangle)]
pub extern "C" fn _start() -> ! {
    naked_asm!("xor ebp, ebp", "and rsp, -16", "call {m}", "ud2", m = sym pause_main)
}

extern "C" fn pause_main() -> ! {
    let all: u64 = !0;
    // SAFETY: a valid sigset of SIGSET_SIZE bytes; no old set asked for.
    let r = unsafe {
        syscall4(
            SYS_RT_SIGPROCMASK,
            SIG_BLOCK,
            &all as *const u64 as usize,
            0,
            SIGSET_SIZE,
        )
    };
    if r < 0 {
        exit(1);
    }
    let mut info = [0u64; 16];
    loop {
        // SAFETY: the set and a 128-byte siginfo buffer live across the call; no
        // timeout (wait forever).
        let sig = unsafe {
            syscall4(
                SYS_RT_SIGTIMEDWAIT,
                &all as *const u64 as usize,
                info.as_mut_ptr() as usize,
                0,
                SIGSET_SIZE,
            )
        };
        match sig {
            SIGINT | SIGTERM => exit(0),
            SIGCHLD => {
                // SAFETY: wait4 with no status or rusage buffer.
                while unsafe { syscall4(SYS_WAIT4, usize::MAX, 0, WNOHANG, 0) } > 0 {}
            }
            _ => {}
        }
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    exit(2)
}
