#!/usr/bin/env bash
# Installs virtiofsd (the vhost-user virtio-fs daemon vessel shares host
# directories with) from crates.io at a pinned version, and prints the path
# of the binary as the last line of stdout:
#   virtiofsd=$(tests/tools/virtiofsd.sh | tail -n 1)
# Idempotent: a cached build is reused. Cache:
#   ${VESSEL_CACHE_DIR:-$HOME/.cache/vessel}/tools/virtiofsd-<version>
# Debian packages it builds against (libseccomp-dev, libcap-ng-dev,
# pkg-config) are apt-installed first if missing. Progress goes to stderr.
set -euo pipefail

version=${VESSEL_VIRTIOFSD_VERSION:-1.14.0}
root=${VESSEL_CACHE_DIR:-$HOME/.cache/vessel}/tools/virtiofsd-$version
bin=$root/bin/virtiofsd

if [ ! -x "$bin" ]; then
  missing=()
  for p in libseccomp-dev libcap-ng-dev pkg-config; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "virtiofsd: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq -o DPkg::Lock::Timeout=600 "${missing[@]}" >&2
  fi
  command -v cargo >/dev/null || { echo "virtiofsd: cargo missing (install a Rust toolchain)" >&2; exit 1; }
  echo "virtiofsd: building virtiofsd $version into $root (a few minutes, once)" >&2
  # Build in a temp root, then rename: an interrupted build leaves no half install.
  mkdir -p "$(dirname "$root")"
  tmp=$(mktemp -d "$root.tmp.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  cargo install --locked --quiet --version "=$version" --root "$tmp" virtiofsd >&2
  rm -rf "$root"
  mv "$tmp" "$root"
  trap - EXIT
fi
"$bin" --version >&2
echo "$bin"
