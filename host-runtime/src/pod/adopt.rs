//! Taking over a running pod that an earlier vesseld made (after a crash or
//! a restart of the unit): every part is found again from its name and its
//! records, the VMM and virtiofsd through their process records (pid and
//! start time, so a reused pid is not mistaken for them), and the agent is
//! reached again over the VM's vsock socket.

use std::path::Path;

use vessel_agent_api::proto::sandbox_client::SandboxClient;
use vessel_agent_api::proto::GetSandboxRequest;

use super::{agent_call, Made, Pod, PodConfig, PodError, AGENT_CALL_TIMEOUT, SHARE_DIR, TAP_NAME};
use crate::cgroup::{PodCgroup, CGROUP_ROOT};
use crate::net::Netns;
use crate::virtiofsd::Virtiofsd;
use crate::vm::VmProcess;

impl Pod {
    /// The running pod of `config` (a CRI pod's, with the same name it was
    /// made with), or `None` when its VMM no longer runs (what is left of it
    /// is then for [`super::sweep_one`]).
    pub async fn adopt(mut config: PodConfig) -> Result<Option<Pod>, PodError> {
        use std::os::unix::fs::MetadataExt;
        let state = config.state_dir();
        if !state.is_dir() {
            return Ok(None);
        }
        // The VMM's id is the owner of its directory.
        config.ids = std::fs::metadata(config.vm_dir())
            .ok()
            .and_then(|m| super::ids::PodIds::of_vmm(m.uid()));
        if let Some(parent) = super::recorded_cgroup_parent(&state) {
            config.cgroup_parent = parent;
        }
        let Some(mut vm) = VmProcess::adopt(config.vm_config())? else {
            return Ok(None);
        };
        let mut made = vec![
            Made::StateDir(state.clone()),
            Made::LogDir(config.log_dir()),
        ];
        if let Some(cg) =
            PodCgroup::find(Path::new(CGROUP_ROOT), &config.cgroup_parent, &config.name)?
        {
            made.push(Made::Cgroup(cg));
        }
        made.push(Made::ShareMount(state.join(SHARE_DIR)));
        if let Some(netns) = Netns::existing(&config.netns_name())? {
            made.push(Made::Netns(netns));
            if let Some(cri) = &config.cri {
                // The network vesseld did not watch while it was down: CNI
                // CHECK through the chain, in the background (start-up must
                // not wait on plugins; a failure is reported, not acted on:
                // the pod's VM and containers still run).
                let (cni, attach) = (cri.cni.clone(), cri.attach.clone());
                let pod = config.name.clone();
                tokio::spawn(async move {
                    match cni.check(&attach).await {
                        Ok(()) => {
                            tracing::info!(pod = %pod, "CNI CHECK of the adopted pod's network passed")
                        }
                        Err(e) => {
                            tracing::warn!(pod = %pod, error = %e, "CNI CHECK of the adopted pod's network failed")
                        }
                    }
                });
                made.push(Made::CniAttachment {
                    cni: Box::new(cri.cni.clone()),
                    attach: Box::new(cri.attach.clone()),
                });
            }
            made.push(Made::Tap {
                netns: config.netns_path(),
                name: TAP_NAME.to_string(),
            });
        }
        let mut pids = Vec::new();
        if let Some(fs) = Virtiofsd::adopt(config.virtiofsd_config())? {
            pids.extend(fs.pid());
            made.push(Made::Virtiofsd(fs));
        }
        pids.extend(vm.pid());
        let channel = vm.connect_agent(AGENT_CALL_TIMEOUT).await;
        let agent = channel.as_ref().ok().cloned();
        made.push(Made::Vm { vm, agent });
        let mut pod = Pod {
            config,
            made,
            sandbox: None,
            pids,
            cni_result: None,
        };
        let channel = match channel {
            Ok(c) => c,
            // Kept, so that stopping it undoes everything found.
            Err(e) => {
                tracing::warn!(pod = %pod.config.name, error = %e, "adopted a pod whose agent does not answer");
                return Ok(Some(pod));
            }
        };
        let got = agent_call(
            "Sandbox.Get",
            AGENT_CALL_TIMEOUT,
            SandboxClient::new(channel).get(GetSandboxRequest {}),
        )
        .await?;
        pod.sandbox = got.sandbox;
        Ok(Some(pod))
    }
}
