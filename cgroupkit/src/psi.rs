//! Pressure stall information (PSI) of a cgroup: how much time its tasks waited for
//! CPU, memory or I/O, from the v2 `cpu.pressure`, `memory.pressure`, `io.pressure`
//! files (kernel 4.20+, per cgroup on v2), and PSI triggers that wake a waiter when a
//! stall threshold is crossed within a window.
//!
//! On v1-only hosts there are no per-cgroup pressure files; on hybrid hosts cgroups
//! made by [`Cgroup::create`] have a unified directory, where they are.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cgroup::Cgroup;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::hierarchy::{Controller, Version};
use crate::sys;

/// The resource a pressure figure is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum PsiResource {
    /// cpu.pressure
    Cpu,
    /// memory.pressure
    Memory,
    /// io.pressure
    Io,
}

impl PsiResource {
    /// The file name.
    pub fn file(self) -> &'static str {
        match self {
            PsiResource::Cpu => "cpu.pressure",
            PsiResource::Memory => "memory.pressure",
            PsiResource::Io => "io.pressure",
        }
    }
}

/// One line of a pressure file.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PsiLine {
    /// Share of the last 10 s stalled, in percent.
    pub avg10: f64,
    /// ... of the last 60 s.
    pub avg60: f64,
    /// ... of the last 300 s.
    pub avg300: f64,
    /// Total stall time, microseconds.
    pub total_usec: u64,
}

/// `some`: at least one task stalled; `full`: all non-idle tasks stalled at once
/// (absent for cpu before 5.13).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Pressure {
    /// The `some` line.
    pub some: PsiLine,
    /// The `full` line, where the kernel shows one.
    pub full: Option<PsiLine>,
}

impl Pressure {
    /// Parses a pressure file:
    /// `some avg10=0.00 avg60=0.00 avg300=0.00 total=0`, then optionally `full ...`.
    pub fn parse(text: &str, path: &Path) -> Result<Pressure> {
        let mut p = Pressure::default();
        let mut saw_some = false;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let bad = || fsutil::parse_error(path, i + 1, line);
            let mut it = line.split_whitespace();
            let kind = it.next().ok_or_else(bad)?;
            let mut l = PsiLine::default();
            let mut seen = 0;
            for kv in it {
                let (k, v) = kv.split_once('=').ok_or_else(bad)?;
                let f = || {
                    v.parse::<f64>()
                        .ok()
                        .filter(|x| x.is_finite())
                        .ok_or_else(bad)
                };
                match k {
                    "avg10" => l.avg10 = f()?,
                    "avg60" => l.avg60 = f()?,
                    "avg300" => l.avg300 = f()?,
                    "total" => l.total_usec = v.parse().map_err(|_| bad())?,
                    _ => continue,
                }
                seen += 1;
            }
            if seen != 4 {
                return Err(bad());
            }
            match kind {
                "some" => {
                    p.some = l;
                    saw_some = true;
                }
                "full" => p.full = Some(l),
                _ => return Err(bad()),
            }
        }
        if !saw_some {
            return Err(fsutil::parse_error(
                path,
                1,
                text.lines().next().unwrap_or(""),
            ));
        }
        Ok(p)
    }
}

/// Which stall a trigger watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stall {
    /// At least one task stalled.
    Some,
    /// All non-idle tasks stalled at once.
    Full,
}

/// A registered PSI trigger; dropping it unregisters it (closes the file).
#[derive(Debug)]
pub struct PsiTrigger {
    file: File,
    path: PathBuf,
}

/// What [`PsiTrigger::wait`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TriggerEvent {
    /// The stall threshold was crossed within the window.
    Fired,
    /// The timeout passed first.
    TimedOut,
    /// The cgroup was removed; the trigger will never fire again.
    Gone,
}

impl PsiTrigger {
    /// Waits until the trigger fires, the cgroup goes away, or `timeout` passes.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<TriggerEvent> {
        let r = sys::poll(&[(self.file.as_fd(), libc::POLLPRI)], timeout).map_err(|source| {
            Error::Read {
                path: self.path.clone(),
                source,
            }
        })?;
        Ok(if r[0] & libc::POLLERR != 0 {
            TriggerEvent::Gone
        } else if r[0] & libc::POLLPRI != 0 {
            TriggerEvent::Fired
        } else {
            TriggerEvent::TimedOut
        })
    }
}

/// The PSI trigger window limits of the kernel (500 ms to 10 s).
pub const MIN_WINDOW: Duration = Duration::from_millis(500);
/// See [`MIN_WINDOW`].
pub const MAX_WINDOW: Duration = Duration::from_secs(10);

impl Cgroup {
    fn psi_file(&self, r: PsiResource) -> Result<PathBuf> {
        let d = self
            .dirs()
            .iter()
            .find(|d| d.version == Version::V2)
            .ok_or_else(|| Error::Unsupported {
                controller: match r {
                    PsiResource::Cpu => Controller::Cpu,
                    PsiResource::Memory => Controller::Memory,
                    PsiResource::Io => Controller::Io,
                },
                what: "pressure stall information",
                layout: self.hierarchy().layout(),
                reason: format!(
                    "cgroup {} has no cgroup v2 directory; PSI is per cgroup only on v2",
                    self.path()
                ),
            })?;
        Ok(d.file(r.file()))
    }

