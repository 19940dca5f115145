//! `--user U[:G]` on the host filesystem: names are resolved through the
//! host's passwd and group databases, numbers are taken as they are.

use nix::unistd::{getgrouplist, Gid, Group, Uid, User};
use std::ffi::CString;
use std::path::Path;

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

/// Reads `<rootfs>/etc/<file>` as a process chrooted in the rootfs would
/// (`RESOLVE_IN_ROOT`: the image's links resolve inside it, never to the
/// host's files), regular files only; a missing file reads as empty.
fn image_file(rootfs: &Path, file: &str) -> Result<String, String> {
    let path = Path::new("/etc").join(file);
    match berth_state::safe_path::read_in_root(rootfs, &path, 16 << 20) {
        Ok(Some(b)) => String::from_utf8(b)
            .map_err(|_| format!("reading {}/etc/{file}: not UTF-8", rootfs.display())),
        Ok(None) => Ok(String::new()),
        Err(e) => Err(format!("reading the image's {}: {e}", path.display())),
    }
}

/// `USER[:GROUP]` of an image, resolved as Docker does through the image's
/// own /etc/passwd and /etc/group (never the host's): a name must be
/// there; a number is taken as it is (group 0 when the uid has no entry);
/// supplementary groups are the /etc/group entries listing the user.
pub fn resolve_in_rootfs(
    rootfs: &Path,
    spec: &str,
) -> Result<Option<(u32, u32, Vec<u32>)>, String> {
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
    let passwd = image_file(rootfs, "passwd")?;
    let group = image_file(rootfs, "group")?;
    // name:x:uid:gid:… ; malformed lines are skipped.
    let users: Vec<(&str, u32, u32)> = passwd
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some((
                *f.first()?,
                f.get(2)?.parse().ok()?,
                f.get(3)?.parse().ok()?,
            ))
        })
        .collect();
    let groups: Vec<(&str, u32, Vec<&str>)> = group
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let members = f
                .get(3)
                .map(|m| m.split(',').filter(|x| !x.is_empty()).collect());
            Some((
                *f.first()?,
                f.get(2)?.parse().ok()?,
                members.unwrap_or_default(),
            ))
        })
        .collect();
    let entry = match u.parse::<u32>() {
        Ok(uid) => users.iter().find(|x| x.1 == uid).copied().ok_or(uid),
        Err(_) => Ok(*users.iter().find(|x| x.0 == u).ok_or_else(|| {
            format!("user {spec:?}: no user named {u:?} in the image's /etc/passwd")
        })?),
    };
    let gid = match g {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                groups
                    .iter()
                    .find(|x| x.0 == g)
                    .ok_or_else(|| {
                        format!("user {spec:?}: no group named {g:?} in the image's /etc/group")
                    })?
                    .1
            }
        },
        None => entry.map(|e| e.2).unwrap_or(0),
    };
    let uid = entry.map(|e| e.1).unwrap_or_else(|uid| uid);
    let mut extra: Vec<u32> = match entry {
        Ok((name, _, _)) => groups
            .iter()
            .filter(|x| x.2.contains(&name))
            .map(|x| x.1)
            .collect(),
        Err(_) => Vec::new(),
    };
    if !extra.is_empty() && !extra.contains(&gid) {
        extra.insert(0, gid);
    }
    Ok(Some((uid, gid, extra)))
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

    #[test]
    fn image_users_come_from_the_image() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("etc/group"),
            "nogroup:x:65534:\nstaff:x:50:nobody\n",
        )
        .unwrap();
        let r = |s| resolve_in_rootfs(d.path(), s);
        assert_eq!(r("").unwrap(), None);
        assert_eq!(r("nobody").unwrap(), Some((65534, 65534, vec![65534, 50])));
        assert_eq!(r("65534:staff").unwrap(), Some((65534, 50, vec![50])));
        assert_eq!(r("4242").unwrap(), Some((4242, 0, vec![])));
        assert!(r("daemon").unwrap_err().contains("image's /etc/passwd"));
        assert!(r("nobody:wheel").unwrap_err().contains("/etc/group"));
        std::fs::remove_file(d.path().join("etc/group")).unwrap();
        std::os::unix::fs::symlink("/etc/group", d.path().join("etc/group")).unwrap();
        assert!(r("nobody").unwrap_err().contains("symlink"));
    }
}
