//! vesseld's library: the parts of the host runtime, one module per concept.

pub mod cgroup;
pub mod check;
pub mod cni;
pub mod config;
pub mod container;
pub mod cri;
pub mod daemon;
pub mod net;
pub mod pod;
pub mod process;
pub mod sandbox;
pub mod store;
pub mod streaming;
pub mod virtiofsd;
pub mod vm;
