//! Parsing of the CLI's number formats (clap value parsers).

use std::path::Path;
use std::time::Duration;

use cgroupkit::cpu::CpuWeight;
use cgroupkit::{DeviceLimit, DeviceNumber, IdSet, IoRate, Limit, PageSize, PidsLimit};

/// Parses a period: `100ms`, `50000us`, `1s`, or a bare number of microseconds.
pub fn parse_period_usec(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = if let Some(n) = t.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix("ms") {
        (n, 1_000.0)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1_000_000.0)
    } else {
        (t, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a period (examples: 100ms, 50000us, 1s)"))?;
    let usec = v * mult;
    if !usec.is_finite() || usec < 0.0 || usec.fract() != 0.0 {
        return Err(format!("{s:?} is not a whole number of microseconds"));
    }
    Ok(usec as u64)
}

/// Parses a number of CPUs such as `0.2` or `1.5` (range checks come later, with the
/// kernel's limits).
pub fn parse_cpus(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .map_err(|_| format!("{s:?} is not a number of CPUs (0.2 means 20% of one CPU)"))
}

/// Parses a pid as a signed number so that 0 and negative values reach the range
/// check with a clear message instead of a parser error.
pub fn parse_pid(s: &str) -> Result<i64, String> {
    s.trim()
        .parse::<i64>()
        .map_err(|_| format!("{s:?} is not a process id"))
}

/// Parses a duration such as `20ms`, `500us`, `1s` or a bare number of microseconds
/// (the CPU burst).
pub fn parse_duration_usec(s: &str) -> Result<u64, String> {
    parse_period_usec(s)
        .map_err(|_| format!("{s:?} is not a duration (examples: 20ms, 5000us, 0.5s)"))
}

/// Parses an interval of `top` such as `1s`, `500ms`; at least 10 ms.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let usec = parse_period_usec(s)
        .map_err(|_| format!("{s:?} is not an interval (examples: 1s, 500ms)"))?;
    if usec < 10_000 {
        return Err(format!("{s:?} is shorter than the 10ms minimum"));
    }
    Ok(Duration::from_micros(usec))
}

/// Parses a size: bytes with an optional binary suffix K, M, G or T (1K = 1024), or
/// `max` for no limit.
pub fn parse_size(s: &str) -> Result<Limit, String> {
    s.parse::<Limit>().map_err(|e| e.to_string())
}

/// Parses a v2 CPU weight, 1..=10000 (100 is the default).
pub fn parse_cpu_weight(s: &str) -> Result<CpuWeight, String> {
    let n: u64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a CPU weight (1 to 10000, default 100)"))?;
    CpuWeight::weight(n).map_err(|e| e.to_string())
}

/// Parses v1 CPU shares, 2..=262144 (1024 is the default).
pub fn parse_cpu_shares(s: &str) -> Result<CpuWeight, String> {
    let n: u64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of CPU shares (2 to 262144, default 1024)"))?;
    CpuWeight::shares(n).map_err(|e| e.to_string())
}

/// Parses a CPU or memory-node list such as `0-3,5`.
pub fn parse_id_list(s: &str) -> Result<IdSet, String> {
    let set: IdSet = s.parse().map_err(|e: cgroupkit::Error| e.to_string())?;
    if set.is_empty() {
        return Err(format!(
            "{s:?} is an empty list; give at least one id, such as 0 or 0-1"
        ));
    }
    Ok(set)
}

/// Parses a task limit: a count or `max`.
pub fn parse_pids(s: &str) -> Result<PidsLimit, String> {
    match s.trim() {
        "max" => Ok(PidsLimit::Max),
        t => {
            let n: u64 = t
                .parse()
                .map_err(|_| format!("{s:?} is not a number of tasks or `max`"))?;
            PidsLimit::new(n).map_err(|e| e.to_string())
        }
    }
}

