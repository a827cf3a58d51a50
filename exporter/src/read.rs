//! Reading one cgroup's files into a [`Sample`]: one open + read(2) per file into a
//! buffer reused for the whole scrape, parsers from cgroupkit where they do not
//! allocate per key, and every failure sorted into "gone" (silent) or a counted kind.

use std::io;
use std::path::Path;

use cgroupkit::cpu::{
    CFS_PERIOD_US, CFS_QUOTA_US, CPU_MAX, CPU_SHARES, CPU_STAT, CPU_WEIGHT, CPUACCT_USAGE,
    CPUACCT_USAGE_ALL, CPUACCT_USAGE_SYS, CPUACCT_USAGE_USER, parse_cpuacct_usage_all,
    weight_to_shares,
};
use cgroupkit::memory::{
    LIMIT_IN_BYTES, MEMORY_CURRENT, MEMORY_EVENTS, MEMORY_MAX, MEMORY_STAT, OOM_CONTROL,
    UNLIMITED_THRESHOLD, USAGE_IN_BYTES, stat_values,
};
use cgroupkit::psi::{Pressure, PsiResource};
use cgroupkit::{CpuQuota, CpuStat, MemoryEvents, Version};

use crate::ErrorKind;
use crate::walk::IterVals;

/// What one cgroup's files said. `None`: the file or field is absent here.
#[derive(Clone, Debug, Default)]
pub(crate) struct Sample {
    /// The `id` label: the path from the hierarchy root, `/` for the root.
    pub id: String,
    pub usage_usec: Option<u64>,
    pub user_usec: Option<u64>,
    pub system_usec: Option<u64>,
    pub nr_periods: Option<u64>,
    pub nr_throttled: Option<u64>,
    pub throttled_usec: Option<u64>,
    pub nr_bursts: Option<u64>,
    pub burst_usec: Option<u64>,
    pub quota_usec: Option<u64>,
    pub period_usec: Option<u64>,
    pub shares: Option<u64>,
    pub mem_usage: Option<u64>,
    pub mem_working_set: Option<u64>,
    pub mem_rss: Option<u64>,
    pub mem_cache: Option<u64>,
    /// 0 when unlimited, as cAdvisor reports it.
    pub mem_limit: Option<u64>,
    pub oom_kills: Option<u64>,
    pub processes: Option<u64>,
    /// `[cpu, memory, io]` x `[some (waiting), full (stalled)]`, microseconds.
    pub psi: [[Option<u64>; 2]; 3],
}

/// Why a read gave nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Miss {
    /// ENOENT / ENODEV: the file is not there (removed cgroup, absent controller).
    Gone,
    /// Not supported here (PSI off: EOPNOTSUPP): absent, not an error.
    Unsupported,
    /// Counted as a read error of this kind.
    Error(ErrorKind),
}

impl Miss {
    pub(crate) fn from_io(e: &io::Error) -> Miss {
        match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENODEV) => Miss::Gone,
            Some(libc::EOPNOTSUPP) => Miss::Unsupported,
            Some(libc::EACCES) | Some(libc::EPERM) => Miss::Error(ErrorKind::Permission),
            _ if e.kind() == io::ErrorKind::InvalidData => Miss::Error(ErrorKind::Parse),
            _ => Miss::Error(ErrorKind::Io),
        }
    }
}

/// Reads a cgroup's files through cgroupkit's [`cgroupkit::reader::FileReader`] (one
/// reused buffer, files opened relative to an O_PATH fd of the directory, read until
/// read(2) returns 0) and counts errors by kind.
#[derive(Debug)]
pub(crate) struct FileReader {
    files: cgroupkit::reader::FileReader,
    /// Read errors of this scrape, indexed by [`ErrorKind::index`].
    pub errors: [u64; ErrorKind::ALL.len()],
    /// Set once a pressure file answered EOPNOTSUPP (PSI disabled at boot).
    psi_off: bool,
}

impl FileReader {
    pub fn new() -> FileReader {
        FileReader {
            files: cgroupkit::reader::FileReader::new(),
            errors: [0; ErrorKind::ALL.len()],
            psi_off: false,
        }
    }

