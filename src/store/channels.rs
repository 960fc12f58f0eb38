//! Channels: movable names (`stable`, `dev`) pointing at one version of an
//! image, with a history of every move, so a channel can roll back.
//!
//! Kept beside the layout in `.kiln/channels/NAME.json`, changed under the
//! store's lock and replaced by rename.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Result, Store, StoreError};
use crate::reference::{ChannelName, Digest, ImageName, StoreRef, StoreTarget, Version};

/// One move of a channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub version: Version,
    pub digest: Digest,
    /// Seconds since the epoch.
    pub time: u64,
    /// `set`, `rollback` or `publish`.
    pub action: String,
}

#[derive(Default, Serialize, Deserialize)]
struct Channels {
    channels: BTreeMap<ChannelName, Vec<Move>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("channel {channel} of {name} has no earlier version to roll back to")]
    NothingToRollBack {
        name: ImageName,
        channel: ChannelName,
    },
    #[error("{name} has no channel {channel}")]
    NoSuchChannel {
        name: ImageName,
        channel: ChannelName,
    },
}

impl Store {
    fn channels_path(&self, name: &ImageName) -> PathBuf {
        self.private_image_file("channels", name)
    }

    fn read_channels(&self, name: &ImageName) -> Result<Channels> {
        self.read_private_json(&self.channels_path(name))
    }

    fn write_channels(&self, name: &ImageName, channels: &Channels) -> Result<()> {
        self.write_private(
            &self.channels_path(name),
            &serde_json::to_vec_pretty(channels).expect("channels serialize"),
        )
    }

    /// Points `channel` at a stored version; the version must exist.
    /// Returns the move, or `None` when the channel points at it already
    /// (nothing is recorded: history has no repeated lines).
    pub fn set_channel(
        &self,
        name: &ImageName,
        channel: &ChannelName,
        version: &Version,
        action: &str,
    ) -> std::result::Result<Option<Move>, ChannelError> {
        let entry = self.resolve(&StoreRef {
            name: name.clone(),
            target: StoreTarget::Version(version.clone()),
        })?;
        let _lock = self.lock()?;
        let mut channels = self.read_channels(name)?;
        let history = channels.channels.entry(channel.clone()).or_default();
        if stack(history)
            .last()
            .is_some_and(|top| top.version == *version && top.digest == entry.manifest.digest)
        {
            return Ok(None);
        }
        let moved = Move {
            version: version.clone(),
            digest: entry.manifest.digest,
            time: crate::oci::unix_now(),
            action: action.to_owned(),
        };
        history.push(moved.clone());
        self.write_channels(name, &channels)?;
        Ok(Some(moved))
    }

    /// Where a rollback of `channel` would point it: the version below the
    /// current one on the channel's stack of moves.
    pub fn rollback_target(
        &self,
        name: &ImageName,
        channel: &ChannelName,
    ) -> std::result::Result<Move, ChannelError> {
        let channels = self.read_channels(name)?;
        let history =
            channels
                .channels
                .get(channel)
                .ok_or_else(|| ChannelError::NoSuchChannel {
                    name: name.clone(),
                    channel: channel.clone(),
                })?;
        rollback_of(history).ok_or_else(|| ChannelError::NothingToRollBack {
            name: name.clone(),
            channel: channel.clone(),
        })
    }

    /// Points `channel` back at the version below the current one on its
    /// stack: set a, b, c, then rollback gives b, and another gives a.
    pub fn rollback_channel(
        &self,
        name: &ImageName,
        channel: &ChannelName,
    ) -> std::result::Result<Move, ChannelError> {
        let _lock = self.lock()?;
        let mut channels = self.read_channels(name)?;
        let history =
            channels
                .channels
                .get_mut(channel)
                .ok_or_else(|| ChannelError::NoSuchChannel {
                    name: name.clone(),
                    channel: channel.clone(),
                })?;
        let moved = rollback_of(history).ok_or_else(|| ChannelError::NothingToRollBack {
            name: name.clone(),
            channel: channel.clone(),
        })?;
        history.push(moved.clone());
        self.write_channels(name, &channels)?;
        Ok(moved)
    }

    /// Every move of `channel`, oldest first.
    pub fn channel_history(&self, name: &ImageName, channel: &ChannelName) -> Result<Vec<Move>> {
        Ok(self
            .read_channels(name)?
            .channels
            .remove(channel)
            .unwrap_or_default())
    }

