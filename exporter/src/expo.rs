//! The exposition writer: Prometheus text format 0.0.4 and OpenMetrics 1.0, written
//! straight into one `String` (no per-series objects).

use std::fmt::Write;

use prometheus::proto::{LabelPair, MetricFamily, MetricType};

/// Which exposition format to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    #[default]
    Text,
    /// OpenMetrics 1.0 text (counters' metadata without `_total`, `# EOF` at the end).
    OpenMetrics,
}

impl Format {
    /// Picks OpenMetrics when an HTTP `Accept` header asks for it, text otherwise.
    ///
    /// # Examples
    /// ```
    /// use exporter::Format;
    /// let accept = "application/openmetrics-text;version=1.0.0,text/plain;q=0.5";
    /// assert_eq!(Format::negotiate(Some(accept)), Format::OpenMetrics);
    /// assert_eq!(Format::negotiate(Some("*/*")), Format::Text);
    /// ```
    pub fn negotiate(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Text,
        }
    }

    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The type of a metric family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// `# HELP` and `# TYPE` of a family. OpenMetrics names a counter family without its
/// `_total` suffix.
pub(crate) fn header(out: &mut String, f: Format, name: &str, help: &str, kind: Kind) {
    let meta = match (f, kind) {
        (Format::OpenMetrics, Kind::Counter) => name.strip_suffix("_total").unwrap_or(name),
        _ => name,
    };
    out.push_str("# HELP ");
    out.push_str(meta);
    out.push(' ');
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push_str("\n# TYPE ");
    out.push_str(meta);
    out.push(' ');
    out.push_str(kind.name());
    out.push('\n');
}

