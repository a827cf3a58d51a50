//! `sandbox image export` and `sandbox image push`: skopeo reads back what we
//! write and push; a push sends only what the registry lacks, mounting blobs from
//! the repository an image came from.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::registry::{Auth, Compress, Registry, SKOPEO, busybox_tar, layout, tar_of};
use common::{Env, err, out};

fn ok(o: &std::process::Output) -> String {
    assert!(o.status.success(), "failed: {}{}", out(o), err(o));
    out(o)
}

fn skopeo(args: &[&str]) -> String {
    ok(&Command::new(SKOPEO).args(args).output().unwrap())
}

#[test]
#[cfg_attr(vm_lane, ignore = "docker-registry and skopeo run on the host only")]
fn a_committed_image_is_exported_and_pushed_and_skopeo_reads_it() {
    let env = Env::new();
    let reg = Registry::start(Auth::None);
    let d = env.dir.path().join("base");
    layout(
        &d,
        "base",
        &[busybox_tar(), tar_of(&[("etc/base", b"base\n", 0o644)])],
        Compress::Gzip,
        r#""Env":["PATH=/bin"]"#,
    );
    reg.seed(&d, "lib/base:1", &[]);
    let host = reg.host();
    let base = format!("{host}/lib/base:1");
    ok(&env
        .cmd()
        .args(["image", "pull", "--insecure", &base])
        .output()
        .unwrap());
    let c = common::name("push");
    let r = env.run_image(
        &base,
        &["--keep", "--name", &c],
        // 6 MB of random bytes: the new layer goes up in two 4 MiB chunks.
        "echo mine > /etc/mine; rm /etc/base; head -c 6000000 /dev/urandom > /big",
    );
    ok(&r);
    ok(&env
        .cmd()
        .args(["commit", &c, "app:1", "-c", "LABEL x=y"])
        .output()
        .unwrap());
    ok(&env.cmd().args(["rm", &c]).output().unwrap());

    // Export: a folder and a tar that skopeo reads.
    let dir = env.dir.path().join("out");
    ok(&env
        .cmd()
        .args(["image", "export", "app:1"])
        .arg(&dir)
        .output()
        .unwrap());
    let inspect = skopeo(&["inspect", &format!("oci:{}:app:1", dir.display())]);
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v["Layers"].as_array().unwrap().len(), 3, "{inspect}");
    assert_eq!(v["Labels"]["x"], "y");
    let tarf = env.dir.path().join("app.tar");
    ok(&env
        .cmd()
        .args(["image", "export", "app:1"])
        .arg(&tarf)
        .output()
        .unwrap());
    let copy = env.dir.path().join("copy");
    skopeo(&[
        "copy",
        "--quiet",
        &format!("oci-archive:{}:app:1", tarf.display()),
        &format!("oci:{}:again", copy.display()),
    ]);
    // What we export imports back (another store) and runs.
    let env2 = Env::new();
    ok(&env2
        .cmd()
        .args(["image", "import", "--name", "back:1"])
        .arg(&tarf)
        .output()
        .unwrap());
    let o = ok(&env2.run_image(
        "back:1",
        &[],
        "cat /etc/mine; test -e /etc/base || echo no-base",
    ));
    assert_eq!(o, "mine\nno-base\n");

    // Push to another repository of the same registry: the base layers are
    // mounted from lib/base, only the new layer and config are uploaded.
    let dest = format!("{host}/apps/app:1");
    let o = ok(&env
        .cmd()
        .args(["image", "push", "--insecure", "app:1", &dest])
        .output()
        .unwrap());
    assert!(
        o.contains("2 blobs uploaded, 2 mounted, 0 already there"),
        "{o}"
    );
    let log = std::fs::read_to_string(&reg.log).unwrap();
    assert!(
        log.contains("mount=sha256"),
        "no cross-repository mount in the log"
    );
    let inspect = skopeo(&["inspect", "--tls-verify=false", &format!("docker://{dest}")]);
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v["Layers"].as_array().unwrap().len(), 3, "{inspect}");
    // Again: nothing to send.
    let o = ok(&env
        .cmd()
        .args(["image", "push", "--insecure", "app:1", &dest])
        .output()
        .unwrap());
    assert!(
        o.contains("0 blobs uploaded, 0 mounted, 4 already there"),
        "{o}"
    );
    // Pulled back into a fresh store, it runs.
    let env3 = Env::new();
    ok(&env3
        .cmd()
        .args(["image", "pull", "--insecure", &dest])
        .output()
        .unwrap());
    assert_eq!(
        ok(&env3.run_image(&dest, &[], "cat /etc/mine; wc -c < /big")),
        "mine\n6000000\n"
    );
    // An export into a folder that holds something else is refused.
    let o = env
        .cmd()
        .args(["image", "export", "app:1"])
        .arg(env.dir.path())
        .output()
        .unwrap();
    assert!(
        err(&o).contains("neither empty nor an OCI layout"),
        "{}",
        err(&o)
    );
    env.assert_clean();
}

#[test]
#[cfg_attr(vm_lane, ignore = "docker-registry and skopeo run on the host only")]
fn prune_removes_only_what_no_image_uses() {
    let env = Env::new();
    let reg = Registry::start(Auth::None);
    let (da, db) = (env.dir.path().join("a"), env.dir.path().join("b"));
    let base = tar_of(&[("base", b"b", 0o644)]);
    layout(
        &da,
        "a",
        &[base.clone(), tar_of(&[("a", b"a", 0o644)])],
        Compress::Gzip,
        "",
    );
    layout(
        &db,
        "b",
        &[base, tar_of(&[("b", b"b", 0o644)])],
        Compress::Gzip,
        "",
    );
    reg.seed(&da, "p/a:1", &[]);
    reg.seed(&db, "p/b:1", &[]);
    for r in ["p/a:1", "p/b:1"] {
        ok(&env
            .cmd()
            .args([
                "image",
                "pull",
                "--insecure",
                &format!("{}/{r}", reg.host()),
            ])
            .output()
            .unwrap());
    }
    let layers = || std::fs::read_dir(env.store.join("layers")).unwrap().count();
    assert_eq!(layers(), 3);
    // A partial download, as an interrupted pull leaves it.
    std::fs::write(
        env.store
            .join("downloads")
            .join(format!("{}.partial", "f".repeat(64))),
        b"x",
    )
    .unwrap();
    let df = ok(&env.cmd().args(["system", "df"]).output().unwrap());
    assert!(
        df.contains("Downloads")
            && df
                .lines()
                .any(|l| l.starts_with("Downloads") && l.contains(" 1 ")),
        "{df}"
    );
    let o = ok(&env.cmd().args(["image", "prune"]).output().unwrap());
    assert!(o.contains("removed 0 layers and 1 files"), "{o}");
    ok(&env
        .cmd()
        .args(["image", "rm", &format!("{}/p/a:1", reg.host())])
        .output()
        .unwrap());
    // rm drops a's own layer; the shared base stays for b.
    assert_eq!(layers(), 2);
    let o = ok(&env.cmd().args(["image", "prune"]).output().unwrap());
    assert!(o.contains("removed 0 layers"), "{o}");
    // What no image uses any more (a's manifest) goes with prune.
    assert!(!o.contains("and 0 files"), "{o}");
    let ls = ok(&env.cmd().args(["image", "ls"]).output().unwrap());
    assert_eq!(ls.lines().count(), 2, "{ls}");
}
