//! `pyti image build`.

use crate::cli::ImageCommand;
use std::process::ExitCode;

pub fn run(command: ImageCommand) -> anyhow::Result<ExitCode> {
    match command {
        ImageCommand::Build { .. } => {
            anyhow::bail!("pyti image build is not implemented in this build yet (tracked in issue 3); nothing was done")
        }
    }
}
