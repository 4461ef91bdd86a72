//! Running a network's plugin chain for one pod: ADD in order with
//! `prevResult` chaining, CHECK, DEL in reverse; the cache in between.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::exec::{self, Invocation, PluginLimits};
use super::{cache, CniError, CniResult, Command, NetworkList};

/// A port mapping for the `portMappings` capability (from the CRI
/// sandbox config's `port_mappings`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// The node's port; CRI mappings with host port 0 are not passed on.
    pub host_port: u16,
    /// The pod's port.
    pub container_port: u16,
    /// The protocol.
    pub protocol: Protocol,
    /// The node address to bind (empty: all).
    #[serde(rename = "hostIP", default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// A port mapping's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

/// Which pod to attach, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetwork {
    /// The sandbox id (`CNI_CONTAINERID`, `K8S_POD_INFRA_CONTAINER_ID`).
    pub sandbox_id: String,
    /// The pod's network namespace (`CNI_NETNS`).
    pub netns: PathBuf,
    /// The interface to make in it (`CNI_IFNAME`, normally `eth0`).
    pub ifname: String,
    /// `K8S_POD_NAMESPACE`.
    pub pod_namespace: String,
    /// `K8S_POD_NAME`.
    pub pod_name: String,
    /// `K8S_POD_UID`.
    pub pod_uid: String,
    /// Host ports for the `portMappings` capability.
    pub port_mappings: Vec<PortMapping>,
}

impl PodNetwork {
    /// `CNI_ARGS`, as the kubelet's dockershim and containerd build them.
    fn cni_args(&self) -> Result<String, CniError> {
        let mut args = String::from("IgnoreUnknown=1");
        for (key, field, value) in [
            ("K8S_POD_NAMESPACE", "pod namespace", &self.pod_namespace),
            ("K8S_POD_NAME", "pod name", &self.pod_name),
            ("K8S_POD_INFRA_CONTAINER_ID", "sandbox id", &self.sandbox_id),
            ("K8S_POD_UID", "pod uid", &self.pod_uid),
        ] {
            if value.contains([';', '=', '\0']) {
                return Err(CniError::InvalidRequest {
                    field,
                    why: format!("{value:?} contains ';', '=' or NUL"),
                });
            }
            args.push_str(&format!(";{key}={value}"));
        }
        Ok(args)
    }

    fn validate(&self) -> Result<(), CniError> {
        // The spec: the container id is alphanumerics, '_', '.', '-'. It also
        // names the cache file, so this keeps that a plain name.
        if self.sandbox_id.is_empty()
            || self.sandbox_id.len() > 128
            || !self
                .sandbox_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
            || self.sandbox_id.starts_with('.')
        {
            return Err(CniError::InvalidRequest {
                field: "sandbox id",
                why: format!(
                    "{:?} is not 1-128 letters, digits, '_', '.' or '-'",
                    self.sandbox_id
                ),
            });
        }
        crate::net::tap::validate_name(&self.ifname).map_err(|e| CniError::InvalidRequest {
            field: "interface name",
            why: e.to_string(),
        })?;
        if !self.netns.is_absolute() {
            return Err(CniError::InvalidRequest {
                field: "netns",
                why: format!("{} is not an absolute path", self.netns.display()),
            });
        }
        Ok(())
    }
}

/// What one plugin call is about: its `CNI_*` variables but the command.
struct Target<'a> {
    netns: &'a Path,
    container_id: &'a str,
    ifname: &'a str,
    args: &'a str,
}

/// A network's plugin chain with where to find the plugins and the cache.
#[derive(Debug, Clone)]
pub struct Cni {
    network: NetworkList,
    bin_dirs: Vec<PathBuf>,
    cache_dir: PathBuf,
    limits: PluginLimits,
}

impl Cni {
    /// The chain of `network`, plugins from `bin_dirs` (in order), results
    /// cached in `cache_dir` (e.g. `STATE_DIR/cni/results`).
    pub fn new(network: NetworkList, bin_dirs: Vec<PathBuf>, cache_dir: PathBuf) -> Self {
        Self {
            network,
            bin_dirs,
            cache_dir,
            limits: PluginLimits::default(),
        }
    }

