//! Test-only inputs: deterministic garbage for "parsers never panic" checks.

/// Mutations of each fixture (every truncation, byte flips, spliced lines, odd
/// unicode, huge and negative numbers) plus pseudo-random byte strings.
pub(crate) fn garbage(fixtures: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = [
        "",
        "\n",
        " ",
        "\0",
        "max",
        "max max",
        "-1",
        "18446744073709551616",
        "99999999999999999999999 1",
        "a=b=c",
        "1:2:3 rbps=1",
        "8:0 rbps",
        "8:0 =",
        "-",
        "0-",
        "-0",
        "4294967295-0",
        "0-4294967296",
        ",,,",
        "é 1\n",
        "Total",
        "Total x",
        "8:0 Read",
        "default",
        "default x",
        "key 1 2",
        "\u{feff}1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for f in fixtures {
        let b = f.as_bytes();
        for cut in 0..=b.len().min(400) {
            out.push(String::from_utf8_lossy(&b[..cut]).into_owned());
        }
        for _ in 0..200 {
            let mut v = b.to_vec();
            if v.is_empty() {
                break;
            }
            const SUBST: &[u8] = b" \n:=-,0123456789maxTtotalRW\t\xff";
            for _ in 0..3 {
                let i = (next() as usize) % v.len();
                v[i] = SUBST[(next() as usize) % SUBST.len()];
            }
            out.push(String::from_utf8_lossy(&v).into_owned());
        }
        let lines: Vec<&str> = f.lines().collect();
        for l in &lines {
            out.push(format!("{l} {l}\n"));
            out.push(l.replace(' ', "\t"));
            out.push(l.replace(|c: char| c.is_ascii_digit(), "9999999999999999999999"));
        }
    }
    for _ in 0..300 {
        let len = (next() % 64) as usize;
        let v: Vec<u8> = (0..len).map(|_| (next() % 128) as u8).collect();
        out.push(String::from_utf8_lossy(&v).into_owned());
    }
    out
}

/// The directory of cgroup `rel` on a fake hierarchy of `version` rooted at `root`
/// serving `controller` (made through the public API, as a caller would).
pub(crate) fn fake_dir(
    root: &std::path::Path,
    version: crate::Version,
    rel: &str,
    controller: crate::Controller,
) -> crate::CgroupDir {
    let mi = match version {
        crate::Version::V1 => format!(
            "30 23 0:29 / {} rw - cgroup cgroup rw,{}\n",
            root.display(),
            controller.v1_name()
        ),
        crate::Version::V2 => {
            std::fs::write(
                root.join(crate::hierarchy::CGROUP_CONTROLLERS),
                controller.v2_name().unwrap_or_default(),
            )
            .unwrap();
            format!("30 23 0:26 / {} rw - cgroup2 cgroup2 rw\n", root.display())
        }
    };
    let h = crate::Hierarchy::from_mountinfo_text(&mi, std::path::Path::new("fake")).unwrap();
    let cg = crate::Cgroup::open(&h, &crate::CgroupPath::new(rel).unwrap(), &[controller]).unwrap();
    cg.dir_for(controller).unwrap().clone()
}
