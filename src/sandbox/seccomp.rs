//! The seccomp filter of confined commands: system calls a container
//! runtime's default profile refuses, refused here too with `EPERM`, so a
//! stage cannot mount, load modules, reboot, change the clock, reach the
//! kernel's keyrings, open files by handle, or make namespaces of its own.
//! Everything else is allowed. Calls of another architecture's numbering
//! (i386, x32) are refused whole: their numbers mean other calls.

use std::io;

#[repr(C)]
#[derive(Clone, Copy)]
struct SockFilter {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

#[repr(C)]
struct SockFprog {
    len: u16,
    filter: *const SockFilter,
}

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGE_K: u16 = 0x35;
const BPF_JSET_K: u16 = 0x45;
const BPF_RET_K: u16 = 0x06;

const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;

/// Offsets in `struct seccomp_data`.
const NR: u32 = 0;
const ARCH: u32 = 4;
/// The low 32 bits of the first argument (little endian).
const ARG0: u32 = 16;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;

/// x32 system calls on x86_64 have this bit set.
const X32_BIT: u32 = 0x4000_0000;

/// Every flag that makes a namespace.
const NAMESPACE_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWTIME) as u32;

/// Flags a host tool may pass for namespaces of its own (mount, pid, uts,
/// ipc), inside its user namespace.
const TOOL_NAMESPACE_FLAGS: u32 =
    (libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC) as u32;

/// What a filter lets through beside ordinary calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// A stage or a test: no mounts, no namespaces.
    Stage,
    /// A host tool bootstrapping a root: mounts, and mount, pid, uts and
    /// ipc namespaces, all inside its own user namespace.
    Tool,
}

/// Refused whatever their arguments.
fn refused(profile: Profile) -> Vec<libc::c_long> {
    let mut calls = Vec::new();
    if profile == Profile::Stage {
        calls.extend([libc::SYS_mount, libc::SYS_umount2, libc::SYS_pivot_root]);
    }
    calls.extend([
        libc::SYS_open_tree,
        libc::SYS_move_mount,
        libc::SYS_fsopen,
        libc::SYS_fsconfig,
        libc::SYS_fsmount,
        libc::SYS_fspick,
        libc::SYS_mount_setattr,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_keyctl,
        libc::SYS_reboot,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_clock_adjtime,
        libc::SYS_adjtimex,
        libc::SYS_setns,
        libc::SYS_acct,
        libc::SYS_quotactl,
        libc::SYS_syslog,
        libc::SYS_vhangup,
        libc::SYS_userfaultfd,
    ]);
    #[cfg(target_arch = "x86_64")]
    calls.extend([
        libc::SYS_iopl,
        libc::SYS_ioperm,
        libc::SYS_lookup_dcookie,
        libc::SYS_uselib,
    ]);
    calls
}

fn statement(code: u16, k: u32) -> SockFilter {
    SockFilter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> SockFilter {
    SockFilter { code, jt, jf, k }
}

/// The filter's program.
fn program(profile: Profile) -> Vec<SockFilter> {
    let deny = RET_ERRNO | libc::EPERM as u32;
    let mut program = vec![
        statement(BPF_LD_W_ABS, ARCH),
        // Another architecture: refuse.
        jump(BPF_JEQ_K, AUDIT_ARCH, 1, 0),
        statement(BPF_RET_K, deny),
        statement(BPF_LD_W_ABS, NR),
    ];
    if cfg!(target_arch = "x86_64") {
        program.push(jump(BPF_JGE_K, X32_BIT, 0, 1));
        program.push(statement(BPF_RET_K, deny));
    }
    for call in refused(profile) {
        program.push(jump(BPF_JEQ_K, call as u32, 0, 1));
        program.push(statement(BPF_RET_K, deny));
    }
    // clone3 passes its flags in memory, where a filter cannot look:
    // ENOSYS makes libc fall back to clone, whose flags it can.
    program.push(jump(BPF_JEQ_K, libc::SYS_clone3 as u32, 0, 1));
    program.push(statement(BPF_RET_K, RET_ERRNO | libc::ENOSYS as u32));
    // clone and unshare: no new namespaces (but a tool's own). (clone's
    // flags are its first argument on x86_64 and aarch64.)
    let forbidden = match profile {
        Profile::Stage => NAMESPACE_FLAGS,
        Profile::Tool => NAMESPACE_FLAGS & !TOOL_NAMESPACE_FLAGS,
    };
    for call in [libc::SYS_clone, libc::SYS_unshare] {
        program.push(jump(BPF_JEQ_K, call as u32, 0, 4));
        program.push(statement(BPF_LD_W_ABS, ARG0));
        program.push(jump(BPF_JSET_K, forbidden, 0, 1));
        program.push(statement(BPF_RET_K, deny));
        program.push(statement(BPF_RET_K, RET_ALLOW));
    }
    program.push(statement(BPF_RET_K, RET_ALLOW));
    program
}

/// Installs the filter on this process and everything it starts. Needs no
/// new privileges set first.
pub fn install(profile: Profile) -> io::Result<()> {
    let program = program(profile);
    let fprog = SockFprog {
        len: u16::try_from(program.len())
            .map_err(|_| io::Error::other("the filter is too long"))?,
        filter: program.as_ptr(),
    };
    // SAFETY: the program outlives the call, which copies it into the kernel.
    let result = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            std::ptr::from_ref(&fprog),
            0,
            0,
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Keeps exec from ever granting more privileges (setuid bits, file
/// capabilities); required before the filter.
pub fn no_new_privileges() -> io::Result<()> {
    // SAFETY: prctl with these arguments only sets a flag of this process.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
