//! The images every peer runs, built here with umoci and skopeo from
//! Debian's busybox-static: one small busybox image (for the lifecycle,
//! throughput, recovery and memory figures) and a larger generated one
//! (5 layers, mixed file sizes) for the unpack figures.

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn sh(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn busybox_rootfs(r: &Path) -> Result<()> {
    for d in ["bin", "etc", "tmp", "proc", "dev", "sys"] {
        fs::create_dir_all(r.join(d))?;
    }
    fs::copy("/bin/busybox", r.join("bin/busybox"))
        .context("busybox-static at /bin/busybox (apt-get install busybox-static)")?;
    for a in ["sh", "true", "sleep", "cat", "ls", "echo"] {
        let link = r.join("bin").join(a);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", link)?;
        }
    }
    fs::write(
        r.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    fs::write(r.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    fs::set_permissions(r.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    Ok(())
}

/// The busybox image as an OCI layout at `<dir>/busybox`, tag `bench`.
pub fn busybox_layout(dir: &Path) -> Result<PathBuf> {
    let layout = dir.join("busybox");
    let l = p(&layout);
    sh(Command::new("umoci").args(["init", "--layout", l]))?;
    sh(Command::new("umoci").args(["new", "--image", &format!("{l}:bench")]))?;
    let bundle = dir.join("busybox-bundle");
    sh(Command::new("umoci").args(["unpack", "--image", &format!("{l}:bench"), p(&bundle)]))?;
    busybox_rootfs(&bundle.join("rootfs"))?;
    sh(Command::new("umoci").args(["repack", "--image", &format!("{l}:bench"), p(&bundle)]))?;
    sh(Command::new("umoci").args([
        "config",
        "--image",
        &format!("{l}:bench"),
        "--config.cmd",
        "/bin/true",
        "--config.env",
        "PATH=/bin",
    ]))?;
    fs::remove_dir_all(&bundle)?;
    Ok(layout)
}

/// The busybox image as a docker-archive, for `ctr images import`.
pub fn docker_archive(layout: &Path, dir: &Path) -> Result<PathBuf> {
    let out = dir.join("busybox-docker.tar");
    sh(Command::new("skopeo").args([
        "copy",
        &format!("oci:{}:bench", p(layout)),
        &format!(
            "docker-archive:{}:docker.io/library/berth-bench:latest",
            p(&out)
        ),
    ]))?;
    Ok(out)
}

/// A runc bundle of the busybox image running `args`, with the namespaces
/// berth gives a container (pid, mount, uts, ipc; the host network).
pub fn runc_bundle(layout: &Path, dir: &Path, name: &str, args: &[&str]) -> Result<PathBuf> {
    let bundle = dir.join(name);
    sh(Command::new("umoci").args([
        "unpack",
        "--image",
        &format!("{}:bench", p(layout)),
        p(&bundle),
    ]))?;
    let cfg_path = bundle.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_slice(&fs::read(&cfg_path)?)?;
    cfg["process"]["args"] = serde_json::json!(args);
    cfg["process"]["terminal"] = false.into();
    let ns = cfg["linux"]["namespaces"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    cfg["linux"]["namespaces"] = ns
        .into_iter()
        .filter(|n| ["pid", "mount", "uts", "ipc"].contains(&n["type"].as_str().unwrap_or("")))
        .collect();
    fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg)?)?;
    Ok(bundle)
}

/// A larger image: 5 layers of about `mb`/5 MiB each, mixed file sizes
/// (many small files, some large), pseudo-random content.
pub fn big_layout(dir: &Path, mb: usize) -> Result<(PathBuf, u64)> {
    let layout = dir.join("big");
    let l = p(&layout);
    sh(Command::new("umoci").args(["init", "--layout", l]))?;
    sh(Command::new("umoci").args(["new", "--image", &format!("{l}:bench")]))?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let per_layer = (mb << 20) / 5;
    let mut total = 0u64;
    for layer in 0..5 {
        let bundle = dir.join(format!("big-bundle-{layer}"));
        sh(Command::new("umoci").args(["unpack", "--image", &format!("{l}:bench"), p(&bundle)]))?;
        if layer == 0 {
            // So the image runs: busybox and its links in the first layer.
            busybox_rootfs(&bundle.join("rootfs"))?;
            total += fs::metadata("/bin/busybox")?.len();
        }
        let r = bundle.join("rootfs").join(format!("layer{layer}"));
        let mut written = 0;
        let mut n = 0;
        while written < per_layer {
            let sub = r.join(format!("d{}", n % 64));
            fs::create_dir_all(&sub)?;
            // 90% small files (1-16 KiB), 10% large (256 KiB - 2 MiB).
            let size = if rng.gen_bool(0.9) {
                rng.gen_range(1024..16 * 1024)
            } else {
                rng.gen_range(256 * 1024..2 * 1024 * 1024)
            };
            let mut buf = vec![0u8; size];
            // Half compressible text, half random bytes.
            if n % 2 == 0 {
                rng.fill(&mut buf[..]);
            } else {
                for (i, b) in buf.iter_mut().enumerate() {
                    *b = b"berth bench layer text "[i % 23];
                }
            }
            fs::write(sub.join(format!("f{n}")), &buf)?;
            written += size;
            n += 1;
        }
        total += written as u64;
        sh(Command::new("umoci").args(["repack", "--image", &format!("{l}:bench"), p(&bundle)]))?;
        fs::remove_dir_all(&bundle)?;
    }
    Ok((layout, total))
}
