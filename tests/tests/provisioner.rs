//! The provisioner against real images: fixtures built here with umoci
//! and skopeo from Debian's busybox-static, real overlay mounts, real
//! `berth run --image`, crafted malicious layers.

use berth_provisioner::import::import;
use berth_provisioner::{Backend, ImageProvisioner};
use berth_state::ContainerId;
use berth_tests::{require_tool, TestEnv};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

fn umoci(args: &[&str]) {
    require_tool("umoci");
    run(Command::new("umoci").args(args));
}

fn skopeo(args: &[&str]) {
    require_tool("skopeo");
    run(Command::new("skopeo").args(args));
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// The 3-layer fixture at `<temp>/layout`, tags `base`, `v2`, `latest`:
/// 1. busybox + applet links, passwd/group, /data/gone, /replaced/{old1,old2}, /work
/// 2. /data/gone deleted, /replaced replaced by a dir holding only `new`
/// 3. /data/orig and its hardlink /data/hard
///
/// `latest` runs as nobody (65534) in /work with FOO=bar, entrypoint
/// `/bin/sh -c` and a cmd that prints what the test checks.
fn layered_layout(env: &TestEnv) -> PathBuf {
    let layout = env.path("layout");
    let l = p(&layout);
    umoci(&["init", "--layout", l]);
    umoci(&["new", "--image", &format!("{l}:base")]);
    let bundle = |n: &str| env.path(format!("bundle-{n}"));
    // Layer 1.
    let b1 = bundle("1");
    umoci(&["unpack", "--image", &format!("{l}:base"), p(&b1)]);
    let r = b1.join("rootfs");
    for d in ["bin", "etc", "data", "replaced", "work", "tmp"] {
        fs::create_dir_all(r.join(d)).unwrap();
    }
    fs::copy("/bin/busybox", r.join("bin/busybox")).expect("busybox-static at /bin/busybox");
    for a in [
        "sh", "id", "cat", "ls", "pwd", "echo", "test", "sleep", "touch",
    ] {
        std::os::unix::fs::symlink("busybox", r.join("bin").join(a)).unwrap();
    }
    fs::write(
        r.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    fs::write(r.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    fs::write(r.join("data/gone"), "to be deleted\n").unwrap();
    fs::write(r.join("replaced/old1"), "old\n").unwrap();
    fs::write(r.join("replaced/old2"), "old\n").unwrap();
    fs::set_permissions(r.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    umoci(&["repack", "--image", &format!("{l}:base"), p(&b1)]);
    // Layer 2.
    let b2 = bundle("2");
    umoci(&["unpack", "--image", &format!("{l}:base"), p(&b2)]);
    let r = b2.join("rootfs");
    fs::remove_file(r.join("data/gone")).unwrap();
    fs::remove_dir_all(r.join("replaced")).unwrap();
    fs::create_dir(r.join("replaced")).unwrap();
    fs::write(r.join("replaced/new"), "new\n").unwrap();
    umoci(&["repack", "--image", &format!("{l}:v2"), p(&b2)]);
    // Layer 3.
    let b3 = bundle("3");
    umoci(&["unpack", "--image", &format!("{l}:v2"), p(&b3)]);
    let r = b3.join("rootfs");
    fs::write(r.join("data/orig"), "hardlink-content\n").unwrap();
    fs::hard_link(r.join("data/orig"), r.join("data/hard")).unwrap();
    umoci(&["repack", "--image", &format!("{l}:latest"), p(&b3)]);
    umoci(&[
        "config",
        "--image",
        &format!("{l}:latest"),
        "--config.entrypoint",
        "/bin/sh",
        "--config.entrypoint",
        "-c",
        "--config.cmd",
        "id -u; id -g; pwd; echo $FOO; cat /data/hard; ls /replaced; \
         if test -e /data/gone; then echo gone-present; else echo gone-absent; fi",
        "--config.env",
        "FOO=bar",
        "--config.env",
        "PATH=/bin",
        "--config.workingdir",
        "/work",
        "--config.user",
        "nobody",
    ]);
    for n in ["1", "2", "3"] {
        fs::remove_dir_all(bundle(n)).unwrap();
    }
    layout
}

const EXPECTED: &str = "65534\n65534\n/work\nbar\nhardlink-content\nnew\ngone-absent\n";

fn provisioner(env: &TestEnv) -> ImageProvisioner {
    ImageProvisioner::open(env.path("store")).expect("open store")
}

fn cid(env: &TestEnv, n: &str) -> ContainerId {
    ContainerId::parse(&format!("{}-{n}", env.name)).unwrap()
}

/// What a rootfs holds: path → kind, mode, owner, content hash / target.
fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let m = fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let what = if m.file_type().is_symlink() {
                format!("link {}", fs::read_link(&path).unwrap().display())
            } else if m.is_dir() {
                walk(root, &path, out);
                "dir".to_string()
            } else if m.is_file() {
                format!("file {:x}", Sha256::digest(fs::read(&path).unwrap()))
            } else {
                format!("special {:o}", m.mode())
            };
            out.insert(
                rel,
                format!(
                    "{what} mode {:o} {}:{}",
                    m.mode() & 0o7777,
                    m.uid(),
                    m.gid()
                ),
            );
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn layered_image_runs_with_its_config_through_berth_run() {
    let env = TestEnv::new("prov-run");
    let layout = layered_layout(&env);
    let out = run(env
        .berth()
        .args(["image", "import"])
        .arg(&layout)
        .args(["--name", "layered"]));
    let listed = text(&out.stdout);
    for r in ["layered:base", "layered:v2", "layered:latest"] {
        assert!(listed.contains(r), "{listed}");
    }
    let out = run(env.berth().args(["image", "ls", "--json"]));
    let ls: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ls.as_array().map(|a| a.len()), Some(3), "{ls}");

    // A listing whose reader has gone (`berth image ls | head -0`) ends
    // by SIGPIPE, as other tools do, not with a panic on the write.
    let (reader, writer) = nix::unistd::pipe().unwrap();
    drop(reader);
    let out = env
        .berth()
        .args(["image", "ls"])
        .stdout(std::process::Stdio::from(writer))
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{:?}, stderr: {}",
        out.status,
        text(&out.stderr)
    );
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );

    let out = run(env.berth().args(["run", "--image", "layered:latest"]));
    assert_eq!(text(&out.stdout), EXPECTED, "stderr: {}", text(&out.stderr));

    // A command given by the user replaces the cmd (the entrypoint stays);
    // --entrypoint and -e replace the image's; --user and --workdir too.
    let out = run(env.berth().args([
        "run",
        "--image",
        "layered:latest",
        "-e",
        "FOO=mine",
        "--",
        "echo $FOO; pwd",
    ]));
    assert_eq!(text(&out.stdout), "mine\n/work\n");
    let out = run(env.berth().args([
        "run",
        "--image",
        "layered:latest",
        "--entrypoint",
        "/bin/id",
        "--user",
        "0",
        "--workdir",
        "/data",
        "--",
        "-u",
    ]));
    assert_eq!(text(&out.stdout), "0\n");
    // A missing working dir is made inside the rootfs (as runc does).
    let out = run(env.berth().args([
        "run",
        "--image",
        "layered:latest",
        "--workdir",
        "/new/dir",
        "--",
        "pwd",
    ]));
    assert_eq!(text(&out.stdout), "/new/dir\n");
    let out = env
        .berth()
        .args(["run", "--image", "layered:latest", "--user", "nosuchuser"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("nosuchuser"),
        "{}",
        text(&out.stderr)
    );

    // A malformed reference is refused at STARTING (125), a missing image
    // when provisioning; both name it.
    let out = env
        .berth()
        .args(["run", "--image", "Bad Name"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("Bad Name"),
        "{}",
        text(&out.stderr)
    );
    let out = env
        .berth()
        .args(["run", "--image", "absent:1"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("absent:1") && text(&out.stderr).contains("not in the store"),
        "{}",
        text(&out.stderr)
    );

    // Five containers of layered:latest, its three layers unpacked once.
    let log = fs::read_to_string(env.state_dir.join("images/unpack.log")).unwrap();
    assert_eq!(log.lines().count(), 3, "{log}");

    // Nothing of the containers is left: no mount (the harness checks), no dir.
    let containers = env.state_dir.join("images/containers");
    assert_eq!(fs::read_dir(&containers).unwrap().count(), 0);
    assert!(env.leaks().is_empty(), "{:?}", env.leaks());
}

#[test]
fn every_import_format_gives_the_same_rootfs() {
    let env = TestEnv::new("prov-formats");
    let layout = layered_layout(&env);
    let l = p(&layout);
    let archive = env.path("image.oci.tar");
    let docker = env.path("image.docker.tar");
    let zstd = env.path("zstd-layout");
    skopeo(&[
        "copy",
        &format!("oci:{l}:latest"),
        &format!("oci-archive:{}:latest", p(&archive)),
    ]);
    skopeo(&[
        "copy",
        &format!("oci:{l}:latest"),
        &format!("docker-archive:{}:layered:latest", p(&docker)),
    ]);
    skopeo(&[
        "copy",
        "--dest-compress",
        "--dest-compress-format",
        "zstd",
        &format!("oci:{l}:latest"),
        &format!("oci:{}:latest", p(&zstd)),
    ]);
    let zstd_manifest = fs::read_to_string(zstd.join("index.json")).unwrap();
    let prov = provisioner(&env);
    let imports: [(&str, &Path); 4] = [
        ("from-layout", &layout),
        ("from-archive", &archive),
        ("from-docker", &docker),
        ("from-zstd", &zstd),
    ];
    let mut trees = Vec::new();
    for (name, path) in imports {
        let imported = import(prov.store(), path, Some(name)).unwrap();
        assert!(
            imported
                .iter()
                .any(|i| i.reference == format!("{name}:latest")),
            "{imported:?}"
        );
        let id = cid(&env, name);
        let got = prov
            .provision_blocking(&id, &format!("{name}:latest"))
            .unwrap();
        assert_eq!(got.user, "nobody");
        assert_eq!(got.entrypoint, ["/bin/sh", "-c"]);
        let t = tree(&got.rootfs);
        assert!(
            t.contains_key("data/hard") && !t.contains_key("data/gone"),
            "{name}"
        );
        trees.push((name, t));
        prov.destroy_blocking(&id).unwrap();
    }
    // The zstd copy really is zstd.
    let idx: serde_json::Value = serde_json::from_str(&zstd_manifest).unwrap();
    let mdigest = idx["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .replace("sha256:", "");
    let m = fs::read_to_string(zstd.join("blobs/sha256").join(mdigest)).unwrap();
    assert!(m.contains("tar+zstd"), "{m}");
    for (name, t) in &trees[1..] {
        assert_eq!(t, &trees[0].1, "{name} differs from the layout's rootfs");
    }
    assert_eq!(
        fs::read_dir(env.path("store/containers")).unwrap().count(),
        0
    );
}

/// Rewrites the layout's `tag` manifest with `layers` (uncompressed tars)
/// appended, under tag `new_tag`.
fn add_layers(layout: &Path, tag: &str, new_tag: &str, layers: &[Vec<u8>]) {
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let put = |bytes: &[u8]| -> String {
        let d = format!("sha256:{:x}", Sha256::digest(bytes));
        fs::write(blob(&d), bytes).unwrap();
        d
    };
    let mut index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let desc = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap()
        .clone();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(blob(desc["digest"].as_str().unwrap())).unwrap()).unwrap();
    let mut config: serde_json::Value = serde_json::from_slice(
        &fs::read(blob(manifest["config"]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    for l in layers {
        let d = put(l);
        config["rootfs"]["diff_ids"]
            .as_array_mut()
            .unwrap()
            .push(d.clone().into());
        manifest["layers"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": d,
                "size": l.len(),
            }));
    }
    let c = serde_json::to_vec(&config).unwrap();
    manifest["config"]["digest"] = put(&c).into();
    manifest["config"]["size"] = c.len().into();
    let m = serde_json::to_vec(&manifest).unwrap();
    let mut d = desc.clone();
    d["digest"] = put(&m).into();
    d["size"] = m.len().into();
    d["annotations"]["org.opencontainers.image.ref.name"] = new_tag.into();
    index["manifests"].as_array_mut().unwrap().push(d);
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
}

/// A tar entry whose name is written raw (the tar crate refuses `..` and
/// absolute names, which is the point of these layers).
fn entry(
    b: &mut tar::Builder<Vec<u8>>,
    name: &str,
    kind: tar::EntryType,
    link: Option<&str>,
    data: &[u8],
) {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_size(data.len() as u64);
    h.set_mtime(1_700_000_000);
    if kind == tar::EntryType::Char {
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
    }
    {
        let raw = h.as_old_mut();
        raw.name = [0; 100];
        raw.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            raw.linkname = [0; 100];
            raw.linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
    }
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn layer(f: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    f(&mut b);
    b.into_inner().unwrap()
}

/// Every path under `dir` except the store (what must not change).
fn outside_store(dir: &Path, store: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.starts_with(store) {
                continue;
            }
            let m = fs::symlink_metadata(&path).unwrap();
            if m.is_dir() {
                stack.push(path.clone());
            }
            out.push((path, m.mtime() as u64 ^ m.size() ^ m.nlink()));
        }
    }
    out.sort();
    out
}

#[test]
fn malicious_layers_are_refused_or_neutralised() {
    use tar::EntryType as T;
    let env = TestEnv::new("prov-evil");
    let layout = layered_layout(&env);
    let outside = env.mkdir("outside");
    let o = p(&outside).to_string();
    let escape = format!("/tmp/{}-escaped", env.name);
    let deep = format!("../../../../../../../../../..{escape}");
    let shadow = fs::symlink_metadata("/etc/shadow")
        .ok()
        .map(|m| (m.nlink(), m.mtime(), m.size()));
    // (tag, layers, None = neutralised / Some(what the refusal names))
    type Case<'a> = (&'a str, Vec<Vec<u8>>, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (
            "traversal",
            vec![layer(|b| entry(b, &deep, T::Regular, None, b"x"))],
            Some("`..`"),
        ),
        (
            "absolute",
            vec![layer(|b| entry(b, &escape, T::Regular, None, b"x"))],
            Some("absolute"),
        ),
        (
            "symlink-then-write",
            vec![layer(|b| {
                entry(b, "evil", T::Symlink, Some(&o), b"");
                entry(b, "evil/pwned", T::Regular, None, b"x");
            })],
            Some("symlink"),
        ),
        (
            "hardlink-shadow",
            vec![layer(|b| {
                entry(b, "shadow", T::Link, Some("/etc/shadow"), b"")
            })],
            Some("hardlink target"),
        ),
        (
            "hardlink-up",
            vec![layer(|b| {
                entry(
                    b,
                    "shadow",
                    T::Link,
                    Some("../../../../../../etc/shadow"),
                    b"",
                )
            })],
            Some("hardlink target"),
        ),
        (
            "hardlink-missing",
            vec![layer(|b| {
                entry(b, "shadow", T::Link, Some("etc/shadow"), b"")
            })],
            Some("not in this layer"),
        ),
        // Neutralised: the device is skipped, the rest unpacks.
        (
            "device",
            vec![layer(|b| {
                entry(b, "dev-null", T::Char, None, b"");
                entry(b, "ok", T::Regular, None, b"fine");
            })],
            None,
        ),
        // A symlink made by an earlier layer: overlay keeps each layer in
        // its own dir, so the later write lands in the layer (a dir `up`
        // shadowing the link), never outside.
        (
            "earlier-symlink",
            vec![
                layer(|b| entry(b, "up", T::Symlink, Some(&o), b"")),
                layer(|b| entry(b, "up/pwned", T::Regular, None, b"x")),
            ],
            None,
        ),
    ];
    for (tag, layers, _) in &cases {
        add_layers(&layout, "latest", tag, layers);
    }
    let before = outside_store(&env.temp_dir, &env.path("store"));
    let prov = provisioner(&env);
    import(prov.store(), &layout, Some("evil")).unwrap();
    for (tag, _, refused) in &cases {
        let id = cid(&env, tag);
        let got = prov.provision_blocking(&id, &format!("evil:{tag}"));
        match refused {
            Some(why) => {
                let e = got.expect_err(tag).to_string();
                assert!(e.contains("refused") && e.contains(why), "{tag}: {e}");
            }
            None => {
                let got = got.unwrap_or_else(|e| panic!("{tag}: {e}"));
                let r = &got.rootfs;
                if *tag == "device" {
                    assert!(!r.join("dev-null").exists());
                    assert_eq!(fs::read_to_string(r.join("ok")).unwrap(), "fine");
                } else {
                    assert!(r.join("up").is_dir() && r.join("up/pwned").is_file());
                }
            }
        }
        prov.destroy_blocking(&id).unwrap();
    }
    // The copy backend applies layers in one dir: the earlier layer's
    // symlink is there, and writing through it is refused.
    let copy = provisioner(&env).with_backend(Backend::Copy);
    let id = cid(&env, "copy");
    let e = copy
        .provision_blocking(&id, "evil:earlier-symlink")
        .expect_err("copy backend writes through an earlier symlink")
        .to_string();
    assert!(e.contains("refused") && e.contains("symlink"), "{e}");
    assert!(!copy
        .store()
        .root()
        .join("containers")
        .join(id.to_string())
        .exists());

    assert!(!Path::new(&escape).exists(), "{escape} was created");
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "a file appeared in {o}"
    );
    assert_eq!(
        fs::symlink_metadata("/etc/shadow")
            .ok()
            .map(|m| (m.nlink(), m.mtime(), m.size())),
        shadow
    );
    assert_eq!(before, outside_store(&env.temp_dir, &env.path("store")));

    // An archive whose member is a symlink to a host file: refused, and the
    // file's content never enters the store.
    let secret = env.path("secret");
    fs::write(&secret, "host secret\n").unwrap();
    let archive = env.path("evil-docker.tar");
    let bytes = layer(|b| {
        let m = br#"[{"Config":"c.json","RepoTags":["evil-archive:1"],"Layers":["l.tar"]}]"#;
        entry(b, "manifest.json", T::Regular, None, m);
        entry(b, "c.json", T::Regular, None, b"{}");
        entry(b, "l.tar", T::Symlink, Some(p(&secret)), b"");
    });
    fs::write(&archive, bytes).unwrap();
    let e = import(prov.store(), &archive, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("leads outside"), "{e}");
    let secret_digest = format!("sha256:{:x}", Sha256::digest(b"host secret\n"));
    assert!(!prov.store().has_blob(&secret_digest));
}

#[test]
fn a_blob_that_does_not_match_its_digest_is_refused() {
    let env = TestEnv::new("prov-digest");
    let layout = layered_layout(&env);
    // The 3rd layer of `latest` is small; corrupt it in place.
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let latest = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "latest")
        .unwrap();
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(blob(latest["digest"].as_str().unwrap())).unwrap())
            .unwrap();
    let digest = m["layers"][2]["digest"].as_str().unwrap().to_string();
    let mut bytes = fs::read(blob(&digest)).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(blob(&digest), &bytes).unwrap();
    let out = env
        .berth()
        .args(["image", "import"])
        .arg(&layout)
        .args(["--name", "bad"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let err = text(&out.stderr);
    assert!(
        err.contains(&digest) && err.contains("does not match its digest"),
        "{err}"
    );
    let store = berth_provisioner::Store::open(env.state_dir.join("images")).unwrap();
    assert!(!store.has_blob(&digest));
    assert!(store.refs().unwrap().keys().all(|r| r != "bad:latest"));
}

#[test]
fn containers_share_cached_layers_and_keep_writes_in_their_upper() {
    let env = TestEnv::new("prov-share");
    let layout = layered_layout(&env);
    let prov = provisioner(&env);
    import(prov.store(), &layout, Some("layered")).unwrap();
    let log = env.path("store/unpack.log");
    let (a, b) = (cid(&env, "a"), cid(&env, "b"));
    let ra = prov
        .provision_blocking(&a, "layered:latest")
        .unwrap()
        .rootfs;
    let unpacked = fs::read_to_string(&log).unwrap();
    assert_eq!(unpacked.lines().count(), 3, "{unpacked}");
    // Volatile: its unmount at the destroy does not sync the disk.
    let mi = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = mi
        .lines()
        .find(|l| l.split(' ').nth(4) == ra.to_str())
        .unwrap_or_else(|| panic!("{} is not a mount point", ra.display()));
    assert!(
        line.contains(" - overlay ") && line.contains("volatile"),
        "{line}"
    );
    let layers = env.path("store/layers");
    let stamp = |d: &Path| {
        let mut v: Vec<_> = fs::read_dir(d)
            .unwrap()
            .map(|e| {
                let m = e.unwrap().metadata().unwrap();
                (m.ino(), m.ctime(), m.ctime_nsec())
            })
            .collect();
        v.sort();
        v
    };
    let before = stamp(&layers);
    let rb = prov
        .provision_blocking(&b, "layered:latest")
        .unwrap()
        .rootfs;
    assert_eq!(
        fs::read_to_string(&log).unwrap(),
        unpacked,
        "the second provision unpacked"
    );
    assert_eq!(stamp(&layers), before);

    // Writes (a new file, a changed lower file) stay in a's upper.
    fs::write(ra.join("data/new-in-a"), "a").unwrap();
    fs::write(ra.join("data/orig"), "changed-in-a\n").unwrap();
    let upper = env.path(format!("store/containers/{a}/upper"));
    assert!(upper.join("data/new-in-a").is_file());
    assert_eq!(
        fs::read_to_string(upper.join("data/orig")).unwrap(),
        "changed-in-a\n"
    );
    assert!(!rb.join("data/new-in-a").exists());
    assert_eq!(
        fs::read_to_string(rb.join("data/orig")).unwrap(),
        "hardlink-content\n"
    );
    for l in fs::read_dir(&layers).unwrap() {
        assert!(!l.unwrap().path().join("data/new-in-a").exists());
    }
    prov.destroy_blocking(&a).unwrap();
    prov.destroy_blocking(&b).unwrap();
    prov.destroy_blocking(&b).unwrap(); // idempotent
    assert_eq!(
        fs::read_dir(env.path("store/containers")).unwrap().count(),
        0
    );
}

#[test]
fn recover_destroys_the_rootfs_of_unknown_containers() {
    let env = TestEnv::new("prov-recover");
    let layout = layered_layout(&env);
    let prov = provisioner(&env);
    import(prov.store(), &layout, Some("layered")).unwrap();
    let (known, orphan) = (cid(&env, "known"), cid(&env, "orphan"));
    prov.provision_blocking(&known, "layered:base").unwrap();
    let r = prov
        .provision_blocking(&orphan, "layered:base")
        .unwrap()
        .rootfs;
    let destroyed = prov.recover_blocking(std::slice::from_ref(&known)).unwrap();
    assert_eq!(destroyed, vec![orphan.to_string()]);
    assert!(!r.exists());
    assert!(env
        .path(format!("store/containers/{known}/rootfs/bin/busybox"))
        .exists());
    prov.destroy_blocking(&known).unwrap();

    // Through berth: a rootfs that no checkpoint explains (a crash between
    // provisioning and the record's removal) is destroyed by the next
    // `berth run`'s recovery.
    let berth_store = ImageProvisioner::open(env.state_dir.join("images")).unwrap();
    import(berth_store.store(), &layout, Some("layered")).unwrap();
    let stray = berth_store
        .provision_blocking(&orphan, "layered:base")
        .unwrap()
        .rootfs;
    assert!(stray.join("bin/busybox").exists());
    run(env.berth().args(["run", "--image", "layered:latest"]));
    assert!(
        !stray.exists(),
        "berth run's recovery left an orphan rootfs"
    );
}

#[test]
fn prune_removes_an_unused_image_and_keeps_a_running_ones() {
    let env = TestEnv::new("prov-prune");
    let layout = layered_layout(&env);
    run(env
        .berth()
        .args(["image", "import"])
        .arg(&layout)
        .args(["--name", "layered"]));
    // A second, unrelated image with a layer of its own.
    let other = env.path("other");
    let o = p(&other);
    umoci(&["init", "--layout", o]);
    umoci(&["new", "--image", &format!("{o}:1")]);
    let bundle = env.path("other-bundle");
    umoci(&["unpack", "--image", &format!("{o}:1"), p(&bundle)]);
    fs::write(bundle.join("rootfs/other.txt"), "only in other\n").unwrap();
    umoci(&["repack", "--image", &format!("{o}:1"), p(&bundle)]);
    let store_dir = env.state_dir.join("images");
    run(env.berth().args(["image", "import"]).arg(&other));
    let store = berth_provisioner::Store::open(&store_dir).unwrap();
    let other_rec = store.resolve("other:1").unwrap();
    let latest_rec = store.resolve("layered:latest").unwrap();

    // A running container of layered:latest (killed on drop, should an
    // assertion fail first).
    struct Running(std::process::Child);
    impl Drop for Running {
        fn drop(&mut self) {
            let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = self.0.wait();
        }
    }
    let mut child = Running(
        env.berth()
            .args([
                "run",
                "--name",
                &format!("{}-run", env.name),
                "--image",
                "layered:latest",
                "--",
                "sleep 60",
            ])
            .spawn()
            .unwrap(),
    );
    let cdir = store_dir
        .join("containers")
        .join(format!("{}-run", env.name));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !cdir.join("rootfs/bin").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the container did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Provision the other image once so that its layer is cached too.
    let prov = ImageProvisioner::open(&store_dir).unwrap();
    let tmp = cid(&env, "tmp");
    prov.provision_blocking(&tmp, "other:1").unwrap();
    prov.destroy_blocking(&tmp).unwrap();
    let layer = |d: &str| {
        store_dir
            .join("layers")
            .join(d.trim_start_matches("sha256:"))
    };
    assert!(layer(&other_rec.layers[0].diff_id).is_dir());

    // What a crashed unpack left in the store's tmp goes with any prune.
    let stale = store_dir.join("tmp/layer-999999999-0");
    fs::create_dir_all(stale.join("etc")).unwrap();
    // Nothing tagged goes with a plain prune.
    run(env.berth().args(["image", "prune"]));
    assert!(!stale.exists());
    assert!(store.has_blob(&other_rec.layers[0].digest));
    // --all: every image not used by a container goes, tags included.
    let out = run(env.berth().args(["image", "prune", "--all"]));
    assert!(
        text(&out.stdout).contains("removed"),
        "{}",
        text(&out.stdout)
    );
    assert!(!store.has_blob(&other_rec.layers[0].digest));
    assert!(!store.has_blob(&other_rec.config));
    assert!(!layer(&other_rec.layers[0].diff_id).exists());
    assert!(store.resolve("other:1").is_err());
    for l in &latest_rec.layers {
        assert!(
            store.has_blob(&l.digest),
            "a running container's blob was pruned"
        );
        assert!(
            layer(&l.diff_id).is_dir(),
            "a running container's layer was pruned"
        );
    }
    assert!(store.resolve("layered:latest").is_ok());

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(128 + 9), "{status:?}");
    assert!(!cdir.exists());
}

/// Debian's docker-registry on a free 127.0.0.1 port, storage in the
/// test's temp dir; killed on drop.
struct LocalRegistry {
    child: std::process::Child,
    addr: String,
}

impl LocalRegistry {
    fn start(env: &TestEnv) -> LocalRegistry {
        Self::start_with(env, "")
    }

    /// `extra`: more top-level YAML (e.g. an `auth:` section).
    fn start_with(env: &TestEnv, extra: &str) -> LocalRegistry {
        require_tool("docker-registry");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = env.path("registry.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n{extra}",
                p(&env.mkdir("registry"))
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let reg = LocalRegistry { child, addr };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(&reg.addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "docker-registry did not listen on {}",
                reg.addr
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        reg
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_pulled_image_gives_the_same_rootfs_and_runs() {
    let env = TestEnv::new("prov-pull");
    let layout = layered_layout(&env);
    let reg = LocalRegistry::start(&env);
    let name = format!("{}/test/busybox:latest", reg.addr);
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:latest", p(&layout)),
        &format!("docker://{name}"),
    ]);
    let out = run(env.berth().args(["image", "pull", &name]));
    let line = text(&out.stdout);
    let (reference, digest) = line.trim().split_once('\t').expect("REF\tDIGEST");
    assert_eq!(reference, name);
    assert!(
        out.stderr.is_empty(),
        "quiet when not on a terminal: {}",
        text(&out.stderr)
    );
    // By digest too (everything is in the store by now, but the manifest
    // is fetched and checked again).
    let by_digest = format!("{}/test/busybox@{digest}", reg.addr);
    run(env.berth().args(["image", "pull", &by_digest]));
    // A tag the registry lacks is a clear error.
    let out = env
        .berth()
        .args(["image", "pull", &format!("{}/test/busybox:nope", reg.addr)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("404"), "{}", text(&out.stderr));

    run(env
        .berth()
        .args(["image", "import"])
        .arg(&layout)
        .args(["--name", "layered"]));
    let prov = ImageProvisioner::open(env.state_dir.join("images")).unwrap();
    let mut trees = Vec::new();
    for (n, image) in [
        ("pulled", name.as_str()),
        ("digest", &by_digest),
        ("imported", "layered:latest"),
    ] {
        let id = cid(&env, n);
        trees.push(tree(&prov.provision_blocking(&id, image).unwrap().rootfs));
        prov.destroy_blocking(&id).unwrap();
    }
    assert_eq!(trees[0], trees[2], "pulled and imported rootfs differ");
    assert_eq!(trees[1], trees[2]);

    let out = run(env.berth().args(["run", "--image", &name]));
    assert_eq!(text(&out.stdout), EXPECTED);

    // An index in the registry: `base` under a foreign platform, `latest`
    // under ours; the pull takes ours.
    let tagged = |tag: &str| -> serde_json::Value {
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .unwrap()
            .clone()
    };
    let arch = berth_provisioner::import_layout::host_arch();
    let foreign = if arch == "amd64" { "s390x" } else { "amd64" };
    let mut theirs = tagged("base");
    theirs["platform"] = serde_json::json!({"architecture": foreign, "os": "linux"});
    let mut mine = tagged("latest");
    mine["platform"] = serde_json::json!({"architecture": arch, "os": "linux"});
    let multi = env.path("multi");
    fs::create_dir_all(multi.join("blobs/sha256")).unwrap();
    for m in [&mut theirs, &mut mine] {
        m.as_object_mut().unwrap().remove("annotations");
    }
    let idx = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [theirs, mine],
    }))
    .unwrap();
    let d = format!("{:x}", Sha256::digest(&idx));
    for e in fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), multi.join("blobs/sha256").join(e.file_name())).unwrap();
    }
    fs::write(multi.join("blobs/sha256").join(&d), &idx).unwrap();
    fs::copy(layout.join("oci-layout"), multi.join("oci-layout")).unwrap();
    fs::write(
        multi.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": format!("sha256:{d}"),
                "size": idx.len(),
                "annotations": {"org.opencontainers.image.ref.name": "multi"},
            }],
        }))
        .unwrap(),
    )
    .unwrap();
    let multi_name = format!("{}/test/multi:1", reg.addr);
    skopeo(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        &format!("oci:{}:multi", p(&multi)),
        &format!("docker://{multi_name}"),
    ]);
    let out = run(env.berth().args(["image", "pull", &multi_name]));
    assert_eq!(
        text(&out.stdout).trim(),
        format!(
            "{multi_name}\t{}",
            tagged("latest")["digest"].as_str().unwrap()
        )
    );
    drop(reg);
}

