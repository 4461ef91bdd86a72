//! The container's mounts: containerd's default file systems, the pod's
//! hosts/hostname/resolv.conf files, and the CRI mounts as bind mounts of
//! their guest paths.

use std::path::{Component, Path};

use k8s_cri::v1::{Mount as CriMount, MountPropagation};
use oci_spec::runtime::{Mount, MountBuilder};
use vessel_agent_api::proto::SandboxInfo;

use super::SpecError;

/// Maps a CRI mount's host path to the guest path where the pod's VM sees
/// it. The sandbox manager shares the host path into the guest (virtio-fs)
/// and answers with the guest path; an error names the field through the
/// index (`mounts[i].host_path`).
pub trait HostPathMapper {
    /// The guest path of `mount.host_path`; `index` is the mount's place in `ContainerConfig.mounts`.
    fn guest_path(&self, index: usize, mount: &CriMount) -> Result<String, SpecError>;
}

impl<F> HostPathMapper for F
where
    F: Fn(usize, &CriMount) -> Result<String, SpecError>,
{
    fn guest_path(&self, index: usize, mount: &CriMount) -> Result<String, SpecError> {
        self(index, mount)
    }
}

/// One mount before it becomes an OCI mount.
fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, SpecError> {
    Ok(MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()?)
}

/// containerd's default mounts (`defaultMounts` less `/run`, which the CRI
/// plugin removes). A privileged container gets `/sys` and its cgroup file
/// system writable (`WithWriteableSysfs`, `WithWriteableCgroupfs`).
pub fn defaults(privileged: bool) -> Result<Vec<Mount>, SpecError> {
    let sys_ro: &[&str] = if privileged {
        &["nosuid", "noexec", "nodev", "rw"]
    } else {
        &["nosuid", "noexec", "nodev", "ro"]
    };
    let cgroup: &[&str] = if privileged {
        &["nosuid", "noexec", "nodev", "relatime", "rw"]
    } else {
        &["nosuid", "noexec", "nodev", "relatime", "ro"]
    };
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        // containerd shares the pause container's /dev/shm across the pod;
        // the agent has no pod-wide /dev/shm yet, so each container has its own.
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount("/sys", "sysfs", "sysfs", sys_ro)?,
        // In the container's cgroup namespace: its own cgroup.
        mount("/sys/fs/cgroup", "cgroup", "cgroup", cgroup)?,
    ])
}

/// A bind mount before sorting: destination, guest source, read-only, and
/// whether it came from the CRI request (for error messages).
struct Bind {
    dest: String,
    source: String,
    readonly: bool,
}

/// Every mount of the container: `base` (the defaults, plus any the caller
/// adds) less those a bind mount replaces (same destination, or anything
/// under `/dev` when `/dev` itself is mounted), then the pod's files and the
/// CRI mounts, parents before children (containerd's `WithMounts`). The
/// pod's `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` are mounted
/// unless the CRI mounts bring their own (the kubelet brings `/etc/hosts`),
/// writable unless the root file system is read-only, as containerd does.
pub fn all(
    base: Vec<Mount>,
    cri: &[CriMount],
    sandbox: &SandboxInfo,
    readonly_rootfs: bool,
    mapper: &dyn HostPathMapper,
) -> Result<Vec<Mount>, SpecError> {
    let mut binds = Vec::new();
    for (dest, source) in [
        ("/etc/hostname", &sandbox.hostname_path),
        ("/etc/hosts", &sandbox.hosts_path),
        ("/etc/resolv.conf", &sandbox.resolv_conf_path),
    ] {
        let brought = cri.iter().any(|m| clean(&m.container_path) == dest);
        if !source.is_empty() && !brought {
            binds.push(Bind {
                dest: dest.to_string(),
                source: source.clone(),
                readonly: readonly_rootfs,
            });
        }
    }
    for (i, m) in cri.iter().enumerate() {
        binds.push(cri_bind(i, m, mapper)?);
    }
    let mut mounts: Vec<Mount> = base
        .into_iter()
        .filter(|m| {
            let dest = m.destination().to_string_lossy();
            !binds
                .iter()
                .any(|b| b.dest == dest || (b.dest == "/dev" && dest.starts_with("/dev/")))
        })
        .collect();
    // Stable: equal depths keep the request's order.
    binds.sort_by_key(|b| Path::new(&b.dest).components().count());
    for b in binds {
        let rw = if b.readonly { "ro" } else { "rw" };
        mounts.push(mount(
            &b.dest,
            "bind",
            &b.source,
            &["rbind", "rprivate", rw],
        )?);
    }
    Ok(mounts)
}

/// A CRI mount, checked, with its guest source.
fn cri_bind(i: usize, m: &CriMount, mapper: &dyn HostPathMapper) -> Result<Bind, SpecError> {
    let field = |name: &str| format!("mounts[{i}].{name}");
    let dest = clean(&m.container_path);
    if !m.container_path.starts_with('/')
        || m.container_path.contains('\0')
        || Path::new(&m.container_path)
            .components()
            .any(|c| c == Component::ParentDir)
    {
        return Err(SpecError::invalid(
            field("container_path"),
            format!(
                "{:?} is not an absolute path without \"..\"",
                m.container_path
            ),
        ));
    }
    if dest == "/" {
        return Err(SpecError::invalid(
            field("container_path"),
            "cannot mount over the container's root",
        ));
    }
    if !m.host_path.starts_with('/') || m.host_path.contains('\0') {
        return Err(SpecError::invalid(
            field("host_path"),
            format!("{:?} is not an absolute path", m.host_path),
        ));
    }
    match MountPropagation::try_from(m.propagation) {
        Ok(MountPropagation::PropagationPrivate) => {}
        Ok(other) => {
            return Err(SpecError::invalid(
                field("propagation"),
                format!(
                    "{} is not supported: the host's mounts cannot propagate into the pod's VM, \
                     only PROPAGATION_PRIVATE is",
                    other.as_str_name()
                ),
            ))
        }
        Err(_) => {
            return Err(SpecError::invalid(
                field("propagation"),
                format!("unknown propagation {}", m.propagation),
            ))
        }
    }
    if m.recursive_read_only {
        return Err(SpecError::invalid(
            field("recursive_read_only"),
            "is not supported (vessel does not announce the recursive_read_only feature)",
        ));
    }
    if m.image.as_ref().is_some_and(|img| !img.image.is_empty()) {
        return Err(SpecError::invalid(
            field("image"),
            "image volumes are not supported",
        ));
    }
    if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
        return Err(SpecError::invalid(
            field("uidMappings"),
            "id-mapped mounts are not supported (vessel has no user namespaces)",
        ));
    }
    if m.selinux_relabel {
        tracing::debug!(
            mount = i,
            container_path = %m.container_path,
            "selinux_relabel ignored: the guest has no SELinux"
        );
    }
    let source = mapper.guest_path(i, m)?;
    Ok(Bind {
        dest,
        source,
        readonly: m.readonly,
    })
}

/// A path without `.` components, repeated or trailing slashes.
fn clean(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    format!("/{}", parts.join("/"))
}
