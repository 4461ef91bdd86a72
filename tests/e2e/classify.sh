# Sourced by tests/e2e/run.sh (and classify_test.sh): decides whether a
# failed e2e run is the nested test host's own failure, from the runner's
# output and the run dir it names. See docs/operations.md, "Retries".
# bash; no shebang: not run on its own.

# The test host's kernel dying: its panic and oops texts.
host_panic_re='Kernel panic - not syncing|corrupted stack end detected|kernel BUG at|BUG: unable to handle|general protection fault|Oops: '
# The test host starving: its own watchdogs' reports.
host_lockup_re='watchdog: BUG: soft lockup|rcu: INFO: rcu_(sched|preempt) (self-)?detected (stalls|stall)|INFO: task .* blocked for more than'
# vessel's own failures in the test's output: the VMM's exit lines (a guest
# triple fault counts as vessel's unless the L1 shutdown probe shows the
# signature below), a seccomp kill, a Rust panic in a vessel crate.
# (vessel_vmm: is the same line in a vmm.log that vesseld printed.)
vessel_re='vessel[-_]vmm: (guest crashed|vmm error)|Bad system call|SIGSYS|panicked at (vmm|guest-agent|host-runtime)/src'
# The VMM's line for a guest triple fault: explained, and then retried, by
# the L1 signature below, and only by it.
triple_fault_re='guest crashed: vCPU [0-9]+: triple fault'

# saved_postmortems LOG: the post-mortem files the test named in LOG.
saved_postmortems() {
  sed -n 's/^.*e2e: post-mortem saved to //p' "$1"
}

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
  done < <(saved_postmortems "$1")
  return 1
}

# l1_fault TRACE: prints the known L1 signature if the last guest shutdown
# in TRACE (the test host's L1 shutdown probe, tests/kvm-host/guest-run:
# the VMCB at the triple fault) has it. The signature (docs/benchmarks.md,
# "Agent streaming"; QEMU microvm's guests die by it too in the same
# host): the guest's CPU shut down while delivering a page fault
# (intr_info 0x80000b0e) for an instruction fetch from a page not present
# (error code 0x10) at a RIP in the guest kernel's image mapping, which a
# running kernel never unmaps. A guest that triple-faults any other way (a
# bad IDT, a fault in user space or past the kernel image) does not match.
# The same fault also shows as a read of the IDT in the cpu_entry_area
# page (a boot loop on 2026-12-03: a timer interrupt, vector 0xec, then
# the #DF's entry at 0xfffffe0000000080), which a running kernel never
# unmaps either.
l1_fault() {
  [ -s "$1" ] || return 1
  awk '
    / shutdown: / { last = $0 }
    END {
      if (last == "") { print "no guest shutdown in the trace"; exit 1 }
      n = split(last, f, " ")
      for (i = 1; i <= n; i++) if (split(f[i], kv, "=") == 2) v[kv[1]] = kv[2]
      # The task (a thread name may hold spaces): up to its " [cpu]".
      task = substr(last, 1, index(last, " [") - 1)
      sub(/^ +/, "", task)
      rip = v["rip"]
      # The kernel image mapping (__START_KERNEL_map, 512 MiB: the guest
      # kernel is not relocatable, kernel-config/microvm.config).
      kernel_text = length(rip) == 18 && rip >= "0xffffffff80000000" && rip < "0xffffffffa0000000"
      if (v["intr_info"] == "0x80000b0e" && v["error_code"] == "0x10" && kernel_text) {
        printf "L1 signature: %s shut down delivering a #PF (intr_info %s, error code %s: fetch, not present) at kernel text %s (cr2 %s, cr3 %s)\n", task, v["intr_info"], v["error_code"], rip, v["cr2"], v["cr3"]
        exit 0
      }
      # Its other shape: the fault is on the IDT itself, in the kernel'"'"'s
      # cpu_entry_area (mapped read-only at boot, never unmapped), so
      # delivering an event faulted, and so did the #DF after it.
      cr2 = v["cr2"]
      idt = length(cr2) == 18 && cr2 >= "0xfffffe0000000000" && cr2 < "0xfffffe0000001000"
      if (idt && kernel_text) {
        printf "L1 signature: %s shut down delivering an event (intr_info %s) at kernel text %s: reading the IDT at %s (cpu_entry_area) faulted (cr3 %s)\n", task, v["intr_info"], rip, cr2, v["cr3"]
        exit 0
      }
      printf "a guest shutdown without the L1 signature: %s intr_info %s error_code %s rip %s\n", task, v["intr_info"], v["error_code"], rip
      exit 1
    }
  ' "$1"
}

