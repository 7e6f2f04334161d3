//! vmanager: drives libvirt for pyti. (Overview to be written with the crate.)
pub mod host_check;
pub mod image;
