//! The daemon's command line as a process, without root: start-up errors
//! exit 2 with one line, and a log that cannot be written never crashes it.

use std::process::{Command, Stdio};

fn meshfwd(args: &[&str], stderr: Stdio) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_meshfwd"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .output()
        .expect("run meshfwd")
}

/// Issue #19: a failed write to stderr panicked (`failed printing to
/// stderr`), and `panic = "abort"` turned that into SIGABRT (exit 134).
#[test]
fn a_full_stderr_never_aborts_the_daemon() {
    // --local outside the underlay: refused while resolving, logged as an error.
    let args = ["--local", "10.1.2.3", "tun0"];
    let out = meshfwd(&args, Stdio::piped());
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(" ERROR [meshfwd::runtime] --local: "), "{err}");
    assert!(err.ends_with('\n') && err.lines().count() == 1, "{err}");

    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let out = meshfwd(&args, Stdio::from(full));
    assert_eq!(
        out.status.code(),
        Some(2),
        "with stderr on /dev/full: {:?}",
        out.status
    );
}

/// The same with a closed pipe (EPIPE): the reader went away before meshfwd wrote.
#[test]
fn a_closed_log_pipe_never_aborts_the_daemon() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshfwd"))
        .args(["--local", "10.1.2.3", "tun0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn meshfwd");
    drop(child.stderr.take());
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(2), "{status:?}");
}
