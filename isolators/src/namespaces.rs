//! Namespace isolators: each asks the launcher to create one namespace for
//! the container (`namespaces/pid`, `namespaces/ipc`, `namespaces/uts`,
//! `namespaces/cgroup`).

use crate::{Isolator, IsolatorError, IsolatorFuture, PrepareRequest};
use berth_state::{ContainerClass, ContainerConfig, ContainerId, LaunchInfo, Namespace};

/// Gives each container its own pid namespace: its command is pid 1 and
/// sees only its own processes. A DEBUG container joins its parent's, as
/// does a pod member (a nested container) with `share_pid_namespace`; a
/// top-level one with `host_pid` keeps the host's.
#[derive(Debug, Default)]
pub struct PidNamespace;

/// Gives each container its own IPC namespace (SysV IPC, POSIX queues).
/// A nested container shares its parent's (the parent is its pod).
#[derive(Debug, Default)]
pub struct IpcNamespace;

/// Gives each container its own UTS namespace and sets its hostname
/// (validated as RFC 1123, at most 64 characters). A nested container
/// shares its parent's (the parent is its pod), hostname included.
#[derive(Debug, Default)]
pub struct UtsNamespace;

/// Gives each container its own cgroup namespace, rooted at its own
/// cgroups (the init joins them before it unshares): `/proc/self/cgroup`
/// shows `/`, and the launcher mounts only the container's own cgroups,
/// read-only, under a private `/sys/fs/cgroup`. A DEBUG container keeps
/// its parent's.
#[derive(Debug, Default)]
pub struct CgroupNamespace;

/// Whether the container shares `ns` with its parent rather than getting
/// its own: a DEBUG container shares all of them; a pod member (any other
/// nested container) shares IPC, UTS, the network unless it asks for one
/// of its own, and pid with `share_pid_namespace`. The isolators then
/// create none, and the containerizer joins the parent's (it knows the
/// parent's process).
pub fn shared_with_parent(id: &ContainerId, config: &ContainerConfig, ns: Namespace) -> bool {
    if id.parent.is_none() {
        return false;
    }
    if config.container_class == ContainerClass::Debug as i32 {
        return true;
    }
    match ns {
        Namespace::Ipc | Namespace::Uts => true,
        Namespace::Net => config.network.is_none(),
        Namespace::Pid => config.share_pid_namespace,
        _ => false,
    }
}

fn shared(req: &PrepareRequest, ns: Namespace) -> bool {
    shared_with_parent(&req.id, &req.config, ns)
}

fn clone_ns(req: &PrepareRequest, ns: Namespace) -> IsolatorFuture<Option<LaunchInfo>> {
    let info = (!shared(req, ns)).then(|| LaunchInfo {
        clone_namespaces: vec![ns as i32],
        ..Default::default()
    });
    Box::pin(async move { Ok(info) })
}

impl Isolator for PidNamespace {
    fn name(&self) -> &str {
        "namespaces/pid"
    }

    fn watches(&self) -> bool {
        false
    }

    fn isolates(&self) -> bool {
        false
    }

    fn supports_nesting(&self) -> bool {
        true
    }
    fn prepare(&mut self, req: &PrepareRequest) -> IsolatorFuture<Option<LaunchInfo>> {
        // The host's asked for (validated: top-level only).
        if req.config.host_pid && req.id.parent.is_none() {
            return Box::pin(async { Ok(None) });
        }
        clone_ns(req, Namespace::Pid)
    }
}

impl Isolator for IpcNamespace {
    fn name(&self) -> &str {
        "namespaces/ipc"
    }

    fn watches(&self) -> bool {
        false
    }

    fn isolates(&self) -> bool {
        false
    }

    fn supports_nesting(&self) -> bool {
        true
    }
    fn prepare(&mut self, req: &PrepareRequest) -> IsolatorFuture<Option<LaunchInfo>> {
        // The host's asked for (validated: top-level only).
        if req.config.host_ipc && req.id.parent.is_none() {
            return Box::pin(async { Ok(None) });
        }
        clone_ns(req, Namespace::Ipc)
    }
}

impl Isolator for CgroupNamespace {
    fn name(&self) -> &str {
        "namespaces/cgroup"
    }

    fn watches(&self) -> bool {
        false
    }

    fn isolates(&self) -> bool {
        false
    }

    fn supports_nesting(&self) -> bool {
        true
    }
    fn prepare(&mut self, req: &PrepareRequest) -> IsolatorFuture<Option<LaunchInfo>> {
        clone_ns(req, Namespace::Cgroup)
    }
}

impl Isolator for UtsNamespace {
    fn name(&self) -> &str {
        "namespaces/uts"
    }

    fn watches(&self) -> bool {
        false
    }

    fn isolates(&self) -> bool {
        false
    }

    fn supports_nesting(&self) -> bool {
        true
    }
    fn prepare(&mut self, req: &PrepareRequest) -> IsolatorFuture<Option<LaunchInfo>> {
        let hostname = req.config.hostname.clone();
        if let Err(why) = validate_hostname(&hostname) {
            let e = IsolatorError::invalid(&req.id, "hostname", why);
            return Box::pin(async move { Err(e) });
        }
        if shared(req, Namespace::Uts) {
            if !hostname.is_empty() && req.config.container_class != ContainerClass::Debug as i32 {
                let e = IsolatorError::invalid(
                    &req.id,
                    "hostname",
                    "a nested container shares its pod's (its parent's) hostname and cannot set its own",
                );
                return Box::pin(async move { Err(e) });
            }
            return Box::pin(async { Ok(None) });
        }
        let info = LaunchInfo {
            clone_namespaces: vec![Namespace::Uts as i32],
            hostname,
            ..Default::default()
        };
        Box::pin(async move { Ok(Some(info)) })
    }
}

/// Checks a hostname as the YARN runc runtime does: RFC 1123 labels
/// (letters, digits, `-`, not starting or ending with `-`, 1–63 chars each)
/// separated by dots, at most 64 characters in all. Empty = keep the
/// default (the container id's first 64 chars are not used: the host's name
/// is inherited in a fresh UTS namespace).
pub fn validate_hostname(h: &str) -> Result<(), String> {
    if h.is_empty() {
        return Ok(());
    }
    if h.len() > 64 {
        return Err(format!("{h:?} is longer than 64 characters"));
    }
    for label in h.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!(
                "{h:?} has an empty label or one longer than 63 characters"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("{h:?}: label {label:?} starts or ends with '-'"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(format!(
                "{h:?} contains {c:?}: only letters, digits, '-' and '.' are allowed (RFC 1123)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        for ok in ["a", "web-1", "a.b.c", "x1", &"a".repeat(63)] {
            assert_eq!(validate_hostname(ok), Ok(()), "{ok}");
        }
        for bad in ["-a", "a-", "a..b", "a_b", "a b", ".a", &"a".repeat(65), "é"] {
            assert!(validate_hostname(bad).is_err(), "{bad}");
        }
    }
}
