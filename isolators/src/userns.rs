//! `namespaces/user`: the container's root is an unprivileged range of
//! host ids.
//!
//! A container's `userns` setting (or the agent's default) is one of:
//! - `host` (or empty with no agent default): no user namespace;
//! - `auto`: a range of [`AUTO_SIZE`] ids of its own, allotted from the
//!   agent's range ([`UserNamespace::new`]: the `berth` lines of
//!   /etc/subuid and /etc/subgid, or the operator's `--userns-range`), never
//!   shared with another live container of this agent;
//! - `HOST_ID:COUNT`: container ids `0..COUNT` are host ids
//!   `HOST_ID..HOST_ID+COUNT`, users and groups alike (a range the operator
//!   manages; it may not overlap an `auto` container's).
//!
//! The launcher makes the namespace, idmaps the binds it makes (rootfs,
//! sandbox, volumes) with it, and the init joins it as its last step
//! before the command. Allotments are rebuilt from the checkpointed launch
//! infos at recovery.

use crate::{Isolator, IsolatorError, IsolatorFuture, PrepareRequest};
use berth_state::{ContainerClass, ContainerId, ContainerRecord, IdMapping, LaunchInfo, Namespace};
use std::collections::BTreeMap;

/// The ids each `auto` container gets (as Podman's `--userns=auto`).
pub const AUTO_SIZE: u32 = 65536;

/// The user whose /etc/subuid and /etc/subgid lines give berth's range.
pub const SUBID_USER: &str = "berth";

/// A range of host ids: `start..start+count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// The first host id.
    pub start: u32,
    /// How many.
    pub count: u32,
}

impl IdRange {
    fn end(&self) -> u64 {
        self.start as u64 + self.count as u64
    }

    fn overlaps(&self, o: &IdRange) -> bool {
        (self.start as u64) < o.end() && (o.start as u64) < self.end()
    }

    /// Parses `START:COUNT`.
    pub fn parse(s: &str) -> Result<IdRange, String> {
        let (a, b) = s
            .split_once(':')
            .ok_or_else(|| format!("expected HOST_ID:COUNT, got {s:?}"))?;
        let start: u32 = a
            .trim()
            .parse()
            .map_err(|_| format!("{a:?} in {s:?} is not a host id (0..2^32)"))?;
        let count: u32 = b
            .trim()
            .parse()
            .map_err(|_| format!("{b:?} in {s:?} is not a count of ids"))?;
        if count == 0 {
            return Err(format!("{s:?}: the count of ids must be at least 1"));
        }
        if start as u64 + count as u64 > u32::MAX as u64 {
            return Err(format!(
                "{s:?}: the range passes the largest id, {}",
                u32::MAX
            ));
        }
        Ok(IdRange { start, count })
    }
}

/// What a container asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsernsMode {
    /// No user namespace: the host's ids.
    Host,
    /// A range of its own from the agent's.
    Auto,
    /// This range.
    Fixed(IdRange),
}

impl UsernsMode {
    /// Parses `host`, `auto` or `HOST_ID:COUNT`; a fixed range may not
    /// start at host id 0 (the container's root would be the host's).
    pub fn parse(s: &str) -> Result<UsernsMode, String> {
        match s.trim() {
            "host" => Ok(UsernsMode::Host),
            "auto" => Ok(UsernsMode::Auto),
            other => {
                let r = IdRange::parse(other).map_err(|e| format!("{e} (or use auto or host)"))?;
                if r.start == 0 {
                    return Err(format!(
                        "{other:?} maps the container's root to the host's root (host id 0); \
                         use a range of unprivileged ids, e.g. 100000:65536, or host"
                    ));
                }
                Ok(UsernsMode::Fixed(r))
            }
        }
    }
}

