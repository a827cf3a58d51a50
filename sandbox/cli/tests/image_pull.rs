//! `sandbox image pull` against a real registry on loopback (Debian's
//! docker-registry, seeded with skopeo) and against hostile registries the test
//! runs: layers shared, tags and digests, indexes, compressions, authentication;
//! each hostile answer refused clearly with nothing partial left in the store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::registry::{
    Auth, Compress, Registry, Reply, TOKEN_ISSUER, TOKEN_SERVICE, TokenService, busybox_tar,
    index_layout, layout, raw_tar, serve_image, tar_of,
};
use common::{Env, err, out};

fn pull(env: &Env, args: &[&str]) -> std::process::Output {
    env.cmd()
        .args(["image", "pull"])
        .args(args)
        .output()
        .unwrap()
}

fn ok(o: &std::process::Output) -> String {
    assert!(o.status.success(), "failed: {}{}", out(o), err(o));
    out(o)
}

fn entries(p: &Path) -> Vec<String> {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Nothing of a refused pull in the store: no layer, blob, record, download.
fn assert_store_empty(env: &Env) {
    for d in ["layers", "blobs/sha256", "images", "downloads"] {
        let left = entries(&env.store.join(d));
        assert!(left.is_empty(), "{d} holds {left:?} after a refused pull");
    }
}

#[test]
#[cfg_attr(vm_lane, ignore = "docker-registry and skopeo run on the host only")]
fn a_second_image_on_the_same_base_downloads_only_its_own_layers() {
    let env = Env::new();
    let reg = Registry::start(Auth::None);
    let base = busybox_tar();
    let la = tar_of(&[("etc/a", b"image a\n", 0o644)]);
    let lb = tar_of(&[("etc/b", b"image b\n", 0o644)]);
    let (da, db) = (env.dir.path().join("a"), env.dir.path().join("b"));
    let a = layout(
        &da,
        "a",
        &[base.clone(), la],
        Compress::Gzip,
        r#""Env":["PATH=/bin"]"#,
    );
    let b = layout(
        &db,
        "b",
        &[base, lb],
        Compress::Gzip,
        r#""Env":["PATH=/bin"]"#,
    );
    reg.seed(&da, "test/a:1", &[]);
    reg.seed(&db, "test/b:1", &[]);
    let host = reg.host();
    let before = reg.blob_gets().len();
    let o = ok(&pull(&env, &["--insecure", &format!("{host}/test/a:1")]));
    assert!(o.contains("2 downloaded, 0 already present"), "{o}");
    let o = ok(&pull(&env, &["--insecure", &format!("{host}/test/b:1")]));
    assert!(o.contains("1 downloaded, 1 already present"), "{o}");
    let gets = reg.blob_gets()[before..].to_vec();
    let base_digest = &a.layers[0].0;
    assert_eq!(
        gets.iter().filter(|g| *g == base_digest).count(),
        1,
        "the base layer was fetched more than once: {gets:?}"
    );
    assert!(gets.contains(&b.layers[1].0), "{gets:?}");
    // Both run, each with its own layer.
    let r = env.run_image(
        &format!("{host}/test/b:1"),
        &[],
        "cat /etc/b; test ! -e /etc/a && echo no-a",
    );
    assert_eq!(ok(&r), "image b\nno-a\n");
    // The shared base shows in the accounting.
    let ls = ok(&env.cmd().args(["image", "ls"]).output().unwrap());
    let line = ls
        .lines()
        .find(|l| l.contains("test/b"))
        .unwrap()
        .to_string();
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_ne!(cols[cols.len() - 2..], ["0", "B"], "nothing shared: {ls}");
    let df = ok(&env.cmd().args(["system", "df"]).output().unwrap());
    assert!(df.contains("Images") && df.contains("2"), "{df}");
    env.assert_clean();
}

#[test]
#[cfg_attr(vm_lane, ignore = "docker-registry and skopeo run on the host only")]
fn pull_by_tag_and_by_digest() {
    let env = Env::new();
    let reg = Registry::start(Auth::None);
    let d = env.dir.path().join("l");
    let b = layout(
        &d,
        "x",
        &[tar_of(&[("f", b"x\n", 0o644)])],
        Compress::Gzip,
        "",
    );
    reg.seed(&d, "x/y:v1", &[]);
    let host = reg.host();
    let o = ok(&pull(
        &env,
        &["--insecure", &format!("{host}/x/y@{}", b.digest)],
    ));
    let tag = format!("sha256-{}", &b.digest[7..]);
    assert!(o.contains(&format!("{host}/x/y:{tag}")), "{o}");
    // A digest that is not there: refused naming it.
    let bad = format!("sha256:{}", "0".repeat(64));
    let o = pull(&env, &["--insecure", &format!("{host}/x/y@{bad}")]);
    assert!(!o.status.success());
    assert!(
        err(&o).contains("404") || err(&o).contains("no such image"),
        "{}",
        err(&o)
    );
    // By tag, and with both: the digest decides what is fetched.
    let o = ok(&pull(
        &env,
        &["--insecure", &format!("{host}/x/y:v1@{}", b.digest)],
    ));
    assert!(o.contains(&format!("{host}/x/y:v1")), "{o}");
    let o = ok(&pull(
        &env,
        &["--insecure", "--name", "mine:v2", &format!("{host}/x/y:v1")],
    ));
    assert!(o.contains("mine:v2") && o.contains("0 downloaded"), "{o}");
    // --insecure only for a registry named in the reference.
    let o = pull(&env, &["--insecure", "busybox"]);
    assert!(
        err(&o).contains("--insecure is for a registry named"),
        "{}",
        err(&o)
    );
}

#[test]
#[cfg_attr(vm_lane, ignore = "docker-registry and skopeo run on the host only")]
fn an_index_gives_the_chosen_platform() {
    let env = Env::new();
    let reg = Registry::start(Auth::None);
    let d = env.dir.path().join("idx");
    let amd = common::registry::build_image(
        &d,
        &[busybox_tar(), tar_of(&[("etc/arch", b"amd64\n", 0o644)])],
        Compress::Gzip,
        "amd64",
        r#""Env":["PATH=/bin"]"#,
    );
    let arm = common::registry::build_image(
        &d,
        &[tar_of(&[("etc/arch", b"arm64\n", 0o644)])],
        Compress::Gzip,
        "arm64",
        "",
    );
    index_layout(&d, "multi", &[("arm64", &arm), ("amd64", &amd)]);
    reg.seed(&d, "m/multi:1", &["--all"]);
    let r = format!("{}/m/multi:1", reg.host());
    let o = ok(&pull(&env, &["--insecure", &r]));
    assert!(o.contains(&amd.digest), "{o}");
    assert_eq!(ok(&env.run_image(&r, &[], "cat /etc/arch")), "amd64\n");
    let o = ok(&pull(
        &env,
        &[
            "--insecure",
            "--platform",
            "linux/arm64",
            "--name",
            "arm:1",
            &r,
        ],
    ));
    assert!(o.contains(&arm.digest), "{o}");
    let o = pull(&env, &["--insecure", "--platform", "linux/s390x", &r]);
    assert!(!o.status.success());
    assert!(
        err(&o).contains("linux/s390x") && err(&o).contains("linux/arm64, linux/amd64"),
        "{}",
        err(&o)
    );
}

#[test]
#[cfg_attr(vm_lane, ignore = "docker-registry and skopeo run on the host only")]
fn zstd_plain_and_docker_v2s2_images() {
    let env = Env::new();
    let reg = Registry::start(Auth::None);
    for (c, name) in [(Compress::Zstd, "zstd"), (Compress::Plain, "plain")] {
        let d = env.dir.path().join(name);
        layout(
            &d,
            name,
            &[busybox_tar(), tar_of(&[("etc/c", name.as_bytes(), 0o644)])],
            c,
            r#""Env":["PATH=/bin"]"#,
        );
        reg.seed(&d, &format!("c/{name}:1"), &[]);
        let r = format!("{}/c/{name}:1", reg.host());
        ok(&pull(&env, &["--insecure", &r]));
        assert_eq!(ok(&env.run_image(&r, &[], "cat /etc/c")), name);
    }
    // A Docker v2 schema 2 manifest (skopeo converts the gzip image).
    let d = env.dir.path().join("v2s2");
    layout(
        &d,
        "v",
        &[busybox_tar(), tar_of(&[("etc/c", b"docker", 0o644)])],
        Compress::Gzip,
        r#""Env":["PATH=/bin"]"#,
    );
    reg.seed(&d, "c/docker:1", &["--format", "v2s2"]);
    let r = format!("{}/c/docker:1", reg.host());
    ok(&pull(&env, &["--insecure", &r]));
    assert_eq!(ok(&env.run_image(&r, &[], "cat /etc/c")), "docker");
    env.assert_clean();
}

#[test]
#[cfg_attr(vm_lane, ignore = "docker-registry and skopeo run on the host only")]
fn basic_auth_from_creds_or_an_auth_file() {
    let env = Env::new();
    let reg = Registry::start(Auth::Basic("tester", "s3cret"));
    let d = env.dir.path().join("l");
    layout(
        &d,
        "x",
        &[tar_of(&[("f", b"x\n", 0o644)])],
        Compress::Gzip,
        "",
    );
    reg.seed(&d, "p/x:1", &["--dest-creds", "tester:s3cret"]);
    let r = format!("{}/p/x:1", reg.host());
    let o = pull(&env, &["--insecure", &r]);
    assert!(!o.status.success());
    assert!(
        err(&o).contains("401") && err(&o).contains("--creds"),
        "{}",
        err(&o)
    );
    let o = pull(&env, &["--insecure", "--creds", "tester:wrong", &r]);
    assert!(!o.status.success(), "a wrong password was accepted");
    ok(&pull(&env, &["--insecure", "--creds", "tester:s3cret", &r]));
    let auth = env.dir.path().join("auth.json");
    std::fs::write(
        &auth,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"dGVzdGVyOnMzY3JldA=="}}}}}}"#,
            reg.host()
        ),
    )
    .unwrap();
    let o = ok(&pull(
        &env,
        &[
            "--insecure",
            "--authfile",
            auth.to_str().unwrap(),
            "--name",
            "y:1",
            &r,
        ],
    ));
    assert!(o.contains("y:1"), "{o}");
}