    /// A reader that opens files below each of `mounts` relative to an fd of it
    /// (see `cgroupkit::reader::FileReader::add_base`); a mount it cannot open is
    /// read by full paths.
    pub fn with_bases<'a>(mounts: impl IntoIterator<Item = &'a str>) -> FileReader {
        let mut r = FileReader::new();
        for m in mounts {
            let _ = r.files.add_base(Path::new(m));
        }
        r
    }

    /// Opens `dir` (O_PATH) for the reads that follow in it: each is then a lookup of
    /// one name instead of the whole path. If the open fails, reads use full paths
    /// and report what they meet.
    pub fn enter(&mut self, dir: &str) {
        if self.files.enter(Path::new(dir)).is_err() {
            self.files.leave();
        }
    }

    /// Reads `dir/name` to its end. A short read is not the end: `cgroup.procs` of a
    /// busy cgroup is a multi-page seq_file (issue #12: 1000 processes were exported
    /// as 894 when the first short read was taken for the end).
    fn read(&mut self, dir: &str, name: &str) -> Result<&str, Miss> {
        self.files
            .read(Path::new(dir), name)
            .map_err(|e| Miss::from_io(&e))
    }

    /// Counts an I/O error by kind (a vanished file is not counted).
    pub fn count_io(&mut self, e: &io::Error) {
        self.count(Miss::from_io(e));
    }

    fn count(&mut self, m: Miss) {
        if let Miss::Error(k) = m {
            self.errors[k.index()] += 1;
        }
    }

    /// Reads and parses; misses are counted (errors) or ignored (gone), giving `None`.
    fn get<T>(
        &mut self,
        dir: &str,
        name: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Option<T> {
        match self.read(dir, name) {
            Ok(text) => match parse(text) {
                Some(v) => Some(v),
                None => {
                    self.errors[ErrorKind::Parse.index()] += 1;
                    None
                }
            },
            Err(m) => {
                self.count(m);
                None
            }
        }
    }

    /// The processes in the cgroup (lines of cgroup.procs). `Err(Gone)` means the
    /// cgroup itself is gone: the caller drops it.
    pub fn processes(&mut self, dir: &str) -> Result<Option<u64>, Miss> {
        match self.read(dir, "cgroup.procs") {
            Ok(t) => Ok(Some(cgroupkit::reader::count_ids(t))),
            Err(Miss::Gone) => Err(Miss::Gone),
            Err(m) => {
                self.count(m);
                Ok(None)
            }
        }
    }

    /// What [`cpu`](FileReader::cpu) reads, with the cgroup iterator's values `iv` in
    /// place of the files they cover: everything on v1; on v2 all but the usage
    /// fields of cpu.stat (kept in rstat: the file is read for them). `root`: the
    /// hierarchy's root (no cpu.max nor cpu.weight on v2).
    pub fn cpu_iter(
        &mut self,
        dir: &str,
        version: Version,
        iv: &IterVals,
        root: bool,
        s: &mut Sample,
    ) {
        if version == Version::V2 {
            let p = Path::new(CPU_STAT);
            if let Some(st) = self.get(dir, CPU_STAT, |t| CpuStat::parse_v2(t, p).ok()) {
                s.usage_usec = st.usage_usec;
                s.user_usec = st.user_usec;
                s.system_usec = st.system_usec;
            }
        }
        if let Some(bw) = iv.bandwidth {
            if version == Version::V1 || bw.nr_periods > 0 || bw.nr_throttled > 0 {
                s.nr_periods = Some(bw.nr_periods);
                s.nr_throttled = Some(bw.nr_throttled);
                s.throttled_usec = Some(bw.throttled_ns / 1000);
            }
            if let Some((n, ns)) = bw.bursts {
                s.nr_bursts = Some(n);
                s.burst_usec = Some(ns / 1000);
            }
        }
        let Some(lim) = iv.cpu_limits.filter(|_| version == Version::V1 || !root) else {
            return;
        };
        s.quota_usec = lim.quota_ns.map(|q| q / 1000);
        s.period_usec = Some(lim.period_ns / 1000);
        match version {
            Version::V2 => {
                if s.nr_periods.is_none() {
                    s.nr_periods = Some(0);
                    s.nr_throttled = Some(0);
                    s.throttled_usec = Some(0);
                }
                s.shares = Some(weight_to_shares(lim.weight()));
            }
            Version::V1 => s.shares = Some(lim.shares()),
        }
    }

    /// cpu.stat (usage on v2, throttling and bursts on both), quota, period, shares.
    pub fn cpu(&mut self, dir: &str, version: Version, s: &mut Sample) {
        let p = Path::new(CPU_STAT);
        let stat = self.get(dir, CPU_STAT, |t| match version {
            Version::V2 => CpuStat::parse_v2(t, p).ok(),
            Version::V1 => CpuStat::parse_v1(t, p).ok(),
        });
        if let Some(st) = stat {
            if version == Version::V2 {
                s.usage_usec = st.usage_usec;
                s.user_usec = st.user_usec;
                s.system_usec = st.system_usec;
            }
            // v2 shows the throttling keys only where the cpu controller is enabled;
            // a v2 cgroup without them has nr_periods 0 and no quota.
            if version == Version::V1 || st.nr_periods > 0 || st.nr_throttled > 0 {
                s.nr_periods = Some(st.nr_periods);
                s.nr_throttled = Some(st.nr_throttled);
                s.throttled_usec = Some(st.throttled_usec);
            }
            s.nr_bursts = st.nr_bursts;
            s.burst_usec = st.burst_usec;
        }
        match version {
            Version::V2 => {
                let q = self.get(dir, CPU_MAX, |t| {
                    CpuQuota::parse_v2(t, Path::new(CPU_MAX)).ok()
                });
                if let Some(q) = q {
                    s.quota_usec = q.quota_usec();
                    s.period_usec = Some(q.period_usec());
                    if s.nr_periods.is_none() {
                        s.nr_periods = Some(0);
                        s.nr_throttled = Some(0);
                        s.throttled_usec = Some(0);
                    }
                }
                s.shares = self.get(dir, CPU_WEIGHT, parse_u64).map(weight_to_shares);
            }
            Version::V1 => {
                let quota = self.get(dir, CFS_QUOTA_US, |t| t.trim().parse::<i64>().ok());
                s.quota_usec = quota.and_then(|q| u64::try_from(q).ok());
                s.period_usec = self.get(dir, CFS_PERIOD_US, parse_u64);
                s.shares = self.get(dir, CPU_SHARES, parse_u64);
            }
        }
    }

    /// v1 cpuacct: usage, user and system time (ns). User and system come from one
    /// file, cpuacct.usage_all, where the kernel has it (4.7+).
    pub fn cpuacct(&mut self, dir: &str, s: &mut Sample) {
        s.usage_usec = self.get(dir, CPUACCT_USAGE, parse_u64).map(|n| n / 1000);
        match self.read(dir, CPUACCT_USAGE_ALL) {
            Ok(t) => match parse_cpuacct_usage_all(t, Path::new(CPUACCT_USAGE_ALL)) {
                Ok((user, system)) => {
                    s.user_usec = Some(user / 1000);
                    s.system_usec = Some(system / 1000);
                }
                Err(_) => self.errors[ErrorKind::Parse.index()] += 1,
            },
            Err(Miss::Gone) => {
                s.user_usec = self
                    .get(dir, CPUACCT_USAGE_USER, parse_u64)
                    .map(|n| n / 1000);
                s.system_usec = self
                    .get(dir, CPUACCT_USAGE_SYS, parse_u64)
                    .map(|n| n / 1000);
            }
            Err(m) => self.count(m),
        }
    }

    /// Usage, working set, rss, cache, limit and OOM kills, as cAdvisor defines them.
    /// With the cgroup iterator's values (`iv`, and whether this is the hierarchy's
    /// `root`), only memory.stat is read (rstat), and the usage of a v1 root (which
    /// the kernel computes from global counters, not the root's page counter).
    pub fn memory(
        &mut self,
        dir: &str,
        version: Version,
        iv: Option<(&IterVals, bool)>,
        s: &mut Sample,
    ) {
        let (usage_file, limit_file) = match version {
            Version::V2 => (MEMORY_CURRENT, MEMORY_MAX),
            Version::V1 => (USAGE_IN_BYTES, LIMIT_IN_BYTES),
        };
        // v2 has no memory.current, memory.max nor memory.events at the root.
        let iv = iv.map(|(v, root)| (v, root, version == Version::V2 && root));
        s.mem_usage = match iv {
            Some((v, root, v2root)) if !(root && version == Version::V1) => {
                v.memory.filter(|_| !v2root).map(|m| m.usage_bytes)
            }
            _ => self.get(dir, usage_file, parse_u64),
        };
        // v1 counts the whole subtree in the total_* keys, as usage_in_bytes does.
        let (rss_key, cache_key, inactive_key) = match version {
            Version::V2 => ("anon", "file", "inactive_file"),
            Version::V1 => ("total_rss", "total_cache", "total_inactive_file"),
        };
        let stat = self.get(dir, MEMORY_STAT, |t| {
            stat_values(
                t,
                Path::new(MEMORY_STAT),
                [rss_key, cache_key, inactive_key],
            )
            .ok()
        });
        if let Some([rss, cache, inactive]) = stat {
            s.mem_rss = rss;
            s.mem_cache = cache;
            s.mem_working_set = s.mem_usage.map(|u| u.saturating_sub(inactive.unwrap_or(0)));
        }
        if let Some((v, _, v2root)) = iv {
            s.mem_limit = v.memory.filter(|_| !v2root).map(|m| match m.limit_bytes {
                Some(n) if n < UNLIMITED_THRESHOLD => n,
                _ => 0,
            });
            s.oom_kills = v.oom_kills.filter(|_| !v2root);
            return;
        }
        s.mem_limit = self.get(dir, limit_file, |t| match t.trim() {
            "max" => Some(0),
            v => v
                .parse::<u64>()
                .ok()
                .map(|n| if n >= UNLIMITED_THRESHOLD { 0 } else { n }),
        });
        let events = match version {
            Version::V2 => MEMORY_EVENTS,
            Version::V1 => OOM_CONTROL,
        };
        // A kernel without the oom_kill key (v1 before 4.13) counts 0, as cAdvisor.
        s.oom_kills = self.get(dir, events, |t| {
            let p = Path::new(events);
            let ev = match version {
                Version::V2 => MemoryEvents::parse_v2(t, p),
                Version::V1 => MemoryEvents::parse_v1_oom_control(t, p),
            };
            ev.ok().map(|e| e.oom_kill.unwrap_or(0))
        });
    }

    /// cpu.pressure, memory.pressure, io.pressure (v2 directories only).
    pub fn pressure(&mut self, dir: &str, s: &mut Sample) {
        if self.psi_off {
            return;
        }
        for (i, r) in [PsiResource::Cpu, PsiResource::Memory, PsiResource::Io]
            .into_iter()
            .enumerate()
        {
            let name = r.file();
            match self.read(dir, name) {
                Ok(t) => match Pressure::parse(t, Path::new(name)) {
                    Ok(p) => {
                        s.psi[i] = [Some(p.some.total_usec), p.full.map(|f| f.total_usec)];
                    }
                    Err(_) => self.errors[ErrorKind::Parse.index()] += 1,
                },
                Err(Miss::Unsupported) => {
                    self.psi_off = true;
                    return;
                }
                Err(m) => self.count(m),
            }
        }
    }
}

