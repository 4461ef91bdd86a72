#!/usr/bin/env bash
# Boot loop (issue 14; docs/operations.md, "The boot loop"): many guest boots
# under load, each host a fresh nested test host, every failure classified.
# Not part of `make test`: it takes about 3 minutes per host of 20 boots.
#   tests/e2e/bootloop.sh                    # 10 hosts x 20 boots
#   VESSEL_BOOTLOOP_HOSTS=4 VESSEL_BOOTLOOP_BOOTS=10 tests/e2e/bootloop.sh
# VESSEL_BOOTLOOP_MIB (32): the load per boot; VESSEL_BOOTLOOP_QEMU=0: no
# QEMU control boots. Output (boots.txt, hosts.txt, each failed boot's
# evidence, l1.txt: the failed boots with the test host's L1 fault as
# evidence) in VESSEL_BOOTLOOP_OUT (default target/bootloop/<time>); the
# summary is printed at the end (tests/e2e/bootloop_summary.py).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
eval "$(tests/artifacts.sh)"
if [ -z "${VESSEL_BENCH_SKIP_BUILD:-}" ]; then
  cargo build --release -q -p vessel-e2e --bin bootloop
fi
bin=${CARGO_TARGET_DIR:-$repo/target}/release/bootloop
hosts=${VESSEL_BOOTLOOP_HOSTS:-10}
export VESSEL_BOOTLOOP_BOOTS=${VESSEL_BOOTLOOP_BOOTS:-20}
out=${VESSEL_BOOTLOOP_OUT:-$repo/target/bootloop/$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
# Written through from the test host (the project and cache dirs already are).
export VESSEL_KVM_HOST_RWDIRS="$out${VESSEL_KVM_HOST_RWDIRS:+:$VESSEL_KVM_HOST_RWDIRS}"
# shellcheck source=tests/e2e/classify.sh
source tests/e2e/classify.sh
for h in $(seq 0 $((hosts - 1))); do
  log=$out/host$h.log
  rc=0
  VESSEL_BOOTLOOP_HOST=$h VESSEL_BOOTLOOP_OUT=$out tests/kvm-host/run "$bin" >"$log" 2>&1 || rc=$?
  n=$(grep -c "^bootloop host=$h .*result=" "$out/boots.txt" 2>/dev/null || true)
  n=${n:-0}
  if [ "$rc" -eq 0 ]; then
    line="host=$h status=0 boots=$n"
  else
    classify "$rc" "$log"
    # One line per host: the kernel's lines end in CR.
    evidence=$(printf '%s' "$evidence" | tr -d '\r\n"')
    line="host=$h status=$rc boots=$n class=${class:-vessel-or-unknown} evidence=\"$evidence\" log=$log"
  fi
  echo "$line" | tee -a "$out/hosts.txt"
done
# A failed boot with the test host's own L1 fault as evidence (classify.sh):
# the probe's record of its guest's shutdown, or a post-mortem that shows
# the same fault as a live-lock. The summary counts those as host-l1-fault.
for dir in "$out"/boot*/; do
  [ -d "$dir" ] || continue
  boot=${dir%/}
  boot=${boot##*/boot}
  if why=$(l1_fault "$dir/l1-shutdown.trace") ||
    why=$(npf_loop_in "$dir/postmortem.txt") ||
    why=$(npf_loop_in "$dir/postmortem-3s-later.txt"); then
    echo "boot=$boot evidence=\"$(printf '%s' "$why" | tr -d '\r\n"')\"" >>"$out/l1.txt"
  fi
done
python3 tests/e2e/bootloop_summary.py "$out"