    /// The same with other bounds on each plugin run.
    pub fn with_limits(mut self, limits: PluginLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The network this runs.
    pub fn network(&self) -> &NetworkList {
        &self.network
    }

    /// Attaches the pod: ADD through the chain, the result cached. If a
    /// plugin fails, DEL runs through the whole chain (as the spec asks of
    /// runtimes) and the ADD error is returned.
    pub async fn add(&self, pod: &PodNetwork) -> Result<CniResult, CniError> {
        pod.validate()?;
        let args = pod.cni_args()?;
        let added = self.add_chain(pod, &args).await;
        let result = match added {
            Ok(result) => result,
            Err(e) => {
                self.rollback(pod, &args).await;
                return Err(e);
            }
        };
        let last_plugin = self
            .network
            .plugins
            .last()
            .map_or("", |p| p.plugin_type.as_str());
        let parsed: Result<CniResult, CniError> =
            serde_json::from_value(result.clone()).map_err(|e| CniError::BadResult {
                plugin: last_plugin.to_string(),
                command: Command::Add,
                why: e.to_string(),
            });
        let cached = parsed.and_then(|parsed| {
            let entry = cache::Entry {
                kind: cache::KIND.to_string(),
                container_id: pod.sandbox_id.clone(),
                if_name: pod.ifname.clone(),
                netns: pod.netns.clone(),
                cni_args: args.clone(),
                port_mappings: pod.port_mappings.clone(),
                config: self.network.raw.clone(),
                config_source: self.network.source.clone(),
                result,
            };
            cache::write(&self.cache_path(pod), &entry)?;
            Ok(parsed)
        });
        match cached {
            Ok(parsed) => {
                tracing::info!(
                    pod = %pod.sandbox_id,
                    network = %self.network.name,
                    ips = ?parsed.sandbox_ips(&pod.ifname).iter().map(|ip| ip.address.to_string()).collect::<Vec<_>>(),
                    "CNI ADD done"
                );
                Ok(parsed)
            }
            Err(e) => {
                self.rollback(pod, &args).await;
                Err(e)
            }
        }
    }

    /// Checks the pod's attachment with CHECK through the chain, with the
    /// cached ADD result. Nothing to do if the list sets `disableCheck`.
    pub async fn check(&self, pod: &PodNetwork) -> Result<(), CniError> {
        pod.validate()?;
        let Some(entry) = cache::read(&self.cache_path(pod))? else {
            return Err(CniError::InvalidRequest {
                field: "sandbox id",
                why: format!("no cached CNI result for {} (was ADD run?)", pod.sandbox_id),
            });
        };
        let network = NetworkList::from_value(entry.config, &entry.config_source)?;
        if network.disable_check {
            return Ok(());
        }
        if !network.supports_check() {
            return Err(CniError::BadConfig {
                path: network.source.clone(),
                why: format!("cniVersion {} has no CHECK", network.cni_version),
            });
        }
        for plugin in &network.plugins {
            let stdin = plugin_stdin(&network, plugin, Some(&entry.result), &entry.port_mappings)?;
            self.invoke(
                &plugin.plugin_type,
                Command::Check,
                &Target {
                    netns: &entry.netns,
                    container_id: &pod.sandbox_id,
                    ifname: &pod.ifname,
                    args: &entry.cni_args,
                },
                stdin,
            )
            .await?;
        }
        Ok(())
    }

    /// Detaches the pod: DEL through the chain in reverse, with the chain,
    /// arguments and result ADD cached (so it works after a restart and a
    /// change of the conf dir); without a cache entry, this network's chain
    /// with `pod`'s arguments. Every plugin runs even if one fails; the
    /// cache entry goes only when all succeeded, so a retry can finish.
    pub async fn del(&self, pod: &PodNetwork) -> Result<(), CniError> {
        pod.validate()?;
        let path = self.cache_path(pod);
        let entry = cache::read(&path)?;
        let (network, netns, args, ports, prev) = match entry {
            Some(entry) => (
                NetworkList::from_value(entry.config, &entry.config_source)?,
                entry.netns,
                entry.cni_args,
                entry.port_mappings,
                Some(entry.result),
            ),
            None => (
                self.network.clone(),
                pod.netns.clone(),
                pod.cni_args()?,
                pod.port_mappings.clone(),
                None,
            ),
        };
        self.del_chain(&network, &netns, pod, &args, &ports, prev.as_ref())
            .await?;
        cache::remove(&path)?;
        tracing::info!(pod = %pod.sandbox_id, network = %network.name, "CNI DEL done");
        Ok(())
    }

    async fn add_chain(&self, pod: &PodNetwork, args: &str) -> Result<Value, CniError> {
        let mut prev: Option<Value> = None;
        for plugin in &self.network.plugins {
            let stdin = plugin_stdin(&self.network, plugin, prev.as_ref(), &pod.port_mappings)?;
            let out = self
                .invoke(
                    &plugin.plugin_type,
                    Command::Add,
                    &Target {
                        netns: &pod.netns,
                        container_id: &pod.sandbox_id,
                        ifname: &pod.ifname,
                        args,
                    },
                    stdin,
                )
                .await?;
            let result: Value = serde_json::from_slice(&out).map_err(|e| CniError::BadResult {
                plugin: plugin.plugin_type.clone(),
                command: Command::Add,
                why: e.to_string(),
            })?;
            if !result.is_object() {
                return Err(CniError::BadResult {
                    plugin: plugin.plugin_type.clone(),
                    command: Command::Add,
                    why: "not a JSON object".into(),
                });
            }
            prev = Some(result);
        }
        prev.ok_or_else(|| CniError::BadConfig {
            path: self.network.source.clone(),
            why: "no plugins".into(),
        })
    }

    async fn del_chain(
        &self,
        network: &NetworkList,
        netns: &Path,
        pod: &PodNetwork,
        args: &str,
        ports: &[PortMapping],
        prev: Option<&Value>,
    ) -> Result<(), CniError> {
        let mut first_error = None;
        for plugin in network.plugins.iter().rev() {
            let ran = match plugin_stdin(network, plugin, prev, ports) {
                Ok(stdin) => self
                    .invoke(
                        &plugin.plugin_type,
                        Command::Del,
                        &Target {
                            netns,
                            container_id: &pod.sandbox_id,
                            ifname: &pod.ifname,
                            args,
                        },
                        stdin,
                    )
                    .await
                    .map(drop),
                Err(e) => Err(e),
            };
            if let Err(e) = ran {
                tracing::warn!(pod = %pod.sandbox_id, plugin = %plugin.plugin_type, error = %e, "CNI DEL failed");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// DEL after a failed ADD; its own failures are logged, the ADD error wins.
    async fn rollback(&self, pod: &PodNetwork, args: &str) {
        if let Err(e) = self
            .del_chain(
                &self.network,
                &pod.netns,
                pod,
                args,
                &pod.port_mappings,
                None,
            )
            .await
        {
            tracing::warn!(pod = %pod.sandbox_id, error = %e, "cannot undo a failed CNI ADD");
        }
    }

    async fn invoke(
        &self,
        plugin: &str,
        command: Command,
        target: &Target<'_>,
        stdin: Vec<u8>,
    ) -> Result<Vec<u8>, CniError> {
        let binary = exec::find_plugin(plugin, &self.bin_dirs)?;
        let cni_path =
            std::env::join_paths(&self.bin_dirs).map_err(|e| CniError::InvalidRequest {
                field: "CNI bin dirs",
                why: e.to_string(),
            })?;
        tracing::debug!(pod = target.container_id, plugin, %command, "running CNI plugin");
        exec::run(
            Invocation {
                plugin,
                binary: &binary,
                command,
                env: vec![
                    ("CNI_CONTAINERID", target.container_id.into()),
                    ("CNI_NETNS", target.netns.as_os_str().to_owned()),
                    ("CNI_IFNAME", target.ifname.into()),
                    ("CNI_ARGS", target.args.into()),
                    ("CNI_PATH", cni_path),
                ],
                stdin,
            },
            &self.limits,
        )
        .await
    }

    fn cache_path(&self, pod: &PodNetwork) -> PathBuf {
        cache::path(&self.cache_dir, &pod.sandbox_id, &pod.ifname)
    }
}

/// A plugin's stdin, as libcni's `buildOneConfig` makes it: its own object
/// with the list's `name` and `cniVersion`, the previous result, and
/// `runtimeConfig` for the capabilities it declares.
fn plugin_stdin(
    network: &NetworkList,
    plugin: &super::PluginConf,
    prev: Option<&Value>,
    ports: &[PortMapping],
) -> Result<Vec<u8>, CniError> {
    let mut conf: Map<String, Value> = plugin.conf.clone();
    conf.insert("name".into(), Value::String(network.name.clone()));
    conf.insert(
        "cniVersion".into(),
        Value::String(network.cni_version.clone()),
    );
    if let Some(prev) = prev {
        conf.insert("prevResult".into(), prev.clone());
    }
    let ports: Vec<&PortMapping> = ports.iter().filter(|p| p.host_port != 0).collect();
    if plugin.has_capability("portMappings") && !ports.is_empty() {
        let mut runtime = Map::new();
        runtime.insert(
            "portMappings".into(),
            serde_json::to_value(&ports).map_err(|e| CniError::InvalidRequest {
                field: "port mappings",
                why: e.to_string(),
            })?,
        );
        conf.insert("runtimeConfig".into(), Value::Object(runtime));
    }
    serde_json::to_vec(&conf).map_err(|e| CniError::InvalidRequest {
        field: "plugin configuration",
        why: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> NetworkList {
        NetworkList::from_value(
            serde_json::json!({"cniVersion":"1.0.0","name":"pods","plugins":[
                {"type":"bridge","bridge":"b0"},
                {"type":"portmap","capabilities":{"portMappings":true}}]}),
            Path::new("/x.conflist"),
        )
        .unwrap()
    }

    fn pod() -> PodNetwork {
        PodNetwork {
            sandbox_id: "abc123".into(),
            netns: "/var/run/netns/p".into(),
            ifname: "eth0".into(),
            pod_namespace: "default".into(),
            pod_name: "web".into(),
            pod_uid: "u-1".into(),
            port_mappings: vec![
                PortMapping {
                    host_port: 8080,
                    container_port: 80,
                    protocol: Protocol::Tcp,
                    host_ip: String::new(),
                },
                PortMapping {
                    host_port: 0,
                    container_port: 81,
                    protocol: Protocol::Udp,
                    host_ip: String::new(),
                },
            ],
        }
    }

    #[test]
    fn stdin_carries_name_version_prev_result_and_capabilities() {
        let net = list();
        let pod = pod();
        let prev = serde_json::json!({"cniVersion": "1.0.0", "ips": []});
        let bridge: Value = serde_json::from_slice(
            &plugin_stdin(&net, &net.plugins[0], None, &pod.port_mappings).unwrap(),
        )
        .unwrap();
        assert_eq!(bridge["name"], "pods");
        assert_eq!(bridge["cniVersion"], "1.0.0");
        assert_eq!(bridge["bridge"], "b0");
        assert!(bridge.get("prevResult").is_none());
        assert!(bridge.get("runtimeConfig").is_none());
        let portmap: Value = serde_json::from_slice(
            &plugin_stdin(&net, &net.plugins[1], Some(&prev), &pod.port_mappings).unwrap(),
        )
        .unwrap();
        assert_eq!(portmap["prevResult"], prev);
        assert_eq!(
            portmap["runtimeConfig"],
            serde_json::json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]})
        );
    }

    #[test]
    fn cni_args_are_the_kubelets() {
        assert_eq!(
            pod().cni_args().unwrap(),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;\
             K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=u-1"
        );
        let mut bad = pod();
        bad.pod_name = "a;b".into();
        assert!(matches!(
            bad.cni_args(),
            Err(CniError::InvalidRequest {
                field: "pod name",
                ..
            })
        ));
    }

    #[test]
    fn bad_requests_are_refused_before_any_plugin_runs() {
        for change in [
            (|p: &mut PodNetwork| p.sandbox_id = "../x".into()) as fn(&mut PodNetwork),
            |p| p.sandbox_id = String::new(),
            |p| p.ifname = "a/b".into(),
            |p| p.netns = "relative".into(),
        ] {
            let mut p = pod();
            change(&mut p);
            assert!(
                matches!(p.validate(), Err(CniError::InvalidRequest { .. })),
                "{p:?}"
            );
        }
    }
}