fn parse_u64(t: &str) -> Option<u64> {
    t.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (n, c) in files {
            std::fs::write(d.path().join(n), c).unwrap();
        }
        d
    }

    #[test]
    fn v1_memory_as_cadvisor() {
        let d = dir_with(&[
            ("memory.usage_in_bytes", "1000000\n"),
            (
                "memory.stat",
                "cache 5\nrss 6\ntotal_cache 300\ntotal_rss 600\ntotal_inactive_file 100\n",
            ),
            ("memory.limit_in_bytes", "9223372036854771712\n"),
            (
                "memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
            ),
        ]);
        let mut r = FileReader::new();
        let mut s = Sample::default();
        r.memory(d.path().to_str().unwrap(), Version::V1, None, &mut s);
        assert_eq!(s.mem_usage, Some(1_000_000));
        assert_eq!(s.mem_working_set, Some(999_900));
        assert_eq!((s.mem_rss, s.mem_cache), (Some(600), Some(300)));
        assert_eq!(s.mem_limit, Some(0));
        assert_eq!(s.oom_kills, Some(2));
        assert_eq!(r.errors, [0; ErrorKind::ALL.len()]);
    }

    #[test]
    fn malformed_files_count_as_parse_errors() {
        let d = dir_with(&[
            ("cpu.stat", "nr_periods x\n"),
            ("cpu.max", "garbage"),
            ("cpu.weight", "\u{0}\u{1}"),
            ("memory.current", "-1"),
            ("memory.stat", "anon\n"),
            ("memory.max", "12 13"),
            ("memory.events", "oom_kill"),
            ("cpu.pressure", "some total=x"),
            ("memory.pressure", ""),
            ("io.pressure", "full avg10=1"),
        ]);
        let dir = d.path().to_str().unwrap();
        let mut r = FileReader::new();
        let mut s = Sample::default();
        r.cpu(dir, Version::V2, &mut s);
        r.memory(dir, Version::V2, None, &mut s);
        r.pressure(dir, &mut s);
        assert_eq!(r.errors[ErrorKind::Parse.index()], 10);
        assert_eq!(s.nr_periods, None);
        assert_eq!(s.mem_usage, None);
        // Invalid UTF-8 is a parse error too, never a panic.
        std::fs::write(d.path().join("cpu.stat"), b"\xff\xfe").unwrap();
        r.cpu(dir, Version::V2, &mut s);
        assert_eq!(r.errors[ErrorKind::Parse.index()], 13);
    }

    #[test]
    fn missing_files_are_not_errors() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("gone");
        let dir = dir.to_str().unwrap();
        let mut r = FileReader::new();
        let mut s = Sample::default();
        assert_eq!(r.processes(dir), Err(Miss::Gone));
        r.cpu(dir, Version::V1, &mut s);
        r.cpuacct(dir, &mut s);
        r.memory(dir, Version::V1, None, &mut s);
        r.pressure(dir, &mut s);
        assert_eq!(r.errors, [0; ErrorKind::ALL.len()]);
    }
}