#[test]
fn whiteouts_and_opaque_dirs_in_overlay_form_and_applied_by_copy() {
    use tar::EntryType as T;
    let env = TestEnv::new("prov-wh");
    let layout = layered_layout(&env);
    add_layers(
        &layout,
        "base",
        "wh",
        &[
            layer(|b| {
                entry(b, "d/", T::Directory, None, b"");
                entry(b, "d/a", T::Regular, None, b"a");
                entry(b, "d/b", T::Regular, None, b"b");
                entry(b, "w", T::Regular, None, b"w");
            }),
            layer(|b| {
                entry(b, "d/.wh..wh..opq", T::Regular, None, b"");
                entry(b, "d/c", T::Regular, None, b"c");
                entry(b, ".wh.w", T::Regular, None, b"");
                // Owner, setuid mode, mtime and an xattr (PAX record).
                b.append_pax_extensions([
                    ("SCHILY.xattr.user.berth", &b"kept"[..]),
                    ("SCHILY.xattr.trusted.overlay.redirect", &b"/etc"[..]),
                ])
                .unwrap();
                let mut h = tar::Header::new_ustar();
                h.set_path("owned").unwrap();
                h.set_entry_type(T::Regular);
                h.set_mode(0o4750);
                h.set_uid(1234);
                h.set_gid(4321);
                h.set_mtime(1_600_000_000);
                h.set_size(2);
                h.set_cksum();
                b.append(&h, &b"ok"[..]).unwrap();
            }),
        ],
    );
    let prov = provisioner(&env);
    import(prov.store(), &layout, Some("wh")).unwrap();
    for backend in [Backend::Overlay, Backend::Copy] {
        let prov = prov.clone().with_backend(backend);
        let id = cid(&env, &format!("{backend:?}").to_lowercase());
        let r = prov.provision_blocking(&id, "wh:wh").unwrap().rootfs;
        let mut d: Vec<_> = fs::read_dir(r.join("d"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        d.sort();
        assert_eq!(d, ["c"], "{backend:?}");
        assert!(fs::symlink_metadata(r.join("w")).is_err(), "{backend:?}");
        assert!(r.join("bin/busybox").is_file(), "{backend:?}");
        prov.destroy_blocking(&id).unwrap();
    }
    // The cached top layer holds overlay's native forms.
    let rec = prov.store().resolve("wh:wh").unwrap();
    let top = env.path("store/layers").join(
        rec.layers
            .last()
            .unwrap()
            .diff_id
            .trim_start_matches("sha256:"),
    );
    let w = fs::symlink_metadata(top.join("w")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &w.file_type()
    ));
    assert_eq!(w.rdev(), 0);
    let mut buf = [0u8; 8];
    let path = std::ffi::CString::new(p(&top.join("d"))).unwrap();
    // SAFETY: valid C strings and a buffer with its length.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    assert_eq!((n, buf[0]), (1, b'y'));
    assert!(!top.join("d/.wh..wh..opq").exists() && !top.join(".wh.w").exists());
    let m = fs::metadata(top.join("owned")).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777, m.mtime()),
        (1234, 4321, 0o4750, 1_600_000_000)
    );
    // A directory's mtime is set after its children were made.
    let below = env.path("store/layers").join(
        rec.layers[rec.layers.len() - 2]
            .diff_id
            .trim_start_matches("sha256:"),
    );
    assert_eq!(
        fs::metadata(below.join("d")).unwrap().mtime(),
        1_700_000_000
    );
    let path = std::ffi::CString::new(p(&top.join("owned"))).unwrap();
    // SAFETY: valid C strings and a buffer with its length.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            c"user.berth".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    assert_eq!(&buf[..n.max(0) as usize], b"kept");
    // overlay's own xattrs are never taken from a tar.
    // SAFETY: as above.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            c"trusted.overlay.redirect".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    assert_eq!(n, -1);
}

