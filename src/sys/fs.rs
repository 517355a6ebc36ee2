//! File locks: an open file flows in, the process holds an exclusive
//! `flock` on its open file description when the call returns (released when
//! the last descriptor of that description is closed).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Blocks until this open file description holds an exclusive `flock` on
/// `file`, retrying when a signal interrupts the wait.
pub fn lock_exclusive(file: &File) -> io::Result<()> {
    loop {
        // SAFETY: flock only takes a descriptor, which `file` keeps open for
        // the call; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
