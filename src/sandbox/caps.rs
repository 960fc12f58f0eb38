//! Capabilities of confined commands: the set container runtimes give by
//! default (buildah and podman: `0x800405fb`), bounded so that no exec can
//! gain more. Inside the stage's user namespace they reach only what that
//! namespace owns.

use std::io;

/// CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP,
/// NET_BIND_SERVICE, SYS_CHROOT, SETFCAP.
pub const DEFAULT: u64 = 0x8004_05fb;
/// SYS_ADMIN: what a host tool that mounts inside its own user namespace
/// needs beside the default set.
pub const SYS_ADMIN: u64 = 1 << 21;

fn last_capability() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(40)
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Cuts the bounding set to `set`, clears the ambient set, and makes the
/// effective, permitted and inheritable sets `set`.
pub fn limit_to(set: u64) -> io::Result<()> {
    for capability in 0..=last_capability() {
        if set & (1 << capability) == 0 {
            // SAFETY: prctl with these arguments only changes this process.
            let result =
                unsafe { libc::prctl(libc::PR_CAPBSET_DROP, capability as libc::c_ulong, 0, 0, 0) };
            if result != 0 {
                let error = io::Error::last_os_error();
                // A capability this kernel does not know is not held.
                if error.raw_os_error() != Some(libc::EINVAL) {
                    return Err(error);
                }
            }
        }
    }
    // SAFETY: as above.
    let result = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    let header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let low = set as u32;
    let high = (set >> 32) as u32;
    let data = [
        CapData {
            effective: low,
            permitted: low,
            inheritable: low,
        },
        CapData {
            effective: high,
            permitted: high,
            inheritable: high,
        },
    ];
    // SAFETY: the header and two data structs are what capset reads.
    let result = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
