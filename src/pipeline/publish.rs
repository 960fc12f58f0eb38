//! The last two steps of a build: move the template's local channels to
//! the version just built, then push the version, and each channel as a
//! movable tag, to every remote. Neither runs unless everything before it
//! succeeded.

use super::{BuildContext, BuildError};
use crate::reference::{ChannelName, StoreRef, StoreTarget};
use crate::remote::push::{PushTarget, push};
use crate::remote::{Registry, block_on};
use crate::report::Event;

impl BuildContext<'_> {
    pub(super) fn move_channels(&self) -> Result<Vec<ChannelName>, BuildError> {
        let image = &self.plan.template.image;
        for channel in &self.plan.channels {
            self.store
                .set_channel(&image.name, channel, &image.version, "publish")
                .map_err(|failure| BuildError::Channel {
                    channel: channel.clone(),
                    failure: Box::new(failure),
                })?;
            self.report(Event::ChannelMoved {
                build: self.plan.reference.clone(),
                channel: channel.to_string(),
                version: image.version.to_string(),
            });
        }
        Ok(self.plan.channels.clone())
    }

    /// Pushes to every remote; returns `HOST/REPO:TAG` of each tag pushed.
    pub(super) fn push_remotes(&self) -> Result<Vec<String>, BuildError> {
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
            let tags = std::iter::once((image.version.as_str(), false))
                .chain(plan.channels.iter().map(|channel| (channel.as_str(), true)));
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
        }
        Ok(pushed)
    }
}
