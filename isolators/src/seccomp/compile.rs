//! An OCI seccomp profile compiled by libseccomp into the BPF program the
//! container's init loads (`seccomp(SECCOMP_SET_MODE_FILTER)`) as its last
//! step before exec. Compiled in the agent, once per profile, so the
//! supervisor needs no libseccomp and a launch pays nothing for it.

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{Arch, LinuxSeccomp, LinuxSeccompAction as A, LinuxSeccompOperator as Op};
use std::io::{Read, Seek, SeekFrom};

fn action(a: A, errno: Option<u32>, what: &str) -> Result<ScmpAction, String> {
    Ok(match a {
        A::ScmpActAllow => ScmpAction::Allow,
        A::ScmpActErrno => ScmpAction::Errno(errno.unwrap_or(libc::EPERM as u32) as i32),
        A::ScmpActKill | A::ScmpActKillThread => ScmpAction::KillThread,
        A::ScmpActKillProcess => ScmpAction::KillProcess,
        A::ScmpActTrap => ScmpAction::Trap,
        A::ScmpActLog => ScmpAction::Log,
        A::ScmpActTrace => ScmpAction::Trace(errno.unwrap_or(0) as u16),
        A::ScmpActNotify => {
            return Err(format!(
                "{what}: SCMP_ACT_NOTIFY needs a seccomp agent, which berth does not run"
            ))
        }
    })
}

fn arch(a: Arch) -> Option<ScmpArch> {
    Some(match a {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        _ => return None,
    })
}

fn compare(index: usize, op: Op, value: u64, two: Option<u64>) -> ScmpArgCompare {
    let op = match op {
        Op::ScmpCmpNe => ScmpCompareOp::NotEqual,
        Op::ScmpCmpLt => ScmpCompareOp::Less,
        Op::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        Op::ScmpCmpEq => ScmpCompareOp::Equal,
        Op::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        Op::ScmpCmpGt => ScmpCompareOp::Greater,
        // The OCI form: `value` is the mask, `valueTwo` the expected bits.
        Op::ScmpCmpMaskedEq => {
            return ScmpArgCompare::new(
                index as u32,
                ScmpCompareOp::MaskedEqual(value),
                two.unwrap_or(0),
            )
        }
    };
    ScmpArgCompare::new(index as u32, op, value)
}

/// Compiles `p` into a BPF program (an array of `struct sock_filter`).
/// Syscall names this libseccomp does not know are skipped, as runc does;
/// anything else wrong names the rule.
pub fn compile(p: &LinuxSeccomp) -> Result<Vec<u8>, String> {
    let sys = |what: String| move |e: libseccomp::error::SeccompError| format!("{what}: {e}");
    let default = action(p.default_action(), p.default_errno_ret(), "defaultAction")?;
    let mut ctx = ScmpFilterContext::new_filter(default).map_err(sys("seccomp init".into()))?;
    // A binary tree of syscall numbers instead of a linear chain: every
    // syscall of the container pays O(log n) comparisons, not O(n).
    let _ = ctx.set_ctl_optimize(2);
    for a in p.architectures().iter().flatten() {
        let Some(a) = arch(*a) else { continue };
        // Another arch than the host's can't be added to its filter; skip.
        let _ = ctx.add_arch(a);
    }
    for (i, rule) in p.syscalls().iter().flatten().enumerate() {
        let what = format!("syscalls[{i}] ({})", rule.names().join(","));
        let act = action(rule.action(), rule.errno_ret(), &what)?;
        if act == default {
            continue; // libseccomp refuses a rule that repeats the default
        }
        let args: Vec<ScmpArgCompare> = rule
            .args()
            .iter()
            .flatten()
            .map(|a| {
                if a.index() > 5 {
                    return Err(format!("{what}: argument index {} is not 0..5", a.index()));
                }
                Ok(compare(a.index(), a.op(), a.value(), a.value_two()))
            })
            .collect::<Result<_, String>>()?;
        // libseccomp ANDs a rule's comparisons but allows one per argument:
        // several on one argument become one rule each (as runc does).
        let mut seen = std::collections::HashSet::new();
        let distinct = rule.args().iter().flatten().all(|a| seen.insert(a.index()));
        let groups: Vec<Vec<ScmpArgCompare>> = if distinct {
            vec![args]
        } else {
            args.into_iter().map(|c| vec![c]).collect()
        };
        for name in rule.names() {
            let Ok(nr) = ScmpSyscall::from_name(name) else {
                tracing::debug!(syscall = %name, "unknown to libseccomp here; skipped");
                continue;
            };
            for g in &groups {
                let r = if g.is_empty() {
                    ctx.add_rule(act, nr)
                } else {
                    ctx.add_rule_conditional(act, nr, g)
                };
                r.map_err(sys(format!("{what}: {name}")))?;
            }
        }
    }
    let mut f = memfd()?;
    ctx.export_bpf(&mut f)
        .map_err(sys("export the BPF program".into()))?;
    let mut out = Vec::new();
    f.seek(SeekFrom::Start(0))
        .and_then(|_| f.read_to_end(&mut out))
        .map_err(|e| format!("read the BPF program: {e}"))?;
    Ok(out)
}

fn memfd() -> Result<std::fs::File, String> {
    let fd = nix::sys::memfd::memfd_create(
        c"berth-seccomp",
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
    )
    .map_err(|e| format!("memfd_create: {e}"))?;
    Ok(std::fs::File::from(fd))
}