    /// The channels of `name` and the version each points at now.
    pub fn channels_of(&self, name: &ImageName) -> Result<BTreeMap<ChannelName, Version>> {
        Ok(self
            .read_channels(name)?
            .channels
            .into_iter()
            .filter_map(|(channel, history)| {
                history.last().map(|last| (channel, last.version.clone()))
            })
            .collect())
    }
}

/// The versions a channel's history leaves stacked, bottom first: a set or
/// publish pushes its version (unless it is on top already), a rollback
/// pops down to the version it went back to.
fn stack(history: &[Move]) -> Vec<&Move> {
    let mut stack: Vec<&Move> = Vec::new();
    for moved in history {
        if moved.action == "rollback" {
            while stack.len() > 1 && stack.last().is_some_and(|top| top.version != moved.version) {
                stack.pop();
            }
            // A rollback recorded by a kiln that toggled back and forth.
            if stack.last().is_none_or(|top| top.version != moved.version) {
                stack.push(moved);
            }
        } else if stack
            .last()
            .is_none_or(|top| top.version != moved.version || top.digest != moved.digest)
        {
            stack.push(moved);
        }
    }
    stack
}

/// The move a rollback makes: to the version below the top of the stack.
fn rollback_of(history: &[Move]) -> Option<Move> {
    let stack = stack(history);
    let below = stack.len().checked_sub(2).map(|index| stack[index])?;
    Some(Move {
        version: below.version.clone(),
        digest: below.digest.clone(),
        time: crate::oci::unix_now(),
        action: "rollback".to_owned(),
    })
}

/// Where a build published an image: `.kiln/remotes/NAME.json`, the
/// repositories its channels are moved on too.
#[derive(Default, Serialize, Deserialize)]
struct PublishRemotes {
    remotes: Vec<crate::reference::RemoteRef>,
}

impl Store {
    fn remotes_path(&self, name: &ImageName) -> PathBuf {
        self.private_image_file("remotes", name)
    }

    /// The registry repositories builds published `name` to.
    pub fn publish_remotes(&self, name: &ImageName) -> Result<Vec<crate::reference::RemoteRef>> {
        let remotes: PublishRemotes = self.read_private_json(&self.remotes_path(name))?;
        Ok(remotes.remotes)
    }

    /// Records that a build published `name` to `remote`.
    pub fn record_publish_remote(
        &self,
        name: &ImageName,
        remote: &crate::reference::RemoteRef,
    ) -> Result<()> {
        let _lock = self.lock()?;
        let mut remotes = self.publish_remotes(name)?;
        if remotes.contains(remote) {
            return Ok(());
        }
        remotes.push(remote.clone());
        self.write_private(
            &self.remotes_path(name),
            &serde_json::to_vec_pretty(&PublishRemotes { remotes }).expect("remotes serialize"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moved(version: &str, action: &str) -> Move {
        Move {
            version: version.parse().unwrap(),
            digest: Digest::of(version.as_bytes()),
            time: 0,
            action: action.to_owned(),
        }
    }

    fn versions(history: &[Move]) -> Vec<&str> {
        stack(history)
            .iter()
            .map(|moved| moved.version.as_str())
            .collect()
    }

    #[test]
    fn rollbacks_step_back_through_the_stack() {
        let mut history = vec![moved("a", "set"), moved("b", "set"), moved("c", "publish")];
        assert_eq!(versions(&history), ["a", "b", "c"]);
        let back = rollback_of(&history).unwrap();
        assert_eq!(back.version.as_str(), "b");
        history.push(back);
        let back = rollback_of(&history).unwrap();
        assert_eq!(back.version.as_str(), "a");
        history.push(back);
        assert_eq!(versions(&history), ["a"]);
        assert!(rollback_of(&history).is_none(), "nothing below the first");
        history.push(moved("d", "set"));
        assert_eq!(versions(&history), ["a", "d"]);
        // Setting the version on top again stacks nothing.
        history.push(moved("d", "publish"));
        assert_eq!(versions(&history), ["a", "d"]);
    }

    #[test]
    fn toggling_rollbacks_of_older_kilns_read_as_a_stack() {
        let history = vec![
            moved("1", "set"),
            moved("2", "set"),
            moved("1", "rollback"),
            moved("2", "rollback"),
        ];
        assert_eq!(versions(&history), ["1", "2"]);
    }
}
