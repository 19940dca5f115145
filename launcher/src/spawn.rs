//! Starting a supervisor with posix_spawn (vfork semantics) rather than
//! fork: a fork copies the agent's page tables for every launch, and with
//! thousands of containers (an agent of a few hundred MiB) that copy and
//! its undo were a fifth of the agent's CPU per launch. `Command` forks as
//! soon as a `pre_exec` hook is set, and the one berth needed only let the
//! control socket through the exec, which a `dup2(fd, fd)` file action
//! does (it clears FD_CLOEXEC; glibc ≥ 2.29).

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;

/// A spawned process, to be waited for once.
pub(crate) struct Child {
    pid: libc::pid_t,
}

impl Child {
    pub(crate) fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            let mut status = 0;
            // SAFETY: our own child; `status` outlives the call.
            let r = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if r == self.pid {
                return Ok(ExitStatus::from_raw(status));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in an argument"))
}

fn check(r: libc::c_int) -> io::Result<()> {
    match r {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// Runs `exe` with `argv` (argv[0] first) and this process's environment;
/// `stdio[i]` becomes fd `i` (`None`: /dev/null), and `keep` stays open
/// at its number; every other fd is close-on-exec already. SIGPIPE is
/// back to its default and no signal is blocked, as `Command` does.
pub(crate) fn spawn(
    exe: &Path,
    argv: &[&OsStr],
    stdio: [Option<&OwnedFd>; 3],
    keep: RawFd,
) -> io::Result<Child> {
    let exe = cstring(exe.as_os_str())?;
    let args: Vec<CString> = argv.iter().map(|a| cstring(a)).collect::<io::Result<_>>()?;
    let env: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).map_err(|_| io::Error::other("a NUL byte in the environment"))
        })
        .collect::<io::Result<_>>()?;
    let mut argp: Vec<*mut libc::c_char> = args.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argp.push(std::ptr::null_mut());
    let mut envp: Vec<*mut libc::c_char> = env.iter().map(|e| e.as_ptr().cast_mut()).collect();
    envp.push(std::ptr::null_mut());
    // A source below 3 could be overwritten by an earlier dup2: move it up.
    let mut raised = Vec::new();
    let mut sources = [None; 3];
    for (i, fd) in stdio.iter().enumerate() {
        if let Some(fd) = fd {
            let raw = fd.as_raw_fd();
            sources[i] = Some(if raw < 3 {
                let up = nix::fcntl::fcntl(raw, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))
                    .map_err(io::Error::from)?;
                // SAFETY: a fresh fd of ours.
                raised.push(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(up) });
                up
            } else {
                raw
            });
        }
    }
    let null = c"/dev/null";
    // SAFETY: the file actions and attributes are initialised before use
    // and destroyed on every path; every pointer handed to posix_spawn
    // (path, argv, envp and their strings) outlives the call.
    unsafe {
        let mut fa: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        check(libc::posix_spawn_file_actions_init(&mut fa))?;
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        if let Err(e) = check(libc::posix_spawnattr_init(&mut attr)) {
            libc::posix_spawn_file_actions_destroy(&mut fa);
            return Err(e);
        }
        let r = (|| {
            for (i, src) in sources.iter().enumerate() {
                let target = i as libc::c_int;
                match src {
                    Some(fd) => {
                        check(libc::posix_spawn_file_actions_adddup2(&mut fa, *fd, target))?
                    }
                    None => check(libc::posix_spawn_file_actions_addopen(
                        &mut fa,
                        target,
                        null.as_ptr(),
                        libc::O_RDWR,
                        0,
                    ))?,
                }
            }
            check(libc::posix_spawn_file_actions_adddup2(&mut fa, keep, keep))?;
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            check(libc::posix_spawnattr_setsigmask(&mut attr, &empty))?;
            let mut pipe: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut pipe);
            libc::sigaddset(&mut pipe, libc::SIGPIPE);
            check(libc::posix_spawnattr_setsigdefault(&mut attr, &pipe))?;
            check(libc::posix_spawnattr_setflags(
                &mut attr,
                (libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short,
            ))?;
            let mut pid = 0;
            check(libc::posix_spawn(
                &mut pid,
                exe.as_ptr(),
                &fa,
                &attr,
                argp.as_ptr(),
                envp.as_ptr(),
            ))?;
            Ok(Child { pid })
        })();
        libc::posix_spawnattr_destroy(&mut attr);
        libc::posix_spawn_file_actions_destroy(&mut fa);
        drop(raised);
        r
    }
}
