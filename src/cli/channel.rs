//! `kiln channel set|rollback|history NAME CHANNEL [VERSION]`.

use kiln::reference::{ChannelName, ImageName, Version};
use kiln::store::Store;

use super::{ChannelCommand, Exit, diagnostics::error_chain};

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

fn run_inner(command: ChannelCommand) -> Result<Exit, Exit> {
    let (ChannelCommand::Set { name, .. }
    | ChannelCommand::Rollback { name, .. }
    | ChannelCommand::History { name, .. }) = &command;
    let store = Store::open_to_read(&kiln::kiln_home().join("store"), name).map_err(|error| {
        eprintln!("error: {}", error_chain(&error));
        Exit::Failure
    })?;
    let failed = |error: &dyn std::error::Error| {
        eprintln!(
            "error: failed to change the channel: {}",
            error_chain(error)
        );
        Exit::Failure
    };
    match command {
        ChannelCommand::Set {
            name,
            channel,
            to_version,
        } => {
            let name: ImageName = parse("image name", &name)?;
            let channel: ChannelName = parse("channel", &channel)?;
            let version: Version = parse("version", &to_version)?;
            let moved = store
                .set_channel(&name, &channel, &version, "set")
                .map_err(|error| failed(&error))?;
            println!("{name} {channel} -> {} ({})", moved.version, moved.digest);
        }
        ChannelCommand::Rollback { name, channel } => {
            let name: ImageName = parse("image name", &name)?;
            let channel: ChannelName = parse("channel", &channel)?;
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
