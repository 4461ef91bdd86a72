#!/usr/bin/env bash
# Runs the end-to-end suite: builds the test binaries on this machine, then
# runs each one through tests/kvm-host/run, where guests can boot (natively
# or nested). Needs VESSEL_KERNEL, VESSEL_INITRAMFS, VESSEL_VMM,
# VESSEL_VESSELD and VESSEL_VIRTIOFSD in the environment
# (eval "$(tests/artifacts.sh)").
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
: "${VESSEL_KERNEL:?run eval \"\$(tests/artifacts.sh)\" first}"
: "${VESSEL_INITRAMFS:?}" "${VESSEL_VMM:?}" "${VESSEL_VESSELD:?}" "${VESSEL_VIRTIOFSD:?}"

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

# One test host per test that boots guests: the nested host (QEMU TCG
# emulating SVM) now and then fails on its own after some guest boots. Its
# kernel panicked ("corrupted stack end detected inside scheduler" in a
# vCPU thread of its KVM) or it froze after 4 to 11 guest boots in session
# 2's CI run, in session 3's boot benchmarks and, in session 4, during the
# 6th boot of a host (the 4-vCPU guest after five 1-vCPU ones); the same
# 4-vCPU guest, 6th in its host, once triple-faulted in a CI rehearsal while
# it passed in every fresh host (8 of 8). So each e2e test gets a fresh host
# (~20-30 s of boot each) and boots at most 5 guests in it; the agent's
# cgroups tests boot none and share one host. The runner reports a host
# failure as 125 (a crash, or a freeze seen through its heartbeat within
# VESSEL_KVM_HOST_STALL seconds) and an attempt that ran out of its budget
# as 124; then that test runs again in a fresh host. At most
# VESSEL_E2E_HOST_FAILURES (5) such retries in all, none started after
# VESSEL_E2E_BUDGET seconds, which leaves CI's 90 minutes room.
#
# A failing test runs once more in a fresh host, at most
# VESSEL_E2E_TEST_RETRIES (2) times per suite: guests in the nested host
# also fail without the host failing (session 3: a 4-vCPU guest
# triple-faulted; session 4: a 4th guest in a host printed nothing for 90 s
# after its kernel started), and these have not reproduced in fresh hosts.
# The failure's output stays in the log, a warning says so, and the summary
# lists the test as FLAKY; a test that fails twice fails the suite.
export VESSEL_KVM_HOST_TIMEOUT=${VESSEL_KVM_HOST_TIMEOUT:-900}
host_failures_allowed=${VESSEL_E2E_HOST_FAILURES:-5}
budget=${VESSEL_E2E_BUDGET:-2400}
start=$SECONDS
host_failures=0
runs=0
failed=()
flaky=()
retries=0
retries_allowed=${VESSEL_E2E_TEST_RETRIES:-2}

# run_in_host LABEL BIN ARGS...: runs BIN in fresh test hosts until it
# finishes without a host failure; sets rc.
run_in_host() {
  local label=$1
  shift
  while :; do
    echo "e2e: running $label"
    rc=0
    tests/kvm-host/run "$@" --test-threads=1 --nocapture || rc=$?
    if [ "$rc" -ne 125 ] && [ "$rc" -ne 124 ]; then
      return
    fi
    host_failures=$((host_failures + 1))
    if [ "$host_failures" -gt "$host_failures_allowed" ] || [ $((SECONDS - start)) -ge "$budget" ]; then
      echo "e2e: the test host failed $host_failures time(s) (last status $rc, during $label); the retries or the ${budget}s budget are spent: giving up" >&2
      exit "$rc"
    fi
    echo "e2e: WARNING: the test host itself failed during $label (status $rc: 125 crashed or froze, 124 out of time; its console log is kept, path above); running $label again in a fresh host ($host_failures of $host_failures_allowed retries used)" >&2
  done
}

for b in "${bins[@]}"; do
  name=$(basename "$b")
  if [[ $name == cgroups-* ]]; then
    tests=("")
  else
    mapfile -t tests < <("$b" --list --format terse | sed -n 's/: test$//p')
    [ "${#tests[@]}" -gt 0 ] || { echo "e2e: $name lists no tests" >&2; exit 1; }
  fi
  for t in "${tests[@]}"; do
    label="$name${t:+ $t}"
    args=("$b")
    [ -z "$t" ] || args+=(--exact "$t")
    run_in_host "$label" "${args[@]}"
    runs=$((runs + 1))
    if [ "$rc" -ne 0 ] && [ "$retries" -lt "$retries_allowed" ]; then
      # Once, in a fresh host, and never silently: see the comment above.
      retries=$((retries + 1))
      echo "e2e: WARNING: $label FAILED (status $rc, output above); running it once more in a fresh host ($retries of $retries_allowed such retries). It is reported as flaky even if it passes." >&2
      first_rc=$rc
      run_in_host "$label (retry)" "${args[@]}"
      runs=$((runs + 1))
      [ "$rc" -ne 0 ] || flaky+=("$label (failed with status $first_rc, passed on retry)")
    fi
    [ "$rc" -eq 0 ] || failed+=("$label (status $rc)")
  done
done

echo "e2e: ${#bins[@]} binaries in $runs test hosts, $host_failures test host failure(s) retried, $((SECONDS - start)) s"
if [ "${#flaky[@]}" -gt 0 ]; then
  echo "e2e: WARNING: FLAKY (failed once, passed in a fresh host): ${flaky[*]}" >&2
fi
if [ "${#failed[@]}" -gt 0 ]; then
  echo "e2e: FAILED: ${failed[*]}" >&2
  exit 1
fi