#[test]
#[cfg_attr(vm_lane, ignore = "docker-registry and skopeo run on the host only")]
fn bearer_tokens_from_a_token_service() {
    let env = Env::new();
    let tokens = TokenService::start(env.dir.path(), "tok", "pw");
    let reg = Registry::start(Auth::Token {
        realm: tokens.realm(),
        service: TOKEN_SERVICE.into(),
        issuer: TOKEN_ISSUER.into(),
        cert: tokens.cert.clone(),
    });
    let d = env.dir.path().join("l");
    layout(
        &d,
        "x",
        &[tar_of(&[("f", b"x\n", 0o644)])],
        Compress::Gzip,
        "",
    );
    reg.seed(&d, "t/x:1", &["--dest-creds", "tok:pw"]);
    let r = format!("{}/t/x:1", reg.host());
    let before = *tokens.issued.lock().unwrap();
    let o = pull(&env, &["--insecure", &r]);
    assert!(
        !o.status.success(),
        "an anonymous pull passed a token registry"
    );
    assert!(err(&o).contains("bad credentials"), "{}", err(&o));
    let o = ok(&pull(&env, &["--insecure", "--creds", "tok:pw", &r]));
    assert!(o.contains("1 downloaded"), "{o}");
    assert!(
        *tokens.issued.lock().unwrap() > before,
        "no token was issued"
    );
    // The registry checked a bearer token (not basic credentials) on every request.
    let log = std::fs::read_to_string(&reg.log).unwrap();
    assert!(
        log.contains("tok"),
        "the registry never saw the token's subject"
    );
}

