//! `--user U[:G]` on the host filesystem: names are resolved through the
//! host's passwd and group databases, numbers are taken as they are.

use nix::unistd::{getgrouplist, Gid, Group, Uid, User};
use std::ffi::CString;

/// uid, gid and supplementary gids for `spec`; `None` for an empty spec
/// (the container runs as root).
pub fn resolve(spec: &str) -> Result<Option<(u32, u32, Vec<u32>)>, String> {
    if spec.is_empty() {
        return Ok(None);
    }
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if u.is_empty() || g == Some("") {
        return Err(format!("user {spec:?}: expected USER[:GROUP]"));
    }
    let user = match u.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid))
            .map_err(|e| format!("user {spec:?}: looking up uid {uid}: {e}"))?
            .map(Ok)
            .unwrap_or(Err(uid)),
        Err(_) => Ok(User::from_name(u)
            .map_err(|e| format!("user {spec:?}: looking up {u:?}: {e}"))?
            .ok_or_else(|| format!("user {spec:?}: no user named {u:?} on this host"))?),
    };
    let gid = match g {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => Group::from_name(g)
                .map_err(|e| format!("user {spec:?}: looking up group {g:?}: {e}"))?
                .ok_or_else(|| format!("user {spec:?}: no group named {g:?} on this host"))?
                .gid
                .as_raw(),
        },
        None => match &user {
            Ok(pw) => pw.gid.as_raw(),
            // A bare uid with no passwd entry: its own number as the group.
            Err(uid) => *uid,
        },
    };
    match user {
        Ok(pw) => {
            let groups = CString::new(pw.name.clone())
                .ok()
                .and_then(|n| getgrouplist(&n, Gid::from_raw(gid)).ok())
                .map(|gs| gs.into_iter().map(|g| g.as_raw()).collect())
                .unwrap_or_default();
            Ok(Some((pw.uid.as_raw(), gid, groups)))
        }
        Err(uid) => Ok(Some((uid, gid, Vec::new()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_names_and_errors() {
        assert_eq!(resolve("").unwrap(), None);
        assert_eq!(
            resolve("12345:54321").unwrap(),
            Some((12345, 54321, vec![]))
        );
        let (uid, gid, _) = resolve("root").unwrap().unwrap();
        assert_eq!((uid, gid), (0, 0));
        assert!(resolve("no-such-user-xyz")
            .unwrap_err()
            .contains("no user named"));
        assert!(resolve("root:").is_err());
    }
}
