//! A CRI container's security context as berth's config: user and group,
//! read-only rootfs, capabilities, privileged, seccomp.

use super::api::{self, security_profile::ProfileType};
use berth_state::ContainerConfig;
use tonic::Status;

/// The seccomp profile berth runs the container under: the CRI's
/// RuntimeDefault is berth's default (empty), Unconfined and an unset
/// profile (the CRI's default) `unconfined`, Localhost the profile file's
/// JSON.
fn seccomp(sc: &api::LinuxContainerSecurityContext) -> Result<String, Status> {
    let localhost = |path: &str| -> Result<String, Status> {
        if !path.starts_with('/') {
            return Err(Status::invalid_argument(format!(
                "seccomp profile {path:?}: a Localhost profile must be an absolute path on the node"
            )));
        }
        std::fs::read_to_string(path).map_err(|e| {
            Status::invalid_argument(format!("seccomp profile {path}: cannot read it: {e}"))
        })
    };
    if let Some(p) = &sc.seccomp {
        return match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) => Ok(String::new()),
            Ok(ProfileType::Unconfined) => Ok("unconfined".into()),
            Ok(ProfileType::Localhost) => localhost(&p.localhost_ref),
            Err(_) => Err(Status::invalid_argument(format!(
                "seccomp profile type {} is unknown",
                p.profile_type
            ))),
        };
    }
    // The deprecated field, which older kubelets still send.
    #[allow(deprecated)]
    let path = sc.seccomp_profile_path.as_str();
    match path {
        "" | "unconfined" => Ok("unconfined".into()),
        "runtime/default" | "docker/default" => Ok(String::new()),
        p => match p.strip_prefix("localhost/") {
            Some(path) => localhost(path),
            None => Err(Status::invalid_argument(format!(
                "seccomp profile path {p:?}: expected runtime/default, unconfined or localhost/PATH"
            ))),
        },
    }
}

/// `user[:group]` as berth takes it.
fn user(sc: &api::LinuxContainerSecurityContext) -> String {
    let user = match (&sc.run_as_user, sc.run_as_username.as_str()) {
        (Some(u), _) => u.value.to_string(),
        (None, name) if !name.is_empty() => name.to_string(),
        _ => String::new(),
    };
    match (&sc.run_as_group, user.is_empty()) {
        (Some(g), false) => format!("{user}:{}", g.value),
        _ => user,
    }
}

/// Applies `sc` to `config`.
pub(crate) fn apply(
    sc: Option<&api::LinuxContainerSecurityContext>,
    config: &mut ContainerConfig,
) -> Result<(), Status> {
    let Some(sc) = sc else {
        config.seccomp_profile = "unconfined".into();
        // The CRI's no_new_privs is false unless asked for.
        config.allow_privilege_escalation = true;
        return Ok(());
    };
    config.allow_privilege_escalation = !sc.no_new_privs;
    if sc.run_as_group.is_some() && sc.run_as_user.is_none() && sc.run_as_username.is_empty() {
        return Err(Status::invalid_argument(
            "run_as_group needs run_as_user or run_as_username",
        ));
    }
    config.user = user(sc);
    config.supplemental_groups = sc
        .supplemental_groups
        .iter()
        .map(|&g| {
            u32::try_from(g).map_err(|_| {
                Status::invalid_argument(format!("supplemental group {g} is not a group id"))
            })
        })
        .collect::<Result<_, _>>()?;
    config.read_only_rootfs = sc.readonly_rootfs;
    config.masked_paths = sc.masked_paths.clone();
    config.readonly_paths = sc.readonly_paths.clone();
    config.seccomp_profile = seccomp(sc)?;
    if sc.privileged {
        config.cap_add = vec!["ALL".into()];
        config.seccomp_profile = "unconfined".into();
    } else if let Some(caps) = &sc.capabilities {
        config.cap_add = caps.add_capabilities.clone();
        config.cap_drop = caps.drop_capabilities.clone();
    }
    Ok(())
}