// ------------------------------------------------------------ hostile registries

fn small_image(env: &Env) -> common::registry::Built {
    layout(
        &env.dir.path().join("h"),
        "h",
        &[tar_of(&[("f", &[7u8; 100_000], 0o644)])],
        Compress::Gzip,
        "",
    )
}

#[test]
fn a_layer_that_does_not_match_its_digest_is_refused() {
    let env = Env::new();
    let b = small_image(&env);
    let (ld, blob) = b.layers[0].clone();
    let mut spoiled = blob.clone();
    let i = spoiled.len() / 2;
    spoiled[i] ^= 0xff;
    let h = serve_image(&b, move |s, _| {
        s.path
            .ends_with(&ld)
            .then(|| Reply::Body(200, "application/octet-stream", spoiled.clone()))
    });
    let o = pull(&env, &["--insecure", &format!("{}/h/x:t", h.host())]);
    assert!(!o.status.success());
    assert!(err(&o).contains("not the blob asked for"), "{}", err(&o));
    assert_store_empty(&env);
}

#[test]
fn oversized_and_endless_manifests_are_refused() {
    let env = Env::new();
    let b = small_image(&env);
    let h = serve_image(&b, |s, _| {
        if s.path.ends_with("/manifests/big") {
            Some(Reply::Body(
                200,
                "application/vnd.oci.image.manifest.v1+json",
                vec![b' '; 5 << 20],
            ))
        } else if s.path.ends_with("/manifests/endless") {
            Some(Reply::Endless)
        } else {
            None
        }
    });
    let o = pull(&env, &["--insecure", &format!("{}/h/x:big", h.host())]);
    assert!(
        err(&o).contains("more than the 4194304 a manifest may have"),
        "{}",
        err(&o)
    );
    let t0 = std::time::Instant::now();
    let o = pull(&env, &["--insecure", &format!("{}/h/x:endless", h.host())]);
    assert!(err(&o).contains("larger than 4194304 bytes"), "{}", err(&o));
    assert!(t0.elapsed().as_secs() < 30);
    assert_store_empty(&env);
}