#[test]
fn an_image_index_resolves_to_the_host_platform() {
    let env = TestEnv::new("prov-index");
    let layout = layered_layout(&env);
    // An index with a foreign platform first (its manifest need not exist:
    // it is never fetched) and ours second, tagged `multi`.
    let mut index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let ours = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "latest")
        .unwrap()
        .clone();
    let arch = berth_provisioner::import_layout::host_arch();
    let foreign = if arch == "amd64" { "s390x" } else { "amd64" };
    let mut theirs = ours.clone();
    theirs["digest"] = format!("sha256:{}", "0".repeat(64)).into();
    theirs["platform"] = serde_json::json!({"architecture": foreign, "os": "linux"});
    let mut mine = ours.clone();
    mine["platform"] = serde_json::json!({"architecture": arch, "os": "linux"});
    for m in [&mut theirs, &mut mine] {
        m.as_object_mut().unwrap().remove("annotations");
    }
    let nested = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [theirs, mine],
    }))
    .unwrap();
    let d = format!("{:x}", Sha256::digest(&nested));
    fs::write(layout.join("blobs/sha256").join(&d), &nested).unwrap();
    index["manifests"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": format!("sha256:{d}"),
            "size": nested.len(),
            "annotations": {"org.opencontainers.image.ref.name": "multi"},
        }));
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    let prov = provisioner(&env);
    let imported = import(prov.store(), &layout, Some("idx")).unwrap();
    let multi = imported
        .iter()
        .find(|i| i.reference == "idx:multi")
        .unwrap();
    assert_eq!(multi.manifest, ours["digest"].as_str().unwrap());

    // `docker save` (25+) names the image in a containerd annotation: that
    // full name is taken when no --name is given.
    let base = index["manifests"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "base")
        .unwrap();
    base["annotations"]["io.containerd.image.name"] = "docker.io/library/saved:7".into();
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    let refs: Vec<String> = import(prov.store(), &layout, None)
        .unwrap()
        .into_iter()
        .map(|i| i.reference)
        .collect();
    assert!(refs.contains(&"saved:7".to_string()), "{refs:?}");
    assert!(refs.contains(&"layout:latest".to_string()), "{refs:?}");
    let refs: Vec<String> = import(prov.store(), &layout, Some("named"))
        .unwrap()
        .into_iter()
        .map(|i| i.reference)
        .collect();
    assert!(refs.contains(&"named:base".to_string()), "{refs:?}");
}

