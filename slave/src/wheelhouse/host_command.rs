//! Running the host tools the wheelhouse needs (uv, pip, the helper script) without blocking the
//! executor, with a deadline and bounded output.

use super::WheelhouseError;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

/// Bytes of a tool's stdout and of its stderr kept: enough for a resolver's explanation or a
/// lock file of a few hundred packages; the rest is dropped.
pub(crate) const MAX_TOOL_OUTPUT_BYTES: u64 = 4 * 1024 * 1024;

/// What a finished tool said.
pub(crate) struct ToolOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `command` with `stdin` as its input, killing it after `timeout` (`Ok(None)`).
pub(crate) async fn run_tool(
    mut command: Command,
    stdin: &[u8],
    timeout: Duration,
) -> Result<Option<ToolOutput>, WheelhouseError> {
    let program = format!("{:?}", command.as_std().get_program());
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .env("NO_COLOR", "1");
    let mut child = command
        .spawn()
        .map_err(WheelhouseError::io("cannot start", program))?;
    let mut input = child.stdin.take();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let stdin = stdin.to_vec();
    let work = async move {
        let feed = async {
            if let Some(input) = input.as_mut() {
                // A tool that exits without reading its input is not an error here.
                let _ = input.write_all(&stdin).await;
            }
            drop(input);
        };
        let (_, out, err, status) = tokio::join!(
            feed,
            read_bounded(stdout.as_mut()),
            read_bounded(stderr.as_mut()),
            child.wait()
        );
        (out, err, status)
    };
    match tokio::time::timeout(timeout, work).await {
        Err(_) => Ok(None),
        Ok((out, err, status)) => Ok(Some(ToolOutput {
            success: status.map(|s| s.success()).unwrap_or(false),
            stdout: out,
            stderr: err,
        })),
    }
}

async fn read_bounded<R: tokio::io::AsyncRead + Unpin>(reader: Option<&mut R>) -> String {
    let Some(reader) = reader else {
        return String::new();
    };
    let mut kept = Vec::new();
    let _ = reader
        .take(MAX_TOOL_OUTPUT_BYTES)
        .read_to_end(&mut kept)
        .await;
    // Drain the rest so the tool never blocks on a full pipe.
    let _ = tokio::io::copy(reader, &mut tokio::io::sink()).await;
    String::from_utf8_lossy(&kept).into_owned()
}

/// The last `max` bytes of a tool's message, trimmed: resolvers put the explanation last.
pub(crate) fn message_tail(text: &str, max: usize) -> String {
    let text = text.trim();
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}
