//! Shared helpers of the root-only namespace tests.
#![allow(dead_code)]

use std::process::Command;

/// These tests need root and iproute2. Without them they fail loudly instead of
/// passing: a skipped check must never look like a passed one. They are
/// `#[ignore]`d for plain `cargo test`; `scripts/test.sh` runs them as root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert!(
        unsafe { libc::geteuid() } == 0,
        "this namespace test needs root (run scripts/test.sh as root, or `cargo test --lib` for the pure tests)"
    );
    assert!(
        Command::new("ip").arg("-V").output().is_ok(),
        "this namespace test needs `ip` (apt-get install iproute2)"
    );
}

/// Runs a command, asserts success, returns its stdout.
pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deletes the namespaces it holds when dropped (also while unwinding).
#[derive(Default)]
pub struct Namespaces(pub Vec<String>);

impl Namespaces {
    /// Creates netns `name` with `lo` up and takes ownership of it.
    pub fn add(&mut self, name: &str) {
        run(&["ip", "netns", "add", name]);
        self.0.push(name.to_owned());
        run(&["ip", "-n", name, "link", "set", "lo", "up"]);
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in self.0.iter().rev() {
            match Command::new("ip").args(["netns", "del", name]).status() {
                Ok(s) if s.success() => {}
                other => eprintln!("WARNING: could not delete netns {name}: {other:?}"),
            }
        }
    }
}
