//! The OCI launcher: the container's init is made by an OCI runtime
//! (`runc`, gVisor's `runsc`) from a runtime-spec bundle, while berth's
//! supervisor stays its parent and the owner of its exit status (as
//! containerd's shim). One file per mechanism: [`spec`] (launch info →
//! `config.json`), [`runtime`] (the runtime's CLI), [`launcher`] (the
//! [`crate::Launcher`]), [`choice`] (runtimes by name, per container).

pub mod choice;
pub mod launcher;
pub mod runtime;
pub mod spec;

pub use choice::{Runtimes, NATIVE};
pub use launcher::OciLauncher;
pub use runtime::OciRuntime;

use crate::{LaunchError, LaunchSpec};
use berth_state::ContainerId;
use std::path::Path;

/// The file in a container's runtime dir naming the runtime that runs it
/// (berth's own dir, not container-writable): destroy and recovery go
/// back to the same one.
pub const RUNTIME_FILE: &str = "runtime";
/// The bundle dir in a container's runtime dir.
pub const BUNDLE_DIR: &str = "bundle";

/// What the supervisor needs to drive the runtime.
pub(crate) struct Bundle {
    pub path: String,
    pub args: Vec<String>,
    pub bundle: String,
    pub create_args: Vec<String>,
}

/// The container's cgroup as runtimes take `cgroupsPath` on cgroup v1
/// (below each hierarchy's root): the one berth's cgroup isolators made.
pub fn cgroups_path(cgroup_root: &str, id: &ContainerId) -> String {
    let mut p = format!("/{cgroup_root}");
    for part in id.parts() {
        p.push('/');
        p.push_str(part);
    }
    p
}

/// Writes the bundle (`config.json`) and the runtime's name into the
/// container's runtime dir `dir`.
pub(crate) fn write_bundle(
    rt: &OciRuntime,
    dir: &Path,
    spec: &LaunchSpec,
    cgroup_root: &str,
) -> Result<Bundle, LaunchError> {
    let id = &spec.id;
    let io = |op: &str, path: &Path| {
        let (op, path) = (op.to_string(), path.to_path_buf());
        move |source| LaunchError::Io {
            id: id.to_string(),
            op,
            path,
            source,
        }
    };
    let bundle = dir.join(BUNDLE_DIR);
    let host_root = bundle.join("rootfs");
    let host_root_in = (spec.launch_info.rootfs.is_empty() && !is_gvisor(rt)).then(|| {
        let _ = std::fs::create_dir_all(&host_root);
        host_root.as_path()
    });
    let config =
        spec::build(spec, &cgroups_path(cgroup_root, id), host_root_in).map_err(|message| {
            LaunchError::Other {
                id: id.to_string(),
                message: format!("runtime spec for {}: {message}", rt.name),
            }
        })?;
    std::fs::create_dir_all(&bundle).map_err(io("create", &bundle))?;
    let json = serde_json::to_vec_pretty(&config).map_err(|e| LaunchError::Other {
        id: id.to_string(),
        message: format!("encode config.json: {e}"),
    })?;
    let file = bundle.join("config.json");
    std::fs::write(&file, json).map_err(io("write", &file))?;
    let name = dir.join(RUNTIME_FILE);
    std::fs::write(&name, &rt.name).map_err(io("write", &name))?;
    std::fs::create_dir_all(&rt.root).map_err(io("create", &rt.root))?;
    let mut args = rt.global_args();
    // gVisor refuses a spec without a network namespace unless told the
    // network is the host's (what no namespace means to berth).
    let own_net = spec
        .launch_info
        .clone_namespaces
        .contains(&(berth_state::Namespace::Net as i32));
    if is_gvisor(rt) && !own_net && !args.iter().any(|a| a.starts_with("--network")) {
        args.push("--network=host".into());
    }
    let create_args = Vec::new();
    Ok(Bundle {
        path: rt.path.display().to_string(),
        args,
        bundle: bundle.display().to_string(),
        create_args,
    })
}

/// Whether `rt` is gVisor's `runsc` (by its binary's name).
fn is_gvisor(rt: &OciRuntime) -> bool {
    rt.path.file_name().is_some_and(|n| n == "runsc")
}
