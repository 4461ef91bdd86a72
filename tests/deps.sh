#!/usr/bin/env bash
# Installs what vessel's build and tests need on a fresh Debian 12 machine.
# Idempotent and cheap when everything is already there: it checks before it
# installs, so the warm path costs a few dpkg queries.
set -euo pipefail

apt_pkgs=(
  build-essential pkg-config cpio gzip lz4 file   # initramfs, static agent
  qemu-system-x86                                 # nested test host + peer VMM
  busybox-static                                  # test images
  docker-registry apache2-utils openssl           # image store tests: local registry, htpasswd, token signing
  containerd                                      # vessel-client tests: a real peer CRI runtime
  protobuf-compiler                               # k8s-cri (CRI protos) builds with the system protoc
  iproute2 util-linux                             # taps, netns, unshare, nsenter
  dwarves                                         # pahole: the test host's L1 shutdown probe (tests/kvm-host/guest-run)
  containernetworking-plugins iptables            # CNI tests: bridge, host-local, portmap
  systemd                                         # systemd-analyze verify of host-runtime/deploy/vesseld.service
  python3 python3-pip
)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq -o DPkg::Lock::Timeout=600 "${missing[@]}" >&2
fi

# clippy and rustfmt: components of the machine's toolchain, added if missing.
for tool in cargo-clippy rustfmt; do
  command -v "$tool" >/dev/null && continue
  command -v rustup >/dev/null || { echo "deps: $tool missing and no rustup to add it" >&2; exit 1; }
  echo "deps: adding the rust component ${tool#cargo-}" >&2
  rustup component add "${tool#cargo-}" >&2
done
