//! Host checks for `pyti doctor`: libvirt, virtlogd, QEMU, accelerator.
