//! `meshfwd attach` / `detach`: container wiring (placeholder until implemented).
use crate::cli::{AttachArgs, DetachArgs};
use std::process::ExitCode;

pub fn attach(_args: &AttachArgs) -> ExitCode {
    eprintln!("meshfwd attach: not implemented yet");
    ExitCode::from(1)
}

pub fn detach(_args: &DetachArgs) -> ExitCode {
    eprintln!("meshfwd detach: not implemented yet");
    ExitCode::from(1)
}
