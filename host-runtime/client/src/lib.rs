//! vessel's CRI client: connect to a CRI runtime over its Unix socket, load
//! crictl-format config files, and run crictl's verbs (the `vessel` binary is
//! a thin command line over this library).

mod config;
mod connect;
mod error;
pub mod logs;
pub mod output;
mod resolve;
pub mod terminal;
pub mod verbs;

pub use config::{
    load_container_config, load_pod_config, parse_container_config, parse_pod_config,
    MAX_CONFIG_SIZE,
};
pub use connect::{
    call, connect, connect_with_timeout, request, socket_path, Cri, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_ENDPOINT, MAX_DECODE_MESSAGE_SIZE,
};
pub use error::ClientError;
pub use resolve::{resolve_container, resolve_id, resolve_pod};