/// A label value, escaped as both formats want (`\\`, `\"`, `\n`).
pub(crate) fn label_value(out: &mut String, v: &str) {
    if !v.contains(['\\', '"', '\n']) {
        put(out, v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A sample value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Value {
    Int(u64),
    Float(f64),
    /// Microseconds, written as seconds.
    Usec(u64),
}

impl Value {
    /// Microseconds as seconds.
    pub fn usec(us: u64) -> Value {
        Value::Usec(us)
    }
}

/// Appends `n` in decimal (what `{n}` writes, without the formatting machinery: a
/// scrape of 1000 cgroups writes ~30,000 numbers).
fn push_u64(out: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // ASCII digits only.
    put(out, std::str::from_utf8(&buf[i..]).unwrap_or_default());
}

/// Below this many microseconds (2^33 s, 272 years) an f64 of `us / 1e6` is finer
/// than a microsecond, so its shortest round-trip form, which `{x}` writes, is the
/// exact decimal: `seconds.micros` without trailing zeros. Above it, `{x}` decides.
const EXACT_USEC: u64 = (1 << 33) * 1_000_000;

/// `name{id="..."[,le="..."]} value`.
pub(crate) fn series(out: &mut String, name: &str, id: &str, le: Option<&str>, v: Value) {
    put(out, name);
    out.push_str("{id=\"");
    label_value(out, id);
    out.push('"');
    if let Some(le) = le {
        out.push_str(",le=\"");
        put(out, le);
        out.push('"');
    }
    out.push_str("} ");
    value(out, v);
    out.push('\n');
}

/// `{id="..."} ` of a cgroup, escaped: written once per cgroup for [`series_with`].
pub(crate) fn id_labels(out: &mut String, id: &str) {
    out.push_str("{id=\"");
    label_value(out, id);
    out.push_str("\"} ");
}

/// `name` + `labels` (from [`id_labels`]) + `value`: one series line.
pub(crate) fn series_with(out: &mut String, name: &str, labels: &str, v: Value) {
    put(out, name);
    put(out, labels);
    value(out, v);
    out.push('\n');
}

/// `out.push_str(s)` for the short strings of a scrape (names, ids, digits) without a
/// call to memcpy: musl's x86_64 memcpy is `rep movsq` with byte loops around it,
/// tens of cycles for a 20-byte copy, and a 1000-cgroup scrape makes ~100,000 such
/// copies (the largest user-space item in perf). Up to 32 bytes are moved with two
/// overlapping unaligned loads and stores; longer strings go to push_str.
#[inline(always)]
pub(crate) fn put(out: &mut String, s: &str) {
    let n = s.len();
    if !(4..=32).contains(&n) {
        out.push_str(s);
        return;
    }
    out.reserve(n);
    // SAFETY: `reserve` made room for `n` more bytes past `len`; the loads read
    // within `s` (offsets 0..n, n >= 4) and the stores write within the reserved
    // room; the bytes are a whole `&str`, so the String stays UTF-8.
    unsafe {
        let v = out.as_mut_vec();
        let len = v.len();
        let src = s.as_ptr();
        let dst = v.as_mut_ptr().add(len);
        if n >= 16 {
            let a = std::ptr::read_unaligned(src.cast::<u128>());
            let b = std::ptr::read_unaligned(src.add(n - 16).cast::<u128>());
            std::ptr::write_unaligned(dst.cast::<u128>(), a);
            std::ptr::write_unaligned(dst.add(n - 16).cast::<u128>(), b);
        } else if n >= 8 {
            let a = std::ptr::read_unaligned(src.cast::<u64>());
            let b = std::ptr::read_unaligned(src.add(n - 8).cast::<u64>());
            std::ptr::write_unaligned(dst.cast::<u64>(), a);
            std::ptr::write_unaligned(dst.add(n - 8).cast::<u64>(), b);
        } else {
            let a = std::ptr::read_unaligned(src.cast::<u32>());
            let b = std::ptr::read_unaligned(src.add(n - 4).cast::<u32>());
            std::ptr::write_unaligned(dst.cast::<u32>(), a);
            std::ptr::write_unaligned(dst.add(n - 4).cast::<u32>(), b);
        }
        v.set_len(len + n);
    }
}

pub(crate) fn value(out: &mut String, v: Value) {
    // Writing to a String cannot fail.
    let _ = match v {
        Value::Int(n) => {
            push_u64(out, n);
            Ok(())
        }
        Value::Usec(us) if us < EXACT_USEC => {
            push_u64(out, us / 1_000_000);
            let frac = us % 1_000_000;
            if frac != 0 {
                let mut digits = [b'0'; 6];
                let mut f = frac;
                for d in digits.iter_mut().rev() {
                    *d = b'0' + (f % 10) as u8;
                    f /= 10;
                }
                // frac != 0: a nonzero digit ends the trim.
                let mut len = 6;
                while digits[len - 1] == b'0' {
                    len -= 1;
                }
                out.push('.');
                put(out, std::str::from_utf8(&digits[..len]).unwrap_or_default());
            }
            Ok(())
        }
        Value::Usec(us) => write!(out, "{}", us as f64 / 1e6),
        Value::Float(x) if x.is_nan() => write!(out, "NaN"),
        Value::Float(x) if x.is_infinite() => {
            write!(out, "{}", if x > 0.0 { "+Inf" } else { "-Inf" })
        }
        Value::Float(x) => write!(out, "{x}"),
    };
}

/// Families gathered from a `prometheus::Registry` (the exporter's self metrics), in
/// either format. Handles counters, gauges and histograms, the kinds it registers.
pub(crate) fn families(out: &mut String, f: Format, fams: &[MetricFamily]) {
    for fam in fams {
        let name = fam.name();
        let kind = match fam.get_field_type() {
            MetricType::COUNTER => Kind::Counter,
            MetricType::GAUGE => Kind::Gauge,
            MetricType::HISTOGRAM => Kind::Histogram,
            _ => continue,
        };
        header(out, f, name, fam.help(), kind);
        for m in fam.get_metric() {
            let pairs = m.get_label();
            match kind {
                Kind::Counter => line(
                    out,
                    name,
                    "",
                    pairs,
                    None,
                    Value::Float(m.get_counter().get_value()),
                ),
                Kind::Gauge => line(
                    out,
                    name,
                    "",
                    pairs,
                    None,
                    Value::Float(m.get_gauge().get_value()),
                ),
                Kind::Histogram => {
                    let h = m.get_histogram();
                    let mut le = String::new();
                    for b in h.get_bucket() {
                        le.clear();
                        value(&mut le, Value::Float(b.upper_bound()));
                        let v = Value::Int(b.cumulative_count());
                        line(out, name, "_bucket", pairs, Some(("le", &le)), v);
                    }
                    let n = Value::Int(h.get_sample_count());
                    line(out, name, "_bucket", pairs, Some(("le", "+Inf")), n);
                    line(
                        out,
                        name,
                        "_sum",
                        pairs,
                        None,
                        Value::Float(h.get_sample_sum()),
                    );
                    line(out, name, "_count", pairs, None, n);
                }
            }
        }
    }
}

/// One sample line of a registry metric: `name suffix {labels, extra} value`.
fn line(
    out: &mut String,
    name: &str,
    suffix: &str,
    pairs: &[LabelPair],
    extra: Option<(&str, &str)>,
    v: Value,
) {
    out.push_str(name);
    out.push_str(suffix);
    if !pairs.is_empty() || extra.is_some() {
        out.push('{');
        let mut first = true;
        let all = pairs.iter().map(|l| (l.name(), l.value())).chain(extra);
        for (k, val) in all {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(k);
            out.push_str("=\"");
            label_value(out, val);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    value(out, v);
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// put() copies every length whole.
    #[test]
    fn put_copies_every_length() {
        let src: String = (0..80u8).map(|i| char::from(b'!' + i % 90)).collect();
        for start in 0..3 {
            for n in 0..=40 {
                let mut out = String::from("ab");
                put(&mut out, &src[start..start + n]);
                assert_eq!(out, format!("ab{}", &src[start..start + n]));
            }
        }
    }

    /// The fast paths write what `{}` writes.
    #[test]
    fn fast_numbers_match_display() {
        let mut s = String::new();
        for n in [0, 1, 9, 10, 99, 1_000_000, 123_456_789, u64::MAX] {
            s.clear();
            value(&mut s, Value::Int(n));
            assert_eq!(s, n.to_string());
        }
        let mut x = 1u64;
        let mut us = vec![0, 1, 10, 100_000, 999_999, 1_000_000, 1_000_001, 2_191_433];
        us.extend([EXACT_USEC - 1, EXACT_USEC, EXACT_USEC + 1, u64::MAX]);
        for _ in 0..20_000 {
            // A spread of magnitudes and digit patterns (xorshift).
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            us.push(x >> (x % 64));
        }
        for u in us {
            s.clear();
            value(&mut s, Value::usec(u));
            assert_eq!(s, format!("{}", u as f64 / 1e6), "{u} us");
        }
    }

    #[test]
    fn escapes_labels() {
        let mut s = String::new();
        series(&mut s, "m", "/a\"b\\c\nd", None, Value::Int(1));
        assert_eq!(s, "m{id=\"/a\\\"b\\\\c\\nd\"} 1\n");
    }

    #[test]
    fn counter_metadata_in_openmetrics() {
        let mut s = String::new();
        header(&mut s, Format::OpenMetrics, "x_total", "X.", Kind::Counter);
        assert_eq!(s, "# HELP x X.\n# TYPE x counter\n");
        s.clear();
        header(&mut s, Format::Text, "x_total", "X.", Kind::Counter);
        assert_eq!(s, "# HELP x_total X.\n# TYPE x_total counter\n");
    }

    #[test]
    fn values() {
        let mut s = String::new();
        for v in [
            Value::usec(2_191_433),
            Value::Int(7),
            Value::Float(f64::INFINITY),
            Value::usec(1),
        ] {
            value(&mut s, v);
            s.push(' ');
        }
        assert_eq!(s, "2.191433 7 +Inf 0.000001 ");
    }
}
