//! Channels: movable names (`stable`, `dev`) pointing at one version of an
//! image, with a history of every move, so a channel can roll back.
//!
//! Kept beside the layout in `.kiln/channels/NAME.json`, changed under the
//! store's lock and replaced by rename.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Result, Store, StoreError};
use crate::io_error::IoError;
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

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

impl Store {
    fn channels_path(&self, name: &ImageName) -> PathBuf {
        self.root()
            .join(".kiln/channels")
            .join(format!("{}.json", name.as_str().replace('/', "%2F")))
    }

    fn read_channels(&self, name: &ImageName) -> Result<Channels> {
        let path = self.channels_path(name);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|error| StoreError::InvalidLayout {
                    path,
                    reason: error.to_string(),
                })
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Channels::default()),
            Err(source) => Err(IoError::new("read", &path, source).into()),
        }
    }

    fn write_channels(&self, name: &ImageName, channels: &Channels) -> Result<()> {
        let path = self.channels_path(name);
        let dir = path.parent().expect("channels live in a folder");
        std::fs::create_dir_all(dir).map_err(IoError::at("create", dir))?;
        self.replace_file(
            &path,
            &serde_json::to_vec_pretty(channels).expect("channels serialize"),
        )
    }

    /// Points `channel` at a stored version; the version must exist.
    pub fn set_channel(
        &self,
        name: &ImageName,
        channel: &ChannelName,
        version: &Version,
        action: &str,
    ) -> std::result::Result<Move, ChannelError> {
        let entry = self.resolve(&StoreRef {
            name: name.clone(),
            target: StoreTarget::Version(version.clone()),
        })?;
        let _lock = self.lock()?;
        let mut channels = self.read_channels(name)?;
        let history = channels.channels.entry(channel.clone()).or_default();
        let moved = Move {
            version: version.clone(),
            digest: entry.manifest.digest,
            time: now(),
            action: action.to_owned(),
        };
        history.push(moved.clone());
        self.write_channels(name, &channels)?;
        Ok(moved)
    }

    /// Points `channel` back at the version it pointed at before the
    /// current one (the move is recorded, so a rollback can be rolled back).
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
        let current = history.last().map(|last| last.version.clone());
        let previous = history
            .iter()
            .rev()
            .map(|moved| &moved.version)
            .find(|version| Some(*version) != current.as_ref())
            .cloned()
            .ok_or_else(|| ChannelError::NothingToRollBack {
                name: name.clone(),
                channel: channel.clone(),
            })?;
        let digest = history
            .iter()
            .rev()
            .find(|moved| moved.version == previous)
            .map(|moved| moved.digest.clone())
            .expect("found above");
        let moved = Move {
            version: previous,
            digest,
            time: now(),
            action: "rollback".to_owned(),
        };
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
