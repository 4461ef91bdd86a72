#!/usr/bin/env bash
# Checks tests/e2e/classify.sh on made-up runner output and run dirs: which
# failures may be retried (the test host's own) and which may not. Run by
# tests/e2e/run.sh before the suite; prints one line per case.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/classify.sh
source "$here/classify.sh"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/vessel-classify.XXXXXX")
trap 'rm -rf -- "$tmp"' EXIT
rd=$tmp/run
mkdir -p "$rd"
log=$tmp/log
failures=0

# runner_output MODE TEXT: a runner log in MODE with TEXT as the test's output.
runner_output() {
  printf 'kvm-host: mode %s: reason\nkvm-host: nested VM: kernel k, 2 vCPUs, 4G, rw: a b, run dir %s\n%s\n' \
    "$1" "$rd" "$2" >"$log"
}
# expect RC CLASS WHAT: classify must give CLASS (empty: no retry).
expect() {
  classify "$1" "$log"
  if [ "$class" = "$2" ]; then
    echo "ok: $3 -> '${class:-no retry}' ($evidence)"
  else
    echo "FAIL: $3: got '$class', want '$2' ($evidence)"
    failures=$((failures + 1))
  fi
}

: >"$rd/console.log"
runner_output native ""
expect 125 "" "native mode, even with status 125"
echo 130 >"$rd/stalled"
expect 125 "" "native mode, even with a stall file"
runner_output nested ""
expect 124 "" "the run's own budget (124)"
expect 125 host-freeze "125 with RUN_DIR/stalled"
rm "$rd/stalled"
expect 125 "" "125 without evidence"
echo "[ 12.3] Kernel panic - not syncing: corrupted stack end detected inside scheduler" >"$rd/console.log"
expect 125 host-panic "125 with the test host's panic text"
echo "[ 99.1] watchdog: BUG: soft lockup - CPU#1 stuck for 23s! [qemu-system-x86]" >"$rd/console.log"
expect 101 host-lockup "a failed test with a soft lockup in the test host"
runner_output nested "--- vmm log ---
vessel-vmm: guest crashed: vCPU 0: triple fault (KVM_EXIT_SHUTDOWN); rip=0x1"
expect 101 "" "the same with the VMM reporting a guest crash"
runner_output nested "thread 'main' panicked at vmm/src/vcpu/mod.rs:10:5:"
expect 101 "" "the same with a panic in vessel's code"
: >"$rd/console.log"
runner_output nested "assertion failed"
expect 101 "" "a failed test, quiet test host"
runner_output nested "e2e: vessel-vmm: guest crashed: triple fault"
echo "[ 5.0] Kernel panic - not syncing: Fatal exception" >"$rd/console.log"
expect 125 host-panic "a dead test host outweighs what the guest did before"
: >"$rd/console.log"
pm=$rd/postmortem/vm.txt
mkdir -p "$rd/postmortem"
echo '{"vcpus":[{"index":0,"answered":false,"error":"did not answer within 1000 ms (stuck in KVM_RUN)"}]}' >"$pm"
runner_output nested "agent not reachable
e2e: post-mortem saved to $pm"
expect 101 host-stuck-vcpu "a post-mortem with a vCPU stuck in KVM_RUN"
echo '{"vcpus":[{"index":0,"answered":false,"error":"did not answer within 1000 ms (stuck in the VMM)"}]}' >"$pm"
expect 101 "" "a post-mortem with a vCPU stuck in the VMM (vessel's)"
rm -f "$pm"

