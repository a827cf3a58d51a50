//! Device rules enforced for real: the v1 devices controller on hybrid and v1 hosts,
//! an eBPF device program on cgroup v2 (the VM lane).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use cgroupkit::{Controller, DeviceAccess, DeviceRule, Devices, Resources, Version};
use common::{Proc, Scratch};

#[test]
fn devices_rules_enforced_for_a_process_in_the_cgroup() {
    let s = Scratch::new();
    let cg = s.create("dev", Controller::Devices);
    let mut r = Resources::default();
    r.devices = Some(Devices::new(vec![
        DeviceRule::deny_all(),
        DeviceRule::allow_char(None, None, DeviceAccess::MKNOD),
        DeviceRule::allow_char(Some(1), Some(3), DeviceAccess::ALL),
    ]));
    assert_eq!(r.controllers(), [Controller::Devices]);
    let written = cg.apply(&r).unwrap();
    let v1 = cg
        .dirs()
        .iter()
        .find(|d| d.version == Version::V1 && d.controllers.contains(&Controller::Devices));
    match v1 {
        Some(d) => {
            // deny "a", then the two exceptions.
            assert_eq!(written.len(), 3, "{written:?}");
            let list = std::fs::read_to_string(d.file("devices.list")).unwrap();
            let mut l: Vec<&str> = list.lines().collect();
            l.sort_unstable();
            assert_eq!(l, ["c *:* m", "c 1:3 rwm"], "{list}");
        }
        // v2: nothing written, a program attached.
        None => assert!(written.is_empty(), "{written:?}"),
    }
    let mut p = Proc(
        Command::new("sh")
            .args([
                "-c",
                "read _; (echo x > /dev/null) 2>/dev/null && echo NULL-OK; \
                 (head -c 1 /dev/zero > /dev/null) 2>/dev/null || echo ZERO-DENIED",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    cg.add_process(p.pid()).unwrap();
    p.0.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut out = String::new();
    p.0.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(out.contains("NULL-OK"), "{out}");
    assert!(out.contains("ZERO-DENIED"), "{out}");
    drop(p);
    cg.delete().unwrap();
}