#[test]
fn an_endless_layer_is_cut_at_its_size() {
    let env = Env::new();
    let b = small_image(&env);
    let ld = b.layers[0].0.clone();
    let h = serve_image(&b, move |s, _| {
        s.path.ends_with(&ld).then_some(Reply::Endless)
    });
    let o = pull(&env, &["--insecure", &format!("{}/h/x:t", h.host())]);
    assert!(!o.status.success());
    assert!(err(&o).contains("sent more than the"), "{}", err(&o));
    assert_store_empty(&env);
}

/// An error answer that never ends (to a layer and to the config): its body is
/// read to a bound and quoted, not held whole.
#[test]
fn an_endless_error_answer_is_bounded() {
    let env = Env::new();
    let b = small_image(&env);
    for blob in [b.layers[0].0.clone(), common::registry::sha(&b.config)] {
        let h = serve_image(&b, move |s, _| {
            s.path.ends_with(&blob).then_some(Reply::EndlessError(500))
        });
        let o = pull(&env, &["--insecure", &format!("{}/h/x:t", h.host())]);
        assert!(!o.status.success());
        assert!(err(&o).contains("answered 500"), "{}", err(&o));
        assert_store_empty(&env);
    }
}

/// A token service whose answer never ends: read to a bound, then refused.
#[test]
fn an_endless_token_answer_is_bounded() {
    let env = Env::new();
    let b = small_image(&env);
    let port = std::sync::Arc::new(std::sync::Mutex::new(0u16));
    let p2 = port.clone();
    let h = serve_image(&b, move |s, _| {
        if s.path == "/v2/" {
            Some(Reply::Challenge(format!(
                "Bearer realm=\"http://127.0.0.1:{}/token\",service=\"hostile\"",
                *p2.lock().unwrap()
            )))
        } else if s.path.starts_with("/token") {
            Some(Reply::Endless)
        } else {
            None
        }
    });
    *port.lock().unwrap() = h.port;
    let o = pull(&env, &["--insecure", &format!("{}/h/x:t", h.host())]);
    assert!(
        !o.status.success(),
        "{:?}",
        h.seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.path.clone())
            .collect::<Vec<_>>()
    );
    assert!(err(&o).contains("larger than"), "{}", err(&o));
    assert_store_empty(&env);
}