# The L1 shutdown probe's trace (tests/kvm-host/guest-run).
# l1_trace INTR ERR RIP [CR2]: an earlier shutdown (a hand-made guest's),
# then the last one, with INTR, ERR, RIP and CR2 (default: RIP).
l1_trace() {
  local p=" (shutdown_interception+0x0/0x80 [kvm_amd]) exit_code=0x7f"
  {
    echo "  vcpu0-175 [000] ..... 18.67: shutdown:$p intr_info=0x80000306 error_code=0x0 rip=0x10000d cr2=0x0 cr3=0x0"
    echo "  vcpu0-901 [001] ..... 100.2: shutdown:$p intr_info=$1 error_code=$2 rip=$3 cr2=${4:-$3} cr3=0x1c0a000"
  } >"$rd/l1-shutdown.trace"
}
crash="Internal error: cannot connect to vsock.sock
2026-12-03T18:44:49Z  WARN vessel_vmm: guest crashed: vCPU 0: triple fault (KVM_EXIT_SHUTDOWN); rip=0xfff0"
runner_output nested "$crash"
expect 101 "" "a guest triple fault, no L1 shutdown trace"
l1_trace 0x80000b0e 0x10 0xffffffff8160a0b4
expect 101 host-l1-fault "a guest triple fault with the L1 signature"
l1_trace 0x80000306 0x0 0xffffffff8160a0b4
expect 101 "" "a shutdown delivering #UD (a bad IDT)"
l1_trace 0x80000b0e 0x14 0x7f0000001000
expect 101 "" "a fetch fault in user space"
l1_trace 0x80000b0e 0x10 0xffffffffa0001000
expect 101 "" "a fetch fault past the kernel image mapping"
l1_trace 0x800000ec 0x6 0xffffffff8158c85a 0xfffffe0000000080
expect 101 host-l1-fault "a triple fault reading the IDT in cpu_entry_area (the L1 signature's other shape)"
l1_trace 0x800000ec 0x6 0xffffffff8158c85a 0xfffffe0000002080
expect 101 "" "a fault past the IDT page of cpu_entry_area"
l1_trace 0x800000ec 0x6 0x401000 0xfffffe0000000080
expect 101 "" "an IDT fault with a RIP outside the kernel image"
l1_trace 0x80000b0e 0x10 0xffffffff8160a0b4
runner_output nested "assertion failed: left == right"
expect 101 "" "the L1 signature, but the test failed otherwise (no guest crash)"
runner_output nested "$crash"
l1_trace 0x80000b0e 0x10 0xffffffff8160a0b4
runner_output nested "$crash
thread 'tokio-runtime-worker' panicked at host-runtime/src/sandbox/manager.rs:10:5:"
expect 101 "" "the L1 signature, but a panic in vessel's code as well"
runner_output nested "vessel-vmm: vmm error: vsock: bad packet
$crash"
expect 101 "" "the L1 signature, but the VMM failed by itself as well"
rm -f "$rd/l1-shutdown.trace"

# The same signature as a live-lock, in a post-mortem's KVM trace.
# npf_trace N RIP2: N nested page faults at one GPA while delivering the
# fetch #PF, the last at RIP2.
npf_trace() {
  local i
  {
    echo "# test host KVM trace of the VMM's threads"
    echo " vcpu0-228 [000] ..... 363.0: kvm_exit: vcpu 0 reason hlt rip 0xffffffff81001000 info1 0x0 info2 0x0 intr_info 0x00000000 error_code 0x00000000"
    for ((i = 1; i < $1; i++)); do
      echo " vcpu0-228 [000] ..... 363.0: kvm_exit: vcpu 0 reason npf rip 0xffffffffc049620c info1 0x000000020000000e info2 0x0000000102b66fe0 intr_info 0x80000b0e error_code 0x00000010"
      echo " vcpu0-228 [000] ..... 363.0: kvm_inj_exception: #PF (0x10)"
    done
    echo " vcpu0-228 [000] ..... 363.0: kvm_exit: vcpu 0 reason npf rip $2 info1 0x000000020000000e info2 0x0000000102b66fe0 intr_info 0x80000b0e error_code 0x00000010"
  } >"$pm"
}
runner_output nested "the exec session did not end in 300s
e2e: post-mortem saved to $pm"
npf_trace 100 0xffffffffc049620c
expect 101 host-l1-fault "a post-mortem whose vCPU loops on one nested page fault"
npf_trace 30 0xffffffffc049620c
expect 101 "" "too few such faults to call it a loop"
npf_trace 100 0xffffffffc0496210
expect 101 "" "the faults move on (the guest makes progress)"
npf_trace 100 0xffffffffc049620c
runner_output nested "the exec session did not end in 300s
thread 'x' panicked at host-runtime/src/sandbox/manager.rs:1:1:
e2e: post-mortem saved to $pm"
expect 101 "" "the loop, but a panic in vessel's code as well"
rm -f "$pm"

rm -rf "$rd"
expect 125 "" "no run dir"

[ "$failures" -eq 0 ] || { echo "classify_test: $failures failure(s)" >&2; exit 1; }
echo "classify_test: all cases passed"
