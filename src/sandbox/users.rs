//! A user of the image, looked up in its own `/etc/passwd` and
//! `/etc/group` (read after `pivot_root`, so a symlink cannot point at the
//! host's): what a test with `user` runs as.

use std::io;

pub(super) struct ImageUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    /// Supplementary groups, the primary one first.
    pub groups: Vec<libc::gid_t>,
}

/// `name`, `uid`, `name:group` or `uid:gid`, as `[image] user` takes it.
pub(super) fn lookup(spec: &str) -> io::Result<ImageUser> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let (user_part, group_part) = match spec.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (spec, None),
    };
    let entry = passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        let matches = fields.len() >= 6 && (fields[0] == user_part || fields[2] == user_part);
        matches.then(|| {
            (
                fields[0].to_owned(),
                fields[2].parse::<u32>().ok(),
                fields[3].parse::<u32>().ok(),
                fields[5].to_owned(),
            )
        })
    });
    let (name, uid, primary, home) = match entry {
        Some((name, Some(uid), Some(gid), home)) => (name, uid, gid, home),
        Some(_) => {
            return Err(io::Error::other(format!(
                "user `{user_part}` has a malformed entry in the image's /etc/passwd"
            )));
        }
        None => match user_part.parse::<u32>() {
            Ok(uid) => (user_part.to_owned(), uid, uid, "/".to_owned()),
            Err(_) => {
                return Err(io::Error::other(format!(
                    "there is no user `{user_part}` in the image's /etc/passwd"
                )));
            }
        },
    };
    let gid = match group_part {
        None => primary,
        Some(group_name) => group
            .lines()
            .find_map(|line| {
                let fields: Vec<&str> = line.split(':').collect();
                (fields.len() >= 3 && (fields[0] == group_name || fields[2] == group_name))
                    .then(|| fields[2].parse::<u32>().ok())
                    .flatten()
            })
            .or_else(|| group_name.parse().ok())
            .ok_or_else(|| {
                io::Error::other(format!(
                    "there is no group `{group_name}` in the image's /etc/group"
                ))
            })?,
    };
    let mut groups = vec![gid];
    for line in group.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() >= 4
            && fields[3].split(',').any(|member| member == name)
            && let Ok(id) = fields[2].parse::<u32>()
            && !groups.contains(&id)
        {
            groups.push(id);
        }
    }
    Ok(ImageUser {
        name,
        uid,
        gid,
        home,
        groups,
    })
}
