//! The device allow-list of every container: deny everything, then the spec's
//! `linux.resources.devices` rules, then Docker's (runc's) default allowed devices,
//! appended last as runc appends them. Enforced by cgroupkit (v1 `devices`
//! controller, or an eBPF device program on cgroup v2).

use cgroupkit::{DeviceAccess, DeviceKind, DeviceRule, Devices};
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use crate::error::{Error, Result};

/// runc's `AllowedDevices` (what Docker containers get): mknod of any node (opening
/// one still needs an allow rule), and read/write/mknod of null, zero, full, random,
/// urandom, tty, console, ptmx and the pts range.
pub fn docker_allowed() -> Vec<DeviceRule> {
    let all = DeviceAccess::ALL;
    let c = |major, minor| DeviceRule::allow_char(Some(major), minor, all);
    vec![
        DeviceRule::allow_char(None, None, DeviceAccess::MKNOD),
        DeviceRule {
            kind: DeviceKind::Block,
            ..DeviceRule::allow_char(None, None, DeviceAccess::MKNOD)
        },
        c(1, Some(3)), // /dev/null
        c(1, Some(8)), // /dev/random
        c(1, Some(7)), // /dev/full
        c(5, Some(0)), // /dev/tty
        c(1, Some(5)), // /dev/zero
        c(1, Some(9)), // /dev/urandom
        c(5, Some(1)), // /dev/console
        c(136, None),  // /dev/pts/*
        c(5, Some(2)), // /dev/ptmx
    ]
}

fn number(v: Option<i64>, what: &str, i: usize) -> Result<Option<u32>> {
    v.map(|n| {
        u32::try_from(n).map_err(|_| {
            Error::Config(format!(
                "linux.resources.devices[{i}].{what} {n}: expected a device number (0 or more) or none for any"
            ))
        })
    })
    .transpose()
}

/// The rules for a container whose spec has these `linux.resources.devices`.
pub fn for_spec(rules: Option<&Vec<LinuxDeviceCgroup>>) -> Result<Devices> {
    let mut out = vec![DeviceRule::deny_all()];
    for (i, r) in rules.into_iter().flatten().enumerate() {
        let kind = match r.typ().unwrap_or_default() {
            LinuxDeviceType::A => DeviceKind::All,
            LinuxDeviceType::C | LinuxDeviceType::U => DeviceKind::Char,
            LinuxDeviceType::B => DeviceKind::Block,
            LinuxDeviceType::P => {
                return Err(Error::Config(format!(
                    "linux.resources.devices[{i}].type p: FIFOs are not devices the device \
                     cgroup controls; use a, b or c"
                )));
            }
        };
        let access = match r.access().as_deref() {
            None | Some("") => DeviceAccess::ALL,
            Some(a) => DeviceAccess::parse(a)
                .map_err(|e| Error::Config(format!("linux.resources.devices[{i}].access: {e}")))?,
        };
        out.push(DeviceRule {
            allow: r.allow(),
            kind,
            major: number(r.major(), "major", i)?,
            minor: number(r.minor(), "minor", i)?,
            access,
        });
    }
    out.extend(docker_allowed());
    Ok(Devices::new(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_list() {
        let d = for_spec(None).unwrap();
        let rw = DeviceAccess::READ | DeviceAccess::WRITE;
        assert!(d.allows_char(1, 3, rw), "/dev/null");
        assert!(d.allows_char(136, 4, rw), "a pty");
        assert!(!d.allows_char(1, 11, DeviceAccess::WRITE), "/dev/kmsg");
        assert!(
            d.allows_char(1, 11, DeviceAccess::MKNOD),
            "mknod stays allowed"
        );
        assert!(!d.allows_block(8, 0, DeviceAccess::READ), "a disk");
    }

    #[test]
    fn spec_rules_come_before_the_defaults() {
        let rules: Vec<LinuxDeviceCgroup> = serde_json::from_str(
            r#"[{"allow":false,"access":"rwm"},
                {"allow":true,"type":"c","major":10,"minor":200,"access":"rw"},
                {"allow":true,"type":"b","major":7,"access":"r"}]"#,
        )
        .unwrap();
        let d = for_spec(Some(&rules)).unwrap();
        assert!(d.allows_char(10, 200, DeviceAccess::WRITE));
        assert!(d.allows_block(7, 3, DeviceAccess::READ));
        assert!(!d.allows_block(7, 3, DeviceAccess::WRITE));
        assert!(d.allows_char(1, 5, DeviceAccess::READ), "defaults appended");
        let bad: Vec<LinuxDeviceCgroup> =
            serde_json::from_str(r#"[{"allow":true,"type":"c","major":-2,"access":"r"}]"#).unwrap();
        let e = for_spec(Some(&bad)).unwrap_err().to_string();
        assert!(e.contains("devices[0].major"), "{e}");
        let bad: Vec<LinuxDeviceCgroup> =
            serde_json::from_str(r#"[{"allow":true,"type":"c","access":"rx"}]"#).unwrap();
        let e = for_spec(Some(&bad)).unwrap_err().to_string();
        assert!(e.contains("devices[0].access"), "{e}");
    }
}
