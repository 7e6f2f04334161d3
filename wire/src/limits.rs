//! Every bound pyti enforces, named once, with why it is that number.
//!
//! Guest output, RPC payloads and recipes are untrusted; each limit here is checked where the data
//! enters the process, before it is stored or parsed further.

/// Bytes of stdout and of stderr kept per step by default (head and tail halves). 64 KiB holds a
/// full pytest failure report while keeping a 100-step result small enough for one RPC.
pub const DEFAULT_STEP_OUTPUT_BYTES: u64 = 64 * 1024;
/// Upper bound a recipe or task may raise the per-stream output cap to.
pub const MAX_STEP_OUTPUT_BYTES: u64 = 1024 * 1024;
/// Largest `result.json` the host will read from an I/O disk (guest-written, untrusted).
pub const MAX_RESULT_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Largest total of declared artifacts read back from an I/O disk.
pub const MAX_ARTIFACT_BYTES: u64 = 64 * 1024 * 1024;
/// Largest `task.json`: commands are short; anything bigger is a bug or an attack.
pub const MAX_TASK_FILE_BYTES: u64 = 1024 * 1024;
/// Largest recipe file accepted by `pyti recipes check` and the loaders.
pub const MAX_RECIPE_FILE_BYTES: u64 = 256 * 1024;
/// Steps per recipe section (`prepare` or `steps`): recipes describe a few phases, not scripts.
pub const MAX_STEPS: usize = 32;
/// Length of a step name (`install`, `import`, `test`…).
pub const MAX_STEP_NAME_CHARS: usize = 64;
/// Length of one step's command after template expansion.
pub const MAX_COMMAND_BYTES: usize = 16 * 1024;
/// Shortest and longest per-step timeout a recipe may ask for, in seconds.
pub const MIN_STEP_TIMEOUT_SECS: u64 = 1;
pub const MAX_STEP_TIMEOUT_SECS: u64 = 6 * 60 * 60;
/// Guest memory bounds in MiB: below 256 the Debian kernel + CPython do not boot reliably; the
/// upper bound keeps a typo from asking the host for a terabyte.
pub const MIN_GUEST_MEMORY_MIB: u64 = 256;
pub const MAX_GUEST_MEMORY_MIB: u64 = 64 * 1024;
/// vCPUs per guest (2 gave nothing under TCG; KVM hosts may want more).
pub const MAX_GUEST_VCPUS: u64 = 64;
/// Distribution packages a recipe's guest may list.
pub const MAX_GUEST_PACKAGES: usize = 512;
/// Largest line the agent may send over its channel; longer lines are a protocol error.
pub const MAX_AGENT_MESSAGE_BYTES: usize = 64 * 1024;
