//! Running the host programs an image build needs (supermin, qemu-img, xz, depmod, tar, dpkg-query),
//! turning "not found" into the Debian package to install.

use super::ImageError;
use std::process::{Command, Output};

/// Longest stderr excerpt kept in an error message: enough for the tool's own diagnosis.
const MAX_STDERR_IN_ERROR: usize = 4000;

/// A host program and the Debian package that ships it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HostTool {
    pub program: &'static str,
    pub package: &'static str,
}

pub(crate) const SUPERMIN: HostTool = HostTool {
    program: "supermin",
    package: "supermin",
};
pub(crate) const QEMU_IMG: HostTool = HostTool {
    program: "qemu-img",
    package: "qemu-utils",
};
pub(crate) const XZ: HostTool = HostTool {
    program: "xz",
    package: "xz-utils",
};
/// By absolute path: /sbin is not on an ordinary user's PATH on Debian.
pub(crate) const DEPMOD: HostTool = HostTool {
    program: "/sbin/depmod",
    package: "kmod",
};
pub(crate) const DPKG_QUERY: HostTool = HostTool {
    program: "dpkg-query",
    package: "dpkg",
};
pub(crate) const TAR: HostTool = HostTool {
    program: "tar",
    package: "tar",
};

impl HostTool {
    /// A command for this tool.
    pub fn command(self) -> Command {
        Command::new(self.program)
    }

    /// Runs `command` (built from this tool) to completion; a non-zero exit is an error that
    /// quotes the tool's stderr.
    pub fn run(self, command: &mut Command) -> Result<Output, ImageError> {
        let output = self.output(command)?;
        if !output.status.success() {
            return Err(self.failed(command, &output));
        }
        Ok(output)
    }

    /// Runs `command` and returns its output whatever the exit status.
    pub fn output(self, command: &mut Command) -> Result<Output, ImageError> {
        command.output().map_err(|e| ImageError::MissingProgram {
            program: self.program.to_string(),
            package: self.package.to_string(),
            detail: e.to_string(),
        })
    }

    /// The error for a run of `command` that exited unsuccessfully.
    pub fn failed(self, command: &Command, output: &Output) -> ImageError {
        let mut stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        if stderr.len() > MAX_STDERR_IN_ERROR {
            let cut = stderr.len() - MAX_STDERR_IN_ERROR;
            let cut = (cut..stderr.len())
                .find(|i| stderr.is_char_boundary(*i))
                .unwrap_or(0);
            stderr = format!("…{}", &stderr[cut..]);
        }
        ImageError::ToolFailed {
            command: describe(command),
            status: output.status.to_string(),
            stderr,
        }
    }

    /// Checks the tool can be started at all (so a build fails before any work).
    pub fn check(self) -> Result<(), ImageError> {
        let flag = if self.program == "dpkg-query" || self.program == "supermin" {
            "--version"
        } else {
            "--help"
        };
        self.output(Command::new(self.program).arg(flag))
            .map(|_| ())
    }
}

/// `program arg arg…` for error messages (arguments are paths and package names here).
fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args().take(12) {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    if command.get_args().len() > 12 {
        text.push_str(" …");
    }
    text
}