#[test]
fn a_redirect_loop_ends() {
    let env = Env::new();
    let b = small_image(&env);
    let port = std::sync::Arc::new(std::sync::Mutex::new(0u16));
    let p2 = port.clone();
    let h = serve_image(&b, move |s, _| {
        s.path.contains("/manifests/").then(|| {
            Reply::Redirect(format!(
                "http://127.0.0.1:{}/v2/h/x/manifests/t",
                *p2.lock().unwrap()
            ))
        })
    });
    *port.lock().unwrap() = h.port;
    let o = pull(&env, &["--insecure", &format!("{}/h/x:t", h.host())]);
    assert!(!o.status.success());
    assert!(err(&o).to_lowercase().contains("redirect"), "{}", err(&o));
    let n = h.seen.lock().unwrap().len();
    assert!(n < 20, "{n} requests for a redirect loop");
    assert_store_empty(&env);
}

#[test]
fn a_hostile_layer_served_remotely_is_refused() {
    let env = Env::new();
    // The #8 corpus's classic: a symlink to the host's root, then a file through it.
    let mut t = tar::Builder::new(Vec::new());
    let mut hd = tar::Header::new_gnu();
    hd.set_entry_type(tar::EntryType::Symlink);
    hd.set_size(0);
    hd.set_mode(0o777);
    t.append_link(&mut hd, "escape", "/").unwrap();
    let mut hd = tar::Header::new_gnu();
    hd.set_size(5);
    hd.set_mode(0o644);
    let target = env.dir.path().join("pwned");
    let rel = format!("escape{}", target.display());
    t.append_data(&mut hd, &rel, &b"pwned"[..]).unwrap();
    let raw = t.into_inner().unwrap();
    let b = layout(&env.dir.path().join("h"), "h", &[raw], Compress::Gzip, "");
    let h = serve_image(&b, |_, _| None);
    let o = pull(&env, &["--insecure", &format!("{}/h/x:t", h.host())]);
    assert!(!o.status.success(), "{}", out(&o));
    assert!(
        err(&o).contains("symlink") || err(&o).contains("escape"),
        "{}",
        err(&o)
    );
    assert!(!target.exists(), "the layer wrote outside the store");
    assert_store_empty(&env);
}

#[test]
fn the_hardening_corpus_served_remotely_is_refused() {
    let env = Env::new();
    let host_dir = env.dir.path().join("host");
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::write(host_dir.join("secret"), b"secret").unwrap();
    let secret = host_dir.join("secret").display().to_string();
    let hd = host_dir.display().to_string();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (raw_tar(&[("../../../planted", b'0', b"x", "")]), "`..`"),
        (raw_tar(&[("a/../../.wh.victim", b'0', b"", "")]), "`..`"),
        (
            raw_tar(&[("stolen", b'1', b"", &secret)]),
            "must be an earlier entry of this layer",
        ),
        (
            raw_tar(&[("d", b'2', b"", &hd), ("stolen", b'1', b"", "d/secret")]),
            "a symlink or not a directory",
        ),
        (
            raw_tar(&[("d", b'2', b"", &hd), ("d/planted", b'0', b"pwned", "")]),
            "symlink",
        ),
    ];
    for (i, (t, want)) in cases.into_iter().enumerate() {
        let b = layout(
            &env.dir.path().join(format!("c{i}")),
            "h",
            &[t],
            Compress::Gzip,
            "",
        );
        let h = serve_image(&b, |_, _| None);
        let o = pull(&env, &["--insecure", &format!("{}/h/x:t", h.host())]);
        assert!(!o.status.success(), "case {i} was pulled");
        assert!(err(&o).contains(want), "case {i}: want {want}: {}", err(&o));
        assert_store_empty(&env);
    }
    assert_eq!(std::fs::read(host_dir.join("secret")).unwrap(), b"secret");
    assert!(!host_dir.join("planted").exists());
    assert!(!env.dir.path().join("planted").exists());
}

#[test]
fn an_interrupted_pull_resumes_where_it_stopped() {
    let env = Env::new();
    let b = small_image(&env);
    let (ld, blob) = b.layers[0].clone();
    let half = blob.len() / 2;
    let h = serve_image(&b, move |s, n| {
        (s.path.ends_with(&ld) && n == 1).then(|| Reply::Cut {
            body: blob.clone(),
            send: half,
        })
    });
    let r = format!("{}/h/x:t", h.host());
    let o = pull(&env, &["--insecure", &r]);
    assert!(!o.status.success());
    assert!(err(&o).contains("pull again to resume"), "{}", err(&o));
    assert_eq!(entries(&env.store.join("downloads")).len(), 1);
    assert!(entries(&env.store.join("layers")).is_empty());
    ok(&pull(&env, &["--insecure", &r]));
    let ranges: Vec<_> = h
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|s| s.range.clone())
        .collect();
    assert_eq!(ranges, vec![format!("bytes={half}-")]);
    assert!(entries(&env.store.join("downloads")).is_empty());
}

