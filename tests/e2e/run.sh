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
# 6th boot of a host. So each e2e test gets a fresh host (~20-30 s of boot
# each) and boots at most 5 guests in it; the agent's cgroups tests boot
# none and share one host.
#
# Retries only on evidence (docs/operations.md, "Retries"). A failed test
# runs again in a fresh host only when the failure is classified as the
# test host's own, from what tests/kvm-host/run leaves in its run dir:
#   host-freeze  the run exited 125 and left RUN_DIR/stalled (no heartbeat);
#   host-panic   the test host's console.log has its kernel's panic/oops text;
#   host-lockup  the test host's console.log has its watchdogs' report (soft
#                lockup, RCU stall, hung task): the host starved, not the test;
#   host-stuck-vcpu  a post-mortem the test saved shows a vCPU thread that
#                did not come back from KVM_RUN when kicked;
#   host-l1-fault  the test failed by a guest triple fault, and the test
#                host's L1 shutdown probe (RUN_DIR/l1-shutdown.trace) shows
#                the known signature of its emulated SVM; or a post-mortem's
#                KVM trace shows the vCPU looping on one nested page fault
#                while delivering that same fault.
# Never in native mode (there is no test host of ours to blame), never for
# 124 (the run's own time budget: a failure), never for a 125 without such
# evidence, and not when the test's output carries a vessel-side signature
# (the VMM reporting a guest crash or its own error, a seccomp kill, a panic
# in vessel's code; for host-l1-fault, anything but the triple fault it
# explains): host-lockup is then treated as a failure. At most
# VESSEL_E2E_HOST_FAILURES (5) retries in all, none started after
# VESSEL_E2E_BUDGET seconds. Every retry is printed with its evidence, and
# the last line counts them per class (.ci/run shows it at its end).
export VESSEL_KVM_HOST_TIMEOUT=${VESSEL_KVM_HOST_TIMEOUT:-1500}
retries_allowed=${VESSEL_E2E_HOST_FAILURES:-5}
budget=${VESSEL_E2E_BUDGET:-2400}
start=$SECONDS
runs=0
failed=()
retried=()
postmortems=()
declare -A retries_by_class=([host-freeze]=0 [host-panic]=0 [host-lockup]=0 [host-stuck-vcpu]=0 [host-l1-fault]=0)
logs=$(mktemp -d "${TMPDIR:-/tmp}/vessel-e2e-logs.XXXXXX")
trap 'rm -rf -- "$logs"' EXIT

# classify RC LOG (sets class and evidence), in its own file so that
# classify_test.sh checks it; run here first, it takes milliseconds.
# shellcheck source=tests/e2e/classify.sh
source tests/e2e/classify.sh
tests/e2e/classify_test.sh >/dev/null || { echo "e2e: tests/e2e/classify_test.sh failed" >&2; exit 1; }

# run_test LABEL BIN ARGS...: runs BIN in fresh test hosts until it passes,
# fails without test-host evidence, or the retries or the budget are spent;
# sets rc.
run_test() {
  local label=$1 attempt=0 log
  shift
  while :; do
    attempt=$((attempt + 1))
    log="$logs/$runs.log"
    runs=$((runs + 1))
    if [ "$attempt" -eq 1 ]; then echo "e2e: running $label"; else echo "e2e: running $label (attempt $attempt)"; fi
    rc=0
    tests/kvm-host/run "$@" --test-threads=1 --nocapture 2>&1 | tee "$log" || rc=${PIPESTATUS[0]}
    [ "$rc" -ne 0 ] || return 0
    # A failed run's dir is kept, so the post-mortems saved in it stay.
    while IFS= read -r pm; do
      postmortems+=("$label: $pm")
    done < <(saved_postmortems "$log")
    classify "$rc" "$log"
    local spent=0 c
    for c in "${!retries_by_class[@]}"; do spent=$((spent + ${retries_by_class[$c]})); done
    if [ -z "$class" ]; then
      echo "e2e: $label FAILED (status $rc; not retried: $evidence)" >&2
      return 0
    fi
    if [ "$spent" -ge "$retries_allowed" ] || [ $((SECONDS - start)) -ge "$budget" ]; then
      echo "e2e: $label failed on the test host ($class: $evidence), but the $retries_allowed retries or the ${budget}s budget are spent: giving up" >&2
      return 0
    fi
    retries_by_class[$class]=$((${retries_by_class[$class]} + 1))
    retried+=("$label, status $rc, $class: $evidence")
    echo "e2e: WARNING: $label: the test host failed ($class: $evidence); running it again in a fresh host ($((spent + 1)) of $retries_allowed retries)" >&2
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
    run_test "$label" "${args[@]}"
    [ "$rc" -eq 0 ] || failed+=("$label (status $rc)")
  done
done

total_retries=0
for c in "${!retries_by_class[@]}"; do total_retries=$((total_retries + ${retries_by_class[$c]})); done
echo "e2e: ${#bins[@]} binaries in $runs test hosts, $((SECONDS - start)) s"
for r in "${retried[@]}"; do
  echo "e2e: RETRIED: $r" >&2
done
for p in "${postmortems[@]}"; do
  echo "e2e: post-mortem: $p" >&2
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "e2e: FAILED: ${failed[*]}" >&2
fi
echo "e2e: retries by class: host-freeze=${retries_by_class[host-freeze]} host-panic=${retries_by_class[host-panic]} host-lockup=${retries_by_class[host-lockup]} host-stuck-vcpu=${retries_by_class[host-stuck-vcpu]} host-l1-fault=${retries_by_class[host-l1-fault]} (total $total_retries)"
[ "${#failed[@]}" -eq 0 ] || exit 1
