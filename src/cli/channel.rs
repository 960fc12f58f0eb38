//! `kiln channel set|rollback|history NAME CHANNEL [VERSION] [--remote REPO]`:
//! the local channel, and its tag on every repository builds published the
//! image to and on each `--remote`. Remote tags move first: a registry that
//! refuses leaves the local channel where it was.

use kiln::reference::{ChannelName, ImageName, RemoteRef, StoreRef, StoreTarget, Version};
use kiln::remote::push::{PushTarget, push};
use kiln::remote::{Registry, block_on};
use kiln::store::Store;

use super::{ChannelCommand, ChannelRemotes, Exit, diagnostics::error_chain};

fn parse<T: std::str::FromStr<Err = String>>(what: &str, text: &str) -> Result<T, Exit> {
    text.parse().map_err(|reason| {
        eprintln!("error: invalid {what} `{text}`: {reason}");
        Exit::Usage
    })
}

pub fn run(command: ChannelCommand) -> Exit {
    match run_inner(command) {
        Ok(exit) | Err(exit) => exit,
    }
}

fn failed(error: &dyn std::error::Error) -> Exit {
    eprintln!(
        "error: failed to change the channel: {}",
        error_chain(error)
    );
    Exit::Failure
}

fn run_inner(command: ChannelCommand) -> Result<Exit, Exit> {
    let (ChannelCommand::Set { name, .. }
    | ChannelCommand::Rollback { name, .. }
    | ChannelCommand::History { name, .. }) = &command;
    let store = Store::open_to_read(&kiln::kiln_home().join("store"), name).map_err(|error| {
        eprintln!("error: {}", error_chain(&error));
        Exit::Failure
    })?;
    match command {
        ChannelCommand::Set {
            name,
            channel,
            to_version,
            remotes,
        } => {
            let name: ImageName = parse("image name", &name)?;
            let channel: ChannelName = parse("channel", &channel)?;
            let version: Version = parse("version", &to_version)?;
            move_remote_tags(&store, &name, &channel, &version, &remotes)?;
            match store
                .set_channel(&name, &channel, &version, "set")
                .map_err(|error| failed(&error))?
            {
                Some(moved) => println!("{name} {channel} -> {} ({})", moved.version, moved.digest),
                None => println!("{name} {channel} is at {version} already"),
            }
        }
        ChannelCommand::Rollback {
            name,
            channel,
            remotes,
        } => {
            let name: ImageName = parse("image name", &name)?;
            let channel: ChannelName = parse("channel", &channel)?;
            let target = store
                .rollback_target(&name, &channel)
                .map_err(|error| failed(&error))?;
            move_remote_tags(&store, &name, &channel, &target.version, &remotes)?;
            let moved = store
                .rollback_channel(&name, &channel)
                .map_err(|error| failed(&error))?;
            println!(
                "{name} {channel} rolled back to {} ({})",
                moved.version, moved.digest
            );
        }
        ChannelCommand::History { name, channel } => {
            let name: ImageName = parse("image name", &name)?;
            let channel: ChannelName = parse("channel", &channel)?;
            let history = store
                .channel_history(&name, &channel)
                .map_err(|error| failed(&error))?;
            if history.is_empty() {
                eprintln!("error: {name} has no channel {channel}");
                return Ok(Exit::Failure);
            }
            println!("TIME                  ACTION    VERSION  DIGEST");
            for moved in history {
                println!(
                    "{}  {:<8}  {:<7}  {}",
                    kiln::oci::rfc3339(moved.time),
                    moved.action,
                    moved.version,
                    moved.digest
                );
            }
        }
    }
    Ok(Exit::Success)
}

/// Points the channel's tag at `version` on every repository builds
/// published `name` to and on each `--remote`, pushing what is missing.
fn move_remote_tags(
    store: &Store,
    name: &ImageName,
    channel: &ChannelName,
    version: &Version,
    remotes: &ChannelRemotes,
) -> Result<(), Exit> {
    let mut targets: Vec<RemoteRef> = store
        .publish_remotes(name)
        .map_err(|error| failed(&error))?;
    for remote in &remotes.remotes {
        if !targets.contains(remote) {
            targets.push(remote.clone());
        }
    }
    if targets.is_empty() {
        return Ok(());
    }
    let entry = store
        .resolve(&StoreRef {
            name: name.clone(),
            target: StoreTarget::Version(version.clone()),
        })
        .map_err(|error| failed(&error))?;
    let options = remotes.remote_args.options();
    let reporter = kiln::report::Silent;
    for remote in targets {
        let moved = Registry::new(&remote.host, &options).and_then(|registry| {
            block_on(push(
                store,
                &options.home,
                &entry,
                PushTarget {
                    registry: &registry,
                    repository: remote.repository.as_str(),
                    tag: channel.as_str(),
                    movable: true,
                },
                &reporter,
            ))
        });
        match moved {
            Ok(_) => println!(
                "{remote}:{channel} -> {version} ({})",
                entry.manifest.digest
            ),
            Err(error) => {
                eprintln!(
                    "error: failed to move {remote}:{channel} to {version}: {}",
                    error_chain(&error)
                );
                return Err(Exit::Failure);
            }
        }
    }
    Ok(())
}
