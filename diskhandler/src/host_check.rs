//! Host checks for `pyti doctor`: libguestfs appliance, nbdkit.
