//! Every libvirt, qemu-img and socket call blocks (a revert takes up to seconds): this moves them
//! off the async executor.

use crate::VmError;

/// Runs a blocking closure on tokio's blocking pool and waits for it without blocking the executor.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, VmError>
where
    F: FnOnce() -> Result<T, VmError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| VmError::Worker(e.to_string()))?
}
