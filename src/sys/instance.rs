//! One meshfwd per TUN per network namespace.
//!
//! A second `meshfwd tun0` would attach more queues to the first one's
//! multi-queue TUN, and both would receive and deliver every underlay packet:
//! every packet twice (issue #19). The guard is an abstract unix socket named
//! after the TUN, bound for the process's lifetime. Abstract names belong to
//! the network namespace (`tun0` in two namespaces are two names) and vanish
//! with the process, even after `kill -9`: no stale lock file, no cleanup.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};

/// The abstract socket name guarding TUN `tun` (shown as `@meshfwd/tun/NAME`
/// in /proc/net/unix and `ss -xl`).
pub fn lock_name(tun: &str) -> String {
    format!("meshfwd/tun/{tun}")
}

/// Held while this process forwards on the TUN; dropping it releases the name.
#[derive(Debug)]
pub struct InstanceLock {
    _socket: UnixListener,
}

/// Takes the TUN's name in this network namespace. `AddrInUse` means another
/// process holds it (see [`crate::procfs::abstract_unix_inodes`] to name it).
pub fn acquire(tun: &str) -> io::Result<InstanceLock> {
    let addr = SocketAddr::from_abstract_name(lock_name(tun).as_bytes())?;
    UnixListener::bind_addr(&addr).map(|s| InstanceLock { _socket: s })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_tun_is_refused_until_the_first_is_dropped() {
        // A name no real TUN can have (16+ characters), unique per test run.
        let tun = format!(
            "test-excl-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        );
        let first = acquire(&tun).expect("first lock");
        let e = acquire(&tun).expect_err("second lock must fail");
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(
            acquire(&format!("{tun}x")).is_ok(),
            "other TUN names are free"
        );
        let inodes = crate::procfs::abstract_unix_inodes(&lock_name(&tun));
        assert_eq!(inodes.len(), 1, "{inodes:?}");
        drop(first);
        acquire(&tun).expect("free again after drop");
    }
}
