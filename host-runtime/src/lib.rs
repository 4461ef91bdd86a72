//! vesseld's library: the parts of the host runtime, one module per concept.

pub mod cri;
pub mod net;
pub mod pod;
pub mod virtiofsd;
pub mod vm;