#[test]
fn a_blob_kept_from_a_stopped_pull_is_not_fetched_again() {
    let env = Env::new();
    let b = small_image(&env);
    let ld = b.layers[0].0.clone();
    let h = serve_image(&b, |_, _| None);
    let r = format!("{}/h/x:t", h.host());
    ok(&pull(&env, &["--insecure", &r]));
    // As a pull killed while unpacking leaves it: the verified blob, no layer, no
    // record.
    std::fs::remove_dir_all(env.store.join("layers").join(&ld[7..])).unwrap();
    for e in entries(&env.store.join("images")) {
        std::fs::remove_file(env.store.join("images").join(e)).unwrap();
    }
    let o = ok(&pull(&env, &["--insecure", &r]));
    assert!(o.contains("1 downloaded") && o.contains("; 0 B)"), "{o}");
    let gets = h
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.path.ends_with(&ld))
        .count();
    assert_eq!(gets, 1, "the kept blob was fetched again");
    // A kept blob that is corrupt is fetched again and replaced.
    std::fs::remove_dir_all(env.store.join("layers").join(&ld[7..])).unwrap();
    let blob = env.store.join("blobs/sha256").join(&ld[7..]);
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    ok(&pull(&env, &["--insecure", &r]));
    assert_eq!(
        common::registry::sha(&std::fs::read(&blob).unwrap()),
        ld[7..],
        "the corrupt blob stayed"
    );
}

/// Found in the VM lane, which has no CA store: the TLS client could not be built,
/// so even a plain-HTTP pull failed. Here the CA store is hidden through the
/// variables rustls' native-certs loader reads.
#[test]
fn plain_http_needs_no_ca_store() {
    let env = Env::new();
    let b = small_image(&env);
    let h = serve_image(&b, |_, _| None);
    let empty = env.dir.path().join("no-ca");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("none.pem"), b"").unwrap();
    let no_ca = |args: &[&str]| {
        env.cmd()
            .args(["image", "pull"])
            .args(args)
            .env("SSL_CERT_FILE", empty.join("none.pem"))
            .env("SSL_CERT_DIR", &empty)
            .output()
            .unwrap()
    };
    ok(&no_ca(&["--insecure", &format!("{}/h/x:t", h.host())]));
    // HTTPS without a CA store says what is missing.
    let o = no_ca(&[&format!("{}/h/x:t", h.host())]);
    assert!(err(&o).contains("install ca-certificates"), "{}", err(&o));
    assert_eq!(o.status.code(), Some(125), "not a clear error: {}", err(&o));
}

/// Unmounts a tmpfs on drop.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn a_layer_larger_than_the_free_space_is_not_downloaded() {
    let env = Env::new();
    // 24 MiB of incompressible bytes (xorshift), on a 16 MiB store.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..24 << 17)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    let b = layout(
        &env.dir.path().join("big"),
        "big",
        &[tar_of(&[("big", &data, 0o644)])],
        Compress::Gzip,
        "",
    );
    let h = serve_image(&b, |_, _| None);
    std::fs::create_dir_all(&env.store).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &env.store,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=16m,mode=0700"),
    )
    .unwrap();
    let _m = Tmpfs(env.store.clone());
    let o = pull(&env, &["--insecure", &format!("{}/h/x:t", h.host())]);
    assert!(!o.status.success());
    assert!(
        err(&o).contains("free space or pull elsewhere"),
        "{}",
        err(&o)
    );
    let asked = h
        .seen
        .lock()
        .unwrap()
        .iter()
        .any(|s| s.path.ends_with(&b.layers[0].0));
    assert!(!asked, "the layer was requested");
    assert_store_empty(&env);
}
