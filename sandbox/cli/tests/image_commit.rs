//! `sandbox commit`: a container's changes (files made, changed, deleted from a lower
//! layer, a directory replaced) become one layer whose tar says them in the image
//! spec's words; the committed image, run again, shows exactly those changes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;

use common::{Env, err, out};

fn ok(o: &std::process::Output) -> String {
    assert!(o.status.success(), "failed: {}{}", out(o), err(o));
    out(o)
}

/// The entries of a gzip layer blob: (path, kind, link target).
fn entries(blob: &[u8]) -> Vec<(String, tar::EntryType, Option<String>)> {
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(blob));
    ar.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.path().unwrap().to_string_lossy().into_owned(),
                e.header().entry_type(),
                e.link_name()
                    .unwrap()
                    .map(|l| l.to_string_lossy().into_owned()),
            )
        })
        .collect()
}

fn image_record(env: &Env, name: &str) -> serde_json::Value {
    for e in std::fs::read_dir(env.store.join("images")).unwrap() {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap();
        if format!(
            "{}:{}",
            v["name"].as_str().unwrap(),
            v["tag"].as_str().unwrap()
        ) == name
        {
            return v;
        }
    }
    panic!("no image {name}");
}

fn blob(env: &Env, digest: &str) -> Vec<u8> {
    let mut v = Vec::new();
    std::fs::File::open(env.store.join("blobs/sha256").join(&digest[7..]))
        .unwrap()
        .read_to_end(&mut v)
        .unwrap();
    v
}

