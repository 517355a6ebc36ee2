//! Placeholder until the I/O shell lands.
use crate::cli::RunArgs;
use std::process::ExitCode;
pub fn main(_args: RunArgs) -> ExitCode {
    eprintln!("meshfwd: the forwarder is not built yet");
    ExitCode::from(1)
}
