//! `meshfwd check`: preflight checks (placeholder until implemented).
use crate::cli::CheckArgs;
use std::process::ExitCode;

pub fn run(_args: &CheckArgs) -> ExitCode {
    eprintln!("meshfwd check: not implemented yet");
    ExitCode::from(1)
}