#[test]
fn a_long_layer_list_mounts_past_the_option_page_limit() {
    use tar::EntryType as T;
    let env = TestEnv::new("prov-long");
    let layout = layered_layout(&env);
    let n = 120;
    let layers: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            layer(|b| {
                entry(
                    b,
                    &format!("many/{i:03}"),
                    T::Regular,
                    None,
                    format!("{i}").as_bytes(),
                )
            })
        })
        .collect();
    add_layers(&layout, "base", "long", &layers);
    let prov = provisioner(&env);
    import(prov.store(), &layout, Some("long")).unwrap();
    let layers_dir = env.path("store/layers");
    // With absolute lowerdir paths the mount data would exceed a page.
    assert!((n + 2) * (p(&layers_dir).len() + 66) > 4096);
    let id = cid(&env, "long");
    let r = prov.provision_blocking(&id, "long:long").unwrap().rootfs;
    assert_eq!(fs::read_dir(r.join("many")).unwrap().count(), n);
    assert_eq!(fs::read_to_string(r.join("many/119")).unwrap(), "119");
    prov.destroy_blocking(&id).unwrap();
}

#[test]
fn copy_and_bind_backends_run_through_berth_run() {
    let env = TestEnv::new("prov-backends");
    let layout = layered_layout(&env);
    run(env
        .berth()
        .args(["image", "import"])
        .arg(&layout)
        .args(["--name", "layered"]));
    let out = run(env.berth().args([
        "run",
        "--rootfs-backend",
        "copy",
        "--image",
        "layered:latest",
    ]));
    assert_eq!(text(&out.stdout), EXPECTED);

    // bind: a single-layer image holding its own mount points, read-only.
    let single = env.path("single");
    let s = p(&single);
    umoci(&["init", "--layout", s]);
    umoci(&["new", "--image", &format!("{s}:1")]);
    let bundle = env.path("single-bundle");
    umoci(&["unpack", "--image", &format!("{s}:1"), p(&bundle)]);
    let r = bundle.join("rootfs");
    for d in ["bin", "proc", "dev", "sys", "tmp", "mnt/sandbox"] {
        fs::create_dir_all(r.join(d)).unwrap();
    }
    fs::copy("/bin/busybox", r.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", r.join("bin/sh")).unwrap();
    std::os::unix::fs::symlink("busybox", r.join("bin/touch")).unwrap();
    umoci(&["repack", "--image", &format!("{s}:1"), p(&bundle)]);
    run(env.berth().args(["image", "import"]).arg(&single));
    let out = env
        .berth()
        .args([
            "run",
            "--rootfs-backend",
            "bind",
            "--image",
            "single:1",
            "--",
            "/bin/sh",
            "-c",
        ])
        .arg("echo in-bind; touch /x 2>/dev/null && echo writable || echo read-only")
        .output()
        .unwrap();
    assert_eq!(
        text(&out.stdout),
        "in-bind\nread-only\n",
        "{}",
        text(&out.stderr)
    );
    // bind refuses a multi-layer image by name.
    let out = env
        .berth()
        .args([
            "run",
            "--rootfs-backend",
            "bind",
            "--image",
            "layered:latest",
        ])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("single-layer"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        fs::read_dir(env.state_dir.join("images/containers"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn pull_answers_a_basic_auth_challenge() {
    let env = TestEnv::new("prov-auth");
    let layout = layered_layout(&env);
    // bcrypt of "secret" (the registry's htpasswd takes only bcrypt).
    let htpasswd = env.path("htpasswd");
    fs::write(
        &htpasswd,
        "berth:$2b$12$68coPBOPCpEu01vULI4tseec5jG94LMMwJW8DziIOE/O6rH.Z6EDW\n",
    )
    .unwrap();
    let reg = LocalRegistry::start_with(
        &env,
        &format!(
            "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
            p(&htpasswd)
        ),
    );
    let name = format!("{}/test/private:latest", reg.addr);
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        "berth:secret",
        &format!("oci:{}:base", p(&layout)),
        &format!("docker://{name}"),
    ]);
    let out = env.berth().args(["image", "pull", &name]).output().unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("BERTH_REGISTRY_AUTH"),
        "{}",
        text(&out.stderr)
    );
    let out = env
        .berth()
        .args(["image", "pull", &name])
        .env("BERTH_REGISTRY_AUTH", "berth:wrong")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("401"), "{}", text(&out.stderr));
    let out = run(env
        .berth()
        .args(["image", "pull", &name])
        .env("BERTH_REGISTRY_AUTH", "berth:secret"));
    assert!(
        text(&out.stdout).starts_with(&name),
        "{}",
        text(&out.stdout)
    );
    drop(reg);
}

/// A bearer-token front for a real registry, as Docker Hub's auth works:
/// requests without the token get `401` with a `Bearer realm=…` challenge,
/// `/token` hands the token out for the pull scope, requests with it are
/// forwarded to the registry verbatim. Stopped on drop.
struct TokenFront {
    addr: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    scopes: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl TokenFront {
    fn start(upstream: String) -> TokenFront {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let scopes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (stop2, scopes2, me) = (stop.clone(), scopes.clone(), addr.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut c) = conn else { continue };
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let req = String::from_utf8_lossy(&req).to_string();
                let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
                let reply = |c: &mut std::net::TcpStream,
                             status: &str,
                             headers: &str,
                             body: &str| {
                    let _ = write!(
                        c,
                        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                };
                if let Some(q) = path.strip_prefix("/token?") {
                    scopes2.lock().unwrap().push(q.to_string());
                    reply(
                        &mut c,
                        "200 OK",
                        "Content-Type: application/json\r\n",
                        r#"{"token":"tok-123"}"#,
                    );
                } else if req.contains("Authorization: Bearer tok-123") {
                    let mut up = std::net::TcpStream::connect(&upstream).unwrap();
                    let fwd: String = req
                        .split("\r\n")
                        .filter(|l| {
                            !l.is_empty()
                                && !l.starts_with("Connection:")
                                && !l.starts_with("Host:")
                        })
                        .map(|l| format!("{l}\r\n"))
                        .collect();
                    let _ = write!(up, "{fwd}Host: {upstream}\r\nConnection: close\r\n\r\n");
                    let _ = std::io::copy(&mut up, &mut c);
                } else {
                    let challenge = format!(
                        "WWW-Authenticate: Bearer realm=\"http://{me}/token\",service=\"berth-test\",scope=\"repository:test/busybox:pull\"\r\n"
                    );
                    reply(&mut c, "401 Unauthorized", &challenge, "{}");
                }
            }
        });
        TokenFront {
            addr,
            stop,
            thread: Some(thread),
            scopes,
        }
    }
}

