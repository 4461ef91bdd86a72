//! The Kubernetes streaming server: exec, attach and port-forward over SPDY/3.1 and
//! WebSocket, for whatever implements a small runtime trait. It knows nothing of vessel.

pub mod spdy;
