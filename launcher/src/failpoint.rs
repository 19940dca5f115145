//! Crash injection (in the launcher crate so the launcher's own steps
//! have points; the containerizer re-exports it). `BERTH_FAILPOINTS=point[,point…]` makes the process
//! SIGKILL itself when it reaches a named point — an agent crash at an
//! exact step, for the recovery tests. Points:
//! - `after-checkpoint:STATE` (STARTING, PROVISIONING, PREPARING,
//!   ISOLATING, FETCHING, RUNNING, DESTROYING, TERMINATED): the record in
//!   STATE is durable;
//! - `launch:after-prepare:ISOLATOR`, `launch:after-fork`;
//! - `destroy:after-kill`, `destroy:after-cleanup:ISOLATOR`,
//!   `destroy:after-cleanup`, `destroy:after-provisioner`,
//!   `destroy:after-remove-runtime-dir`;
//! - under an OCI runtime: `oci:after-kill` (the runtime killed the
//!   container, berth not yet told), `oci:before-delete`;
//! - CRIU: `checkpoint:before-dump` (CHECKPOINTING durable),
//!   `checkpoint:frozen` (the container frozen, its rootfs saved),
//!   `restore:after-rootfs` (the checkpoint's rootfs changes unpacked).
//!
//! Unset (the normal case) costs one lookup of a cached empty list.

use std::sync::OnceLock;

/// The env var naming the armed points.
pub const ENV: &str = "BERTH_FAILPOINTS";

fn armed() -> &'static [String] {
    static ARMED: OnceLock<Vec<String>> = OnceLock::new();
    ARMED.get_or_init(|| {
        std::env::var(ENV)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    })
}

/// Dies here (SIGKILL, as an OOM kill or `kill -9` would) when `point` is
/// armed.
pub fn hit(point: &str) {
    if armed().iter().any(|p| p == point) {
        eprintln!("berth: failpoint {point} reached: killing the agent");
        tracing::error!(point, "failpoint reached: killing the agent");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        // raise(SIGKILL) does not return.
        std::process::abort();
    }
}