#[test]
fn a_commit_carries_exactly_the_containers_changes() {
    let env = Env::new();
    env.import();
    let c = common::name("commit");
    let script = "echo new > /etc/created && echo changed > /etc/kept && rm /bin/wc \
                  && rm -rf /opq && mkdir /opq && echo fresh > /opq/fresh \
                  && mkdir -p /newdir/sub && echo deep > /newdir/sub/f \
                  && ln /etc/created /etc/hardlink";
    ok(&env.run_image("busybox:test", &["--keep", "--name", &c], script));
    let commit = |name: &str| {
        ok(&env
            .cmd()
            .args(["commit", &c, name, "--mtime", "1700000000"])
            .args(["--change", "WORKDIR /opq", "--change", "ENV FOO=bar"])
            .args([
                "--change",
                "LABEL org.example=yes",
                "-c",
                r#"CMD ["cat","/etc/created"]"#,
            ])
            .output()
            .unwrap())
    };
    let o = commit("committed:1");
    assert!(o.contains("committed committed:1"), "{o}");
    // The same changes, committed again with the same mtime: the same layer.
    commit("committed:2");
    let (r1, r2) = (
        image_record(&env, "committed:1"),
        image_record(&env, "committed:2"),
    );
    assert_eq!(
        r1["layers"], r2["layers"],
        "the layer tar is not reproducible"
    );
    ok(&env.cmd().args(["rm", &c]).output().unwrap());

    // The layer says it in the spec's words: whiteouts, an opaque marker, a link.
    let layers = r1["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3);
    let top = entries(&blob(&env, layers[2].as_str().unwrap()));
    let names: Vec<&str> = top.iter().map(|(p, _, _)| p.as_str()).collect();
    for want in [
        "bin/.wh.wc",
        "opq/.wh..wh..opq",
        "opq/fresh",
        "etc/created",
        "newdir/sub/f",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    assert!(
        !top.iter().any(|(_, k, _)| *k == tar::EntryType::Char),
        "an overlay whiteout device went into the tar: {top:?}"
    );
    let link = top.iter().find(|(p, _, _)| p == "etc/hardlink").unwrap();
    assert_eq!(
        (link.1, link.2.as_deref()),
        (tar::EntryType::Link, Some("etc/created"))
    );
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "entries are not sorted");

    // The config is carried over with the changes.
    let cfg: serde_json::Value =
        serde_json::from_slice(&blob(&env, r1["config"].as_str().unwrap())).unwrap();
    assert_eq!(cfg["config"]["WorkingDir"], "/opq");
    assert_eq!(cfg["config"]["Labels"]["org.example"], "yes");
    assert_eq!(
        cfg["config"]["Cmd"],
        serde_json::json!(["cat", "/etc/created"])
    );
    assert!(
        cfg["config"]["Env"]
            .as_array()
            .unwrap()
            .contains(&"FOO=bar".into())
    );
    assert_eq!(cfg["rootfs"]["diff_ids"].as_array().unwrap().len(), 3);

    // Run again: exactly those changes (the workdir from the config).
    let o = ok(&env.run_image(
        "committed:1",
        &[],
        "pwd; cat /etc/created /etc/kept /newdir/sub/f; ls /opq; \
         test -e /bin/wc || echo no-wc; test -e /etc/removed || echo no-removed; \
         test -e /bin/cat && echo has-cat",
    ));
    assert_eq!(
        o,
        "/opq\nnew\nchanged\ndeep\nfresh\nno-wc\nno-removed\nhas-cat\n"
    );
    // Without a command the image's Cmd runs, with its Env; --env overrides it.
    let run = |extra: &[&str]| {
        let mut c = env.cmd();
        c.args(["run", "--image", "committed:1", "--net", "none"])
            .args(extra);
        ok(&c.output().unwrap())
    };
    assert_eq!(run(&[]), "new\n");
    assert_eq!(
        run(&["--env", "FOO=over", "--", "sh", "-c", "echo $FOO; pwd"]),
        "over\n/opq\n"
    );
    assert_eq!(run(&["--", "sh", "-c", "echo $FOO"]), "bar\n");
    // The image's User applies where --user is absent; a name is refused.
    commit_kept(&env, "u1", &["user:1", "--change", "USER 1000:1001"]);
    assert_eq!(run_user(&env, "user:1", &[]), "1000 1001\n");
    assert_eq!(run_user(&env, "user:1", &["--user", "7:8"]), "7 8\n");
    commit_kept(&env, "u2", &["user:2", "--change", "USER nobody"]);
    let o = env
        .cmd()
        .args([
            "run", "--image", "user:2", "--net", "none", "--", "id", "-u",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("\"nobody\"") && e.contains("--user"), "{e}");
    for i in ["user:1", "user:2", "committed:1", "committed:2"] {
        let _ = env.cmd().args(["image", "rm", i]).output();
    }
    env.assert_clean();
}

/// Commits a kept container of busybox:test (`tag` names it) with `args`, then
/// removes the container.
fn commit_kept(env: &Env, tag: &str, args: &[&str]) {
    let c = common::name(tag);
    ok(&env.run_image("busybox:test", &["--keep", "--name", &c], "true"));
    ok(&env.cmd().arg("commit").arg(&c).args(args).output().unwrap());
    ok(&env.cmd().args(["rm", &c]).output().unwrap());
}

fn run_user(env: &Env, image: &str, extra: &[&str]) -> String {
    let mut c = env.cmd();
    c.args(["run", "--image", image, "--net", "none"])
        .args(extra)
        .args(["--", "sh", "-c", "echo $(id -u) $(id -g)"]);
    ok(&c.output().unwrap())
}

#[test]
fn commit_refuses_what_it_cannot_commit() {
    let env = Env::new();
    env.import();
    let o = env
        .cmd()
        .args(["commit", "nosuch", "x:1"])
        .output()
        .unwrap();
    assert!(err(&o).contains("no such container"), "{}", err(&o));
    let c = common::name("rootfs");
    let r = env.run(&["--keep", "--name", &c], "true");
    assert!(r.status.success(), "{}", err(&r));
    let o = env.cmd().args(["commit", &c, "x:1"]).output().unwrap();
    assert!(err(&o).contains("not made from an image"), "{}", err(&o));
    let o = env
        .cmd()
        .args(["commit", &c, "x:1", "-c", "FROM y"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    ok(&env.cmd().args(["rm", &c]).output().unwrap());
    // An upper layer holding a redirect (a lower directory renamed with
    // redirect_dir on): its content is in a lower layer; refused, not lost.
    let c = common::name("redirect");
    ok(&env.run_image("busybox:test", &["--keep", "--name", &c], "mkdir /moved"));
    let moved = env.state.join(&c).join("layers/upper/moved");
    let p = std::ffi::CString::new(moved.to_str().unwrap()).unwrap();
    // SAFETY: NUL-terminated strings and a 4-byte value that outlive the call.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            c"trusted.overlay.redirect".as_ptr(),
            b"/opq".as_ptr().cast(),
            4,
            0,
        )
    };
    assert_eq!(r, 0, "lsetxattr: {}", std::io::Error::last_os_error());
    let o = env.cmd().args(["commit", &c, "x:2"]).output().unwrap();
    assert!(err(&o).contains("redirect_dir or metacopy"), "{}", err(&o));
    let images = std::fs::read_dir(env.store.join("images")).unwrap().count();
    assert_eq!(images, 1, "a refused commit left an image");
    ok(&env.cmd().args(["rm", &c]).output().unwrap());
    env.assert_clean();
}

#[test]
fn a_running_container_is_committed() {
    let env = Env::new();
    env.import();
    let c = common::name("running");
    let mut run = env
        .cmd()
        .args(["run", "--image", "busybox:test", "--name", &c, "--"])
        .args([
            "sh",
            "-c",
            "echo live > /etc/.w && mv /etc/.w /etc/live; sleep 30",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !env.state.join(&c).join("layers/upper/etc/live").exists() {
        assert!(t0.elapsed().as_secs() < 10, "the container did not write");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let o = env.cmd().args(["commit", &c, "live:1"]).output().unwrap();
    ok(&env.cmd().args(["kill", &c]).output().unwrap());
    let _ = run.wait();
    ok(&o);
    assert_eq!(ok(&env.run_image("live:1", &[], "cat /etc/live")), "live\n");
    env.assert_clean();
}
