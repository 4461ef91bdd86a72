#!/usr/bin/env bash
# vessel's main job for now (README, `make run`): build everything, then run
# one real pod with `vesseld run-pod`: a network namespace with a tap, a
# virtiofsd sharing a busybox rootfs, a pod VM whose agent sets the sandbox up
# and runs one container (its output streamed here), then everything stopped
# and checked gone. Extra arguments become the container's command, e.g.
#   make run                          # the default greeting, hostname, eth0, ping
#   bash tests/demo.sh sh -c 'ls /'   # your own command
# Runs through tests/kvm-host, which picks native KVM or the nested test host;
# the exit status is the container's.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

if [ "${1:-}" = --in-kvm-host ]; then
  shift
  # Inside the KVM host: sockets must be on a tmpfs ($VESSEL_SCRATCH; the
  # project dir may be 9p), and so is the rootfs virtiofsd serves.
  scratch=${VESSEL_SCRATCH:?tests/kvm-host sets VESSEL_SCRATCH}
  rootfs=$scratch/demo-rootfs
  rm -rf "$rootfs"
  mkdir -p "$rootfs"/{bin,proc,sys,dev,tmp,etc,root}
  cp /bin/busybox "$rootfs/bin/busybox"
  for applet in sh echo cat ls hostname ip ping sleep id uname mount ps; do
    ln -s busybox "$rootfs/bin/$applet"
  done
  echo 'root:x:0:0:root:/root:/bin/sh' >"$rootfs/etc/passwd"
  echo 'root:x:0:' >"$rootfs/etc/group"
  status=0
  "$VESSEL_VESSELD" run-pod --rootfs "$rootfs" --run-dir "$scratch/vessel" --state-dir "$scratch/state" -- "$@" || status=$?
  rm -rf "$rootfs"
  exit "$status"
fi

eval "$(tests/artifacts.sh)"   # deps (busybox-static), kernel, initramfs, virtiofsd, binaries
exec tests/kvm-host/run bash "$repo/tests/demo.sh" --in-kvm-host "$@"
