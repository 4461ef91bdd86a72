//! vesseld's library: the parts of the host runtime, one module per concept.

pub mod vm;
