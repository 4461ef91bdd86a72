//! The agent API, generated from `proto/*.proto`.
//!
//! Everything of the current version is re-exported here, so callers write
//! `proto::CheckRequest` and `proto::health_client::HealthClient`.

/// Package `vessel.agent.v1`: messages, plus a client and a server module per service.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("vessel.agent.v1");
}

pub use v1::*;
