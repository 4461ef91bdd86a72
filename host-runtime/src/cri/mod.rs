//! vesseld's CRI gRPC face, one file per RPC family.

pub mod image;
pub mod runtime;