/// Parses an io weight, 1..=10000 (100 is the default).
pub fn parse_io_weight(s: &str) -> Result<u16, String> {
    let n: u64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not an io weight (1 to 10000, default 100)"))?;
    let w = u16::try_from(n).unwrap_or(u16::MAX);
    cgroupkit::Io::with_weight(w)
        .map_err(|_| format!("{n} is outside 1..=10000, the io weight range"))?;
    Ok(w)
}

/// Parses `DEVICE=KEY=N[,KEY=N...]`: DEVICE is `MAJOR:MINOR` or a block device node
/// such as `/dev/vda` (resolved with stat(2)); KEY is rbps, wbps, riops or wiops;
/// N is a count per second with an optional K/M/G suffix, or `max`.
pub fn parse_io_max(s: &str) -> Result<DeviceLimit, String> {
    let (dev, rates) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not DEVICE=rbps=N,wbps=N,riops=N,wiops=N"))?;
    let device = if dev.starts_with('/') {
        DeviceNumber::of_block_device(Path::new(dev)).map_err(|e| match e {
            cgroupkit::Error::Read { source, .. } => {
                format!(
                    "unknown device {dev}: {source}; give a disk such as /dev/vda or MAJOR:MINOR"
                )
            }
            e => e.to_string(),
        })?
    } else {
        dev.parse::<DeviceNumber>().map_err(|e| e.to_string())?
    };
    let mut lim = DeviceLimit::new(device);
    for kv in rates.split(',') {
        let (k, v) = kv.split_once('=').ok_or_else(|| {
            format!("{kv:?} in {s:?} is not KEY=N (rbps=1M, wiops=100, wbps=max)")
        })?;
        let rate = match parse_size(v) {
            Ok(Limit::Max) => IoRate::Max,
            Ok(Limit::Bytes(n)) => IoRate::new(n).map_err(|e| e.to_string())?,
            Err(_) => {
                return Err(format!(
                    "{v:?} in {s:?} is not a rate such as 1048576, 1M or max"
                ));
            }
        };
        let slot = match k {
            "rbps" => &mut lim.rbps,
            "wbps" => &mut lim.wbps,
            "riops" => &mut lim.riops,
            "wiops" => &mut lim.wiops,
            _ => {
                return Err(format!(
                    "{k:?} in {s:?} is not one of rbps, wbps, riops, wiops"
                ));
            }
        };
        *slot = Some(rate);
    }
    Ok(lim)
}

/// Parses `PAGESIZE=LIMIT` such as `2M=64M` or `1GB=max`; the limit must be a
/// whole number of pages.
pub fn parse_hugetlb(s: &str) -> Result<(PageSize, Limit), String> {
    let (size, limit) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not PAGESIZE=LIMIT, such as 2M=64M"))?;
    let size = size.trim();
    let norm = if size.ends_with(['K', 'M', 'G']) {
        format!("{size}B")
    } else {
        size.to_owned()
    };
    let page: PageSize = norm.parse().map_err(|e: cgroupkit::Error| e.to_string())?;
    let limit = parse_size(limit)?;
    cgroupkit::Hugetlb::default()
        .limit(page, limit)
        .map_err(|e| e.to_string())?;
    Ok((page, limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods() {
        assert_eq!(parse_period_usec("100ms"), Ok(100_000));
        assert_eq!(parse_period_usec("50000us"), Ok(50_000));
        assert_eq!(parse_period_usec("1s"), Ok(1_000_000));
        assert_eq!(parse_period_usec("0.5s"), Ok(500_000));
        assert_eq!(parse_period_usec("20000"), Ok(20_000));
        assert!(parse_period_usec("fast").is_err());
        assert!(parse_period_usec("-1ms").is_err());
        assert!(parse_period_usec("1.5us").is_err());
    }

    #[test]
    fn cpus_and_pids() {
        assert_eq!(parse_cpus("0.2"), Ok(0.2));
        assert!(parse_cpus("lots").is_err());
        assert_eq!(parse_pid("-3"), Ok(-3));
        assert!(parse_pid("12a").is_err());
    }
}
