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

/// An image config blob's `config` object, as the OCI image spec names its
/// fields (absent fields and `null`s are empty).
#[derive(Debug, Default, serde::Deserialize)]
struct OciImageConfig {
    #[serde(default)]
    config: Option<OciProcessConfig>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct OciProcessConfig {
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    stop_signal: Option<String>,
}

impl ImageConfig {
    /// Reads the parts that matter from an image's config blob (JSON).
    pub fn from_config_json(blob: &[u8]) -> Result<Self, serde_json::Error> {
        let parsed: OciImageConfig = serde_json::from_slice(blob)?;
        let c = parsed.config.unwrap_or_default();
        Ok(ImageConfig {
            env: c.env.unwrap_or_default(),
            entrypoint: c.entrypoint.unwrap_or_default(),
            cmd: c.cmd.unwrap_or_default(),
            working_dir: c.working_dir.unwrap_or_default(),
            user: c.user.unwrap_or_default(),
            stop_signal: c.stop_signal.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_config_blob_gives_its_process_fields() {
        let blob = br#"{"architecture":"amd64","config":{"Env":["PATH=/bin"],"Cmd":["sh"],
            "Entrypoint":null,"WorkingDir":"/w","User":"1000:1000","StopSignal":"SIGQUIT"},
            "rootfs":{"type":"layers","diff_ids":[]}}"#;
        let c = ImageConfig::from_config_json(blob).unwrap();
        assert_eq!(c.env, ["PATH=/bin"]);
        assert_eq!(c.cmd, ["sh"]);
        assert!(c.entrypoint.is_empty());
        assert_eq!(c.working_dir, "/w");
        assert_eq!(c.user, "1000:1000");
        assert_eq!(c.stop_signal, "SIGQUIT");
        assert_eq!(
            ImageConfig::from_config_json(b"{}").unwrap(),
            ImageConfig::default()
        );
    }
}
