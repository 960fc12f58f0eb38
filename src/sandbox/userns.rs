//! The user namespace confined commands run in: its root (and every id up
//! to [`ID_COUNT`]) maps to an unprivileged range of host ids starting at
//! [`ID_BASE`], far above any real user's. What a stage's root can do, it
//! can do only to what that namespace owns; files keep their ids on disk
//! because the layers are mounted through the same mapping.

use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};

/// The first host id of the range: namespace id N is host id `ID_BASE + N`.
pub const ID_BASE: u32 = 0x8000_0000;
/// How many ids the namespace has: everything an image uses, up to 2^31 - 2.
pub const ID_COUNT: u32 = 0x7fff_ffff;

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just made and are owned here.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Makes the namespace; returns a descriptor that keeps it alive and that
/// `setns` joins.
pub fn create() -> io::Result<OwnedFd> {
    let (ready_read, ready_write) = pipe()?;
    let (done_read, done_write) = pipe()?;
    // SAFETY: the helper is single-threaded; the child only makes system
    // calls and exits.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(io::Error::last_os_error());
    }
    if child == 0 {
        drop(ready_read);
        drop(done_write);
        // SAFETY: plain system calls in the child, which then exits.
        unsafe {
            let code = if libc::unshare(libc::CLONE_NEWUSER) == 0 {
                0
            } else {
                1
            };
            let mut ready = std::fs::File::from(ready_write);
            let _ = ready.write_all(&[code]);
            let mut done = std::fs::File::from(done_read);
            let _ = done.read(&mut [0]);
            libc::_exit(code as i32);
        }
    }
    drop(ready_write);
    drop(done_read);
    let made = (|| {
        let mut answer = [1u8];
        std::fs::File::from(ready_read).read_exact(&mut answer)?;
        if answer[0] != 0 {
            return Err(io::Error::other("the kernel refused a new user namespace"));
        }
        let map = format!("0 {ID_BASE} {ID_COUNT}\n");
        // Written by the helper, which holds CAP_SETUID and CAP_SETGID in
        // the parent namespace: setgroups stays allowed inside, as programs
        // that drop privileges (apt's _apt user) need.
        std::fs::write(format!("/proc/{child}/uid_map"), &map)?;
        std::fs::write(format!("/proc/{child}/gid_map"), &map)?;
        std::fs::File::open(format!("/proc/{child}/ns/user")).map(OwnedFd::from)
    })();
    drop(done_write);
    let mut status = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(child, &mut status, 0) };
    made
}
