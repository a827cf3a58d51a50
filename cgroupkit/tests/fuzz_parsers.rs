//! Property tests: every public parser of cgroupkit takes arbitrary text and
//! near-valid kernel text (random keys, numbers, whitespace, `max`, negative and
//! huge numbers, unicode) without panicking, and where a value can be printed back
//! in the kernel's format, parsing that text gives the value back.
//!
//! No root needed: the only files touched are in temporary directories.

use std::path::Path;

use cgroupkit::hierarchy::parse_mountinfo;
use cgroupkit::proc::ProcStat;
use cgroupkit::psi::Pressure;
use cgroupkit::{
    CgroupEvents, CpuQuota, CpuStat, DeviceLimit, DeviceNumber, Hierarchy, IdSet, IoRate, IoStat,
    Limit, MemoryEvents, MemoryStat, PageSize, Pid, PidsLimit, PidsStat, Version,
};
use proptest::prelude::*;

const P: &str = "fuzz";

fn cfg() -> ProptestConfig {
    // Modest, so that the unit lane stays fast; PROPTEST_CASES=N searches deeper.
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = 256;
    }
    c
}

/// A number as the kernel might print it, or something close to one.
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        (0u64..10_000).prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        Just("max".to_owned()),
        Just("-1".to_owned()),
        Just("18446744073709551616".to_owned()),
        "[0-9]{19,40}",
        Just("1.5".to_owned()),
        Just("nan".to_owned()),
        Just("inf".to_owned()),
        Just("+7".to_owned()),
        Just("0x10".to_owned()),
        Just(String::new()),
        "\\PC{0,4}",
    ]
}

/// A key: a real one from some cgroup file, or something else.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "nr_periods",
            "nr_throttled",
            "throttled_time",
            "throttled_usec",
            "usage_usec",
            "user_usec",
            "system_usec",
            "nr_bursts",
            "burst_usec",
            "burst_time",
            "max",
            "max.imposed",
            "oom",
            "oom_kill",
            "oom_group_kill",
            "low",
            "high",
            "under_oom",
            "oom_kill_disable",
            "populated",
            "frozen",
            "anon",
            "file",
            "rss",
            "cache",
            "total_rss",
            "some",
            "full",
            "Total",
            "Read",
            "Write",
            "Discard",
        ])
        .prop_map(str::to_owned),
        "[a-z_.]{1,12}",
        "\\PC{1,6}",
    ]
}

fn space() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![" ", "\t", "  ", " \t ", "", "=", "\u{a0}"])
}

fn eol() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["\n", "\n", "\n", "", "\r\n", "\n\n", " \n"])
}

/// Lines of `key value` with noise: near-valid flat-keyed files.
fn flat_keyed() -> impl Strategy<Value = String> {
    prop::collection::vec((key(), space(), number(), eol()), 0..12).prop_map(|lines| {
        lines
            .into_iter()
            .map(|(k, s, v, e)| format!("{k}{s}{v}{e}"))
            .collect()
    })
}

fn device() -> impl Strategy<Value = String> {
    prop_oneof![
        (any::<u32>(), any::<u32>()).prop_map(|(a, b)| format!("{a}:{b}")),
        (0u32..300, 0u32..20).prop_map(|(a, b)| format!("{a}:{b}")),
        Just("8:0:1".to_owned()),
        Just(":".to_owned()),
        Just("-1:0".to_owned()),
        Just("4294967296:0".to_owned()),
        "\\PC{0,5}",
    ]
}

/// io.stat / io.max lines: `MAJ:MIN key=value ...`.
fn nested_keyed() -> impl Strategy<Value = String> {
    let kv = (
        prop::sample::select(vec![
            "rbytes",
            "wbytes",
            "rios",
            "wios",
            "dbytes",
            "dios",
            "rbps",
            "wbps",
            "riops",
            "wiops",
            "cost.usage",
            "x",
        ]),
        prop::sample::select(vec!["=", "", "==", " "]),
        number(),
    )
        .prop_map(|(k, s, v)| format!("{k}{s}{v}"));
    prop::collection::vec(
        (device(), prop::collection::vec(kv, 0..6), space(), eol()),
        0..6,
    )
    .prop_map(|lines| {
        lines
            .into_iter()
            .map(|(d, kvs, s, e)| format!("{d}{s}{}{e}", kvs.join(" ")))
            .collect()
    })
}