    /// Reads the cgroup's pressure for `r`. PSI disabled at boot (`psi=0`) is
    /// [`Error::Unsupported`] naming the boot option.
    pub fn pressure(&self, r: PsiResource) -> Result<Pressure> {
        let f = self.psi_file(r)?;
        match fsutil::read_to_string(&f) {
            Ok(t) => Pressure::parse(&t, &f),
            Err(e) if psi_off(e.raw_os_error(), e.io_kind()) => Err(self.psi_unavailable(&f)),
            Err(e) => Err(e),
        }
    }

    fn psi_unavailable(&self, f: &std::path::Path) -> Error {
        Error::Unsupported {
            controller: Controller::Cpu,
            what: "pressure stall information",
            layout: self.hierarchy().layout(),
            reason: format!(
                "{} is unavailable: the kernel needs CONFIG_PSI and PSI enabled (boot with psi=1)",
                f.display()
            ),
        }
    }

    /// Registers a PSI trigger: fire when tasks of this cgroup were stalled on `r`
    /// (`Some`/`Full`) for more than `threshold` within any `window` (500 ms..10 s).
    ///
    /// # Examples
    /// ```no_run
    /// use std::time::Duration;
    /// use cgroupkit::psi::{PsiResource, Stall, TriggerEvent};
    /// # let cg: cgroupkit::Cgroup = unimplemented!();
    /// // 150 ms of memory stall in any 1 s window
    /// let t = cg.psi_trigger(PsiResource::Memory, Stall::Some, Duration::from_millis(150), Duration::from_secs(1))?;
    /// if t.wait(Some(Duration::from_secs(60)))? == TriggerEvent::Fired {
    ///     println!("memory pressure");
    /// }
    /// # Ok::<(), cgroupkit::Error>(())
    /// ```
    pub fn psi_trigger(
        &self,
        r: PsiResource,
        stall: Stall,
        threshold: Duration,
        window: Duration,
    ) -> Result<PsiTrigger> {
        if !(MIN_WINDOW..=MAX_WINDOW).contains(&window) {
            return Err(Error::InvalidResource {
                what: "PSI trigger window",
                reason: format!("{window:?} is outside the kernel's 500ms..10s"),
            });
        }
        if threshold.is_zero() || threshold >= window {
            return Err(Error::InvalidResource {
                what: "PSI trigger threshold",
                reason: format!("{threshold:?} must be above zero and below the window {window:?}"),
            });
        }
        // Without CAP_SYS_RESOURCE the kernel takes only windows that are whole
        // multiples of 2 s (and answers EINVAL otherwise): say so up front.
        if !window.as_micros().is_multiple_of(2_000_000) && !has_cap_sys_resource() {
            return Err(Error::InvalidResource {
                what: "PSI trigger window",
                reason: format!(
                    "{window:?}: without CAP_SYS_RESOURCE the kernel accepts only multiples of 2s"
                ),
            });
        }
        let path = self.psi_file(r)?;
        let spec = format!(
            "{} {} {}",
            match stall {
                Stall::Some => "some",
                Stall::Full => "full",
            },
            threshold.as_micros(),
            window.as_micros()
        );
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags_nofollow()
            .open(&path)
            .map_err(|source| {
                if psi_off(source.raw_os_error(), Some(source.kind())) {
                    self.psi_unavailable(&path)
                } else {
                    Error::Read {
                        path: path.clone(),
                        source,
                    }
                }
            })?;
        // The trigger spec goes in one write (with its NUL, as the kernel's docs do).
        file.write_all(format!("{spec}\0").as_bytes())
            .map_err(|source| Error::Write {
                path: path.clone(),
                value: spec,
                source,
            })?;
        Ok(PsiTrigger { file, path })
    }
}

/// A PSI file that is absent (no CONFIG_PSI) or refuses reads (psi=0: EOPNOTSUPP).
fn psi_off(errno: Option<i32>, kind: Option<std::io::ErrorKind>) -> bool {
    errno == Some(libc::EOPNOTSUPP) || kind == Some(std::io::ErrorKind::NotFound)
}

/// Whether this process has CAP_SYS_RESOURCE in its effective set (/proc/self/status).
fn has_cap_sys_resource() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let hex = s
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))?
                .trim()
                .to_owned();
            u64::from_str_radix(&hex, 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}

trait NoFollow {
    fn custom_flags_nofollow(&mut self) -> &mut Self;
}
impl NoFollow for OpenOptions {
    fn custom_flags_nofollow(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::custom_flags(self, libc::O_NOFOLLOW | libc::O_CLOEXEC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pressure_files() {
        let p = Pressure::parse(
            "some avg10=1.50 avg60=0.25 avg300=0.00 total=123456\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=42\n",
            Path::new("memory.pressure"),
        )
        .unwrap();
        assert_eq!(p.some.avg10, 1.5);
        assert_eq!(p.some.total_usec, 123_456);
        assert_eq!(p.full.unwrap().total_usec, 42);
        let cpu_old = Pressure::parse(
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=7\n",
            Path::new("cpu.pressure"),
        )
        .unwrap();
        assert_eq!(cpu_old.full, None);
    }

    #[test]
    fn malformed_pressure_is_an_error() {
        for t in [
            "",
            "some\n",
            "some avg10=x avg60=0 avg300=0 total=0\n",
            "some avg10=1 avg60=0 avg300=0\n",
            "most avg10=0 avg60=0 avg300=0 total=0\n",
            "some avg10=inf avg60=0 avg300=0 total=0\n",
            "full avg10=0 avg60=0 avg300=0 total=0\n",
        ] {
            assert!(Pressure::parse(t, Path::new("p")).is_err(), "{t:?}");
        }
    }
}