/// The agent's id range for `auto` from the `berth` lines of
/// /etc/subuid and /etc/subgid (`None` if either has none).
pub fn subid_ranges() -> Option<(IdRange, IdRange)> {
    let find = |path: &str| -> Option<IdRange> {
        let text = std::fs::read_to_string(path).ok()?;
        text.lines().find_map(|l| {
            let mut f = l.trim().splitn(3, ':');
            (f.next()? == SUBID_USER)
                .then(|| IdRange::parse(&format!("{}:{}", f.next()?, f.next()?)).ok())
                .flatten()
        })
    };
    Some((find("/etc/subuid")?, find("/etc/subgid")?))
}

/// The `namespaces/user` isolator.
///
/// ```
/// use berth_isolators::userns::{IdRange, UserNamespace, UsernsMode};
/// // No user namespace unless a container asks; `auto` ranges come
/// // from host ids 1000000..1655360 (ten containers' worth).
/// let range = IdRange { start: 1_000_000, count: 655_360 };
/// let iso = UserNamespace::new(UsernsMode::Host, Some((range, range)));
/// # let _ = iso;
/// ```
#[derive(Debug)]
pub struct UserNamespace {
    default: UsernsMode,
    /// The uid and gid ranges `auto` allots from.
    pool: Option<(IdRange, IdRange)>,
    /// Live containers' host uid ranges (auto and fixed), by id; `true`
    /// for an auto one. Gids follow at the same offsets.
    allotted: BTreeMap<String, (IdRange, bool)>,
}

impl UserNamespace {
    /// `default` applies to containers that name no mode; `pool` is the
    /// (uid, gid) range `auto` allots from (`None`: `auto` is refused).
    pub fn new(default: UsernsMode, pool: Option<(IdRange, IdRange)>) -> Self {
        UserNamespace {
            default,
            pool,
            allotted: BTreeMap::new(),
        }
    }

    /// The first free auto slot: (uid range, gid range).
    fn allot(&self) -> Option<(IdRange, IdRange)> {
        let (u, g) = self.pool?;
        let slots = u.count.min(g.count) / AUTO_SIZE;
        (0..slots).find_map(|k| {
            let uid = IdRange {
                start: u.start + k * AUTO_SIZE,
                count: AUTO_SIZE,
            };
            let free = self.allotted.values().all(|(r, _)| !r.overlaps(&uid));
            free.then_some((
                uid,
                IdRange {
                    start: g.start + k * AUTO_SIZE,
                    count: AUTO_SIZE,
                },
            ))
        })
    }

    fn mode_of(&self, req: &PrepareRequest) -> Result<UsernsMode, String> {
        match req.config.userns.trim() {
            "" => Ok(self.default),
            s => UsernsMode::parse(s),
        }
    }
}

fn mapping(r: IdRange) -> Vec<IdMapping> {
    vec![IdMapping {
        container_id: 0,
        host_id: r.start,
        size: r.count,
    }]
}

