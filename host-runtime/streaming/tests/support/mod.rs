//! Test support: clients speaking the protocols as client-go does, and a runtime running
//! real local processes.
#![allow(dead_code)]

pub mod data;
pub mod http;
pub mod runtime;
pub mod spdy_client;
