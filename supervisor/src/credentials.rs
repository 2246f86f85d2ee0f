//! `--user` and `--group`: whom the workers run as, as gunicorn and nginx
//! have it. The supervisor starts as root, opens the sockets, and stays
//! root (it may bind again at a binary upgrade, and must be able to signal
//! its workers); each worker drops to the user before it runs any of the
//! application's code.
//!
//! The names are resolved once, before anything starts, so an unknown user
//! or group is one clear error and nothing runs. The switch itself happens
//! in the forked child (`spawn`): supplementary groups, then the group,
//! then the user, in that order (once the user is dropped, the groups can
//! no longer be changed).

use nix::libc::{gid_t, uid_t};
use nix::unistd::{getgrouplist, Gid, Group, Uid, User};

/// What a worker switches to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    /// The user id.
    pub(crate) uid: uid_t,
    /// The primary group id.
    pub(crate) gid: gid_t,
    /// Supplementary groups: with `--user`, the user's from the group
    /// database plus the primary group; with `--group` alone, that group.
    pub(crate) groups: Vec<gid_t>,
}

/// Resolves `--user` and `--group` (names, or numeric ids). `None` when
/// neither is given. `--group` alone changes the workers' groups only:
/// they keep the supervisor's user (root). The error is one line for the
/// operator.
pub(crate) fn resolve(
    user: Option<&str>,
    group: Option<&str>,
) -> Result<Option<Credentials>, String> {
    if user.is_none() && group.is_none() {
        return Ok(None);
    }
    let user = user.map(find_user).transpose()?;
    let gid = match group {
        Some(group) => find_group(group)?,
        None => user.as_ref().map_or_else(Gid::current, |u| u.gid),
    };
    let groups = match &user {
        Some(user) => {
            let name = std::ffi::CString::new(user.name.as_str())
                .map_err(|_| format!("--user {}: not a valid user name", user.name))?;
            getgrouplist(&name, gid)
                .map_err(|e| format!("--user {}: cannot read its groups: {e}", user.name))?
        }
        None => vec![gid],
    };
    let credentials = Credentials {
        uid: user.as_ref().map_or_else(Uid::current, |u| u.uid).as_raw(),
        gid: gid.as_raw(),
        groups: groups.into_iter().map(Gid::as_raw).collect(),
    };
    if !Uid::effective().is_root() {
        return Err("--user and --group need drover to start as root (it opens the sockets, then the workers switch)".into());
    }
    Ok(Some(credentials))
}

fn find_user(spec: &str) -> Result<User, String> {
    let found = match spec.parse::<uid_t>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)),
        Err(_) => User::from_name(spec),
    };
    found
        .map_err(|e| format!("--user {spec}: cannot look it up: {e}"))?
        .ok_or_else(|| format!("--user {spec}: no such user"))
}

fn find_group(spec: &str) -> Result<Gid, String> {
    let found = match spec.parse::<gid_t>() {
        Ok(gid) => Group::from_gid(Gid::from_raw(gid)),
        Err(_) => Group::from_name(spec),
    };
    found
        .map_err(|e| format!("--group {spec}: cannot look it up: {e}"))?
        .map(|g| g.gid)
        .ok_or_else(|| format!("--group {spec}: no such group"))
}

/// With `--user`, the workers run as another user, but a binary upgrade
/// (USR2) executes the binary as root: a binary that user (or anyone but
/// root) can replace is a way to root.
pub(crate) fn warn_if_others_can_change(binary: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    let writable_by_others =
        std::fs::metadata(binary).is_ok_and(|meta| meta.uid() != 0 || meta.mode() & 0o022 != 0);
    if writable_by_others {
        tracing::warn!(
            binary = %binary.display(),
            "with --user the binary should be root's alone: USR2 runs it as root"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::resolve;

    #[test]
    fn unknown_users_and_groups_are_one_clear_error() {
        assert_eq!(
            resolve(Some("no-such-user-drover"), None).unwrap_err(),
            "--user no-such-user-drover: no such user"
        );
        assert_eq!(
            resolve(None, Some("no-such-group-drover")).unwrap_err(),
            "--group no-such-group-drover: no such group"
        );
        assert_eq!(resolve(None, None), Ok(None));
    }

    #[test]
    fn a_user_brings_its_primary_group_and_numeric_ids_work() {
        if !nix::unistd::Uid::effective().is_root() {
            let refused = resolve(Some("root"), None).unwrap_err();
            assert!(
                refused.contains("need drover to start as root"),
                "{refused}"
            );
            return;
        }
        let by_name = resolve(Some("root"), None).unwrap().unwrap();
        assert_eq!((by_name.uid, by_name.gid), (0, 0));
        assert!(by_name.groups.contains(&0));
        let by_id = resolve(Some("0"), Some("0")).unwrap().unwrap();
        assert_eq!((by_id.uid, by_id.gid), (0, 0));
    }
}
