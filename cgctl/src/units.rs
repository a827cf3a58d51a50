//! Parsing of the CLI's number formats.

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
