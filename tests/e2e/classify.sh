# Sourced by tests/e2e/run.sh (and classify_test.sh): decides whether a
# failed e2e run is the nested test host's own failure, from the runner's
# output and the run dir it names. See docs/operations.md, "Retries".
# bash; no shebang: not run on its own.

# The test host's kernel dying: its panic and oops texts.
host_panic_re='Kernel panic - not syncing|corrupted stack end detected|kernel BUG at|BUG: unable to handle|general protection fault|Oops: '
# The test host starving: its own watchdogs' reports.
host_lockup_re='watchdog: BUG: soft lockup|rcu: INFO: rcu_(sched|preempt) (self-)?detected (stalls|stall)|INFO: task .* blocked for more than'
# vessel's own failures in the test's output: the VMM's exit lines (a guest
# triple fault counts as vessel's until a post-mortem proves otherwise), a
# seccomp kill, a Rust panic in a vessel crate.
vessel_re='vessel-vmm: (guest crashed|vmm error)|Bad system call|SIGSYS|panicked at (vmm|guest-agent|host-runtime)/src'

# stuck_vcpu LOG: prints which saved post-mortem (named in LOG) has a vCPU
# thread that did not come back from KVM_RUN although it was kicked: the
# test host's KVM no longer returns to its caller, the known L1 signature
# (the kick itself works: vmm/tests/postmortem.rs, and pause, use it).
stuck_vcpu() {
  local pm
  while IFS= read -r pm; do
    if [ -f "$pm" ] && grep -q 'stuck in KVM_RUN' "$pm"; then
      echo "post-mortem $pm: a vCPU did not answer (stuck in KVM_RUN)"
      return 0
    fi
  done < <(sed -n 's/^.*e2e: post-mortem saved to //p' "$1")
  return 1
}

# classify RC LOG: sets `class` (empty: not the test host's) and `evidence`
# from the runner's output LOG and the run dir it names.
classify() {
  local rc=$1 log=$2 mode run_dir line
  class='' evidence=''
  mode=$(sed -n 's/^kvm-host: mode \(native\|nested\):.*/\1/p' "$log" | head -n1)
  run_dir=$(sed -n 's/^kvm-host: nested VM: .*, run dir \(.*\)$/\1/p' "$log" | head -n1)
  if [ "$mode" != nested ]; then
    evidence="mode ${mode:-unknown}: no retry outside the nested test host"
    return
  fi
  if [ "$rc" -eq 124 ]; then
    evidence="status 124: the run's own time budget (VESSEL_KVM_HOST_TIMEOUT) ran out"
    return
  fi
  if [ -z "$run_dir" ] || [ ! -d "$run_dir" ]; then
    evidence="no run dir to look at"
    return
  fi
  if [ "$rc" -eq 125 ] && [ -e "$run_dir/stalled" ]; then
    class=host-freeze
    evidence="no heartbeat from the test host for $(cat "$run_dir/stalled")s ($run_dir/stalled)"
  elif line=$(grep -a -m1 -E "$host_panic_re" "$run_dir/console.log" 2>/dev/null); then
    class=host-panic
    evidence="test host kernel: '${line:0:200}' ($run_dir/console.log)"
  elif line=$(grep -a -m1 -E "$host_lockup_re" "$run_dir/console.log" 2>/dev/null); then
    class=host-lockup
    evidence="test host kernel: '${line:0:200}' ($run_dir/console.log)"
  elif line=$(stuck_vcpu "$log"); then
    class=host-stuck-vcpu
    evidence="$line"
  else
    evidence="status $rc, no test-host evidence in $run_dir (stalled, console.log)"
    return
  fi
  # A test that ran to its end and failed with vessel's own signature is
  # vessel's failure, whatever the host's log says besides.
  if [ "$rc" -ne 125 ] && line=$(grep -a -m1 -E "$vessel_re" "$log"); then
    evidence="$evidence; but the test's output has a vessel-side signature: '${line:0:200}'"
    class=''
  fi
}