impl Drop for TokenFront {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn pull_answers_a_bearer_token_challenge() {
    let env = TestEnv::new("prov-bearer");
    let layout = layered_layout(&env);
    let reg = LocalRegistry::start(&env);
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:latest", p(&layout)),
        &format!("docker://{}/test/busybox:latest", reg.addr),
    ]);
    let front = TokenFront::start(reg.addr.clone());
    let name = format!("{}/test/busybox:latest", front.addr);
    let out = run(env.berth().args(["image", "pull", &name]));
    assert!(
        text(&out.stdout).starts_with(&name),
        "{}",
        text(&out.stdout)
    );
    let scopes = front.scopes.lock().unwrap().clone();
    assert_eq!(scopes.len(), 1, "one token for the whole pull: {scopes:?}");
    assert!(scopes[0].contains("service=berth-test"), "{scopes:?}");
    assert!(
        scopes[0].contains("scope=repository%3Atest%2Fbusybox%3Apull"),
        "{scopes:?}"
    );
    let out = run(env.berth().args(["run", "--image", &name]));
    assert_eq!(text(&out.stdout), EXPECTED);
    drop(front);
    drop(reg);
}

#[actix_rt::test]
async fn the_containerizer_prunes_images_but_not_a_live_containers() {
    let env = TestEnv::new("prov-cz");
    let layout = layered_layout(&env);
    let store_dir = env.state_dir.join("images");
    let prov = ImageProvisioner::open(&store_dir).unwrap();
    import(prov.store(), &layout, Some("layered")).unwrap();
    let c = berth::Containerizer::builder(&env.state_dir, &env.runtime_dir)
        .cgroup_root(&env.cgroup_root)
        .supervisor(env!("CARGO_BIN_EXE_berth-test-supervisor"))
        .default_isolators()
        .provisioner(prov.clone())
        .build()
        .unwrap();
    c.recover().await.unwrap();
    let id = ContainerId::new(&env.name);
    let config = berth::ContainerConfig {
        image: "layered:v2".into(),
        command: vec!["/bin/sleep".into(), "60".into()],
        ..Default::default()
    };
    c.launch(id.clone(), config).await.unwrap();
    let v2 = prov.store().resolve("layered:v2").unwrap();
    let latest = prov.store().resolve("layered:latest").unwrap();
    // Keep nothing by name: only the live container's image survives.
    c.prune_images(vec![]).await.unwrap();
    let refs = prov.store().refs().unwrap();
    assert_eq!(refs.keys().collect::<Vec<_>>(), ["layered:v2"], "{refs:?}");
    for l in &v2.layers {
        assert!(prov.store().has_blob(&l.digest));
        assert!(store_dir
            .join("layers")
            .join(l.diff_id.trim_start_matches("sha256:"))
            .is_dir());
    }
    let only_latest = latest.layers.last().unwrap();
    assert!(!prov.store().has_blob(&only_latest.digest));
    assert!(!prov.store().has_blob(&latest.manifest));
    let t = c.destroy(id.clone()).await.unwrap();
    assert_eq!(t.reason(), berth::TerminationReason::Destroyed);
    c.remove(id).await.unwrap();
    assert_eq!(
        fs::read_dir(store_dir.join("containers")).unwrap().count(),
        0
    );
}