# npf_loop LOG: prints which saved post-mortem (named in LOG) shows the L1
# signature as a live-lock instead of a shutdown: in its test-host KVM
# trace, the VMM's vCPU's last 50 exits (or more) are all nested page
# faults at one guest-physical address, each taken while delivering the
# same instruction-fetch #PF (intr_info 0x80000b0e, error code 0x10) at
# one RIP, which the test host's KVM injects again and again. The fault
# is in the test host's own walk of the guest's page tables (its nested
# paging), which nothing the guest or a VMM does in between changes: a
# bad memslot ends KVM_RUN with an error instead.
npf_loop() {
  local pm found
  while IFS= read -r pm; do
    if found=$(npf_loop_in "$pm"); then
      echo "post-mortem $pm: $found"
      return 0
    fi
  done < <(saved_postmortems "$1")
  return 1
}

# npf_loop_in POSTMORTEM: npf_loop's check of one post-mortem file.
npf_loop_in() {
  [ -f "$1" ] || return 1
  awk '
    / kvm_exit: / {
      n++; line[n] = $0
    }
    END {
      if (n < 50) exit 1
      for (i = n - 49; i <= n; i++) {
        l = line[i]
        if (l !~ / reason npf / || l !~ / intr_info 0x80000b0e error_code 0x00000010/) exit 1
        key = l; sub(/^.* rip /, "", key); sub(/ info1 .*$/, "", key)
        gpa = l; sub(/^.* info2 /, "", gpa); sub(/ .*$/, "", gpa)
        if (i > n - 49 && (key != rip || gpa != at)) exit 1
        rip = key; at = gpa
      }
      printf "the vCPU looped on a nested page fault at GPA %s while delivering a fetch #PF at %s (the last 50 of %d exits in the trace)\n", at, rip, n
    }' "$1"
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
  elif grep -qaE "$triple_fault_re" "$log" && line=$(l1_fault "$run_dir/l1-shutdown.trace"); then
    class=host-l1-fault
    evidence="$line ($run_dir/l1-shutdown.trace)"
  elif line=$(npf_loop "$log"); then
    class=host-l1-fault
    evidence="$line"
  else
    evidence="status $rc, no test-host evidence in $run_dir (stalled, console.log, l1-shutdown.trace)"
    if [ -s "$run_dir/l1-shutdown.trace" ]; then
      evidence="$evidence; $(l1_fault "$run_dir/l1-shutdown.trace" || true)"
      grep -qaE "$triple_fault_re" "$log" || evidence="$evidence (but the test did not fail by a guest triple fault)"
    fi
    return
  fi
  # A test that ran to its end and failed with vessel's own signature is
  # vessel's failure, whatever the host's log says besides; the L1
  # signature explains a guest triple fault, and nothing else.
  local veto
  if [ "$class" = host-l1-fault ]; then
    veto=$(grep -a -E "$vessel_re" "$log" | grep -a -v -E "$triple_fault_re" | head -n1 || true)
  else
    veto=$(grep -a -m1 -E "$vessel_re" "$log" || true)
  fi
  if [ "$rc" -ne 125 ] && [ -n "$veto" ]; then
    evidence="$evidence; but the test's output has a vessel-side signature: '${veto:0:200}'"
    class=''
  fi
}