/// v1 blkio lines: `MAJ:MIN Op N`, `Total N`, `MAJ:MIN N`.
fn blkio_v1() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (
            prop_oneof![device(), Just("Total".to_owned())],
            prop::sample::select(vec!["Read ", "Write ", "Sync ", "Discard ", "Total ", ""]),
            number(),
            eol(),
        ),
        0..8,
    )
    .prop_map(|l| {
        l.into_iter()
            .map(|(d, op, n, e)| format!("{d} {op}{n}{e}"))
            .collect()
    })
}

/// PSI lines: `some avg10=.. avg60=.. avg300=.. total=..`.
fn pressure() -> impl Strategy<Value = String> {
    let avg = prop_oneof![
        (0u32..10_000).prop_map(|n| format!("{}.{:02}", n / 100, n % 100)),
        number(),
    ];
    prop::collection::vec(
        (
            prop::sample::select(vec!["some", "full", "most", ""]),
            prop::collection::vec(
                (
                    prop::sample::select(vec!["avg10", "avg60", "avg300", "total", "x"]),
                    avg,
                ),
                0..6,
            ),
            eol(),
        ),
        0..3,
    )
    .prop_map(|l| {
        l.into_iter()
            .map(|(kind, kvs, e)| {
                let kvs: Vec<String> = kvs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("{kind} {}{e}", kvs.join(" "))
            })
            .collect()
    })
}

/// /proc/PID/stat-like text: pid, (comm with odd characters), then fields.
fn proc_stat() -> impl Strategy<Value = String> {
    (
        number(),
        "[ a-z()\\PC]{0,16}",
        prop::sample::select(vec!["R", "S", "Z", "", "é"]),
        prop::collection::vec(number(), 0..25),
        prop::sample::select(vec![true, false]),
    )
        .prop_map(|(pid, comm, state, rest, close)| {
            format!(
                "{pid} ({comm}{} {state} {}\n",
                if close { ")" } else { "" },
                rest.join(" ")
            )
        })
}

/// Lists such as `0-3,5`, with noise.
fn id_list() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (
            number(),
            prop::sample::select(vec!["", "-", "--", " - "]),
            prop_oneof![Just(String::new()), number()],
            prop::sample::select(vec![",", ",", " ", ",,", "\n", ""]),
        ),
        0..6,
    )
    .prop_map(|l| {
        l.into_iter()
            .map(|(a, dash, b, sep)| format!("{a}{dash}{b}{sep}"))
            .collect()
    })
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,200}",
        any::<String>(),
        prop::collection::vec(any::<u8>(), 0..200)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

