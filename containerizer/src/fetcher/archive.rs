//! Extracting a fetched archive into the sandbox with the image layers'
//! unpacker, so archives obey the same no-escape rules (no `..`, no
//! absolute paths, no writes through symlinks, no hardlinks outside).
//! Tars are decompressed on the fly; a zip is re-streamed as a tar through
//! a pipe, so it meets the very same checks.

use berth_provisioner::unpack::{sanitize, unpack_at, Whiteouts};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::Path;

const KINDS: &str = ".tar, .tar.gz, .tgz, .tar.xz, .txz, .tar.zst, .tzst and .zip";

/// Extracts the archive `f` (its kind from `name`) into the directory
/// `root` (`into` is its path, for messages only).
pub(super) fn extract(f: File, name: &str, root: OwnedFd, into: &Path) -> Result<(), String> {
    let into = (root, into);
    let has = |exts: &[&str]| exts.iter().any(|e| name.ends_with(e));
    let r = if has(&[".tar.gz", ".tgz"]) {
        untar(flate2::read::GzDecoder::new(f), name, into)
    } else if has(&[".tar.xz", ".txz"]) {
        untar(xz2::read::XzDecoder::new(f), name, into)
    } else if has(&[".tar.zst", ".tzst"]) {
        let d = zstd::stream::read::Decoder::new(f).map_err(|e| format!("zstd: {e}"))?;
        untar(d, name, into)
    } else if has(&[".tar"]) {
        untar(f, name, into)
    } else if has(&[".zip"]) {
        unzip(f, name, into)
    } else {
        return Err(format!(
            "cannot extract {name}: the supported archives are {KINDS}"
        ));
    };
    r.map_err(|e| format!("extract {name}: {e}"))
}

fn untar(r: impl Read, name: &str, into: (OwnedFd, &Path)) -> Result<(), String> {
    unpack_at(
        r,
        into.0,
        into.1,
        Whiteouts::Keep,
        &format!("archive {name}"),
    )
    .map(|_| ())
    .map_err(|e| e.to_string())
}

fn unzip(f: File, name: &str, into: (OwnedFd, &Path)) -> Result<(), String> {
    let (rd, wr) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    let writer = std::thread::spawn(move || zip_to_tar(f, File::from(wr)));
    let unpacked = untar(File::from(rd), name, into);
    // The reader is closed by now, so a writer cut short gets EPIPE and ends.
    let written = writer
        .join()
        .unwrap_or_else(|_| Err("the zip reader panicked".into()));
    match (unpacked, written) {
        (Ok(()), Ok(())) => Ok(()),
        // The zip's own error says more than the unpacker's short read.
        (_, Err(e)) => Err(e),
        (Err(e), Ok(())) => Err(e),
    }
}

/// Writes the zip's entries to `out` as a tar stream.
fn zip_to_tar(f: File, out: File) -> Result<(), String> {
    let mut zip = zip::ZipArchive::new(f).map_err(|e| format!("not a zip: {e}"))?;
    let mut tar = tar::Builder::new(out);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    for i in 0..zip.len() {
        let mut e = zip.by_index(i).map_err(|e| format!("zip entry {i}: {e}"))?;
        let path = e.name().to_string();
        // The layer rules, checked here so the refusal names the rule.
        sanitize(path.as_bytes()).map_err(|why| format!("entry {path:?} refused: {why}"))?;
        let mode = e.unix_mode().unwrap_or(0);
        let mut h = tar::Header::new_gnu();
        h.set_mtime(now);
        h.set_size(0);
        let what = |err: io::Error| format!("zip entry {path:?}: {err}");
        if e.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(if mode & 0o7777 == 0 {
                0o755
            } else {
                mode & 0o7777
            });
            tar.append_data(&mut h, &path, io::empty()).map_err(what)?;
        } else if mode & libc::S_IFMT == libc::S_IFLNK {
            let mut target = String::new();
            e.read_to_string(&mut target).map_err(what)?;
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_mode(0o777);
            tar.append_link(&mut h, &path, &target).map_err(what)?;
        } else {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(if mode & 0o7777 == 0 {
                0o644
            } else {
                mode & 0o7777
            });
            h.set_size(e.size());
            tar.append_data(&mut h, &path, &mut e).map_err(what)?;
        }
    }
    tar.into_inner()
        .map(drop)
        .map_err(|e| format!("zip to tar: {e}"))
}
