//! Run inside a container by the attack suite: tries the runc
//! CVE-2019-5736 ways to write the binary that pid 1 runs (with `--init`,
//! berth's reaper) and prints one `name=result` line per step:
//! - `link`: `readlink /proc/1/exe`;
//! - `open-w`, `write`: open `/proc/1/exe` for writing, and write;
//! - `opath`, `reopen-w`, `rewrite`: open it `O_PATH`, re-open that fd
//!   for writing through `/proc/self/fd/N`, and write.
//!
//! A result is `ok` or the error. Usage: `exe-attack` (no arguments).

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};

fn errno() -> String {
    std::io::Error::last_os_error().to_string()
}

fn open(path: &str, flags: libc::c_int) -> Result<OwnedFd, String> {
    let c = CString::new(path).unwrap();
    // SAFETY: a NUL-terminated path and integer flags.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Writes one byte at the start of the file (what an attacker's payload
/// would begin with); `ok` only if the kernel took it.
fn write_one(fd: OwnedFd) -> String {
    let mut f = std::fs::File::from(fd);
    match f.write_all(b"\x7f") {
        Ok(()) => "ok".into(),
        Err(e) => e.to_string(),
    }
}

fn main() {
    let show = |name: &str, r: &str| println!("{name}={r}");
    match std::fs::read_link("/proc/1/exe") {
        Ok(p) => show("link", &p.to_string_lossy()),
        Err(e) => show("link", &e.to_string()),
    }
    match open("/proc/1/exe", libc::O_WRONLY) {
        Ok(fd) => {
            show("open-w", "ok");
            show("write", &write_one(fd));
        }
        Err(e) => show("open-w", &e),
    }
    match open("/proc/1/exe", libc::O_PATH) {
        Ok(fd) => {
            show("opath", "ok");
            use std::os::fd::AsRawFd;
            let again = format!("/proc/self/fd/{}", fd.as_raw_fd());
            match open(&again, libc::O_WRONLY) {
                Ok(w) => {
                    show("reopen-w", "ok");
                    show("rewrite", &write_one(w));
                }
                Err(e) => show("reopen-w", &e),
            }
        }
        Err(e) => show("opath", &e),
    }
    let _ = std::io::stdout().flush();
}
