//! The network of confined commands: a namespace of their own with only a
//! loopback (`none`), that plus outbound access through slirp4netns
//! (`isolated`, where the host's loopback stays out of reach), or the
//! host's own (`host`).

use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};

/// The name server slirp4netns answers on, for a stage's resolv.conf.
pub const ISOLATED_NAMESERVER: &str = "10.0.2.3";

/// Brings up the loopback interface of the current network namespace.
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: a socket for the ioctl, closed when dropped.
    let socket = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if socket < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the fd was just made and is owned here.
    let socket = unsafe { OwnedFd::from_raw_fd(socket) };
    // SAFETY: an ifreq is plain data; zeroed is a valid start.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS and SIOCSIFFLAGS read and write the ifreq given.
    unsafe {
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) != 0 {
            return Err(io::Error::last_os_error());
        }
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// slirp4netns serving the network namespace of a process: outbound TCP
/// and UDP through the host, DNS on [`ISOLATED_NAMESERVER`], and nothing
/// to the host's loopback. It ends when dropped.
pub struct Slirp {
    child: Child,
}

impl Slirp {
    /// Starts it for the namespace of `pid` and waits until the namespace
    /// is configured.
    pub fn start(pid: libc::pid_t) -> io::Result<Self> {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes; only
        // the writing end is then left open across exec, for slirp4netns.
        unsafe {
            if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0
                || libc::fcntl(fds[1], libc::F_SETFD, 0) != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: both were just made and are owned here.
        let (ready_read, ready_write) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let child = Command::new("slirp4netns")
            .args([
                "--configure",
                "--mtu=65520",
                "--disable-host-loopback",
                "--enable-sandbox",
                "--enable-seccomp",
            ])
            .arg(format!("--ready-fd={}", ready_write.as_raw_fd()))
            .arg(pid.to_string())
            .arg("tap0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!("failed to start slirp4netns for the stage's network (apt-get install slirp4netns, or network = \"none\"): {error}"),
                )
            })?;
        drop(ready_write);
        let mut slirp = Self { child };
        let mut ready = [0u8; 1];
        let mut ready_read = std::fs::File::from(ready_read);
        if ready_read.read(&mut ready)? != 1 {
            let mut message = String::new();
            if let Some(stderr) = slirp.child.stderr.as_mut() {
                let _ = stderr.read_to_string(&mut message);
            }
            return Err(io::Error::other(format!(
                "slirp4netns did not set up the stage's network: {}",
                message.trim()
            )));
        }
        Ok(slirp)
    }
}

impl Drop for Slirp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
