#!/usr/bin/env bash
# vessel's main job (README, `make run`): build everything, start `vesseld
# serve` on its default configuration (socket, state and run dirs moved to a
# scratch dir, a CNI conflist of Debian's bridge + host-local + portmap
# plugins), fill a local registry (Debian's docker-registry on 127.0.0.1)
# with a busybox image, and drive one pod through the CRI with the `vessel`
# client as the kubelet would: pull, runp, create, start, logs, inspect,
# stopp, rmp; then check that nothing of the pod is left and stop vesseld.
# Extra arguments become the container's command, e.g.
#   make run                          # the default greeting
#   bash tests/demo.sh sh -c 'ls /'   # your own command
# `--run-pod` runs the developer tool `vesseld run-pod` instead (no CRI).
# Runs through tests/kvm-host, which picks native KVM or the nested test
# host; the exit status is the container's.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

run_pod() {
  # `vesseld run-pod`: one pod, one container, no CRI, no image store.
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
}

cri_demo() {
  scratch=${VESSEL_SCRATCH:?tests/kvm-host sets VESSEL_SCRATCH}
  demo=$scratch/cri-demo
  rm -rf "$demo"
  mkdir -p "$demo"/{cni,logs,registry}
  say() { printf '\n== %s\n' "$*"; }
  # A registry on 127.0.0.1 with the busybox image.
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat >"$demo/registry/config.yml" <<YAML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $demo/registry/data
http:
  addr: 127.0.0.1:$port
YAML
  /usr/bin/docker-registry serve "$demo/registry/config.yml" >"$demo/registry/log" 2>&1 &
  registry_pid=$!
  vesseld_pid=
  cleanup() {
    [ -n "$vesseld_pid" ] && kill "$vesseld_pid" 2>/dev/null && wait "$vesseld_pid" 2>/dev/null
    kill "$registry_pid" 2>/dev/null; wait "$registry_pid" 2>/dev/null || true
  }
  trap cleanup EXIT
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  image=$("$VESSEL_PUSH_BUSYBOX" "127.0.0.1:$port")
  say "registry on 127.0.0.1:$port holds $image"

  # vesseld on the default configuration, paths moved to the scratch dir.
  cat >"$demo/cni/10-vessel-demo.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "vessel-demo", "plugins": [
  {"type": "bridge", "bridge": "vsl-demo", "isGateway": true,
   "ipam": {"type": "host-local", "dataDir": "$demo/ipam",
            "ranges": [[{"subnet": "10.88.0.0/24", "gateway": "10.88.0.1"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
JSON
  cat >"$demo/config.toml" <<TOML
socket = "$demo/vessel.sock"
state_dir = "$demo/state"
run_dir = "$demo/run"
[cni]
conf_dir = "$demo/cni"
[registry.registries."127.0.0.1:$port"]
plain_http = true
TOML
  RUST_LOG=${RUST_LOG:-info} "$VESSEL_VESSELD" serve --config "$demo/config.toml" 2>"$demo/vesseld.log" &
  vesseld_pid=$!
  export VESSEL_RUNTIME_ENDPOINT="unix://$demo/vessel.sock"
  for _ in $(seq 300); do [ -S "$demo/vessel.sock" ] && break; sleep 0.1; done
  vessel() { "$VESSEL_CLIENT" "$@"; }
  say "vessel version"; vessel version
  say "vessel pull $image"; vessel pull "$image"
  cat >"$demo/pod.json" <<JSON
{"metadata": {"name": "demo", "namespace": "default", "uid": "demo-uid", "attempt": 0},
 "hostname": "demo", "log_directory": "$demo/logs", "linux": {}}
JSON
  if [ "$#" -eq 0 ]; then
    set -- sh -c 'echo hello from a vessel pod; hostname; ip addr show eth0; ping -c 1 -W 5 10.88.0.1; exit 3'
  fi
  python3 - "$image" "$@" >"$demo/container.json" <<'PY'
import json, sys
print(json.dumps({"metadata": {"name": "demo"}, "image": {"image": sys.argv[1]},
                  "command": sys.argv[2:], "log_path": "demo.log", "linux": {}}))
PY
  say "vessel runp pod.json"; pod=$(vessel runp "$demo/pod.json"); echo "$pod"
  say "vessel create / start"
  ctr=$(vessel create "$pod" "$demo/container.json" "$demo/pod.json"); echo "$ctr"
  vessel start "$ctr"
  for _ in $(seq 600); do
    state=$(vessel inspect "$ctr" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"]["state"])')
    [ "$state" = CONTAINER_EXITED ] && break
    sleep 0.1
  done
  say "vessel logs $ctr"; vessel logs "$ctr"
  say "vessel inspect $ctr (state, exit code)"
  line=$(vessel inspect "$ctr" | python3 -c 'import json,sys; s=json.load(sys.stdin)["status"]; print(s["state"], s["exitCode"], s.get("reason",""))')
  echo "$line"
  status=$(echo "$line" | awk '{print $2}')
  say "vessel pods"; vessel pods
  say "vessel stopp / rmp"; vessel stopp "$pod"; vessel rmp "$pod"
  left=$(ls -A "$demo/run/pods" 2>/dev/null; ip netns list | grep -c vessel- || true; ls "$demo/ipam/vessel-demo" 2>/dev/null | grep -c '^10\.' || true)
  if [ "$(echo "$left" | tr -d '0\n')" = "" ]; then
    say "nothing of pod demo is left"
  else
    say "LEFT BEHIND: $left"; status=99
  fi
  exit "$status"
}

case "${1:-}" in
  --in-kvm-host) shift
    if [ "${1:-}" = --run-pod ]; then shift; run_pod "$@"; fi
    cri_demo "$@" ;;
esac

eval "$(tests/artifacts.sh)"   # deps, kernel, initramfs, virtiofsd, binaries
exec tests/kvm-host/run bash "$repo/tests/demo.sh" --in-kvm-host "$@"
