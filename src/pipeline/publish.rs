//! The last two steps of a build: move the template's local channels to
//! the version just built, then push the version, and each channel that
//! points at it as a movable tag, to every remote. Neither runs unless
//! everything before it succeeded.

use super::{BuildContext, BuildError};
use crate::reference::{ChannelName, StoreRef, StoreTarget};
use crate::remote::push::{PushTarget, push};
use crate::remote::{Registry, block_on};
use crate::report::Event;

impl BuildContext<'_> {
    /// Moves each of the template's channels to the version just built;
    /// returns those that moved. A rebuild of a version stored already
    /// moves no channel that pointed at it before: re-running CI for an
    /// old version must not undo a rollback.
    pub(super) fn move_channels(&self, unchanged: bool) -> Result<Vec<ChannelName>, BuildError> {
        let image = &self.plan.template.image;
        let mut moved = Vec::new();
        for channel in &self.plan.channels {
            let failed = |failure| BuildError::Channel {
                channel: channel.clone(),
                failure: Box::new(failure),
            };
            let history = self
                .store
                .channel_history(&image.name, channel)
                .map_err(|error| failed(error.into()))?;
            let current = history.last().map(|last| last.version.clone());
            let held_before = history.iter().any(|before| before.version == image.version);
            if unchanged && held_before && current.as_ref() != Some(&image.version) {
                self.report(Event::ChannelKept {
                    build: self.plan.reference.clone(),
                    channel: channel.to_string(),
                    version: current.map(|version| version.to_string()),
                    reason: format!(
                        "{} was stored already and {channel} pointed at it before",
                        image.version
                    ),
                });
                continue;
            }
            let set = self
                .store
                .set_channel(&image.name, channel, &image.version, "publish")
                .map_err(failed)?;
            if set.is_some() {
                self.report(Event::ChannelMoved {
                    build: self.plan.reference.clone(),
                    channel: channel.to_string(),
                    version: image.version.to_string(),
                });
            }
            moved.push(channel.clone());
        }
        Ok(moved)
    }

    /// Pushes to every remote the version and each channel that points at
    /// it (`channels`); returns `HOST/REPO:TAG` of each tag pushed.
    pub(super) fn push_remotes(&self, channels: &[ChannelName]) -> Result<Vec<String>, BuildError> {
        let plan = self.plan;
        if plan.remotes.is_empty() {
            return Ok(Vec::new());
        }
        let image = &plan.template.image;
        let entry = self
            .store
            .resolve(&StoreRef {
                name: image.name.clone(),
                target: StoreTarget::Version(image.version.clone()),
            })
            .map_err(BuildError::store)?;
        let mut pushed = Vec::new();
        for remote in &plan.remotes {
            let failed = |failure| BuildError::Publish {
                remote: remote.to_string(),
                failure: Box::new(failure),
            };
            let registry = Registry::new(&remote.host, &self.options.remote).map_err(failed)?;
            let repository = remote.repository.as_str();
            self.store
                .record_publish_remote(&image.name, remote)
                .map_err(BuildError::store)?;
            let tags = std::iter::once((image.version.as_str(), false))
                .chain(channels.iter().map(|channel| (channel.as_str(), true)));
            for (tag, movable) in tags {
                self.check_cancelled()?;
                let target = PushTarget {
                    registry: &registry,
                    repository,
                    tag,
                    movable,
                };
                block_on(push(
                    &self.store,
                    &self.options.home,
                    &entry,
                    target,
                    self.reporter(),
                ))
                .map_err(failed)?;
                pushed.push(format!("{remote}:{tag}"));
            }
            self.check_cancelled()?;
            let attached = block_on(crate::remote::signatures::push_attachments(
                &self.store,
                &self.options.home,
                &registry,
                repository,
                &entry,
            ))
            .map_err(failed)?;
            pushed.extend(attached.iter().map(|tag| format!("{remote}:{tag}")));
        }
        Ok(pushed)
    }
}
