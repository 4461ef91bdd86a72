#!/usr/bin/env bash
# Runs the end-to-end suite: builds the test binaries on this machine, then
# runs each one through tests/kvm-host/run, where guests can boot (natively
# or nested). Needs VESSEL_KERNEL, VESSEL_INITRAMFS and VESSEL_VMM in the
# environment (eval "$(tests/artifacts.sh)").
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
: "${VESSEL_KERNEL:?run eval \"\$(tests/artifacts.sh)\" first}"
: "${VESSEL_INITRAMFS:?}" "${VESSEL_VMM:?}"

# Build once here, run there: the nested host is slow at compiling.
# test_bins ARGS...: the test executables `cargo test ARGS --no-run` builds.
test_bins() {
  cargo test "$@" --no-run --message-format=json -q 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
        if "test" in m["target"]["kind"]:
            print(m["executable"])
'
}
mapfile -t bins < <(test_bins -p vessel-e2e)
[ "${#bins[@]}" -gt 0 ] || { echo "e2e: no test binaries were built" >&2; exit 1; }
# The agent's cgroup limit tests need cgroup v2 controllers (memory, pids, cpu)
# that the development/CI machines bind to cgroup v1; the nested host has them.
mapfile -t -O "${#bins[@]}" bins < <(test_bins -p vessel-agent --test cgroups)
[ "${#bins[@]}" -gt 1 ] || { echo "e2e: the agent's cgroups tests were not built" >&2; exit 1; }

# One nested host for the whole suite: its boot is the expensive part.
# The script lives in the tree, not /tmp: the nested host sees the host's
# files but mounts its own /tmp.
script=${CARGO_TARGET_DIR:-$repo/target}/e2e-suite.sh
{
  echo 'set -e'
  echo 'rc=0'
  for b in "${bins[@]}"; do
    printf 'echo "e2e: running %s"\n' "$(basename "$b")"
    printf '%q --test-threads=1 --nocapture || rc=1\n' "$b"
  done
  echo 'exit $rc'
} >"$script"
# The nested test host (QEMU TCG emulating SVM) now and then fails on its
# own under load: its kernel panicked once (a stack overflow in a vCPU
# thread of L1's KVM), and once it froze mid-suite. The runner reports the
# first as 125; the second runs into the runner's timeout, 124, which the
# suite cannot reach by itself because every step in it has its own, much
# shorter deadline. Only those two are retried, at most twice and loudly; a
# failing test is never retried. The suite takes about 4 minutes in the
# nested host; 12 minutes means the host froze (it did, mid-suite, in one
# of four full runs in session 2), and three attempts still fit CI's budget.
export VESSEL_KVM_HOST_TIMEOUT=${VESSEL_KVM_HOST_TIMEOUT:-720}
attempts=3
for attempt in $(seq 1 "$attempts"); do
  rc=0
  tests/kvm-host/run bash "$script" || rc=$?
  if { [ "$rc" -ne 125 ] && [ "$rc" -ne 124 ]; } || [ "$attempt" -eq "$attempts" ]; then
    exit "$rc"
  fi
  echo "e2e: WARNING: the test host itself failed (status $rc: 125 crashed, 124 froze; its console log is kept, path above); running the suite again (attempt $((attempt + 1)) of $attempts)" >&2
done
