//! Dropping privileges once every privileged handle is open.
//!
//! meshfwd needs CAP_NET_ADMIN (create, attach and configure the TUN) and
//! CAP_NET_RAW (open raw GRE sockets) only at start-up. The datapath works on
//! already-open descriptors, so afterwards the process keeps no capability at
//! all, and with `--user` no root identity either. Must run before any worker
//! thread starts: capabilities are per thread, and threads inherit them.
//!
//! The kernel datapath is the exception: its supervisor must delete the GRE
//! device at exit (CAP_NET_ADMIN) and read the per-CPU drop counters
//! (`bpf(2)` needs CAP_BPF where unprivileged BPF is disabled, the default),
//! so it keeps exactly those two ([`drop_privileges_keeping`]).

use std::ffi::CString;
use std::io;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Switches to `user` (its uid, gid, no supplementary groups) if given, then
/// clears the effective, permitted and inheritable capability sets and sets
/// no_new_privs. Returns the uid now in effect.
pub fn drop_privileges(user: Option<&str>) -> io::Result<u32> {
    drop_privileges_keeping(user, &[])
}

/// CAP_NET_ADMIN and CAP_BPF (uapi `linux/capability.h`).
pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_BPF: u32 = 39;

/// [`drop_privileges`], except that the capabilities in `keep` that the
/// process holds now stay effective and permitted (also across `--user`,
/// through `PR_SET_KEEPCAPS`). Capabilities this kernel or process does not
/// have are skipped.
pub fn drop_privileges_keeping(user: Option<&str>, keep: &[u32]) -> io::Result<u32> {
    let held = effective_caps().unwrap_or(0);
    let mask = keep
        .iter()
        .filter(|c| **c < 64)
        .fold(0u64, |m, c| m | (1u64 << c))
        & held;
    if let Some(name) = user {
        let (uid, gid) = lookup_user(name)?;
        if mask != 0 {
            // SAFETY: prctl with constant arguments.
            if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } != 0 {
                return Err(ctx("prctl(PR_SET_KEEPCAPS)", io::Error::last_os_error()));
            }
        }
        // SAFETY: plain syscalls with valid arguments; glibc applies setgid and
        // setuid to every thread of the process.
        unsafe {
            if libc::setgroups(0, std::ptr::null()) != 0 {
                return Err(ctx("setgroups", io::Error::last_os_error()));
            }
            if libc::setgid(gid) != 0 {
                return Err(ctx(&format!("setgid {gid}"), io::Error::last_os_error()));
            }
            if libc::setuid(uid) != 0 {
                return Err(ctx(&format!("setuid {uid}"), io::Error::last_os_error()));
            }
        }
    }
    let hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    for (i, d) in data.iter_mut().enumerate() {
        let bits = (mask >> (32 * i)) as u32;
        d.effective = bits;
        d.permitted = bits;
    }
    // SAFETY: capset with a version-3 header and two data words, as the ABI requires.
    let r = unsafe { libc::syscall(libc::SYS_capset, &hdr as *const CapHeader, data.as_ptr()) };
    if r != 0 {
        return Err(ctx(
            &format!("capset (keep {mask:#x})"),
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: prctl with constant arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(ctx(
            "prctl(PR_SET_NO_NEW_PRIVS)",
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: getuid cannot fail.
    Ok(unsafe { libc::getuid() })
}

/// uid and primary gid of a user name, or of a numeric uid.
pub fn lookup_user(name: &str) -> io::Result<(u32, u32)> {
    let cname =
        CString::new(name).map_err(|_| invalid(format!("--user '{name}': contains NUL")))?;
    // SAFETY: passwd is a plain C struct; all-zero bytes are a valid value.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwnam_r writes into `pw` and `buf`, both valid for the call.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut out,
        )
    };
    if rc == 0 && !out.is_null() {
        return Ok((pw.pw_uid, pw.pw_gid));
    }
    if let Ok(uid) = name.parse::<u32>() {
        return Ok((uid, uid));
    }
    Err(invalid(format!(
        "--user '{name}': no such user (add it, e.g. `useradd --system --no-create-home meshfwd`, or give a numeric uid)"
    )))
}

/// The effective uid of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The effective capability mask of this process, from /proc/self/status.
pub fn effective_caps() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.split_whitespace().nth(1)?, 16).ok()
}

fn ctx(what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("drop privileges: {what}: {e}"))
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_root_and_numbers() {
        assert_eq!(lookup_user("root").unwrap(), (0, 0));
        assert_eq!(lookup_user("12345").unwrap(), (12345, 12345));
        let e = lookup_user("no-such-user-meshfwd").unwrap_err();
        assert!(e.to_string().contains("no such user"), "{e}");
        assert!(effective_caps().is_some());
    }
}
