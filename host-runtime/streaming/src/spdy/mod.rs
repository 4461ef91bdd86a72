//! SPDY/3 as Kubernetes uses it (the `SPDY/3.1` upgrade of client-go and the kubelet).
//!
//! Written by hand: no maintained Rust crate speaks SPDY/3. Everything from the wire is
//! hostile: lengths are checked, header blocks inflate under a cap, streams are capped,
//! and any malformed frame drops the whole session.

pub mod dictionary;
pub mod frame;
pub mod header_block;
pub mod session;
