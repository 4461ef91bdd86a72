#!/usr/bin/env bash
# One-off smoke check of virtio-net on a real tap (not part of the suites):
# creates a netns with a tap (10.77.0.1/24) in it, boots the standard guest
# with `--net tap=...,netns=...,mac=...`, waits for the guest agent's vsock
# to answer, then prints the VMM's net debug lines, the control API's
# `info` and `counters`, and the tap's counters. The guest agent does not
# configure eth0 yet, so the expected result is "device probed and
# activated" (DRIVER_OK, features acked), with no frames moved: a frame the
# host sends waits for RX buffers (`rx_waits` 1), since the guest never
# opens eth0.
#
#   tests/smoke/net-tap.sh            # builds artifacts, runs via kvm-host
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
if [ "${VESSEL_KVM_HOST_INSIDE:-}" != 1 ] && [ "${1:-}" != --inside ]; then
  cd "$repo"
  eval "$(tests/artifacts.sh)"
  exec tests/kvm-host/run "$0" --inside
fi

ns=vsl-smoke-$$
dir=${VESSEL_SCRATCH:-$(mktemp -d)}/net-smoke-$$
mkdir -p "$dir"
vmm_pid=
cleanup() {
  if [ -n "$vmm_pid" ]; then
    kill "$vmm_pid" 2>/dev/null || true
    wait "$vmm_pid" 2>/dev/null || true   # the VMM exits 4 on SIGTERM
  fi
  ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT

modprobe tun 2>/dev/null || true
ip netns add "$ns"
ip -n "$ns" tuntap add dev vtap0 mode tap
ip -n "$ns" addr add 10.77.0.1/24 dev vtap0
ip -n "$ns" link set vtap0 up

VESSEL_VMM_LOG=vessel_vmm=debug "$VESSEL_VMM" --kernel "$VESSEL_KERNEL" --initramfs "$VESSEL_INITRAMFS" \
  --memory 256 --console "$dir/console.log" --api "$dir/api.sock" --vsock "$dir/vsock.sock" \
  --net "tap=vtap0,netns=/var/run/netns/$ns,mac=52:54:00:77:00:02" 2>"$dir/vmm.log" &
vmm_pid=$!

ask() {
  python3 - "$dir/api.sock" "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(('{"op":"%s"}\n' % sys.argv[2]).encode()); print(s.makefile().readline().strip())
PY
}

# The guest is up when its agent answers on vsock port 1024.
for _ in $(seq 1 120); do
  if python3 - "$dir/vsock.sock" <<'PY' 2>/dev/null; then break; fi
import socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(2); s.connect(sys.argv[1])
s.sendall(b"CONNECT 1024\n"); assert s.recv(64).startswith(b"OK")
PY
  kill -0 "$vmm_pid" || { echo "VMM exited"; cat "$dir/vmm.log"; exit 1; }
  sleep 0.5
done

echo "== VMM net log"; grep -i "net" "$dir/vmm.log" || true
echo "== info"; ask info
echo "== counters"; ask counters
echo "== tap counters"; ip -n "$ns" -s link show vtap0
echo "== guest console (virtio/net lines)"; grep -i -E "virtio|eth0|net" "$dir/console.log" || true
grep -q "virtio-net: activated" "$dir/vmm.log" && echo "net smoke: OK (device activated by the guest driver)" \
  || { echo "net smoke: FAILED (guest driver never set DRIVER_OK)"; exit 1; }