/// Every parser on one text: none may panic (errors are fine).
fn feed_all(t: &str) {
    let p = Path::new(P);
    let _ = CpuStat::parse_v1(t, p);
    let _ = CpuStat::parse_v2(t, p);
    let _ = CpuQuota::parse_v2(t, p);
    let _ = CpuQuota::parse_v1(t, t, p);
    let _ = CpuQuota::parse_v1(t, "100000\n", p);
    let _ = CpuQuota::parse_v1("20000\n", t, p);
    if let Ok(q) = CpuQuota::parse_v2(t, p) {
        // Display and cpus() of whatever was parsed (a zero period included).
        let _ = (q.to_string(), q.cpus(), q.to_v2(), q.v1_quota());
    }
    if let Ok(s) = ProcStat::parse(t, p) {
        let _ = s.is_kernel_thread();
    }
    let _ = parse_mountinfo(t, p);
    let _ = CgroupEvents::parse(t, p);
    let _ = Pressure::parse(t, p);
    let _ = MemoryEvents::parse_v2(t, p);
    let _ = MemoryEvents::parse_v1_oom_control(t, p);
    let _ = MemoryStat::parse_stat(t, p, Version::V1);
    let _ = MemoryStat::parse_stat(t, p, Version::V2);
    let _ = Limit::parse_file(t, p);
    let _ = t.parse::<Limit>();
    let _ = PidsLimit::parse(t, p);
    let _ = PidsStat::parse_events(t, p);
    let _ = IoStat::parse_v2(t, p);
    let _ = IoStat::default().add_v1(t, p, true);
    let _ = IoStat::default().add_v1(t, p, false);
    let _ = DeviceLimit::parse_v2(t, p);
    let _ = DeviceLimit::parse_v1_throttle(t, p);
    let _ = t.parse::<DeviceNumber>();
    if let Ok(s) = t.parse::<IdSet>() {
        let _ = (s.to_string(), s.len(), s.iter().take(4).count());
    }
    let _ = IdSet::parse_file(t, p);
    let _ = cgroupkit::hugetlb::parse_events(t, p);
    if let Ok(ps) = t.parse::<PageSize>() {
        let _ = ps.to_string();
    }
    let _ = t.parse::<Pid>();
    let _ = cgroupkit::CgroupPath::new(t);
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn arbitrary_text_never_panics(t in any_text()) {
        feed_all(&t);
    }

    #[test]
    fn near_valid_flat_keyed_never_panics(t in flat_keyed()) {
        feed_all(&t);
    }

    #[test]
    fn near_valid_nested_keyed_never_panics(t in nested_keyed(), v1 in blkio_v1()) {
        feed_all(&t);
        feed_all(&v1);
    }

    #[test]
    fn near_valid_pressure_proc_and_lists_never_panic(
        psi in pressure(), st in proc_stat(), list in id_list(), n in number()
    ) {
        feed_all(&psi);
        feed_all(&st);
        feed_all(&list);
        feed_all(&n);
    }

    #[test]
    fn flat_keyed_files_parse_to_what_they_say(
        kv in prop::collection::btree_map("[a-z_]{1,16}", any::<u64>(), 0..40)
    ) {
        let text: String = kv.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
        for version in [Version::V1, Version::V2] {
            let s = MemoryStat::parse_stat(&text, Path::new(P), version).unwrap();
            prop_assert_eq!(&s.stat, &kv);
        }
        let ev = MemoryEvents::parse_v2(&text, Path::new(P)).unwrap();
        prop_assert_eq!(ev.max, kv.get("max").copied());
        prop_assert_eq!(
            PidsStat::parse_events(&text, Path::new(P)).unwrap(),
            kv.get("max").copied().unwrap_or(0)
        );
        let cs = CpuStat::parse_v2(&text, Path::new(P)).unwrap();
        prop_assert_eq!(cs.usage_usec, kv.get("usage_usec").copied());
    }

    #[test]
    fn cpu_quota_round_trips(
        quota in cgroupkit::cpu::MIN_QUOTA_USEC..=cgroupkit::cpu::MAX_QUOTA_USEC,
        period in cgroupkit::cpu::MIN_PERIOD_USEC..=cgroupkit::cpu::MAX_PERIOD_USEC,
        unlimited in any::<bool>(),
    ) {
        let q = if unlimited {
            CpuQuota::unlimited(period).unwrap()
        } else {
            CpuQuota::new(quota, period).unwrap()
        };
        let p = Path::new(P);
        prop_assert_eq!(CpuQuota::parse_v2(&format!("{}\n", q.to_v2()), p).unwrap(), q);
        let v1 = CpuQuota::parse_v1(&format!("{}\n", q.v1_quota()), &format!("{period}\n"), p);
        prop_assert_eq!(v1.unwrap(), q);
    }

    #[test]
    fn limits_round_trip(b in any::<u64>(), max in any::<bool>()) {
        let l = if max { Limit::Max } else { Limit::Bytes(b) };
        prop_assert_eq!(l.to_string().parse::<Limit>().unwrap(), l);
        // Files: values from UNLIMITED_THRESHOLD up are the kernel's "no limit".
        let want = match l {
            Limit::Bytes(b) if b >= cgroupkit::memory::UNLIMITED_THRESHOLD => Limit::Max,
            l => l,
        };
        prop_assert_eq!(Limit::parse_file(&format!("{}\n", l.to_v2()), Path::new(P)).unwrap(), want);
        let p = PidsLimit::Tasks(b);
        prop_assert_eq!(PidsLimit::parse(&format!("{p}\n"), Path::new(P)).unwrap(), p);
        prop_assert_eq!(PidsLimit::parse("max\n", Path::new(P)).unwrap(), PidsLimit::Max);
    }

    #[test]
    fn id_sets_round_trip(ranges in prop::collection::vec((0u32..=cgroupkit::cpuset::MAX_ID, 0u32..64), 0..10)) {
        let set = IdSet::from_ids(ranges.iter().flat_map(|&(a, len)| {
            (a..=a.saturating_add(len).min(cgroupkit::cpuset::MAX_ID)).collect::<Vec<_>>()
        }));
        let text = set.to_string();
        prop_assert_eq!(&text.parse::<IdSet>().unwrap(), &set);
        prop_assert_eq!(&IdSet::parse_file(&format!("{text}\n"), Path::new(P)).unwrap(), &set);
        // Printed ranges are sorted, merged and disjoint: printing again is stable.
        prop_assert_eq!(text.parse::<IdSet>().unwrap().to_string(), text);
    }

    #[test]
    fn devices_and_io_limits_round_trip(
        major in any::<u32>(),
        minor in any::<u32>(),
        rates in prop::collection::vec(prop::option::of(prop_oneof![Just(None), any::<u64>().prop_map(Some)]), 4),
    ) {
        let d = DeviceNumber::new(major, minor);
        prop_assert_eq!(d.to_string().parse::<DeviceNumber>().unwrap(), d);
        let rate = |r: &Option<Option<u64>>| r.map(|r| r.map_or(IoRate::Max, IoRate::PerSecond));
        let mut l = DeviceLimit::new(d);
        l.rbps = rate(&rates[0]);
        l.wbps = rate(&rates[1]);
        l.riops = rate(&rates[2]);
        l.wiops = rate(&rates[3]);
        match l.to_v2() {
            None => prop_assert!(rates.iter().all(Option::is_none)),
            Some(line) => {
                let back = DeviceLimit::parse_v2(&format!("{line}\n"), Path::new(P)).unwrap();
                prop_assert_eq!(back, vec![l]);
            }
        }
    }

    #[test]
    fn page_sizes_round_trip(shift in 12u32..63) {
        let p = PageSize::from_bytes(1 << shift).unwrap();
        prop_assert_eq!(p.to_string().parse::<PageSize>().unwrap(), p);
    }

    #[test]
    fn pressure_round_trips(
        lines in prop::collection::vec((0u32..10_000, 0u32..10_000, 0u32..10_000, any::<u64>()), 1..=2)
    ) {
        let text: String = lines
            .iter()
            .zip(["some", "full"])
            .map(|((a, b, c, t), kind)| {
                format!(
                    "{kind} avg10={}.{:02} avg60={}.{:02} avg300={}.{:02} total={t}\n",
                    a / 100, a % 100, b / 100, b % 100, c / 100, c % 100
                )
            })
            .collect();
        let p = Pressure::parse(&text, Path::new(P)).unwrap();
        prop_assert_eq!(p.some.total_usec, lines[0].3);
        prop_assert_eq!(p.full.map(|f| f.total_usec), lines.get(1).map(|l| l.3));
        prop_assert!((p.some.avg10 - f64::from(lines[0].0) / 100.0).abs() < 1e-9);
    }

    #[test]
    fn mountinfo_into_a_tempdir_never_panics(
        entries in prop::collection::vec(
            (
                0u32..6,
                prop::sample::select(vec!["cgroup", "cgroup2", "proc", "tmpfs", ""]),
                "[a-z]{1,6}",
                prop::collection::vec(
                    prop_oneof![
                        prop::sample::select(vec![
                            "rw", "cpu", "cpuacct", "memory", "pids", "blkio", "hugetlb",
                            "freezer", "name=systemd", "nsdelegate",
                        ]).prop_map(str::to_owned),
                        "\\PC{1,5}",
                    ],
                    0..5,
                ),
                prop::sample::select(vec!["/", "/a", "/x\\040y", "\\777", ""]),
                "[a-z ]{0,20}",
            ),
            0..8,
        ),
        raw_tail in "\\PC{0,40}",
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let mut text = String::new();
        for (i, (dev, fs, name, opts, root, controllers)) in entries.iter().enumerate() {
            let mp = tmp.path().join(name);
            std::fs::create_dir_all(&mp).unwrap();
            std::fs::write(mp.join("cgroup.controllers"), controllers).unwrap();
            text.push_str(&format!(
                "{} 1 0:{dev} {root} {} rw,relatime - {fs} {fs} {}\n",
                20 + i,
                mp.display(),
                opts.join(",")
            ));
        }
        let origin = Path::new("mountinfo");
        // Every line is well-formed: all cgroup mounts are found, others skipped.
        let cgroup_lines = entries.iter().filter(|e| e.1 == "cgroup" || e.1 == "cgroup2").count();
        prop_assert_eq!(parse_mountinfo(&text, origin).unwrap().len(), cgroup_lines);
        if let Ok(h) = Hierarchy::from_mountinfo_text(&text, origin) {
            prop_assert!(!h.mounts().is_empty());
            for c in cgroupkit::Controller::ALL {
                let _ = h.mount_for(c);
            }
        }
        // A tail of garbage appended to valid text.
        let _ = Hierarchy::from_mountinfo_text(&format!("{text}{raw_tail}"), origin);
    }
}
