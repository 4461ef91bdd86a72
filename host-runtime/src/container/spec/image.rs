//! What a container spec takes from its image's config.

/// The parts of an OCI image config (`config` of the image's config blob)
/// that shape a container's process. The image store fills it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `Env`: `KEY=value` entries, in order.
    pub env: Vec<String>,
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `WorkingDir`; empty for none.
    pub working_dir: String,
    /// `User`: `user`, `uid`, `user:group` or `uid:gid`; empty for none.
    pub user: String,
    /// `StopSignal` (`SIGTERM`, `15`, ...); empty for none. Not part of the
    /// spec: the container manager uses it to stop the container.
    pub stop_signal: String,
}