impl Isolator for UserNamespace {
    fn name(&self) -> &str {
        "namespaces/user"
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

    fn recover(
        &mut self,
        states: &[ContainerRecord],
        _orphans: &[ContainerId],
    ) -> IsolatorFuture<()> {
        for r in states {
            let (Some(id), Some(info)) = (&r.id, &r.launch_info) else {
                continue;
            };
            if let Some(m) = info.uid_mappings.first() {
                let range = IdRange {
                    start: m.host_id,
                    count: m.size,
                };
                let auto = self.pool.is_some_and(|(u, _)| {
                    range.count == AUTO_SIZE
                        && range.start >= u.start
                        && (range.start - u.start).is_multiple_of(AUTO_SIZE)
                        && range.end() <= u.end()
                });
                self.allotted.insert(id.to_string(), (range, auto));
            }
        }
        Box::pin(async { Ok(()) })
    }

    fn prepare(&mut self, req: &PrepareRequest) -> IsolatorFuture<Option<LaunchInfo>> {
        let id = req.id.clone();
        let fail = |e: IsolatorError| -> IsolatorFuture<Option<LaunchInfo>> {
            Box::pin(async move { Err(e) })
        };
        let mode = match self.mode_of(req) {
            Ok(m) => m,
            Err(why) => return fail(IsolatorError::invalid(&id, "userns", why)),
        };
        // A DEBUG container joins its parent's namespaces.
        if req.config.container_class == ContainerClass::Debug as i32 {
            return Box::pin(async { Ok(None) });
        }
        let (uid, gid, auto) = match mode {
            UsernsMode::Host => return Box::pin(async { Ok(None) }),
            UsernsMode::Fixed(r) => {
                if let Some((other, _)) = self
                    .allotted
                    .iter()
                    .find(|(k, (a, auto))| *auto && a.overlaps(&r) && **k != id.to_string())
                {
                    return fail(IsolatorError::invalid(
                        &id,
                        "userns",
                        format!(
                            "host ids {}..{} overlap the range allotted to container {other} (--userns auto)",
                            r.start,
                            r.end()
                        ),
                    ));
                }
                (r, r, false)
            }
            UsernsMode::Auto => {
                if self.pool.is_none() {
                    return fail(IsolatorError::invalid(
                        &id,
                        "userns",
                        format!(
                            "auto needs an id range: add a '{SUBID_USER}:START:COUNT' line to \
                             /etc/subuid and /etc/subgid, or give the agent --userns-range START:COUNT"
                        ),
                    ));
                }
                match self.allot() {
                    Some((u, g)) => (u, g, true),
                    None => {
                        return fail(IsolatorError::failed(
                            &id,
                            format!(
                                "userns auto: every range of {AUTO_SIZE} ids in the agent's range is taken ({} live)",
                                self.allotted.len()
                            ),
                        ))
                    }
                }
            }
        };
        self.allotted.insert(id.to_string(), (uid, auto));
        let info = LaunchInfo {
            clone_namespaces: vec![Namespace::User as i32],
            uid_mappings: mapping(uid),
            gid_mappings: mapping(gid),
            ..Default::default()
        };
        Box::pin(async move { Ok(Some(info)) })
    }

    fn cleanup(&mut self, id: &ContainerId) -> IsolatorFuture<()> {
        self.allotted.remove(&id.to_string());
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_bad_ones_are_named() {
        assert_eq!(UsernsMode::parse("auto"), Ok(UsernsMode::Auto));
        assert_eq!(UsernsMode::parse("host"), Ok(UsernsMode::Host));
        assert_eq!(
            UsernsMode::parse("100000:65536"),
            Ok(UsernsMode::Fixed(IdRange {
                start: 100000,
                count: 65536
            }))
        );
        assert!(UsernsMode::parse("0:65536")
            .unwrap_err()
            .contains("host's root"));
        assert!(UsernsMode::parse("x:1")
            .unwrap_err()
            .contains("not a host id"));
        assert!(UsernsMode::parse("5:0").unwrap_err().contains("at least 1"));
        assert!(UsernsMode::parse("4294967295:2")
            .unwrap_err()
            .contains("largest id"));
        assert!(UsernsMode::parse("yes")
            .unwrap_err()
            .contains("HOST_ID:COUNT"));
    }

    #[test]
    fn auto_slots_are_disjoint_and_freed() {
        let pool = IdRange {
            start: 1_000_000,
            count: 2 * AUTO_SIZE,
        };
        let mut iso = UserNamespace::new(UsernsMode::Auto, Some((pool, pool)));
        let a = iso.allot().unwrap().0;
        iso.allotted.insert("a".into(), (a, true));
        let b = iso.allot().unwrap().0;
        assert!(!a.overlaps(&b));
        iso.allotted.insert("b".into(), (b, true));
        assert_eq!(iso.allot(), None);
        iso.allotted.remove("a");
        assert_eq!(iso.allot().unwrap().0, a);
    }
}
